//! Prometheus metrics, served as text at `/metrics`.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tollstream_protocol::{Amount, ErrorCode};

/// Every metric the server keeps.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Clients in the streaming state.
    pub active_streams: IntGauge,
    pub payments_accepted: IntCounter,
    /// Refused payments, by error code.
    pub payments_refused: IntCounterVec,
    /// Wei of accepted payments. A float: exact up to 2^53 wei, close
    /// enough beyond for a dashboard; the store holds exact amounts.
    pub wei_earned: Gauge,
    /// Wei paid to the server by confirmed closes.
    pub wei_settled: Gauge,
    pub channels_awaiting_settlement: IntGauge,
    pub settlement_failures: IntCounter,
    /// Wei of server money lost to refunds of channels never closed.
    pub wei_lost_to_refunds: Gauge,
    /// The payee wallet's balance, in wei.
    pub payee_balance_wei: Gauge,
    /// Wei of gas that closing every channel owing the server takes at
    /// today's fees.
    pub close_gas_needed_wei: Gauge,
    /// 1 while the payee's balance covers less than twice that.
    pub payee_gas_low: IntGauge,
    /// Channels closed by each close transaction sent (`--close-batch-size`
    /// at most; 1 for a plain `close`).
    pub close_batch_size: Histogram,
    /// Entries of confirmed closes the registry skipped (the channel was
    /// closed, refunded or expired first): each is read again.
    pub close_entries_skipped: IntCounter,
    /// Close transactions re-signed at the same nonce with higher fees.
    pub close_fee_bumps: IntCounter,
    /// Mined closes that a reorg removed (and that were sent again).
    pub closes_reorged: IntCounter,
    /// Closes abandoned because another transaction used their nonce.
    pub closes_nonce_taken: IntCounter,
    /// Channels whose `open` a reorg removed.
    pub channels_dropped: IntCounter,
    /// Closes waiting at the fee cap in the last settlement pass.
    pub closes_at_fee_cap: IntGauge,
    /// Closes mined but not yet `--confirmations` deep in the last pass.
    pub closes_mined_unconfirmed: IntGauge,
    /// Chain reads or sends that failed for want of an answer (refused or
    /// timed out).
    pub chain_errors: IntCounter,
    /// Requests answered `rate_limited`.
    pub requests_rate_limited: IntCounter,
    /// Connections closed because they kept flooding requests.
    pub connections_closed_flooding: IntCounter,
    /// Connections closed at accept, by `reason`: `per_address`,
    /// `address_rate` or `rate`; Socket.IO sessions refused at CONNECT:
    /// `sessions_per_address`.
    pub connections_refused: IntCounterVec,
    /// TCP connections open now.
    pub connections_open: IntGauge,
    /// Socket.IO sessions open now (over WebSocket or long-polling).
    pub sessions_open: IntGauge,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: IntCounter,
    /// `newChannel` chain lookups running now.
    pub chain_lookups_in_flight: IntGauge,
    /// `newChannel`s answered `unknown_channel` from memory.
    pub negative_cache_hits: IntCounter,
    /// Channels opened by a gasless `openChannel` this server sent.
    pub gasless_opens: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_registry(Registry::new())
    }

    /// Metrics whose every sample carries `process="NAME"`, so that the
    /// servers of a fleet scraped together stay apart. (Not `instance`:
    /// Prometheus sets that label itself on every scrape.)
    pub fn for_process(name: &str) -> Self {
        let labels = std::collections::HashMap::from([("process".to_owned(), name.to_owned())]);
        Self::with_registry(Registry::new_custom(None, Some(labels)).expect("a valid label"))
    }

    fn with_registry(registry: Registry) -> Self {
        let metrics = Metrics {
            active_streams: IntGauge::new("tollstream_active_streams", "Clients streaming now").expect("valid"),
            payments_accepted: IntCounter::new("tollstream_payments_accepted_total", "Payments accepted and stored")
                .expect("valid"),
            payments_refused: IntCounterVec::new(
                Opts::new("tollstream_payments_refused_total", "Payments refused, by error code"),
                &["code"],
            )
            .expect("valid"),
            wei_earned: Gauge::new("tollstream_wei_earned_total", "Wei of accepted payments").expect("valid"),
            wei_settled: Gauge::new("tollstream_wei_settled_total", "Wei collected by confirmed closes")
                .expect("valid"),
            channels_awaiting_settlement: IntGauge::new(
                "tollstream_channels_awaiting_settlement",
                "Channels holding server money that must be closed",
            )
            .expect("valid"),
            settlement_failures: IntCounter::new("tollstream_settlement_failures_total", "Failed settlement attempts")
                .expect("valid"),
            wei_lost_to_refunds: Gauge::new(
                "tollstream_wei_lost_to_refunds_total",
                "Wei of server balance refunded to clients because a channel expired unclosed",
            )
            .expect("valid"),
            payee_balance_wei: Gauge::new("tollstream_payee_balance_wei", "Balance of the payee wallet, in wei")
                .expect("valid"),
            close_gas_needed_wei: Gauge::new(
                "tollstream_close_gas_needed_wei",
                "Wei of gas needed to close every channel owing the server at today's fees",
            )
            .expect("valid"),
            payee_gas_low: IntGauge::new(
                "tollstream_payee_gas_low",
                "1 while the payee wallet holds less than twice the gas its closes need",
            )
            .expect("valid"),
            close_batch_size: Histogram::with_opts(
                HistogramOpts::new("tollstream_close_batch_size", "Channels closed by each close transaction sent")
                    .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]),
            )
            .expect("valid"),
            close_entries_skipped: IntCounter::new(
                "tollstream_close_entries_skipped_total",
                "Entries of confirmed close transactions the registry skipped; their channels are read again",
            )
            .expect("valid"),
            close_fee_bumps: IntCounter::new(
                "tollstream_close_fee_bumps_total",
                "Closes re-signed at the same nonce with higher fees",
            )
            .expect("valid"),
            closes_reorged: IntCounter::new("tollstream_closes_reorged_total", "Mined closes removed by a reorg")
                .expect("valid"),
            closes_nonce_taken: IntCounter::new(
                "tollstream_closes_nonce_taken_total",
                "Closes abandoned because another transaction of the payee used their nonce",
            )
            .expect("valid"),
            channels_dropped: IntCounter::new(
                "tollstream_channels_dropped_total",
                "Channels whose open transaction a reorg removed",
            )
            .expect("valid"),
            closes_at_fee_cap: IntGauge::new(
                "tollstream_closes_at_fee_cap",
                "Closes waiting because the market asks more than --max-fee-per-gas",
            )
            .expect("valid"),
            closes_mined_unconfirmed: IntGauge::new(
                "tollstream_closes_mined_unconfirmed",
                "Closes mined but not yet --confirmations deep",
            )
            .expect("valid"),
            chain_errors: IntCounter::new(
                "tollstream_chain_errors_total",
                "Chain RPC calls that got no answer (refused or timed out)",
            )
            .expect("valid"),
            requests_rate_limited: IntCounter::new(
                "tollstream_requests_rate_limited_total",
                "Requests answered rate_limited",
            )
            .expect("valid"),
            connections_closed_flooding: IntCounter::new(
                "tollstream_connections_closed_flooding_total",
                "Connections closed because they kept flooding requests",
            )
            .expect("valid"),
            connections_refused: IntCounterVec::new(
                Opts::new(
                    "tollstream_connections_refused_total",
                    "Connections and sessions refused, by reason (per_address, address_rate, rate, sessions_per_address)",
                ),
                &["reason"],
            )
            .expect("valid"),
            connections_open: IntGauge::new("tollstream_connections_open", "TCP connections open now").expect("valid"),
            sessions_open: IntGauge::new("tollstream_sessions_open", "Socket.IO sessions open now").expect("valid"),
            tls_handshake_failures: IntCounter::new(
                "tollstream_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out",
            )
            .expect("valid"),
            chain_lookups_in_flight: IntGauge::new(
                "tollstream_chain_lookups_in_flight",
                "newChannel chain lookups running now",
            )
            .expect("valid"),
            negative_cache_hits: IntCounter::new(
                "tollstream_negative_cache_hits_total",
                "newChannel requests answered unknown_channel from memory",
            )
            .expect("valid"),
            gasless_opens: IntCounter::new(
                "tollstream_gasless_opens_total",
                "channels opened by a gasless openChannel this server sent and paid the gas of",
            )
            .expect("valid"),
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 29] = [
            Box::new(metrics.active_streams.clone()),
            Box::new(metrics.payments_accepted.clone()),
            Box::new(metrics.payments_refused.clone()),
            Box::new(metrics.wei_earned.clone()),
            Box::new(metrics.wei_settled.clone()),
            Box::new(metrics.channels_awaiting_settlement.clone()),
            Box::new(metrics.settlement_failures.clone()),
            Box::new(metrics.wei_lost_to_refunds.clone()),
            Box::new(metrics.payee_balance_wei.clone()),
            Box::new(metrics.close_gas_needed_wei.clone()),
            Box::new(metrics.payee_gas_low.clone()),
            Box::new(metrics.close_batch_size.clone()),
            Box::new(metrics.close_entries_skipped.clone()),
            Box::new(metrics.close_fee_bumps.clone()),
            Box::new(metrics.closes_reorged.clone()),
            Box::new(metrics.closes_nonce_taken.clone()),
            Box::new(metrics.channels_dropped.clone()),
            Box::new(metrics.closes_at_fee_cap.clone()),
            Box::new(metrics.closes_mined_unconfirmed.clone()),
            Box::new(metrics.chain_errors.clone()),
            Box::new(metrics.requests_rate_limited.clone()),
            Box::new(metrics.connections_closed_flooding.clone()),
            Box::new(metrics.connections_refused.clone()),
            Box::new(metrics.connections_open.clone()),
            Box::new(metrics.sessions_open.clone()),
            Box::new(metrics.tls_handshake_failures.clone()),
            Box::new(metrics.chain_lookups_in_flight.clone()),
            Box::new(metrics.negative_cache_hits.clone()),
            Box::new(metrics.gasless_opens.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector).expect("metric names are unique");
        }
        // Both reasons show from the start, at zero, for dashboards and alerts.
        for reason in ["per_address", "address_rate", "rate", "sessions_per_address"] {
            metrics.connections_refused.with_label_values(&[reason]);
        }
        metrics
    }

    pub fn refused(&self, code: ErrorCode) {
        self.payments_refused.with_label_values(&[code.as_str()]).inc();
    }

    /// Adds an amount of wei to a float gauge used as a counter.
    pub fn add_wei(gauge: &Gauge, amount: Amount) {
        gauge.add(f64::from(amount.0));
    }

    /// Sets a float gauge to an amount of wei.
    pub fn set_wei(gauge: &Gauge, amount: tollstream_protocol::U256) {
        gauge.set(f64::from(amount));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text encoder writes UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
