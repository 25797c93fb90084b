//! TLS fixtures: a throw-away CA with server and client certificates
//! written to PEM files, TLS settings made from them, and an echo server
//! over TLS on either runtime.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ws_async::certgen::{CertAuthority, IssuedCert, Validity};
use ws_async::tls;
use ws_async::tls::rustls::pki_types::pem::PemObject;
use ws_async::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use ws_async::tls::rustls::{ClientConfig, ClientConnection, StreamOwned};
use ws_server::server::tls::{ClientCertMode, ServerTls, TlsSettings};

/// A CA and a directory of PEM files, removed on drop.
pub struct Pki {
    /// The directory.
    pub dir: PathBuf,
    /// The CA that issues everything here.
    pub ca: CertAuthority,
}

impl Pki {
    /// A new CA and an empty directory.
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("ws-tests-tls-{id}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // A name of its own: a certificate from another CA of the same name
        // would fail on its signature instead of its issuer.
        let ca = CertAuthority::new(&format!("ws-tests CA {id}")).expect("CA");
        let pki = Self { dir, ca };
        pki.write("ca.pem", pki.ca.cert_pem());
        pki
    }

    /// Writes `contents` to `name` in the directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).expect("write PEM");
        path
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for `names` and writes it as `<stem>.pem` and
    /// `<stem>.key`; returns both paths.
    pub fn issue(&self, stem: &str, names: &[&str], validity: Validity) -> (PathBuf, PathBuf) {
        let cert = self.ca.issue(names, validity).expect("issue");
        self.write_pair(stem, &cert)
    }

    /// Writes an issued certificate as `<stem>.pem` and `<stem>.key`.
    pub fn write_pair(&self, stem: &str, cert: &IssuedCert) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{stem}.pem"), &cert.cert_pem),
            self.write(&format!("{stem}.key"), &cert.key_pem),
        )
    }

    /// A server's TLS with a certificate for `localhost` and 127.0.0.1;
    /// with `client_cert`, client certificates from this CA are verified.
    pub fn server(&self, client_cert: Option<ClientCertMode>) -> Arc<ServerTls> {
        let (cert, key) = self.issue("server", &["localhost", "127.0.0.1"], Validity::Current);
        server_tls(cert, key, client_cert.map(|mode| (self.ca_file(), mode)))
    }

    /// Client settings trusting this CA, presenting `identity` if given.
    pub fn client(&self, identity: Option<&IssuedCert>) -> Arc<ClientConfig> {
        let roots = tls::load_roots(&self.ca_file()).expect("roots");
        let identity = identity.map(|c| {
            let chain = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("key");
            (chain, key)
        });
        tls::client_config(roots, identity).expect("client config")
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server's TLS from PEM files, verifying client certificates against
/// `client_ca` when given.
pub fn server_tls(
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<(PathBuf, ClientCertMode)>,
) -> Arc<ServerTls> {
    let (client_ca, mode) = match client_ca {
        Some((ca, mode)) => (Some(ca), mode),
        None => (None, ClientCertMode::Required),
    };
    let settings = TlsSettings::from_parts(Some(cert), Some(key), client_ca, mode)
        .expect("settings")
        .expect("TLS");
    ServerTls::load(&settings).expect("server TLS")
}

/// A blocking TLS connection to `addr` (verified as `localhost`) with the
/// handshake done.
pub fn tls_connect(
    addr: SocketAddr,
    client: Arc<ClientConfig>,
) -> std::io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(crate::hub_client::WAIT))?;
    let name = tls::server_name("localhost").expect("name");
    let mut conn = ClientConnection::new(client, name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// The certificate the server at `addr` presents now.
pub fn peer_leaf(addr: SocketAddr, client: Arc<ClientConfig>) -> CertificateDer<'static> {
    let stream = tls_connect(addr, client).expect("TLS handshake");
    stream.conn.peer_certificates().expect("certificates")[0].clone()
}

/// `GET path` over TLS.
pub fn https_get(
    addr: SocketAddr,
    client: Arc<ClientConfig>,
    path: &str,
) -> crate::hub_client::HttpReply {
    let mut stream = tls_connect(addr, client).expect("TLS handshake");
    crate::hub_client::http_over(
        &mut stream,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

/// `/metrics` over TLS, as name → value.
pub fn https_metrics(addr: SocketAddr, client: Arc<ClientConfig>) -> HashMap<String, u64> {
    crate::hub_client::parse_metrics(&https_get(addr, client, "/metrics"))
}

/// The SPKI pin of the key in the PEM file `key`: the base64 of the
/// SHA-256 of its SubjectPublicKeyInfo, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
pub fn spki_pin(key: &Path) -> String {
    use base64::Engine as _;
    use rcgen::PublicKeyData as _;
    use sha2::Digest as _;
    let pem = std::fs::read_to_string(key).expect("key file");
    let pair = rcgen::KeyPair::from_pem(&pem).expect("key");
    let digest = sha2::Sha256::digest(pair.subject_public_key_info());
    base64::engine::general_purpose::STANDARD.encode(digest)
}
