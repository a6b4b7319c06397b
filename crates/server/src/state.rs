//! What every handler shares.

use crate::cluster::Cluster;
use crate::config::ServeConfig;
use crate::confirmations::Opens;
use crate::listener::{AcceptLimits, AddressSlots, OpenConnections};
use crate::metrics::Metrics;
use crate::socket::limits::RequestLimits;
use crate::socket::sessions::Sessions;
use crate::store::Store;
use crate::streams::StreamCatalog;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollstream_chain::{Chain, ChainError, Policy, TokenInfo, TxManager};
use tollstream_protocol::{
    Amount, ChannelDomain, NATIVE_DECIMALS, NATIVE_SYMBOL, NATIVE_TOKEN, ServerInfo, SigningKey, TokenDomain,
};

/// The server's shared state: one `Arc` to clone into every handler.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub chain: Arc<dyn Chain>,
    /// The EIP-712 domain of the server's contract, separator precomputed.
    pub domain: ChannelDomain,
    /// The payee wallet.
    pub wallet: SigningKey,
    pub streams: StreamCatalog,
    /// `--segment-base-url`: where served playlists point their segments.
    pub segment_base_url: Option<String>,
    /// The `publicKey` reply, built once.
    pub info: ServerInfo,
    pub window: Duration,
    pub window_price: Amount,
    pub pay_timeout: Duration,
    pub min_channel_seconds: u64,
    pub settle_margin: u64,
    pub settle_interval: Duration,
    pub metrics: Metrics,
    /// What `/demo.json` serves, in demo mode only.
    pub demo: Option<serde_json::Value>,
    /// Which client streams on which connection.
    pub sessions: Sessions,
    /// The chain's time, refreshed by the chain watcher.
    pub clock: Arc<ChainClock>,
    /// Where each unconfirmed channel's `open` stands.
    pub opens: Arc<Opens>,
    /// `--unconfirmed-windows`: windows sold before an open is confirmed.
    pub unconfirmed_windows: u64,
    /// The other processes sharing this server's database, if any.
    pub cluster: Cluster,
    /// `--log-range-blocks`: the widest `eth_getLogs` range.
    pub log_range_blocks: u64,
    /// `--close-batch-size`: the most channels one close transaction settles.
    pub close_batch_size: usize,
    /// Cancelled on shutdown; streaming tasks stop at their next wait.
    pub shutdown: CancellationToken,
    /// Every streaming task, so shutdown can wait for in-flight writes.
    pub tasks: TaskTracker,
    /// Each connection's request allowance and the bound on chain lookups.
    pub limits: RequestLimits,
    /// `--max-connections-per-address`, `--new-connections-per-second`.
    pub accept_limits: AcceptLimits,
    /// Socket.IO sessions per client address, under the same cap as TCP
    /// connections: one keep-alive connection can carry any number of
    /// long-polling sessions.
    pub sessions_per_address: Arc<AddressSlots>,
    /// Every open connection, to close one that floods.
    pub open_connections: Arc<OpenConnections>,
    /// `--tls-cert`/`--tls-key`, read at start; `None` serves plain http.
    pub tls: Option<TlsAcceptor>,
    /// The payee wallet's transaction manager, shared by settlement and
    /// gasless opens so they never hand out the same nonce.
    pub tx_manager: Arc<TxManager>,
    /// Gasless opens (`openChannel`) being sent and waited for.
    pub gasless: crate::socket::open_channel::GaslessOpens,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    // Each argument is a resource opened separately by `build_state`, its
    // only caller; a struct of them would only rename the list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &ServeConfig,
        store: Arc<dyn Store>,
        chain: Arc<dyn Chain>,
        wallet: SigningKey,
        streams: StreamCatalog,
        cluster: Cluster,
        shutdown: CancellationToken,
        tls: Option<TlsAcceptor>,
        token: Option<TokenInfo>,
    ) -> Result<Self, ChainError> {
        let domain = ChannelDomain::new(chain.chain_id(), chain.contract());
        // Only a fleet needs its processes told apart; a lone server's
        // metrics keep their plain names.
        let metrics = match (&config.process_name, cluster.is_fleet()) {
            (Some(name), _) => Metrics::for_process(name),
            (None, true) => Metrics::for_process(&cluster.id),
            (None, false) => Metrics::new(),
        };
        let info = ServerInfo {
            public_key: wallet.public_key(),
            wallet_address: wallet.address(),
            chain_id: domain.chain_id,
            channel_address: domain.contract,
            window_seconds: config.window_seconds,
            window_price: config.window_price,
            min_channel_seconds: config.min_channel_seconds,
            streams: streams.infos(),
            confirmations: config.confirmations,
            unconfirmed_windows: config.unconfirmed_windows,
            settle_margin_seconds: Some(config.settle_margin),
            pay_timeout_seconds: Some(config.pay_timeout),
            token: token.as_ref().map_or(NATIVE_TOKEN, |t| t.address),
            token_symbol: token.as_ref().map_or_else(|| NATIVE_SYMBOL.to_owned(), |t| t.symbol.clone()),
            token_decimals: token.as_ref().map_or(NATIVE_DECIMALS, |t| t.decimals),
            gasless_open: gasless_domain(token.as_ref(), config).is_some(),
            token_domain: gasless_domain(token.as_ref(), config),
        };
        let tx_policy = Policy {
            confirmations: config.confirmations,
            resubmit_blocks: config.resubmit_blocks,
            max_fee_per_gas: u128::try_from(config.max_fee_per_gas.0).unwrap_or(u128::MAX),
        };
        let tx_manager = Arc::new(TxManager::new(chain.clone(), tx_policy)?);
        let open_connections = OpenConnections::new();
        Ok(AppState(Arc::new(Inner {
            clock: Arc::new(ChainClock::new()),
            opens: Arc::new(Opens::new(config.confirmations, config.log_range_blocks)),
            unconfirmed_windows: config.unconfirmed_windows,
            log_range_blocks: config.log_range_blocks,
            close_batch_size: usize::try_from(config.close_batch_size).unwrap_or(usize::MAX),
            cluster,
            store,
            chain,
            domain,
            wallet,
            streams,
            segment_base_url: config.segment_base_url.clone(),
            info,
            window: config.window(),
            window_price: config.window_price,
            pay_timeout: config.pay_timeout(),
            min_channel_seconds: config.min_channel_seconds,
            settle_margin: config.settle_margin,
            settle_interval: Duration::from_secs_f64(config.settle_interval),
            metrics: metrics.clone(),
            demo: config.demo.clone(),
            sessions: Sessions::default(),
            shutdown,
            tasks: TaskTracker::new(),
            limits: RequestLimits::new(&config.request_limits(), open_connections.clone(), metrics.clone()),
            accept_limits: config.accept_limits(),
            open_connections,
            sessions_per_address: AddressSlots::new(config.accept_limits().per_address, metrics.sessions_open.clone()),
            tls,
            tx_manager,
            gasless: crate::socket::open_channel::GaslessOpens::new(config.gasless_opens),
        })))
    }
}

/// The token domain a gasless server publishes: offered only for a token
/// that takes EIP-3009 authorizations and names its EIP-712 domain, and
/// not turned off with `--no-gasless-open`.
fn gasless_domain(token: Option<&TokenInfo>, config: &ServeConfig) -> Option<TokenDomain> {
    let token = token.filter(|t| t.authorization && !config.no_gasless_open)?;
    let (name, version) = token.domain.clone()?;
    Some(TokenDomain { name, version })
}

/// The chain's clock: the latest block's timestamp as last read by the
/// chain watcher, advanced by local time since. Expiry checks run on every
/// `latestState`, `play` and `pay`; reading the clock never waits for the
/// node, so a slow or hung RPC endpoint never stalls a payment.
#[derive(Default)]
pub struct ChainClock {
    last: Mutex<Option<(u64, Instant)>>,
}

impl ChainClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a reading of the chain's time (unix seconds).
    pub fn set(&self, chain_time: u64) {
        *self.last.lock().expect("clock lock") = Some((chain_time, Instant::now()));
    }

    /// The last reading itself (the latest block's timestamp, unix
    /// seconds): it changes only when the chain has a new block.
    pub fn last_reading(&self) -> Option<u64> {
        self.last.lock().expect("clock lock").map(|(chain_time, _)| chain_time)
    }

    /// The chain's current time in unix seconds: the last reading plus the
    /// local time since.
    ///
    /// # Errors
    /// `Unavailable` before the first reading.
    pub fn now(&self) -> Result<u64, ChainError> {
        let last = *self.last.lock().expect("clock lock");
        last.map(|(chain_time, at)| chain_time.saturating_add(at.elapsed().as_secs()))
            .ok_or_else(|| ChainError::Unavailable("the chain's time has not been read yet".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_extrapolates_the_last_reading_without_asking_the_chain() {
        let clock = ChainClock::new();
        assert!(clock.now().is_err(), "no reading yet");
        clock.set(1_000);
        assert_eq!(clock.now().unwrap(), 1_000);
        tokio::time::advance(Duration::from_secs(42)).await;
        assert_eq!(clock.now().unwrap(), 1_042);
        // A new reading replaces the estimate, even one behind it.
        clock.set(1_030);
        assert_eq!(clock.now().unwrap(), 1_030);
    }
}
