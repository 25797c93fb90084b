//! TLS as a [`Transport`]: [`TlsStream`] wraps any transport (a tokio or
//! smol TCP stream, a test pipe) in rustls, written once on rustls's own
//! sans-IO connection (`read_tls` / `process_new_packets` / `reader` /
//! `writer` / `write_tls`), so both runtimes share it and the WebSocket
//! above it is the same type as over plain TCP.
//!
//! Crypto is rustls's `ring` provider (no cmake, no C toolchain beyond
//! `cc`); TLS 1.3 and 1.2; ALPN `http/1.1`.
//!
//! - Servers: [`CertResolver`] holds the certificate chain and key loaded
//!   from PEM files and swaps them on [`CertResolver::reload`] (SIGHUP):
//!   new handshakes get the new certificate, established connections are
//!   untouched, and a bad new file is reported while the old certificate
//!   stays. [`server_config`] adds optional or required client
//!   certificates ([`ClientAuth`]); [`TlsStream::peer_user`] names the
//!   client by the **first DNS name in its certificate's subject
//!   alternative names** (validated by webpki; the subject CN is
//!   deprecated for names and not used).
//! - Clients: [`client_config`] trusts a CA file when given, else the
//!   platform's trust store through `rustls-native-certs` (chosen over the
//!   compiled-in `webpki-roots` so that certificates an administrator adds
//!   to the system store, a company CA say, are trusted, and distrusted
//!   roots go away with OS updates rather than with a rebuild; it honours
//!   `SSL_CERT_FILE` / `SSL_CERT_DIR`). The host of the URL is sent as SNI
//!   and verified against the certificate.
//!
//! ```
//! use ws_async::tls::{TlsError, client_config, load_certs};
//!
//! // A missing file is a clear, typed error naming the file.
//! let err = load_certs("/nonexistent/cert.pem".as_ref()).unwrap_err();
//! assert!(matches!(err, TlsError::Read { .. }));
//! assert!(err.to_string().contains("/nonexistent/cert.pem"));
//! # let _ = client_config;
//! ```

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
pub use rustls;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, Connection, RootCertStore, ServerConfig};

use ws_proto::{AcceptOptions, Request, ServerResponse};

use crate::error::WsError;
use crate::handshake::{Decision, accept_with, connect_over, within};
use crate::runtime::{Runtime, Transport, poll_write_slices};
use crate::stream::{WebSocket, WsConfig};
use crate::url::{UrlError, WsUrl};

/// The most one plaintext read zeroes and fills.
const MAX_READ: usize = 64 * 1024;

/// The ALPN protocol both sides offer.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Errors from loading certificates and keys and building TLS settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{}: not valid PEM: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A certificate file holds no `CERTIFICATE` section.
    #[error("{}: no certificate found (expected PEM `BEGIN CERTIFICATE`)", .0.display())]
    NoCertificate(PathBuf),
    /// A key file holds no private key.
    #[error("{}: no private key found (expected PEM PKCS#8, PKCS#1 or SEC1 key)", .0.display())]
    NoKey(PathBuf),
    /// The key is unusable, or does not belong to the certificate.
    #[error("{}: key does not fit the certificate: {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// rustls's verdict.
        source: rustls::Error,
    },
    /// A CA certificate was rejected as a trust anchor.
    #[error("{}: unusable CA certificate: {source}", path.display())]
    Ca {
        /// The CA file.
        path: PathBuf,
        /// rustls's verdict.
        source: rustls::Error,
    },
    /// No trust roots: the platform store is empty or unreadable.
    #[error("no trusted root certificates found in the platform store ({0}); pass a CA file")]
    NoRoots(String),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the settings (or, from a connection, the peer).
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// A host that cannot be a TLS server name.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

/// The crypto provider: ring, with its default (TLS 1.3 and 1.2) suites.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read {
            path: path.to_owned(),
            source,
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            detail: format!("{other:?}"),
        },
    }
}

/// Loads every certificate of a PEM file (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// Loads the first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(path.to_owned()),
        e => pem_error(path, e),
    })
}

/// Loads a certificate chain and its key, checking that they match.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let der = load_key(key)?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })
}

/// Loads the CA certificates of a PEM file as trust roots.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::Ca {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// The platform's trust roots (see the module docs for why these).
pub fn platform_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = match found.errors.first() {
            Some(e) => e.to_string(),
            None => "none installed".to_owned(),
        };
        return Err(TlsError::NoRoots(why));
    }
    Ok(roots)
}

/// The server's certificate, swappable while the server runs.
///
/// Implements rustls's [`ResolvesServerCert`]: each handshake takes the
/// current certificate (one uncontended read lock); [`Self::reload`]
/// replaces it for the handshakes that follow.
pub struct CertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Loads the certificate chain and key from their PEM files.
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert.into(), key.into());
        let loaded = load_certified_key(&cert_path, &key_path)?;
        Ok(Self {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Reads both files again. On success new handshakes use the new
    /// certificate; on error the current one stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Arc::new(load_certified_key(&self.cert_path, &self.key_path)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    /// The certificate chain handed to new handshakes.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Whether a server asks for client certificates.
#[derive(Debug, Clone, Default)]
pub enum ClientAuth {
    /// No client certificates.
    #[default]
    None,
    /// Verified against these roots when presented; clients without one
    /// are still admitted (anonymous at the TLS level).
    Optional(Arc<RootCertStore>),
    /// Clients must present a certificate these roots verify; the
    /// handshake fails otherwise.
    Required(Arc<RootCertStore>),
}

/// Server settings: TLS 1.3 and 1.2, ALPN `http/1.1`, certificates from
/// `resolver`, client certificates as `client_auth` says.
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots, provider)
                .allow_unauthenticated()
                .build()?,
        ),
        ClientAuth::Required(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots, provider).build()?,
        ),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Client settings: trust `roots` (see [`load_roots`],
/// [`platform_roots`]), present `identity` (a certificate chain and key)
/// when given, offer ALPN `http/1.1`.
pub fn client_config(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The TLS server name for a URL host (brackets of an IPv6 literal
/// removed).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

/// The rustls error inside an I/O error from a [`TlsStream`], if any: the
/// handshake and record errors (an untrusted, expired or wrong-host
/// certificate, a missing client certificate, garbage) come out of the
/// [`Transport`] methods as `io::ErrorKind::InvalidData` errors wrapping it.
pub fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A TLS connection over a transport, itself a [`Transport`].
///
/// The handshake runs on the first reads and writes, or explicitly with
/// [`Self::handshake`] (a server does this to learn the client's
/// certificate before the HTTP request; a client to report certificate
/// errors as such). Reads and writes move TLS records between rustls's
/// buffers and the transport; plaintext written is encrypted at once and
/// what the socket does not take is written by the next write or by
/// [`Transport::poll_flush`]. A peer that closes TCP without a TLS
/// `close_notify` is end of stream like a plain FIN: the WebSocket close
/// handshake, not TLS, says whether a connection ended cleanly.
pub struct TlsStream<T> {
    io: T,
    tls: Connection,
    close_notify_sent: bool,
}

impl<T> fmt::Debug for TlsStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.tls.is_handshaking())
            .field("protocol", &self.tls.protocol_version())
            .finish_non_exhaustive()
    }
}

/// A [`Transport`] seen as blocking `Read` + `Write` for rustls: `Pending`
/// becomes `WouldBlock` (with the task's waker registered).
struct SyncIo<'a, 'b, T> {
    io: &'a mut T,
    cx: &'a mut Context<'b>,
}

fn would_block<R>(polled: Poll<io::Result<R>>) -> io::Result<R> {
    match polled {
        Poll::Ready(r) => r,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl<T: Transport> Read for SyncIo<'_, '_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        would_block(self.io.poll_read_slice(self.cx, buf))
    }
}

impl<T: Transport> Write for SyncIo<'_, '_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        would_block(self.io.poll_write(self.cx, buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        would_block(poll_write_slices(self.io, self.cx, bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn invalid_data(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<T: Transport> TlsStream<T> {
    /// The server side of a connection accepted on `io`.
    pub fn server(io: T, config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let tls = rustls::ServerConnection::new(config)?;
        Ok(Self::new(io, tls.into()))
    }

    /// The client side, verifying the server as `name` (also sent as SNI).
    pub fn client(
        io: T,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, rustls::Error> {
        let tls = rustls::ClientConnection::new(config, name)?;
        Ok(Self::new(io, tls.into()))
    }

    fn new(io: T, tls: Connection) -> Self {
        Self {
            io,
            tls,
            close_notify_sent: false,
        }
    }

    /// The transport underneath.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The rustls connection (negotiated version, ALPN, peer certificates).
    pub fn connection(&self) -> &Connection {
        &self.tls
    }

    /// The user a verified client certificate names: the first DNS name of
    /// its subject alternative names. `None` without a client certificate
    /// (or before the handshake, or on the client side).
    pub fn peer_user(&self) -> Option<String> {
        if !matches!(self.tls, Connection::Server(_)) {
            return None;
        }
        let leaf = self.tls.peer_certificates()?.first()?;
        let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
        cert.valid_dns_names().next().map(str::to_owned)
    }

    /// Completes the TLS handshake (a no-op once done). Errors: the peer
    /// closed, or rustls refused the peer ([`tls_error`] tells why).
    pub async fn handshake(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_handshake(cx)).await
    }

    /// Drives the handshake: writes what rustls has queued, reads and
    /// processes records until the handshake is over, then flushes the
    /// last flight.
    pub fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.is_handshaking() {
            ready!(self.poll_write_tls(cx))?;
            match ready!(self.poll_read_tls(cx))? {
                0 => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed during the TLS handshake",
                    )));
                }
                _ => continue,
            }
        }
        self.poll_write_tls(cx)
    }

    /// Writes TLS records rustls has queued until none is left or the
    /// transport is full.
    fn poll_write_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            let mut io = SyncIo {
                io: &mut self.io,
                cx,
            };
            match self.tls.write_tls(&mut io) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads TLS records once and processes them; `Ok(0)` is end of stream.
    /// A record rustls refuses is an `InvalidData` error (after an attempt
    /// to send the alert rustls queued).
    fn poll_read_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut io = SyncIo {
            io: &mut self.io,
            cx,
        };
        let n = match self.tls.read_tls(&mut io) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if let Err(e) = self.tls.process_new_packets() {
            let _ = self.poll_write_tls(cx);
            return Poll::Ready(Err(invalid_data(e)));
        }
        Poll::Ready(Ok(n))
    }

    /// Reads plaintext with `read`, fetching and processing records until
    /// some is there. Records that need an answer (handshake messages, key
    /// updates) are answered on the way, as far as the transport takes
    /// them; the rest goes with the next write or flush.
    fn poll_plaintext(
        &mut self,
        cx: &mut Context<'_>,
        mut read: impl FnMut(&mut rustls::Reader<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match read(&mut self.tls.reader()) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: end of stream (see the
                // type's docs), unless the handshake never finished.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Poll::Ready(if self.tls.is_handshaking() {
                        Err(e)
                    } else {
                        Ok(0)
                    });
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
            if let Poll::Ready(Err(e)) = self.poll_write_tls(cx) {
                return Poll::Ready(Err(e));
            }
            if ready!(self.poll_read_tls(cx))? == 0 && self.tls.is_handshaking() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the TLS handshake",
                )));
            }
        }
    }
}

impl<T: Transport> Transport for TlsStream<T> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        self.poll_plaintext(cx, |reader| {
            let start = buf.len();
            // Zeroed before the read (rustls reads into initialised
            // memory), so bounded like the smol adapter's reads.
            let room = (buf.capacity() - start).clamp(1, MAX_READ);
            buf.resize(start + room, 0);
            let result = reader.read(&mut buf[start..]);
            buf.truncate(start + *result.as_ref().unwrap_or(&0));
            result
        })
    }

    fn poll_read_slice(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.poll_plaintext(cx, |reader| reader.read(buf))
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Nothing is accepted while earlier records wait for the socket:
        // that bounds what rustls buffers to one write's worth.
        ready!(self.poll_handshake(cx))?;
        ready!(self.poll_write_tls(cx))?;
        let n = self.tls.writer().write_vectored(bufs)?;
        if let Poll::Ready(Err(e)) = self.poll_write_tls(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_tls(cx))?;
        self.io.poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.close_notify_sent {
            self.tls.send_close_notify();
            self.close_notify_sent = true;
        }
        ready!(self.poll_write_tls(cx))?;
        self.io.poll_shutdown(cx)
    }
}

/// Client: connects to a `wss://` URL: TCP, TLS (the URL's host sent as
/// SNI and checked against the server's certificate), then the WebSocket
/// handshake, all within the configured handshake timeout. A refused
/// certificate is [`WsError::Tls`].
pub async fn connect_tls<R: Runtime>(
    rt: R,
    url: &str,
    tls: Arc<ClientConfig>,
    config: WsConfig,
) -> Result<(WebSocket<TlsStream<R::Stream>, R>, ServerResponse), WsError> {
    let url = WsUrl::parse(url)?;
    if !url.secure {
        return Err(UrlError::NotTls(format!("ws://{}", url.authority())).into());
    }
    let name = url_server_name(&url)?;
    connect_over(rt, &url, config, |tcp| client_tls_handshake(tcp, tls, name))
        .await
        .map_err(refusal_after_handshake)
}

/// A TLS refusal the client only learns after its side of the handshake
/// (TLS 1.3: a server that wants a client certificate says so with an
/// alert on the first read) as [`WsError::Tls`] too.
fn refusal_after_handshake(e: WsError) -> WsError {
    match e {
        WsError::Io(io) => handshake_error(io),
        e => e,
    }
}

/// A plain or a TLS transport: one type for code that serves or dials both
/// `ws://` and `wss://` (the TLS state is boxed, so a plain connection
/// does not carry its size).
#[derive(Debug)]
pub enum MaybeTls<T> {
    /// Plain TCP.
    Plain(T),
    /// TLS over TCP.
    Tls(Box<TlsStream<T>>),
}

macro_rules! either {
    ($self:ident, $io:ident => $e:expr) => {
        match $self {
            MaybeTls::Plain($io) => $e,
            MaybeTls::Tls($io) => $e,
        }
    };
}

impl<T: Transport> Transport for MaybeTls<T> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        either!(self, io => io.poll_read_into(cx, buf))
    }

    fn poll_read_slice(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        either!(self, io => io.poll_read_slice(cx, buf))
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        either!(self, io => io.poll_write(cx, buf))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, io => io.poll_shutdown(cx))
    }
}

/// Client: connects to a `ws://` URL over plain TCP or to a `wss://` URL
/// over TLS with `tls` (see [`client_config`]); without `tls` a `wss://`
/// URL is refused.
pub async fn connect_url<R: Runtime>(
    rt: R,
    url: &str,
    tls: Option<Arc<ClientConfig>>,
    config: WsConfig,
) -> Result<(WebSocket<MaybeTls<R::Stream>, R>, ServerResponse), WsError> {
    let url = WsUrl::parse(url)?;
    if !url.secure {
        return connect_over(rt, &url, config, |tcp| async { Ok(MaybeTls::Plain(tcp)) }).await;
    }
    let Some(tls) = tls else {
        return Err(UrlError::Tls(format!("wss://{}", url.authority())).into());
    };
    let name = url_server_name(&url)?;
    connect_over(rt, &url, config, |tcp| async {
        Ok(MaybeTls::Tls(Box::new(
            client_tls_handshake(tcp, tls, name).await?,
        )))
    })
    .await
    .map_err(refusal_after_handshake)
}

/// Client: the TLS handshake over an open transport.
pub async fn client_tls_handshake<T: Transport>(
    io: T,
    tls: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<TlsStream<T>, WsError> {
    let mut io = TlsStream::client(io, tls, name).map_err(WsError::Tls)?;
    io.handshake().await.map_err(handshake_error)?;
    Ok(io)
}

/// Server: the TLS handshake, then the WebSocket handshake with `decide`,
/// which also sees the user of a verified client certificate
/// ([`TlsStream::peer_user`]). One handshake timeout (from `config`)
/// covers both. A client that fails TLS (no certificate where one is
/// required, plain HTTP, garbage) is [`WsError::Tls`].
pub async fn accept_tls_with<T, R, F>(
    rt: R,
    io: T,
    tls: Arc<ServerConfig>,
    config: WsConfig,
    decide: F,
) -> Result<WebSocket<TlsStream<T>, R>, WsError>
where
    T: Transport,
    R: Runtime,
    F: FnOnce(&Request, Option<&str>) -> Decision,
{
    let (io, config) = server_tls_handshake(&rt, io, tls, &config).await?;
    let user = io.peer_user();
    accept_with(rt, io, config, |request| decide(request, user.as_deref())).await
}

/// Server: the TLS handshake on an accepted `io`, within the handshake
/// timeout of `config`. Returns the stream, and `config` with its
/// handshake timeout cut to what is left for the WebSocket handshake, so
/// that one timeout covers both. A client that fails TLS (plain HTTP,
/// garbage, no certificate where one is required) is [`WsError::Tls`].
pub async fn server_tls_handshake<T: Transport, R: Runtime>(
    rt: &R,
    io: T,
    tls: Arc<ServerConfig>,
    config: &WsConfig,
) -> Result<(TlsStream<T>, WsConfig), WsError> {
    let timeout = config.proto.handshake_timeout;
    let started = rt.now();
    let stream = within(rt, timeout, async {
        let mut stream = TlsStream::server(io, tls).map_err(WsError::Tls)?;
        stream.handshake().await.map_err(handshake_error)?;
        Ok(stream)
    })
    .await?;
    let mut config = config.clone();
    if let Some(t) = timeout {
        let spent = rt.now().saturating_duration_since(started);
        // At least a millisecond: a zero timeout would mean "none".
        config.proto.handshake_timeout =
            Some(t.saturating_sub(spent).max(Duration::from_millis(1)));
    }
    Ok((stream, config))
}

/// Server: accepts any valid upgrade request over TLS.
pub async fn accept_tls<T: Transport, R: Runtime>(
    rt: R,
    io: T,
    tls: Arc<ServerConfig>,
    config: WsConfig,
) -> Result<WebSocket<TlsStream<T>, R>, WsError> {
    accept_tls_with(rt, io, tls, config, |_, _| {
        Decision::Accept(AcceptOptions::default())
    })
    .await
}

/// A failed TLS handshake as [`WsError::Tls`] when rustls refused the
/// peer, else as [`WsError::Io`].
fn handshake_error(e: io::Error) -> WsError {
    match tls_error(&e) {
        Some(tls) => WsError::Tls(tls.clone()),
        None => WsError::Io(e),
    }
}

/// The TLS server name of a URL's host.
fn url_server_name(url: &WsUrl) -> Result<ServerName<'static>, WsError> {
    server_name(&url.host).map_err(|_| UrlError::ServerName(url.host.clone()).into())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Waker;

    use futures_lite::future;

    use super::*;
    use crate::certgen::{CertAuthority, IssuedCert, Validity};

    /// One direction of an in-memory connection.
    #[derive(Default)]
    struct Pipe {
        bytes: VecDeque<u8>,
        closed: bool,
        reader: Option<Waker>,
    }

    /// One end of an in-memory duplex connection.
    struct End {
        rx: Arc<Mutex<Pipe>>,
        tx: Arc<Mutex<Pipe>>,
    }

    fn duplex() -> (End, End) {
        let (a, b) = (Arc::default(), Arc::default());
        (
            End {
                rx: Arc::clone(&a),
                tx: Arc::clone(&b),
            },
            End { rx: b, tx: a },
        )
    }

    impl Transport for End {
        fn poll_read_into(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut BytesMut,
        ) -> Poll<io::Result<usize>> {
            let mut scratch = [0u8; 4096];
            let polled = self.poll_read_slice(cx, &mut scratch);
            if let Poll::Ready(Ok(n)) = polled {
                buf.extend_from_slice(&scratch[..n]);
            }
            polled
        }

        fn poll_read_slice(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let mut pipe = self.rx.lock().unwrap();
            if pipe.bytes.is_empty() {
                if pipe.closed {
                    return Poll::Ready(Ok(0));
                }
                pipe.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = buf.len().min(pipe.bytes.len());
            for (slot, byte) in buf.iter_mut().zip(pipe.bytes.drain(..n)) {
                *slot = byte;
            }
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            &mut self,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut pipe = self.tx.lock().unwrap();
            let mut n = 0;
            for b in bufs {
                pipe.bytes.extend(b.iter());
                n += b.len();
            }
            if let Some(w) = pipe.reader.take() {
                w.wake();
            }
            Poll::Ready(Ok(n))
        }

        fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let mut pipe = self.tx.lock().unwrap();
            pipe.closed = true;
            if let Some(w) = pipe.reader.take() {
                w.wake();
            }
            Poll::Ready(Ok(()))
        }
    }

    /// PEM files in a fresh directory, removed on drop.
    struct Files(PathBuf);

    impl Files {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "ws-tls-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }

        fn server(&self, cert: &IssuedCert) -> Arc<CertResolver> {
            let c = self.write("server.pem", &cert.cert_pem);
            let k = self.write("server.key", &cert.key_pem);
            Arc::new(CertResolver::load(c, k).unwrap())
        }

        fn roots(&self, ca: &CertAuthority) -> RootCertStore {
            load_roots(&self.write("ca.pem", ca.cert_pem())).unwrap()
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn identity(
        cert: &IssuedCert,
    ) -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        Some((chain, key))
    }

    async fn write_all<T: Transport>(io: &mut T, mut data: &[u8]) {
        while !data.is_empty() {
            let n = poll_fn(|cx| io.poll_write(cx, data)).await.unwrap();
            data = &data[n..];
        }
        poll_fn(|cx| io.poll_flush(cx)).await.unwrap();
    }

    async fn read_exact<T: Transport>(io: &mut T, len: usize) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(len);
        while out.len() < len {
            out.reserve(len - out.len());
            let n = poll_fn(|cx| io.poll_read_into(cx, &mut out)).await.unwrap();
            assert!(n > 0, "early end of stream");
        }
        out.to_vec()
    }

    /// Runs both handshakes over an in-memory connection.
    fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> (io::Result<TlsStream<End>>, io::Result<TlsStream<End>>) {
        let (a, b) = duplex();
        let mut s = TlsStream::server(a, server).unwrap();
        let mut c = TlsStream::client(b, client, server_name(name).unwrap()).unwrap();
        future::block_on(future::zip(
            async {
                let r = s.handshake().await;
                // A failed side closes, as a server would, so the other
                // side sees the end instead of waiting.
                if r.is_err() {
                    let _ = poll_fn(|cx| s.poll_shutdown(cx)).await;
                }
                r.map(|()| s)
            },
            async {
                let r = c.handshake().await;
                if r.is_err() {
                    let _ = poll_fn(|cx| c.poll_shutdown(cx)).await;
                }
                r.map(|()| c)
            },
        ))
    }

    struct Setup {
        files: Files,
        ca: CertAuthority,
    }

    fn setup() -> Setup {
        Setup {
            files: Files::new(),
            ca: CertAuthority::new("test CA").unwrap(),
        }
    }

    impl Setup {
        fn server(&self, auth: ClientAuth) -> Arc<ServerConfig> {
            let cert = self.ca.issue(&["localhost"], Validity::Current).unwrap();
            server_config(self.files.server(&cert), auth).unwrap()
        }

        fn client(&self, identity_cert: Option<&IssuedCert>) -> Arc<ClientConfig> {
            client_config(self.files.roots(&self.ca), identity_cert.and_then(identity)).unwrap()
        }
    }

    fn cert_error(r: io::Result<TlsStream<End>>) -> rustls::Error {
        let e = r.expect_err("the handshake must fail");
        tls_error(&e)
            .unwrap_or_else(|| panic!("not a TLS error: {e}"))
            .clone()
    }

    #[test]
    fn data_flows_both_ways_after_the_handshake() {
        let t = setup();
        let (s, c) = handshake(t.server(ClientAuth::None), t.client(None), "localhost");
        let (mut s, mut c) = (s.unwrap(), c.unwrap());
        assert_eq!(s.connection().alpn_protocol(), Some(ALPN_HTTP11));
        assert_eq!(
            c.connection().protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        future::block_on(async {
            write_all(&mut c, b"hello").await;
            assert_eq!(read_exact(&mut s, 5).await, b"hello");
            // Larger than a TLS record and than one read.
            let (_, got) =
                future::zip(write_all(&mut s, &big), read_exact(&mut c, big.len())).await;
            assert_eq!(got, big);
            // close_notify, then end of stream.
            poll_fn(|cx| c.poll_shutdown(cx)).await.unwrap();
            let mut buf = [0u8; 16];
            let n = poll_fn(|cx| s.poll_read_slice(cx, &mut buf)).await.unwrap();
            assert_eq!(n, 0);
        });
    }

    #[test]
    fn tls12_is_offered_too() {
        let t = setup();
        let roots = t.files.roots(&t.ca);
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (s, c) = handshake(t.server(ClientAuth::None), Arc::new(client), "localhost");
        assert_eq!(
            s.unwrap().connection().protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        assert!(c.is_ok());
    }

    #[test]
    fn an_untrusted_certificate_is_refused() {
        let t = setup();
        let other = CertAuthority::new("another CA").unwrap();
        let client = client_config(t.files.roots(&other), None).unwrap();
        let (_, c) = handshake(t.server(ClientAuth::None), client, "localhost");
        let e = cert_error(c);
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{e}"
        );
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let t = setup();
        let cert = t.ca.issue(&["localhost"], Validity::Expired).unwrap();
        let server = server_config(t.files.server(&cert), ClientAuth::None).unwrap();
        let (_, c) = handshake(server, t.client(None), "localhost");
        let e = cert_error(c);
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                        | rustls::CertificateError::ExpiredContext { .. }
                )
            ),
            "{e}"
        );
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[test]
    fn a_certificate_for_another_host_is_refused() {
        let t = setup();
        let (_, c) = handshake(t.server(ClientAuth::None), t.client(None), "example.com");
        let e = cert_error(c);
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{e}"
        );
    }

    #[test]
    fn a_required_client_certificate_must_be_presented() {
        let t = setup();
        let roots = Arc::new(t.files.roots(&t.ca));
        let server = t.server(ClientAuth::Required(roots));
        let (s, _) = handshake(server.clone(), t.client(None), "localhost");
        let e = cert_error(s);
        assert!(matches!(e, rustls::Error::NoCertificatesPresented), "{e}");

        let alice = t.ca.issue(&["alice"], Validity::Current).unwrap();
        let (s, c) = handshake(server, t.client(Some(&alice)), "localhost");
        assert!(c.is_ok());
        assert_eq!(s.unwrap().peer_user().as_deref(), Some("alice"));
    }

    #[test]
    fn a_client_certificate_from_another_ca_is_refused() {
        let t = setup();
        let roots = Arc::new(t.files.roots(&t.ca));
        let other = CertAuthority::new("another CA").unwrap();
        let mallory = other.issue(&["mallory"], Validity::Current).unwrap();
        let (s, _) = handshake(
            t.server(ClientAuth::Optional(roots)),
            t.client(Some(&mallory)),
            "localhost",
        );
        let e = cert_error(s);
        assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e}");
    }

    #[test]
    fn an_optional_client_certificate_names_the_user_when_given() {
        let t = setup();
        let roots = Arc::new(t.files.roots(&t.ca));
        let server = t.server(ClientAuth::Optional(roots));
        let (s, _) = handshake(server.clone(), t.client(None), "localhost");
        assert_eq!(s.unwrap().peer_user(), None);

        let bob = t.ca.issue(&["bob.example"], Validity::Current).unwrap();
        let (s, c) = handshake(server, t.client(Some(&bob)), "localhost");
        assert_eq!(s.unwrap().peer_user().as_deref(), Some("bob.example"));
        assert_eq!(c.unwrap().peer_user(), None, "the client side names nobody");
    }

    #[test]
    fn reload_swaps_the_certificate_and_keeps_it_on_a_bad_file() {
        let t = setup();
        let first = t.ca.issue(&["localhost"], Validity::Current).unwrap();
        let resolver = t.files.server(&first);
        let server = server_config(resolver.clone(), ClientAuth::None).unwrap();
        let leaf = |c: &TlsStream<End>| c.connection().peer_certificates().unwrap()[0].clone();

        let (_, c) = handshake(server.clone(), t.client(None), "localhost");
        let before = leaf(&c.unwrap());

        let second = t.ca.issue(&["localhost"], Validity::Current).unwrap();
        t.files.write("server.pem", &second.cert_pem);
        t.files.write("server.key", &second.key_pem);
        resolver.reload().unwrap();
        let (_, c) = handshake(server.clone(), t.client(None), "localhost");
        let after = leaf(&c.unwrap());
        assert_ne!(before, after);

        // A key that does not fit, then garbage: refused, old cert kept.
        t.files.write("server.key", &first.key_pem);
        assert!(matches!(resolver.reload(), Err(TlsError::Key { .. })));
        t.files.write("server.pem", "not a certificate");
        assert!(matches!(resolver.reload(), Err(TlsError::NoCertificate(_))));
        let (_, c) = handshake(server, t.client(None), "localhost");
        assert_eq!(leaf(&c.unwrap()), after);
    }

    #[test]
    fn plain_http_on_a_tls_port_is_an_error_not_a_hang() {
        let t = setup();
        let (a, mut b) = duplex();
        let mut s = TlsStream::server(a, t.server(ClientAuth::None)).unwrap();
        future::block_on(async {
            write_all(&mut b, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let e = s.handshake().await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(tls_error(&e).is_some(), "{e}");
        });
    }

    #[test]
    fn loading_reports_the_file_and_the_problem() {
        let files = Files::new();
        let cert = crate::certgen::self_signed(&["localhost"]).unwrap();
        let c = files.write("c.pem", &cert.cert_pem);
        let k = files.write("k.pem", &cert.key_pem);
        assert!(CertResolver::load(&c, &k).is_ok());
        let e = CertResolver::load(&k, &k).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate(_)), "{e}");
        assert!(e.to_string().contains("k.pem"), "{e}");
        let e = CertResolver::load(&c, &c).unwrap_err();
        assert!(matches!(e, TlsError::NoKey(_)), "{e}");
        let e = CertResolver::load(files.0.join("missing.pem"), &k).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        let bad = files.write(
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        );
        assert!(matches!(load_certs(&bad), Err(TlsError::Pem { .. })));
    }

    #[test]
    fn server_names_take_hosts_and_addresses() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("bad host").is_err());
    }
}
