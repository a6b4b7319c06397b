//! The bench's report: computed from what every viewer recorded, printed as
//! a table for people or as one JSON object (`--json`).

use super::viewer::Outcome;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Share of payments left out at each end of the run for the steady-state
/// rate: the ramp-up and the ramp-down.
pub const STEADY_TRIM: f64 = 0.10;

/// What a payment bench measured: printed as a table ([`Report::table`])
/// or as JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Seconds from the start of [`run`](crate::run) to the report, every
    /// phase included (the table's title line; not in the JSON).
    #[serde(skip)]
    pub total_seconds: f64,
    pub server: String,
    pub stream: String,
    /// Viewers asked for (`--viewers`).
    pub viewers: u64,
    /// Payments per viewer (`--windows`).
    pub windows: u64,
    pub window_seconds: f64,
    pub window_price: String,
    /// Whether each viewer's last payment is final (deposit = windows × price).
    pub last_payment_final: bool,
    pub ramp_seconds: f64,
    pub phases: Phases,
    pub viewers_connected: u64,
    pub viewers_announced: u64,
    pub viewers_playing: u64,
    /// Viewers that received the secret of every payment.
    pub viewers_completed: u64,
    pub payments: Payments,
    /// True when every viewer received exactly one secret for each of its
    /// sequences 1..=windows.
    pub exactly_once: bool,
    pub throughput: Throughput,
    /// `pay` arrival → matching `secret` arrival, as the viewer saw them,
    /// over every acknowledged payment; `null` when there was none.
    pub latency_ms: Option<Latency>,
    /// Error codes the server sent (on acks and as `error` events), counted.
    pub errors: BTreeMap<String, u64>,
    /// How viewers that did not complete ended, by kind.
    pub client_failures: BTreeMap<String, u64>,
    /// One example message per failure kind.
    pub failure_examples: Vec<String>,
    pub server_process: Option<ServerProcessReport>,
    pub client_process: ClientProcessReport,
    /// With --verify-store: the server's database against what the viewers
    /// were acknowledged.
    pub store_check: Option<super::store_check::StoreCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_viewer: Option<Vec<ViewerReport>>,
}

#[derive(Debug, Serialize)]
pub struct Phases {
    /// Opening every channel on chain (all waves, receipts included).
    pub open_seconds: f64,
    /// Signing every opening and payment state.
    pub presign_seconds: f64,
    /// The measured phase: first viewer start to last viewer end.
    pub run_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Payments {
    /// viewers × windows.
    pub expected: u64,
    /// `pay` requests answered with a signed state.
    pub answered: u64,
    /// Payments whose secret arrived (counted once per sequence).
    pub acknowledged: u64,
    /// Secrets beyond the first for the same payment.
    pub duplicate_secrets: u64,
    /// Secrets for payments the session never made (re-sent ones).
    pub unsolicited_secrets: u64,
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    /// Acknowledged payments per second between the arrival of the secret
    /// at the 10 % mark and the one at the 90 % mark of all secrets.
    pub steady_payments_per_second: Option<f64>,
    /// That interval, in seconds from the start of the run.
    pub steady_from_seconds: Option<f64>,
    pub steady_to_seconds: Option<f64>,
    /// All acknowledged payments over the whole run.
    pub overall_payments_per_second: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Serialize)]
pub struct ServerProcessReport {
    pub pid: u32,
    /// User + system CPU time of the server over the run.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the run's wall time, in % of one core.
    pub cpu_percent: f64,
    /// The same over the steady-state interval, from sampled CPU times.
    pub steady_cpu_percent: Option<f64>,
    /// CPU seconds per acknowledged payment over the steady-state interval, in µs.
    pub steady_cpu_micros_per_payment: Option<f64>,
    /// The server's peak resident memory over its whole life: `VmHWM`, or
    /// the highest sampled `VmRSS` when that is above it.
    pub peak_rss_bytes: Option<u64>,
    /// Highest `VmRSS` sampled during the run.
    pub run_peak_rss_bytes: Option<u64>,
    pub pinned_cpu: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct ClientProcessReport {
    pub cpu_seconds: f64,
    pub cpu_percent: f64,
    pub peak_rss_bytes: u64,
    pub pinned_cpu: Option<usize>,
}

/// The exactly-once data of one viewer.
#[derive(Debug, Serialize)]
pub struct ViewerReport {
    pub channel_id: String,
    pub completed: bool,
    pub answered: u64,
    pub highest_acknowledged: u64,
    /// Number of secrets received for sequence k, at index k − 1.
    pub secrets_per_sequence: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The server's CPU time, sampled during the run: (µs since t0, seconds).
pub type CpuSamples = Vec<(u64, f64)>;

/// The steady-state interval: the 10 % and 90 % marks of the sorted secret
/// arrival times (µs), and the number of payments between them.
pub fn steady_interval(outcomes: &[Outcome]) -> Option<(u64, u64, u64)> {
    let mut times: Vec<u64> = outcomes.iter().flat_map(|o| o.samples.iter().map(|s| s.secret_at)).collect();
    if times.len() < 10 {
        return None;
    }
    times.sort_unstable();
    let trim = (times.len() as f64 * STEADY_TRIM) as usize;
    let (lo, hi) = (trim, times.len() - 1 - trim);
    (times[hi] > times[lo]).then(|| (times[lo], times[hi], (hi - lo) as u64))
}

pub fn throughput(outcomes: &[Outcome], steady: Option<(u64, u64, u64)>) -> Throughput {
    let times = outcomes.iter().flat_map(|o| o.samples.iter().map(|s| s.secret_at));
    let (count, first, last) =
        times.fold((0u64, u64::MAX, 0u64), |(n, first, last), t| (n + 1, first.min(t), last.max(t)));
    let overall = (count > 1 && last > first).then(|| (count - 1) as f64 / ((last - first) as f64 / 1e6));
    Throughput {
        steady_payments_per_second: steady.map(|(lo, hi, n)| n as f64 / ((hi - lo) as f64 / 1e6)),
        steady_from_seconds: steady.map(|(lo, _, _)| lo as f64 / 1e6),
        steady_to_seconds: steady.map(|(_, hi, _)| hi as f64 / 1e6),
        overall_payments_per_second: overall,
    }
}

pub fn latency(outcomes: &[Outcome]) -> Option<Latency> {
    // 1 µs .. 1 h at 3 significant digits.
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    for sample in outcomes.iter().flat_map(|o| &o.samples) {
        histogram.saturating_record(sample.secret_at.saturating_sub(sample.pay_at).max(1));
    }
    if histogram.is_empty() {
        return None;
    }
    let ms = |micros: u64| micros as f64 / 1e3;
    Some(Latency {
        count: histogram.len(),
        p50: ms(histogram.value_at_quantile(0.50)),
        p90: ms(histogram.value_at_quantile(0.90)),
        p99: ms(histogram.value_at_quantile(0.99)),
        max: ms(histogram.max()),
        mean: histogram.mean() / 1e3,
    })
}

/// CPU seconds at `at` µs, interpolated between the samples around it.
pub fn cpu_at(samples: &CpuSamples, at: u64) -> Option<f64> {
    let after = samples.iter().position(|&(t, _)| t >= at)?;
    let (t1, c1) = samples[after];
    if after == 0 || t1 == at {
        return Some(c1);
    }
    let (t0, c0) = samples[after - 1];
    Some(c0 + (c1 - c0) * (at - t0) as f64 / (t1 - t0) as f64)
}

pub fn viewer_reports(outcomes: &[Outcome]) -> Vec<ViewerReport> {
    outcomes
        .iter()
        .map(|o| ViewerReport {
            channel_id: format!("{:#x}", o.channel_id),
            completed: o.completed,
            answered: o.answered,
            highest_acknowledged: o.highest_acknowledged(),
            secrets_per_sequence: o.secrets.clone(),
            failure: o.failure.as_ref().map(|(kind, detail)| format!("{kind}: {detail}")),
        })
        .collect()
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".to_owned(), |b| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64))
}

fn opt(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}{unit}"))
}

impl Report {
    /// What `--check` asks: every payment acknowledged exactly once, no
    /// error, and (with `--verify-store`) no channel stored behind what its
    /// viewer was acknowledged.
    ///
    /// # Errors
    /// What fell short, in one sentence.
    pub fn check(&self) -> Result<(), String> {
        let clean = self.exactly_once
            && self.payments.acknowledged == self.payments.expected
            && self.errors.is_empty()
            && self.client_failures.is_empty()
            && self.store_check.as_ref().is_none_or(|check| check.stored_behind == 0);
        if clean {
            return Ok(());
        }
        let behind = self.store_check.as_ref().map_or(0, |check| check.stored_behind);
        Err(format!(
            "check failed: {} of {} payments acknowledged, exactly once: {}, errors: {:?}, failures: {:?}, \
             channels stored behind what their viewer was acknowledged: {behind}",
            self.payments.acknowledged, self.payments.expected, self.exactly_once, self.errors, self.client_failures
        ))
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |label: &str, value: String| {
            let _ = writeln!(out, "  {label:<36} {value}");
        };
        row("server", format!("{} (stream {:?})", self.server, self.stream));
        row(
            "plan",
            format!(
                "{} viewers × {} windows of {} s at {} wei{}, ramp {} s",
                self.viewers,
                self.windows,
                self.window_seconds,
                self.window_price,
                if self.last_payment_final { ", last payment final" } else { ", channels left open" },
                self.ramp_seconds
            ),
        );
        row(
            "phases",
            format!(
                "open {:.1} s, pre-sign {:.1} s, run {:.1} s",
                self.phases.open_seconds, self.phases.presign_seconds, self.phases.run_seconds
            ),
        );
        row(
            "viewers connected/announced/playing",
            format!("{} / {} / {}", self.viewers_connected, self.viewers_announced, self.viewers_playing),
        );
        row("viewers completed", format!("{} of {}", self.viewers_completed, self.viewers));
        row(
            "payments acknowledged by a secret",
            format!("{} of {} expected", self.payments.acknowledged, self.payments.expected),
        );
        row("payments answered", self.payments.answered.to_string());
        row(
            "duplicate / unsolicited secrets",
            format!("{} / {}", self.payments.duplicate_secrets, self.payments.unsolicited_secrets),
        );
        row("exactly once", if self.exactly_once { "yes".into() } else { "NO".into() });
        let steady = match (self.throughput.steady_from_seconds, self.throughput.steady_to_seconds) {
            (Some(from), Some(to)) => format!(" (secrets 10 %–90 %, {from:.1}–{to:.1} s)"),
            _ => String::new(),
        };
        row("steady payments/s", format!("{}{steady}", opt(self.throughput.steady_payments_per_second, "")));
        row("overall payments/s", opt(self.throughput.overall_payments_per_second, ""));
        match &self.latency_ms {
            Some(l) => row(
                "pay→secret latency",
                format!(
                    "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
                    l.p50, l.p90, l.p99, l.max, l.count
                ),
            ),
            None => row("pay→secret latency", "n/a".into()),
        }
        let counts = |map: &BTreeMap<String, u64>| {
            if map.is_empty() {
                "none".to_owned()
            } else {
                map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
            }
        };
        row("server errors by code", counts(&self.errors));
        row("viewer failures by kind", counts(&self.client_failures));
        for example in &self.failure_examples {
            row("  e.g.", example.clone());
        }
        if let Some(check) = &self.store_check {
            let verdict = if check.stored_behind == 0 { "nothing acknowledged is missing" } else { "PAYMENTS LOST" };
            row(
                "store vs acknowledged",
                format!(
                    "{} viewers: {} equal, {} ahead, {} behind: {verdict}",
                    check.viewers_checked, check.stored_equal, check.stored_ahead, check.stored_behind
                ),
            );
            for example in &check.behind_examples {
                row("  behind", example.clone());
            }
        }
        match &self.server_process {
            Some(s) => {
                let pinned = s.pinned_cpu.map(|c| format!(", pinned to CPU {c}")).unwrap_or_default();
                row(
                    "server CPU",
                    format!(
                        "{:.2} s = {:.1} % of one core over the run; steady {}{}",
                        s.cpu_seconds,
                        s.cpu_percent,
                        opt(s.steady_cpu_percent, " %"),
                        pinned
                    ),
                );
                row("server CPU per payment (steady)", opt(s.steady_cpu_micros_per_payment, " µs"));
                row(
                    "server peak RSS",
                    format!("{} (VmHWM, life); {} (run)", mib(s.peak_rss_bytes), mib(s.run_peak_rss_bytes)),
                );
            }
            None => row("server CPU / RSS", "n/a (give --server-pid)".into()),
        }
        let c = &self.client_process;
        let pinned = c.pinned_cpu.map(|c| format!(", pinned to CPU {c}")).unwrap_or_default();
        row(
            "bench CPU / peak RSS",
            format!(
                "{:.2} s = {:.1} % of one core; {}{}",
                c.cpu_seconds,
                c.cpu_percent,
                mib(Some(c.peak_rss_bytes)),
                pinned
            ),
        );
        out
    }
}
