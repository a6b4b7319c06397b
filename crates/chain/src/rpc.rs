//! How the chain is reached: one or more JSON-RPC endpoints of the same
//! chain, every call bounded by a timeout.
//!
//! Failover is alloy's `FallbackLayer`: each call goes to the best-ranked
//! endpoints at once and the first answer wins, so an endpoint that
//! refuses connections or hangs changes nothing while another answers.
//! The timeout is reqwest's, per call, so a hung endpoint fails a call
//! instead of stalling whoever made it.
//!
//! Endpoints may be `https://`, as public ones are: every HTTP client of
//! the chain speaks TLS through rustls on the ring provider, trusting the
//! system's root certificates ([`tls_config`]).

use crate::error::ChainError;
use alloy::rpc::client::RpcClient;
use alloy::transports::http::Http;
use alloy::transports::layers::FallbackLayer;
use rustls::pki_types::CertificateDer;
use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tower::ServiceBuilder;

/// Endpoints and limits of the JSON-RPC connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcOptions {
    /// Endpoints of one chain, most preferred first; never empty.
    pub urls: Vec<String>,
    /// The longest one call may take.
    pub timeout: Duration,
}

impl RpcOptions {
    /// The default timeout is five seconds.
    pub fn new(urls: Vec<String>) -> Self {
        RpcOptions { urls, timeout: Duration::from_secs(5) }
    }

    /// Builds the client.
    ///
    /// # Errors
    /// `Other` when there is no endpoint or one is not a URL.
    pub fn client(&self) -> Result<RpcClient, ChainError> {
        let http = http_client_builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .build()
            .map_err(|e| ChainError::Other(format!("cannot build the HTTP client: {e}")))?;
        let transports = self
            .urls
            .iter()
            .map(|url| {
                let parsed = url.parse().map_err(|e| ChainError::Other(format!("invalid RPC URL {url:?}: {e}")))?;
                Ok(Http::with_client(http.clone(), parsed))
            })
            .collect::<Result<Vec<_>, ChainError>>()?;
        let is_local = self.urls.iter().all(|url| url.contains("://127.0.0.1") || url.contains("://localhost"));
        match transports.len() {
            0 => Err(ChainError::Other("no RPC endpoint given".into())),
            1 => Ok(RpcClient::new(transports.into_iter().next().expect("one transport"), is_local)),
            count => {
                let fallback = FallbackLayer::default()
                    .with_active_transport_count(NonZeroUsize::new(count).expect("several transports"));
                Ok(RpcClient::builder().transport(ServiceBuilder::new().layer(fallback).service(transports), is_local))
            }
        }
    }
}

/// A rustls client configuration on the ring provider that trusts the
/// system's root certificates (rustls-native-certs: the OS bundle, or
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`) and `extra_roots` (the CA of a private
/// deployment), verified by webpki. This is what rustls-platform-verifier
/// does on Linux, without its logging every refused certificate at error
/// level, which a client reports once itself.
///
/// A machine without a CA bundle has no system roots: the configuration
/// then trusts `extra_roots` alone, the reason is logged, and an https
/// server signed by another CA is refused at its handshake. Every element
/// of `extra_roots` must be a valid certificate; one that is not is left
/// out (check them first, as the client's `--ca-cert` does).
pub fn tls_config(extra_roots: Vec<CertificateDer<'static>>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(extra_roots);
    let system = rustls_native_certs::load_native_certs();
    let (_, ignored) = roots.add_parsable_certificates(system.certs);
    if roots.is_empty() {
        let errors: Vec<String> = system.errors.iter().map(ToString::to_string).collect();
        tracing::warn!(?errors, ignored, "no system root certificates: https servers are trusted only by a given CA");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Makes ring the process's default rustls provider, unless one is set
/// already. Binaries call it first thing, so that a reqwest client built the
/// default way somewhere (a dependency's) speaks TLS instead of panicking;
/// library code still builds its clients with [`http_client_builder`].
pub fn install_default_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder whose https trusts the system's roots. Every
/// reqwest client must be built with a TLS configuration, since the ring
/// provider is not installed as the process's default (building one
/// without would panic).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // Loaded once: reading the system's bundle takes milliseconds.
    static SYSTEM: OnceLock<rustls::ClientConfig> = OnceLock::new();
    let config = SYSTEM.get_or_init(|| tls_config(Vec::new())).clone();
    reqwest::Client::builder().use_preconfigured_tls(config)
}
