//! What every handler shares.

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::socket::sessions::Sessions;
use crate::store::Store;
use crate::streams::StreamCatalog;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tollstream_chain::{Chain, ChainError};
use tollstream_protocol::{Amount, ChannelDomain, ServerInfo, SigningKey};

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
    pub clock: ChainClock,
    /// Cancelled on shutdown; streaming tasks stop at their next wait.
    pub shutdown: CancellationToken,
    /// Every streaming task, so shutdown can wait for in-flight writes.
    pub tasks: TaskTracker,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        config: &ServeConfig,
        store: Arc<dyn Store>,
        chain: Arc<dyn Chain>,
        wallet: SigningKey,
        streams: StreamCatalog,
        shutdown: CancellationToken,
    ) -> Self {
        let domain = ChannelDomain::new(chain.chain_id(), chain.contract());
        let info = ServerInfo {
            public_key: wallet.public_key(),
            wallet_address: wallet.address(),
            chain_id: domain.chain_id,
            channel_address: domain.contract,
            window_seconds: config.window_seconds,
            window_price: config.window_price,
            min_channel_seconds: config.min_channel_seconds,
            streams: streams.infos(),
        };
        AppState(Arc::new(Inner {
            clock: ChainClock::new(chain.clone()),
            store,
            chain,
            domain,
            wallet,
            streams,
            info,
            window: config.window(),
            window_price: config.window_price,
            pay_timeout: config.pay_timeout(),
            min_channel_seconds: config.min_channel_seconds,
            settle_margin: config.settle_margin,
            settle_interval: Duration::from_secs_f64(config.settle_interval),
            metrics: Metrics::new(),
            demo: config.demo.clone(),
            sessions: Sessions::default(),
            shutdown,
            tasks: TaskTracker::new(),
        }))
    }
}

/// The chain's clock, read at most every few seconds: expiry checks run on
/// every `latestState`, `play` and `pay`, and an RPC round trip for each
/// would put the node on the hot path. Only one caller at a time refreshes
/// it; the others extrapolate the last reading meanwhile, so thousands of
/// sessions never stampede the node together.
pub struct ChainClock {
    chain: Arc<dyn Chain>,
    last: Mutex<Option<(u64, Instant)>>,
    refreshing: AtomicBool,
}

impl ChainClock {
    const REFRESH: Duration = Duration::from_secs(2);

    fn new(chain: Arc<dyn Chain>) -> Self {
        ChainClock { chain, last: Mutex::new(None), refreshing: AtomicBool::new(false) }
    }

    /// The chain's current time in unix seconds: the last reading plus the
    /// time since, refreshed when older than two seconds.
    ///
    /// # Errors
    /// When the chain cannot be read and there is no earlier reading.
    pub async fn now(&self) -> Result<u64, ChainError> {
        let cached = *self.last.lock().expect("clock lock");
        let extrapolated = cached.map(|(chain_time, at)| chain_time + at.elapsed().as_secs());
        if let Some((_, at)) = cached
            && at.elapsed() < Self::REFRESH
            && let Some(now) = extrapolated
        {
            return Ok(now);
        }
        // Someone else is reading the chain right now: use the estimate.
        if let Some(now) = extrapolated
            && self.refreshing.swap(true, Ordering::AcqRel)
        {
            return Ok(now);
        }
        let result = self.chain.now().await;
        self.refreshing.store(false, Ordering::Release);
        match result {
            Ok(chain_time) => {
                *self.last.lock().expect("clock lock") = Some((chain_time, Instant::now()));
                Ok(chain_time)
            }
            // A stale reading advanced by local time beats failing.
            Err(error) => extrapolated.ok_or(error),
        }
    }
}
