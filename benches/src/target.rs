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
    /// `wss://`: TLS (only `wssload` speaks it).
    pub tls: bool,
}

impl Target {
    /// Parses `ws://HOST:PORT/PATH` (or `wss://`). Anything that does not
    /// resolve to a loopback address is refused: this tool only ever talks
    /// to loopback.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let tls = url.starts_with("wss://");
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("wss://"))
            .or_else(|| url.strip_prefix("tcp://"))
            .context("URL must start with ws:// or wss://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority_with_port = if authority.contains(':') {
            authority.to_string()
        } else if tls {
            format!("{authority}:443")
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
            tls,
        })
    }
}

impl Target {
    /// [`Target::parse`] for tools that speak plain WebSocket only.
    pub fn parse_plain(url: &str) -> anyhow::Result<Self> {
        let target = Self::parse(url)?;
        if target.tls {
            bail!("{url}: this tool speaks ws:// only; wssload drives wss://");
        }
        Ok(target)
    }

    /// The host name without the port (the TLS server name).
    pub fn host_name(&self) -> &str {
        match self.host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.host,
        }
    }
}
