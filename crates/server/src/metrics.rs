//! Prometheus metrics, served as text at `/metrics`.

use prometheus::{Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
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
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
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
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 8] = [
            Box::new(metrics.active_streams.clone()),
            Box::new(metrics.payments_accepted.clone()),
            Box::new(metrics.payments_refused.clone()),
            Box::new(metrics.wei_earned.clone()),
            Box::new(metrics.wei_settled.clone()),
            Box::new(metrics.channels_awaiting_settlement.clone()),
            Box::new(metrics.settlement_failures.clone()),
            Box::new(metrics.wei_lost_to_refunds.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector).expect("metric names are unique");
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
