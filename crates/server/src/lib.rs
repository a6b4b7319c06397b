//! # tollstream-server
//!
//! `tollstream serve`: sells streams by the second. Viewers pay over
//! Socket.IO with signed channel states (PROTOCOL.md); the server verifies
//! each, stores it durably, and only then releases the window's keys.
//!
//! ## Layout
//! - [`config`]: the `serve` flags.
//! - [`state`]: [`AppState`], shared by every handler, and the chain clock.
//! - [`socket`]: one handler per event; `streaming.rs` is the pay loop;
//!   `sessions.rs` keeps one streaming connection per client.
//! - [`store`]: the [`Store`](store::Store) trait and its SQLite implementation.
//! - [`streams`]: the streams on sale and their segment keys.
//! - [`settle`]: the settlement worker, which closes channels on chain
//!   through the payee's transaction manager.
//! - [`cluster`]: what several processes on one PostgreSQL agree on: one
//!   settler (an advisory lock), one streaming session per client (NOTIFY).
//! - [`confirmations`]: where each channel's `open` stands (pending,
//!   confirmed, removed by a reorg), and the chain clock's refresh.
//! - [`metrics`]: Prometheus metrics at `/metrics`.
//! - [`http`]: plain HTTP routes.
//! - [`listener`]: accepting connections: per-address caps, the rate of
//!   new connections, TLS.
//! - [`error`]: start-up failures, [`ServerError`].

pub mod cluster;
pub mod config;
pub mod confirmations;
pub mod error;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod settle;
pub mod socket;
pub mod state;
pub mod store;
pub mod streams;

pub use config::ServeConfig;
pub use error::ServerError;
pub use state::AppState;
pub use tokio_util::sync::CancellationToken;

use axum::Router;
use socketioxide::SocketIo;
use socketioxide::handler::ConnectHandler;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tollstream_chain::{Chain, EvmChain, RpcOptions};
use tollstream_media::KeyStore;
use tollstream_protocol::{MAX_MESSAGE_BYTES, SigningKey};

/// Packets queued for one connection before emits fail.
const ANSWER_BUFFER_PACKETS: usize = 256;

/// The WebSocket read buffer of each connection, in bytes. Every message
/// the protocol sends a server fits (a `pay` answer is about 600 bytes);
/// a larger one, up to the 16 KiB limit, is read in several chunks.
/// engineioxide's default, 4 KiB, was an eighth of what an idle
/// connection costs (BENCHMARKS.md, "Memory per viewer").
const WS_READ_BUFFER_BYTES: usize = 1024;

/// How long a stopping server waits for the requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The whole application: Socket.IO at `/socket.io/` and the HTTP routes.
pub fn app(state: AppState) -> Router {
    let (layer, io) = SocketIo::builder()
        // Messages over 16 KiB are refused at the transport (PROTOCOL.md).
        .max_payload(MAX_MESSAGE_BYTES as u64)
        .ws_max_message_size(MAX_MESSAGE_BYTES)
        .ws_max_frame_size(MAX_MESSAGE_BYTES)
        // Room for the answers to a whole burst: the admitted requests and
        // every refusal up to the flood limit (20 + 200 by default), which
        // a client may send before reading anything. At socketioxide's
        // default (128) the rest of the acks were dropped.
        .max_buffer_size(ANSWER_BUFFER_PACKETS)
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .with_state(state.clone())
        .build_layer();
    io.ns("/", socket::on_connect.with(socket::register_handlers));
    http::routes().with_state(state).layer(layer)
}

/// Reads the wallet key file.
///
/// # Errors
/// When the file is missing or does not hold a hex private key.
pub fn read_wallet_key(path: &std::path::Path) -> Result<SigningKey, ServerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ServerError::WalletKey { path: path.to_owned(), reason: e.to_string() })?;
    SigningKey::from_hex(&text).map_err(|reason| ServerError::WalletKey { path: path.to_owned(), reason })
}

/// Builds the state from `config`: opens the store and the chain, loads the
/// streams' master secrets.
///
/// # Errors
/// When any of them cannot be opened.
pub async fn build_state(config: &ServeConfig, shutdown: CancellationToken) -> Result<AppState, ServerError> {
    let wallet = read_wallet_key(&config.wallet_key_file)?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(listener::tls_acceptor(cert, key)?),
        _ => None,
    };
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
    let mode = if config.commit_per_payment { store::CommitMode::PerPayment } else { store::CommitMode::Group };
    let database = match &config.database_url {
        Some(url) => url.parse::<store::DatabaseUrl>()?,
        None => store::DatabaseUrl::Sqlite(config.data_dir.join("tollstream.sqlite")),
    };
    let store = database.open(mode).await?;
    let rpc = RpcOptions { urls: config.rpc_url.clone(), timeout: Duration::from_secs_f64(config.rpc_timeout) };
    let chain = EvmChain::connect_with(&rpc, Some(&wallet), config.contract).await?;
    let now = chain.now().await?;
    let token = match config.token {
        Some(address) => {
            let token = tollstream_chain::token_info(chain.provider(), address)
                .await
                .map_err(|e| ServerError::Config(format!("--token {}: {e}", address.to_checksum(None))))?;
            tracing::info!(
                token = %token.address,
                symbol = %token.symbol,
                decimals = token.decimals,
                permit = token.permit,
                authorization = token.authorization,
                "selling channels in an ERC-20 token"
            );
            Some(token)
        }
        None => None,
    };
    let keys = KeyStore::new(config.keys_dir());
    let streams = streams::StreamCatalog::load(&config.media_dir(), &config.streams, &keys, config.window_seconds)?;
    if config.window_price.is_zero() {
        return Err(ServerError::Config("--window-price must be positive".into()));
    }
    // PROTOCOL.md 1.1: a freshly accepted channel must be active.
    if config.settle_margin >= config.min_channel_seconds {
        return Err(ServerError::Config(format!(
            "--settle-margin ({} s) must be less than --min-channel-seconds ({} s)",
            config.settle_margin, config.min_channel_seconds
        )));
    }
    let cluster = match &database {
        store::DatabaseUrl::Postgres(url) => {
            cluster::Cluster::postgres(url).map_err(|e| ServerError::Store(store::StoreError::database(e)))?
        }
        store::DatabaseUrl::Sqlite(_) => cluster::Cluster::single(),
    };
    tracing::info!(database = %database, process = %cluster.id, "store opened");
    let state = AppState::new(config, store, Arc::new(chain), wallet, streams, cluster, shutdown, tls, token)?;
    state.clock.set(now);
    Ok(state)
}

/// Serves `state` on every listener until `shutdown` resolves (or one
/// listener stops), then stops accepting, stops every streaming session
/// and waits (up to ten seconds) for in-flight store writes to finish.
///
/// # Errors
/// With no listener, or when a listener's task fails.
pub async fn run(
    state: AppState,
    listeners: Vec<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if listeners.is_empty() {
        return Err(ServerError::Config("nothing to listen on".into()));
    }
    let token = state.shutdown.clone();
    let watcher = confirmations::ChainWatcher {
        chain: state.chain.clone(),
        store: state.store.clone(),
        opens: state.opens.clone(),
        clock: state.clock.clone(),
        metrics: state.metrics.clone(),
    };
    let watcher = tokio::spawn(watcher.run(token.clone()));
    let worker = tokio::spawn({
        let (state, token) = (state.clone(), token.clone());
        async move {
            state
                .cluster
                .clone()
                .run_as_settler(token, |lost| {
                    let state = state.clone();
                    async move {
                        let settlement = settle::Settlement::new(
                            state.store.clone(),
                            state.chain.clone(),
                            state.tx_manager.clone(),
                            state.opens.clone(),
                            state.metrics.clone(),
                            state.log_range_blocks,
                        )
                        .with_batch_size(state.close_batch_size);
                        settlement.run(state.settle_interval, lost).await;
                    }
                })
                .await;
        }
    });
    let follower = tokio::spawn({
        let (state, token) = (state.clone(), token.clone());
        async move { state.cluster.clone().follow_sessions(state, token).await }
    });
    let app = app(state.clone());
    let signal = tokio::spawn({
        let token = token.clone();
        async move {
            shutdown.await;
            token.cancel();
        }
    });
    let mut servers = tokio::task::JoinSet::new();
    // One count of connections per address over every listener.
    let slots = listener::AddressSlots::new(state.accept_limits.per_address, state.metrics.connections_open.clone());
    for tcp in listeners {
        let stopped = token.clone().cancelled_owned();
        let listener = listener::Listener::new(
            tcp,
            state.tls.clone(),
            state.accept_limits,
            slots.clone(),
            state.open_connections.clone(),
            state.metrics.clone(),
        )?;
        let app = app.clone().into_make_service_with_connect_info::<listener::PeerAddr>();
        servers.spawn(axum::serve(listener, app).with_graceful_shutdown(stopped).into_future());
    }
    // Whichever listener stops first, for whatever reason, stops them all,
    // so the server never runs on with only some of its addresses. A
    // graceful stop waits for requests in progress, but not forever: a
    // client that never finishes its request must not keep the server up.
    let mut failure = None;
    let grace_over = {
        let token = token.clone();
        async move {
            token.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::pin!(grace_over);
    loop {
        let stopped = tokio::select! {
            stopped = servers.join_next() => match stopped {
                Some(stopped) => stopped,
                None => break,
            },
            () = &mut grace_over => {
                tracing::warn!(
                    seconds = SHUTDOWN_GRACE.as_secs(),
                    "requests still in progress after the grace period; closing their connections"
                );
                servers.abort_all();
                break;
            }
        };
        token.cancel();
        let result = stopped.map_err(std::io::Error::other).and_then(|served| served);
        if let Err(error) = result {
            tracing::error!(%error, "a listener failed");
            failure.get_or_insert(error);
        }
    }
    signal.abort();
    token.cancel();
    state.tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), state.tasks.wait()).await.is_err() {
        tracing::warn!("streaming tasks still running after 10 s; exiting anyway");
    }
    // A close in flight is recorded; the next start sees it through, so
    // neither task waits for the chain.
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), watcher).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), follower).await;
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}
