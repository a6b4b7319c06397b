//! The limits on what one connection may ask (PROTOCOL.md 1.1, "Rate
//! limits"): a token bucket on requests, closing connections that keep
//! flooding, and a bound on the chain lookups `newChannel` makes.
//!
//! - Each connection gets `--requests-per-second` requests a second with
//!   bursts of `--request-burst`. A request over it is answered
//!   `rate_limited` and has no effect; the connection stays open.
//! - Each refusal also draws on a second bucket of `--flood-limit` that
//!   refills at the same rate: a connection that empties it is closed,
//!   and its Engine.IO session may not join the namespace again. A client
//!   that waits a second after `rate_limited`, as the protocol asks, never
//!   comes near it.
//! - The buckets belong to the Engine.IO session, not to one CONNECT: a
//!   client that leaves the namespace and joins it again on the same
//!   transport (`41`, `40`) keeps the allowance it had.
//! - Events no handler takes still draw on the request bucket, so a flood
//!   of them is closed like any other.
//! - `newChannel` reads the chain: one lookup at a time per connection (a
//!   second one at once is `rate_limited`), `--chain-lookups` at once in
//!   all (a request waits up to `--rpc-timeout` for its turn, then is
//!   `rate_limited`), and a channel id the chain said does not exist is
//!   answered `unknown_channel` from memory for `--negative-cache-seconds`.
//!
//! Answers to `pay` are acks of the server's own event, never requests, so
//! nothing here touches them.

use crate::listener::{OpenConnections, PeerAddr};
use crate::metrics::Metrics;
use axum::extract::ConnectInfo;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tollstream_protocol::{B256, ErrorCode, ProtocolError};

/// Channel ids remembered as unknown at most; beyond it the oldest go.
const NEGATIVE_CACHE_CAPACITY: u64 = 100_000;
/// Engine.IO sessions whose allowance is kept at most.
const ALLOWANCES_CAPACITY: u64 = 1_000_000;
/// How long an allowance outlives its last use: a session that left the
/// namespace without closing its transport may come back within it.
const ALLOWANCE_IDLE: Duration = Duration::from_secs(600);

/// The limits' settings (`serve` flags).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimitConfig {
    pub requests_per_second: u32,
    pub request_burst: u32,
    pub flood_limit: u32,
    pub chain_lookups: u32,
    /// How long a `newChannel` waits for a free chain lookup.
    pub chain_lookup_wait: Duration,
    /// How long an unknown channel id is remembered; zero for never.
    pub negative_cache: Duration,
}

/// The server's request limits, shared by every connection.
pub struct RequestLimits {
    requests: Quota,
    flood: Quota,
    lookups: Arc<Semaphore>,
    lookup_wait: Duration,
    /// Channel id → the chain reading (the latest block's timestamp) at
    /// which the chain said it does not exist.
    unknown: Option<moka::sync::Cache<B256, u64>>,
    /// Each Engine.IO session's allowance.
    allowances: moka::sync::Cache<Sid, Allowance>,
    /// To close the connection of a flooding session.
    open_connections: Arc<OpenConnections>,
    metrics: Metrics,
}

/// What one connection has left: its request bucket, its flood bucket and
/// its one chain lookup. Kept in the socket's extensions.
#[derive(Clone)]
pub struct Allowance(Arc<AllowanceBuckets>);

struct AllowanceBuckets {
    requests: DefaultDirectRateLimiter,
    flood: DefaultDirectRateLimiter,
    lookup: Arc<Semaphore>,
    /// Set once the connection is found flooding: the requests already on
    /// their way are refused, but it is closed, counted and logged once.
    flooding: AtomicBool,
}

impl Allowance {
    /// Whether the session was found flooding (and so may not join again).
    pub fn is_flooding(&self) -> bool {
        self.0.flooding.load(Ordering::Relaxed)
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Over the limit: answer `rate_limited`.
    Limited,
    /// Over the limit, and the connection has been refused too often: close
    /// it. Said once per connection; later requests are `Limited`.
    Flooding,
}

/// The chain lookup a `newChannel` holds while it reads the chain.
pub struct LookupPermit<'a> {
    _connection: OwnedSemaphorePermit,
    _all: SemaphorePermit<'a>,
    metrics: &'a Metrics,
}

impl Drop for LookupPermit<'_> {
    fn drop(&mut self) {
        self.metrics.chain_lookups_in_flight.dec();
    }
}

impl RequestLimits {
    pub fn new(config: &RequestLimitConfig, open_connections: Arc<OpenConnections>, metrics: Metrics) -> RequestLimits {
        let rate = NonZeroU32::new(config.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.request_burst).unwrap_or(rate);
        let flood = NonZeroU32::new(config.flood_limit).unwrap_or(NonZeroU32::MIN);
        let mut limits = RequestLimits::with_quotas(
            Quota::per_second(rate).allow_burst(burst),
            Quota::per_second(rate).allow_burst(flood),
            config.chain_lookups.max(1),
            metrics,
        );
        limits.open_connections = open_connections;
        limits.lookup_wait = config.chain_lookup_wait;
        limits.unknown = (!config.negative_cache.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(NEGATIVE_CACHE_CAPACITY)
                .time_to_live(config.negative_cache)
                .build()
        });
        limits
    }

    fn with_quotas(requests: Quota, flood: Quota, lookups: u32, metrics: Metrics) -> RequestLimits {
        RequestLimits {
            requests,
            flood,
            lookups: Arc::new(Semaphore::new(lookups as usize)),
            lookup_wait: Duration::from_secs(5),
            unknown: None,
            allowances: moka::sync::Cache::builder()
                .max_capacity(ALLOWANCES_CAPACITY)
                .time_to_idle(ALLOWANCE_IDLE)
                .build(),
            open_connections: OpenConnections::new(),
            metrics,
        }
    }

    /// The allowance of Engine.IO session `sid`: the one it had if it joined
    /// the namespace before, else a fresh one.
    pub fn allowance_for(&self, sid: Sid) -> Allowance {
        self.allowances.get_with(sid, || self.allowance())
    }

    /// Forgets session `sid`'s allowance once its transport is gone.
    pub fn forget(&self, sid: Sid) {
        self.allowances.invalidate(&sid);
    }

    /// A fresh allowance.
    pub fn allowance(&self) -> Allowance {
        Allowance(Arc::new(AllowanceBuckets {
            requests: RateLimiter::direct(self.requests),
            flood: RateLimiter::direct(self.flood),
            lookup: Arc::new(Semaphore::new(1)),
            flooding: AtomicBool::new(false),
        }))
    }

    /// Takes one request from `allowance`, counting refusals.
    pub fn check(&self, allowance: &Allowance) -> Admission {
        if allowance.0.requests.check().is_ok() {
            return Admission::Admitted;
        }
        self.metrics.requests_rate_limited.inc();
        if allowance.0.flood.check().is_ok() || allowance.0.flooding.swap(true, Ordering::Relaxed) {
            Admission::Limited
        } else {
            Admission::Flooding
        }
    }

    /// Admits a request on `socket`, or refuses it with `rate_limited`; a
    /// connection that keeps flooding is closed as well.
    ///
    /// # Errors
    /// `rate_limited` over the limit.
    pub fn admit(&self, socket: &SocketRef) -> Result<(), ProtocolError> {
        let Some(allowance) = socket.extensions.get::<Allowance>() else {
            // Every connection gets one when it connects; a missing one
            // would be a bug, and limiting nothing is the safe side of it.
            tracing::warn!(sid = %socket.id, "connection without a request allowance");
            return Ok(());
        };
        match self.check(&allowance) {
            Admission::Admitted => Ok(()),
            Admission::Limited => Err(rate_limited()),
            Admission::Flooding => {
                self.metrics.connections_closed_flooding.inc();
                tracing::info!(sid = %socket.id, "closing a connection that keeps flooding requests");
                // Out of the namespace (it may not join again), and its
                // transport's connection closed.
                let _ = socket.clone().disconnect();
                if let Some(ConnectInfo(PeerAddr(peer))) = socket.req_parts().extensions.get::<ConnectInfo<PeerAddr>>()
                {
                    self.open_connections.close(*peer);
                }
                Err(rate_limited())
            }
        }
    }

    /// Waits for a chain lookup for `socket`'s connection: its own one, and
    /// one of the server's.
    ///
    /// # Errors
    /// `rate_limited` when the connection already runs one, or when none
    /// frees up within the wait.
    pub async fn chain_lookup(&self, socket: &SocketRef) -> Result<LookupPermit<'_>, ProtocolError> {
        let allowance = socket.extensions.get::<Allowance>().unwrap_or_else(|| self.allowance());
        self.lookup_for(&allowance).await
    }

    async fn lookup_for(&self, allowance: &Allowance) -> Result<LookupPermit<'_>, ProtocolError> {
        let connection = allowance.0.lookup.clone().try_acquire_owned().map_err(|_| {
            self.metrics.requests_rate_limited.inc();
            ProtocolError::new(ErrorCode::RateLimited, "one newChannel at a time per connection; wait for its answer")
        })?;
        let all = match tokio::time::timeout(self.lookup_wait, self.lookups.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                self.metrics.requests_rate_limited.inc();
                return Err(ProtocolError::new(
                    ErrorCode::RateLimited,
                    "the server is busy checking other channels on chain; retry in a second",
                ));
            }
        };
        self.metrics.chain_lookups_in_flight.inc();
        Ok(LookupPermit { _connection: connection, _all: all, metrics: &self.metrics })
    }

    /// Whether the chain said `channel` does not exist a moment ago, at the
    /// chain reading `head` (the latest block's timestamp). A newer block
    /// may hold its `open`, so an answer from an older reading does not
    /// count: whoever announced the id first, a stranger included, cannot
    /// keep its owner out beyond the block it is mined in.
    pub fn known_unknown(&self, channel: &B256, head: Option<u64>) -> bool {
        let hit = head.is_some_and(|head| self.unknown.as_ref().is_some_and(|cache| cache.get(channel) == Some(head)));
        if hit {
            self.metrics.negative_cache_hits.inc();
        }
        hit
    }

    /// Remembers that the chain says `channel` does not exist at the chain
    /// reading `head`.
    pub fn remember_unknown(&self, channel: B256, head: Option<u64>) {
        if let (Some(cache), Some(head)) = (&self.unknown, head) {
            cache.insert(channel, head);
        }
    }
}

fn rate_limited() -> ProtocolError {
    ProtocolError::new(ErrorCode::RateLimited, "too many requests on this connection; wait a second and retry")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets that never refill within a test, so that what is admitted
    /// depends on counts only.
    fn limits(burst: u32, flood: u32, lookups: u32) -> RequestLimits {
        let hourly = Quota::per_hour(NonZeroU32::MIN);
        RequestLimits::with_quotas(
            hourly.allow_burst(NonZeroU32::new(burst).unwrap()),
            hourly.allow_burst(NonZeroU32::new(flood).unwrap()),
            lookups,
            Metrics::new(),
        )
    }

    #[test]
    fn a_burst_is_admitted_and_the_next_request_limited() {
        let limits = limits(20, 200, 1);
        let allowance = limits.allowance();
        for request in 0..20 {
            assert_eq!(limits.check(&allowance), Admission::Admitted, "request {request}");
        }
        assert_eq!(limits.check(&allowance), Admission::Limited);
        assert_eq!(limits.metrics.requests_rate_limited.get(), 1);
        assert_eq!(limits.check(&limits.allowance()), Admission::Admitted, "each connection has its own bucket");
    }

    #[test]
    fn a_connection_refused_flood_limit_times_is_flooding() {
        let limits = limits(20, 5, 1);
        let allowance = limits.allowance();
        let verdicts: Vec<_> = (0..30).map(|_| limits.check(&allowance)).collect();
        assert!(verdicts[..20].iter().all(|v| *v == Admission::Admitted));
        assert!(verdicts[20..25].iter().all(|v| *v == Admission::Limited), "{verdicts:?}");
        assert_eq!(verdicts[25], Admission::Flooding, "{verdicts:?}");
        assert!(verdicts[26..].iter().all(|v| *v == Admission::Limited), "flooding is said once: {verdicts:?}");
        assert_eq!(limits.metrics.requests_rate_limited.get(), 10, "every refusal counts");
    }

    #[test]
    fn the_default_allows_what_the_protocol_promises() {
        let config = RequestLimitConfig {
            requests_per_second: 10,
            request_burst: 20,
            flood_limit: 200,
            chain_lookups: 16,
            chain_lookup_wait: Duration::from_secs(5),
            negative_cache: Duration::from_secs(5),
        };
        let limits = RequestLimits::new(&config, OpenConnections::new(), Metrics::new());
        let allowance = limits.allowance();
        let admitted = (0..150).filter(|_| limits.check(&allowance) == Admission::Admitted).count();
        // 20 at once, and perhaps one more refilled while the loop ran.
        assert!((20..=21).contains(&admitted), "{admitted} of a burst of 150 admitted");
    }

    #[test]
    fn a_session_that_joins_again_keeps_its_allowance() {
        let limits = limits(20, 5, 1);
        let sid = Sid::new();
        let first = limits.allowance_for(sid);
        while limits.check(&first) != Admission::Flooding {}
        let again = limits.allowance_for(sid);
        assert!(again.is_flooding(), "leaving and joining again does not refill the buckets");
        assert_eq!(limits.check(&again), Admission::Limited);
        assert_eq!(limits.check(&limits.allowance_for(Sid::new())), Admission::Admitted, "another session");
        limits.forget(sid);
        assert!(!limits.allowance_for(sid).is_flooding(), "a closed transport's allowance is gone");
    }

    #[tokio::test]
    async fn one_chain_lookup_per_connection_and_a_bound_over_all() {
        let mut limits = limits(20, 200, 2);
        limits.lookup_wait = Duration::from_millis(50);
        let (a, b, c) = (limits.allowance(), limits.allowance(), limits.allowance());
        let first = limits.lookup_for(&a).await.expect("a's lookup");
        let refused = limits.lookup_for(&a).await.err().expect("a second lookup on a");
        assert_eq!(refused.code, ErrorCode::RateLimited);
        let _second = limits.lookup_for(&b).await.expect("b's lookup");
        assert_eq!(limits.metrics.chain_lookups_in_flight.get(), 2);
        let busy = limits.lookup_for(&c).await.err().expect("all lookups taken");
        assert_eq!(busy.code, ErrorCode::RateLimited);
        drop(first);
        assert!(limits.lookup_for(&c).await.is_ok(), "a finished lookup frees its place");
        assert!(limits.lookup_for(&a).await.is_ok(), "and its connection's");
    }

    #[test]
    fn unknown_channels_are_remembered_for_the_configured_time() {
        let config = RequestLimitConfig {
            requests_per_second: 10,
            request_burst: 20,
            flood_limit: 200,
            chain_lookups: 16,
            chain_lookup_wait: Duration::from_secs(5),
            negative_cache: Duration::from_secs(3600),
        };
        let limits = RequestLimits::new(&config, OpenConnections::new(), Metrics::new());
        let id = B256::repeat_byte(7);
        let head = Some(1_000);
        assert!(!limits.known_unknown(&id, head));
        limits.remember_unknown(id, head);
        assert!(limits.known_unknown(&id, head));
        assert!(!limits.known_unknown(&B256::repeat_byte(8), head));
        assert_eq!(limits.metrics.negative_cache_hits.get(), 1);
        assert!(!limits.known_unknown(&id, Some(1_002)), "a new block may hold the open: ask the chain again");
        assert!(!limits.known_unknown(&id, None), "no reading, no answer from memory");

        let off = RequestLimits::new(
            &RequestLimitConfig { negative_cache: Duration::ZERO, ..config },
            OpenConnections::new(),
            Metrics::new(),
        );
        off.remember_unknown(id, head);
        assert!(!off.known_unknown(&id, head), "a zero time remembers nothing");
    }
}
