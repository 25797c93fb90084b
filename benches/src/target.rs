//! Parsing `ws://` URLs that must point at loopback.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{Context, bail};

/// A WebSocket endpoint on loopback.
#[derive(Debug, Clone)]
pub struct Target {
    /// Resolved socket address (always in 127.0.0.0/8 or `::1`).
    pub addr: SocketAddr,
    /// Value of the `Host` header.
    pub host: String,
    /// Request target (path and query), at least `/`.
    pub path: String,
}

impl Target {
    /// Parses `ws://HOST:PORT/PATH`. Anything that does not resolve to a
    /// loopback address is refused: this tool only ever talks to loopback.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("tcp://"))
            .context("URL must start with ws:// (wss is not supported)")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority_with_port = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = authority_with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .context("no address")?;
        if !addr.ip().is_loopback() {
            bail!("refusing non-loopback target {addr}: load must stay on 127.0.0.0/8");
        }
        Ok(Self {
            addr,
            host: authority.to_string(),
            path: path.to_string(),
        })
    }
}
