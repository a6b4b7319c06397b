//! How the chain is reached: one or more JSON-RPC endpoints of the same
//! chain, every call bounded by a timeout.
//!
//! Failover is alloy's `FallbackLayer`: each call goes to the best-ranked
//! endpoints at once and the first answer wins, so an endpoint that
//! refuses connections or hangs changes nothing while another answers.
//! The timeout is reqwest's, per call, so a hung endpoint fails a call
//! instead of stalling whoever made it.

use crate::error::ChainError;
use alloy::rpc::client::RpcClient;
use alloy::transports::http::Http;
use alloy::transports::layers::FallbackLayer;
use std::num::NonZeroUsize;
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
        let http = reqwest::Client::builder()
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
