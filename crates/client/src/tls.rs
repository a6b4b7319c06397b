//! What a client trusts when it speaks https/wss to a Tollstream server.
//!
//! One [`Tls`] serves every connection of a viewer: the Socket.IO
//! WebSocket ([`crate::socketio`]) and the HTTP fetches of playlists and
//! segments ([`crate::player`]). It trusts the system's root certificates,
//! plus the certificates of a private CA when one is given (`--ca-cert`),
//! through rustls on the ring provider (the configuration itself is
//! [`tollstream_chain::rpc::tls_config`], shared with the chain's RPC
//! client). Plain `http://` and `ws://` URLs use no TLS at all.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Why a CA certificate file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA certificate file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} holds no PEM certificate: a CA certificate file has one or more \
         \"-----BEGIN CERTIFICATE-----\" blocks",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error("{} is not a usable CA certificate file: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
}

/// The TLS settings of a client's connections; cheap to clone.
#[derive(Clone, Debug)]
pub struct Tls {
    /// Shared by every connection: rustls resumes sessions through it.
    config: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// Trusts the system's root certificates only: right for servers with a
    /// certificate from a public CA. Built once per process.
    pub fn system() -> &'static Tls {
        static SYSTEM: OnceLock<Tls> = OnceLock::new();
        SYSTEM.get_or_init(|| Tls { config: Arc::new(tollstream_chain::rpc::tls_config(Vec::new())) })
    }

    /// Trusts the system's roots and, when `ca_cert` is given, the PEM
    /// certificates in that file (a private CA's, or a self-signed
    /// server's own certificate).
    ///
    /// # Errors
    /// When the file cannot be read, holds no PEM certificate, or one of its
    /// certificates is malformed.
    pub fn new(ca_cert: Option<&Path>) -> Result<Tls, TlsError> {
        match ca_cert {
            None => Ok(Tls::system().clone()),
            Some(path) => {
                let roots = read_certificates(path)?;
                Ok(Tls { config: Arc::new(tollstream_chain::rpc::tls_config(roots)) })
            }
        }
    }

    /// The rustls configuration, for a connector of one's own.
    pub fn rustls(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// A reqwest client builder that trusts what this `Tls` trusts.
    pub fn http_client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder().use_preconfigured_tls((*self.config).clone())
    }
}

/// Every certificate of a PEM file, each checked to be one rustls can
/// trust as a root.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::BadCertificate { path: path.to_owned(), reason };
    let pem = std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    let mut roots = rustls::RootCertStore::empty();
    for (index, certificate) in certificates.iter().enumerate() {
        roots.add(certificate.clone()).map_err(|e| bad(format!("certificate {}: {e}", index + 1)))?;
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_and_a_file_without_a_certificate_say_so() {
        let missing = Tls::new(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read the CA certificate file /nonexistent/ca.pem: "),
            "{missing}"
        );

        let dir = tempfile::tempdir().unwrap();
        let key_only = dir.path().join("key.pem");
        std::fs::write(&key_only, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n")
            .unwrap();
        let error = Tls::new(Some(&key_only)).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        assert!(error.to_string().contains("holds no PEM certificate"), "{error}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let error = Tls::new(Some(&garbage)).unwrap_err();
        assert!(matches!(error, TlsError::BadCertificate { .. }), "{error}");
    }
}
