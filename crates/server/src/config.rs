//! `tollstream serve` configuration: flags with environment fallbacks.

use clap::Args;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;
use tollstream_protocol::{Address, Amount};

/// Sell a stream by the second over payment channels.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (Socket.IO at /socket.io/ and HTTP on the same
    /// port). Port 0 picks a free port, printed at start. Repeat the flag
    /// (or separate with commas) to listen on several addresses, e.g.
    /// `127.0.0.1:8080` and `[::1]:8080`.
    #[arg(long, env = "TOLLSTREAM_LISTEN", default_value = "127.0.0.1:8080", value_delimiter = ',', num_args = 1)]
    pub listen: Vec<SocketAddr>,

    /// Where the server keeps its database and (unless --keys-dir) its
    /// streams' master secrets.
    #[arg(long, env = "TOLLSTREAM_DATA_DIR", default_value = "tollstream-data")]
    pub data_dir: PathBuf,

    /// The database: `postgres://USER@HOST:PORT/DB` for a fleet of servers
    /// sharing one PostgreSQL, or `sqlite://PATH`
    /// [default: the SQLite file DATA_DIR/tollstream.sqlite].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// This process's name in `/metrics` (the `process` label on every
    /// sample), to tell the servers of a fleet apart [default: on
    /// PostgreSQL a name unique to this start; on SQLite no label].
    #[arg(long, env = "TOLLSTREAM_PROCESS_NAME")]
    pub process_name: Option<String>,

    /// Folder of packaged streams (`tollstream package`), one subfolder each
    /// [default: DATA_DIR/media].
    #[arg(long, env = "TOLLSTREAM_MEDIA_DIR")]
    pub media_dir: Option<PathBuf>,

    /// Serve playlists whose segment URIs point at
    /// `URL/<stream id>/<segment file>`: a CDN or object store holding a
    /// copy of the media folder (http or https, no query or fragment).
    /// Key URIs stay `tollstream://`: keys only travel on the socket
    /// [default: segments relative to the playlist, served from here].
    #[arg(long, env = "TOLLSTREAM_SEGMENT_BASE_URL", value_parser = parse_segment_base_url)]
    pub segment_base_url: Option<String>,

    /// Folder of the streams' master secrets (`<stream>.key`, 0600), the
    /// same on every server of a fleet, e.g. on shared storage; never in
    /// the database [default: DATA_DIR/keys].
    #[arg(long, env = "TOLLSTREAM_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,

    /// JSON-RPC endpoint of the chain the channels live on. Repeat the flag
    /// (or separate with commas) to give several endpoints of the same
    /// chain: every call goes to the healthiest ones, so one endpoint that
    /// fails or hangs changes nothing.
    #[arg(
        long,
        env = "TOLLSTREAM_RPC_URL",
        default_value = "http://127.0.0.1:8545",
        value_delimiter = ',',
        num_args = 1
    )]
    pub rpc_url: Vec<String>,

    /// Seconds one JSON-RPC call may take before it counts as failed (a
    /// hung endpoint must not stall payments or settlement).
    #[arg(long, env = "TOLLSTREAM_RPC_TIMEOUT", default_value_t = 5.0, value_parser = positive_seconds)]
    pub rpc_timeout: f64,

    /// How deep a channel's `open`, and the server's own `close`, must be
    /// before it counts as final: a transaction in block b has
    /// `latest - b + 1` confirmations; 0 and 1 both trust the latest block.
    /// The default suits a public L2 (about 20 s of 2 s blocks).
    #[arg(long, env = "TOLLSTREAM_CONFIRMATIONS", default_value_t = 10)]
    pub confirmations: u64,

    /// How many windows are sold on a channel whose `open` has fewer than
    /// `--confirmations` confirmations: what a reorg can cost at most.
    #[arg(long, env = "TOLLSTREAM_UNCONFIRMED_WINDOWS", default_value_t = 3)]
    pub unconfirmed_windows: u64,

    /// The highest `maxFeePerGas` the server pays for a close, in wei: fee
    /// bumps stop there and the close waits for the market to come back.
    #[arg(long, env = "TOLLSTREAM_MAX_FEE_PER_GAS", default_value = "200000000000")]
    pub max_fee_per_gas: Amount,

    /// Blocks a close may wait for its receipt before it is re-signed at the
    /// same nonce with fees bumped by 12.5 %.
    #[arg(long, env = "TOLLSTREAM_RESUBMIT_BLOCKS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub resubmit_blocks: u64,

    /// The widest block range of one `eth_getLogs` call (providers cap it).
    #[arg(long, env = "TOLLSTREAM_LOG_RANGE_BLOCKS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_range_blocks: u64,

    /// Address of the channel registry contract (see `tollstream deploy`).
    #[arg(long, env = "TOLLSTREAM_CONTRACT")]
    pub contract: Address,

    /// File holding the server wallet's private key (hex): the payee of
    /// every channel, and the account that sends closes.
    #[arg(long, env = "TOLLSTREAM_WALLET_KEY_FILE")]
    pub wallet_key_file: PathBuf,

    /// Seconds of stream one payment buys (fractions allowed, for tests).
    #[arg(long, env = "TOLLSTREAM_WINDOW_SECONDS", default_value_t = 10.0, value_parser = positive_seconds)]
    pub window_seconds: f64,

    /// Price of one window, in the deposit token's smallest unit (wei for
    /// the native coin; 10^-6 dollar for a 6-decimal stablecoin).
    #[arg(long, env = "TOLLSTREAM_WINDOW_PRICE", default_value = "100000000000000")]
    pub window_price: Amount,

    /// Sell channels in this ERC-20 token (its contract address) instead of
    /// the chain's native coin. Prices and amounts are then in its
    /// smallest unit [default: the native coin].
    #[arg(long, env = "TOLLSTREAM_TOKEN")]
    pub token: Option<Address>,

    /// Do not offer gasless `openChannel`, even with a token that takes
    /// EIP-3009 authorizations (the server pays the gas of those opens).
    #[arg(long, env = "TOLLSTREAM_NO_GASLESS_OPEN")]
    pub no_gasless_open: bool,

    /// Gasless opens the server sends and waits for at once, over all
    /// connections; a request beyond them is answered `rate_limited`.
    #[arg(long, env = "TOLLSTREAM_GASLESS_OPENS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub gasless_opens: u32,

    /// Seconds the server waits for the answer to a `pay` before dropping
    /// the viewer to idle with `pay_timeout`.
    #[arg(long, env = "TOLLSTREAM_PAY_TIMEOUT", default_value_t = 10.0, value_parser = positive_seconds)]
    pub pay_timeout: f64,

    /// Shortest channel lifetime accepted by `newChannel`, in seconds.
    #[arg(long, env = "TOLLSTREAM_MIN_CHANNEL_SECONDS", default_value_t = 86_400)]
    pub min_channel_seconds: u64,

    /// How long before a channel's expiry the server stops using it and
    /// settles it, in seconds; published as `settle_margin_seconds` and
    /// less than --min-channel-seconds.
    #[arg(long, env = "TOLLSTREAM_SETTLE_MARGIN", default_value_t = 3_600)]
    pub settle_margin: u64,

    /// Seconds between passes of the settlement worker.
    #[arg(long, env = "TOLLSTREAM_SETTLE_INTERVAL", default_value_t = 5.0, value_parser = positive_seconds)]
    pub settle_interval: f64,

    /// The most channels one close transaction settles: channels due at
    /// once are closed this many at a time by one `closeMany` (18,000 to
    /// 29,000 gas a channel in a batch of 20, against 45,000 to 65,000 for
    /// a close alone). 1 closes every channel with a `close` of its own.
    #[arg(long, env = "TOLLSTREAM_CLOSE_BATCH_SIZE", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub close_batch_size: u64,

    /// A keys-only stream without media files, as ID=SEGMENTS (one window
    /// each), e.g. `--stream test=360`: for testing and load runs of the
    /// payment protocol. Repeatable.
    #[arg(long = "stream", env = "TOLLSTREAM_STREAMS", value_delimiter = ',', value_parser = parse_stream)]
    pub streams: Vec<(String, u64)>,

    /// Commit every payment in a transaction of its own instead of grouping
    /// concurrent payments into one commit (for comparison in benchmarks).
    #[arg(long, env = "TOLLSTREAM_COMMIT_PER_PAYMENT")]
    pub commit_per_payment: bool,

    /// PEM certificate chain (leaf first) to serve https and wss on every
    /// --listen address; needs --tls-key. Without it the server speaks
    /// plain http: for loopback, or behind a proxy that terminates TLS.
    #[arg(long, env = "TOLLSTREAM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TOLLSTREAM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Requests (`publicKey`, `latestState`, `newChannel`, `play`, `stop`)
    /// one connection may send a second; over it the request is answered
    /// `rate_limited` and has no effect. Answers to `pay` are never
    /// limited. PROTOCOL.md 1.1 has servers allow at least 10.
    #[arg(long, env = "TOLLSTREAM_REQUESTS_PER_SECOND", default_value_t = 10, value_parser = clap::value_parser!(u32).range(10..))]
    pub requests_per_second: u32,

    /// Requests one connection may send at once before --requests-per-second
    /// applies (at least 20, PROTOCOL.md 1.1).
    #[arg(long, env = "TOLLSTREAM_REQUEST_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(20..))]
    pub request_burst: u32,

    /// A connection refused this many requests in a burst (the allowance
    /// refills at --requests-per-second) is flooding, and is closed.
    #[arg(long, env = "TOLLSTREAM_FLOOD_LIMIT", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub flood_limit: u32,

    /// Open connections from one client address (an IPv4 address or an
    /// IPv6 /64); more are closed at accept. 0 for no cap. Behind a proxy
    /// every connection comes from the proxy's address: cap there instead
    /// and pass 0 here.
    #[arg(long, env = "TOLLSTREAM_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 64)]
    pub max_connections_per_address: u32,

    /// New connections accepted a second over all addresses (a bucket
    /// whose burst equals the rate); more are closed at accept. 0 for no
    /// cap.
    #[arg(long, env = "TOLLSTREAM_NEW_CONNECTIONS_PER_SECOND", default_value_t = 200)]
    pub new_connections_per_second: u32,

    /// Chain lookups `newChannel` may run at once over all connections
    /// (one at a time per connection), so strangers cannot spend the RPC
    /// quota; a request that waits longer than --rpc-timeout for its turn
    /// is answered `rate_limited`.
    #[arg(long, env = "TOLLSTREAM_CHAIN_LOOKUPS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub chain_lookups: u32,

    /// Seconds a channel the chain said does not exist is answered
    /// `unknown_channel` from memory, without asking the chain again.
    #[arg(long, env = "TOLLSTREAM_NEGATIVE_CACHE_SECONDS", default_value_t = 5.0, value_parser = non_negative_seconds)]
    pub negative_cache_seconds: f64,

    /// Set by `tollstream demo` only: served at `/demo.json` so the player
    /// page can offer funded dev wallets. Never a flag: a real server must
    /// not hand out keys.
    #[arg(skip)]
    pub demo: Option<serde_json::Value>,
}

impl ServeConfig {
    pub fn media_dir(&self) -> PathBuf {
        self.media_dir.clone().unwrap_or_else(|| self.data_dir.join("media"))
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir.clone().unwrap_or_else(|| self.data_dir.join("keys"))
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.window_seconds)
    }

    pub fn pay_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.pay_timeout)
    }

    /// The limits on accepting connections.
    pub fn accept_limits(&self) -> crate::listener::AcceptLimits {
        crate::listener::AcceptLimits {
            per_address: NonZeroU32::new(self.max_connections_per_address),
            new_per_second: NonZeroU32::new(self.new_connections_per_second),
        }
    }

    /// The limits on each connection's requests.
    pub fn request_limits(&self) -> crate::socket::limits::RequestLimitConfig {
        crate::socket::limits::RequestLimitConfig {
            requests_per_second: self.requests_per_second,
            request_burst: self.request_burst,
            flood_limit: self.flood_limit,
            chain_lookups: self.chain_lookups,
            chain_lookup_wait: Duration::from_secs_f64(self.rpc_timeout),
            negative_cache: Duration::from_secs_f64(self.negative_cache_seconds),
        }
    }
}

fn non_negative_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value == 0.0 => Ok(value),
        _ => positive_seconds(text),
    }
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 && value <= 86_400.0 => Ok(value),
        _ => Err(format!("{text:?} is not a number of seconds between 0 and 86400")),
    }
}

/// Checks `--segment-base-url`: an http or https URL with a host and no
/// query or fragment, since segment file names are appended to it.
fn parse_segment_base_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("{text:?} is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    if text.contains(['?', '#']) {
        return Err(format!("{text:?} may not have a query or fragment: segment paths are appended to it"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{text:?} contains whitespace"));
    }
    Ok(text.to_owned())
}

fn parse_stream(text: &str) -> Result<(String, u64), String> {
    let (id, segments) = text.split_once('=').ok_or_else(|| format!("{text:?} is not ID=SEGMENTS"))?;
    if !tollstream_media::is_valid_stream_id(id) {
        return Err(format!("stream id {id:?} may use only letters, digits, '-' and '_'"));
    }
    let segments = segments.parse::<u64>().map_err(|_| format!("{segments:?} is not a segment count"))?;
    if segments == 0 {
        return Err("a stream needs at least one segment".into());
    }
    Ok((id.to_owned(), segments))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_base_urls_are_http_without_query_or_fragment() {
        for good in ["https://cdn.example", "https://cdn.example/media/", "http://127.0.0.1:9000/bucket"] {
            assert_eq!(parse_segment_base_url(good).as_deref(), Ok(good));
        }
        for bad in ["cdn.example/media", "ftp://cdn.example", "https://", "https:///media", "https://cdn.example/?a=1"]
        {
            assert!(parse_segment_base_url(bad).is_err(), "{bad} accepted");
        }
        assert!(parse_segment_base_url("https://cdn.example/media#x").is_err());
        assert!(parse_segment_base_url("https://cdn.example/a b").is_err());
    }
}
