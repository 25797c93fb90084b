//! Certificates made on the spot with `rcgen`: a throw-away certificate
//! authority and the certificates it issues, for tests and for trying the
//! TLS server without a real certificate (`gen-cert`); feature `certgen`.
//!
//! ```
//! use ws_async::certgen::{CertAuthority, Validity};
//!
//! let ca = CertAuthority::new("test CA").unwrap();
//! let server = ca.issue(&["localhost", "127.0.0.1"], Validity::Current).unwrap();
//! assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! assert!(server.key_pem.contains("PRIVATE KEY"));
//! ```

/// Why a certificate could not be made (rcgen's error).
pub use rcgen::Error;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

/// How long an issued certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From 1975 to 4096 (rcgen's default): valid now.
    Current,
    /// During the year 2000 only: expired now.
    Expired,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// A certificate authority that exists only in memory.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A new CA named `name` with a fresh ECDSA P-256 key.
    pub fn new(name: &str) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// The CA certificate, to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `names` (DNS names or IP addresses, as
    /// subject alternative names; the first is also the subject CN),
    /// usable by servers and by clients.
    pub fn issue(&self, names: &[&str], validity: Validity) -> Result<IssuedCert, Error> {
        let key = KeyPair::generate()?;
        let params = leaf_params(names, validity)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A self-signed certificate for `names` (what `gen-cert` writes).
pub fn self_signed(names: &[&str]) -> Result<IssuedCert, Error> {
    let key = KeyPair::generate()?;
    let cert = leaf_params(names, Validity::Current)?.self_signed(&key)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn leaf_params(names: &[&str], validity: Validity) -> Result<CertificateParams, Error> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if validity == Validity::Expired {
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2000, 12, 31);
    }
    Ok(params)
}
