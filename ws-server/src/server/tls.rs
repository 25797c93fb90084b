//! TLS for the servers (`serve` and `echo`): the settings, the loaded
//! certificate with its SIGHUP reload, and the TLS step of a connection.
//!
//! A connection on a TLS port goes: per-IP limit (no crypto spent on an
//! address over its limit), TLS handshake within the handshake timeout,
//! then the WebSocket handshake within what is left of it. Plain HTTP or
//! garbage fails the TLS handshake and closes that connection only.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use ws_async::tls::{self, CertResolver, ClientAuth, TlsError, TlsStream, rustls};
use ws_async::{Runtime, Transport, WsConfig, WsError};

/// Whether clients must present a certificate when a client CA is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// Handshakes without a verified client certificate fail.
    #[default]
    Required,
    /// Clients may present one; without, they connect as usual.
    Optional,
}

/// Where the server's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// CA certificates that verify client certificates, PEM.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (with `client_ca`).
    pub client_cert: ClientCertMode,
}

impl TlsSettings {
    /// The settings from their four values (`None` or empty: not given):
    /// no certificate means no TLS; a certificate needs a key, and a client
    /// CA needs a certificate.
    pub fn from_parts(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
        client_cert: ClientCertMode,
    ) -> Result<Option<Self>, String> {
        let given = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        match (given(cert), given(key), given(client_ca)) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), client_ca) => Ok(Some(Self {
                cert,
                key,
                client_ca,
                client_cert,
            })),
            (Some(_), None, _) => Err("tls_cert needs tls_key".to_owned()),
            (None, Some(_), _) => Err("tls_key needs tls_cert".to_owned()),
            (None, None, Some(_)) => Err("tls_client_ca needs tls_cert and tls_key".to_owned()),
        }
    }
}

/// TLS flags of `echo` (`serve` has the same as settings).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Certificate chain (PEM): serve TLS (wss://) on the port.
    #[arg(long, env = "WS_TLS_CERT", help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "WS_TLS_KEY", help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that verify client certificates.
    #[arg(long, env = "WS_TLS_CLIENT_CA", help_heading = "TLS")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: whether clients must present a certificate.
    #[arg(
        long,
        env = "WS_TLS_CLIENT_CERT",
        value_enum,
        default_value = "required",
        help_heading = "TLS"
    )]
    pub tls_client_cert: ClientCertMode,
}

impl TlsArgs {
    /// The settings these flags describe.
    pub fn settings(&self) -> Result<Option<TlsSettings>, String> {
        TlsSettings::from_parts(
            self.tls_cert.clone(),
            self.tls_key.clone(),
            self.tls_client_ca.clone(),
            self.tls_client_cert,
        )
    }
}

/// A running server's TLS: the swappable certificate and the rustls
/// settings that use it.
pub struct ServerTls {
    resolver: Arc<CertResolver>,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate, key and client CA the settings name.
    pub fn load(settings: &TlsSettings) -> Result<Arc<Self>, TlsError> {
        let resolver = Arc::new(CertResolver::load(&settings.cert, &settings.key)?);
        let client_auth = match &settings.client_ca {
            None => ClientAuth::None,
            Some(ca) => {
                let roots = Arc::new(tls::load_roots(ca)?);
                match settings.client_cert {
                    ClientCertMode::Required => ClientAuth::Required(roots),
                    ClientCertMode::Optional => ClientAuth::Optional(roots),
                }
            }
        };
        let config = tls::server_config(resolver.clone(), client_auth)?;
        Ok(Arc::new(Self { resolver, config }))
    }

    /// Reads the certificate and key again (SIGHUP): new handshakes get
    /// the new certificate, open connections keep theirs. A bad file is
    /// logged and the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        match self.resolver.reload() {
            Ok(()) => {
                tracing::info!("TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate reload failed; keeping the current certificate");
                Err(e)
            }
        }
    }

    /// The TLS handshake of an accepted connection, bounded by the
    /// handshake timeout of `config`; returns the stream and `config` with
    /// the handshake timeout cut to what is left for the WebSocket
    /// handshake.
    pub async fn handshake<T: Transport, R: Runtime>(
        &self,
        rt: &R,
        io: T,
        config: &WsConfig,
    ) -> Result<(TlsStream<T>, WsConfig), WsError> {
        tls::server_tls_handshake(rt, io, self.config.clone(), config).await
    }
}

/// Reloads `tls` on every SIGHUP (a small thread; any runtime).
pub fn reload_on_sighup(tls: Arc<ServerTls>) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                let _ = tls.reload();
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_a_certificate_and_a_key_together() {
        let p = |s: &str| Some(PathBuf::from(s));
        let mode = ClientCertMode::Required;
        assert_eq!(TlsSettings::from_parts(None, None, None, mode), Ok(None));
        assert_eq!(TlsSettings::from_parts(p(""), p(""), p(""), mode), Ok(None));
        let s = TlsSettings::from_parts(p("c.pem"), p("k.pem"), None, mode)
            .unwrap()
            .unwrap();
        assert_eq!((s.cert, s.client_ca), (PathBuf::from("c.pem"), None));
        assert!(
            TlsSettings::from_parts(p("c.pem"), None, None, mode)
                .unwrap_err()
                .contains("tls_key")
        );
        assert!(TlsSettings::from_parts(None, p("k.pem"), None, mode).is_err());
        assert!(TlsSettings::from_parts(None, None, p("ca.pem"), mode).is_err());
    }

    #[test]
    fn a_missing_file_is_reported_at_load() {
        let settings = TlsSettings {
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
            client_ca: None,
            client_cert: ClientCertMode::Required,
        };
        let e = ServerTls::load(&settings).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/c.pem"), "{e}");
    }
}
