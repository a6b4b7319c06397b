//! # tollstream-bench
//!
//! The load generator behind `tollstream bench` and `tollstream
//! bench-connections`, for any server of PROTOCOL.md. Every simulated viewer
//! is a [`tollstream_client::Client`]; the CLI only parses flags into a
//! [`BenchConfig`] or a [`ConnectionsConfig`] and prints the report.
//!
//! ## Layout
//! - this file: [`run`], the payment bench's phases, and [`BenchConfig`].
//! - [`open`]: opening one channel per viewer on chain, in waves.
//! - [`viewer`]: one simulated viewer: its pre-signed states and the task
//!   that announces, plays and answers every `pay` through the typed client.
//! - [`report`]: the figures, computed from what the viewers recorded.
//! - [`system`]: `/proc` sampling, CPU pinning, the bench's own usage.
//! - [`store_check`]: `--verify-store`, through the server's store API.
//! - [`connections`]: `bench-connections`, many idle connections.
//!
//! ## The payment bench
//!
//! 1. **Open** one channel per viewer on chain, all from one funded wallet:
//!    `open` transactions are signed locally with explicit, sequential
//!    nonces and sent in waves (`--wave`); only the end of a wave waits for
//!    its receipts.
//! 2. **Pre-sign** every viewer's opening state and all its payment states,
//!    on all the CPUs the bench may use, so that client signing is not part
//!    of the measurement. Each viewer has a fresh random session key.
//! 3. **Run** (the measured phase): viewer *i* starts at `i/N × --ramp-seconds`,
//!    opens its own Socket.IO connection over loopback, announces its channel
//!    (`newChannel`), sends `play` signed over its socket id, answers every
//!    `pay` with the pre-signed state of that sequence, and stops once the
//!    secret of its last payment arrived.
//! 4. **Report** viewers, payments acknowledged by a secret, steady-state
//!    payments/s, pay→secret latency, errors by code, and (with
//!    `--server-pid`) the server's CPU time and peak RSS from `/proc`.
//!
//! Deposits: by default a channel holds exactly `--windows` windows, so each
//! viewer's last payment is final and the server settles the channel on
//! chain during the run, as with real viewers who spend their channel. With
//! `--spare-windows K` each channel holds K more, the viewer sends `stop`
//! after its last planned payment, and the channels stay open (the server
//! settles them only near expiry), which keeps settlement out of the run.

pub mod connections;
pub mod open;
pub mod report;
pub mod store_check;
pub mod system;
pub mod viewer;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tollstream_chain::{Chain, connect_provider, wallet_of};
use tollstream_client::viewer::connect_chain;
use tollstream_client::wallet::random_key;
use tollstream_client::{Client, Tls, ViewerError};
use tollstream_protocol::channel_id::channel_id;
use tollstream_protocol::{Amount, B256, ChannelDomain, SigningKey, U256};

pub use connections::{ConnectionsConfig, ConnectionsReport};
pub use report::Report;
use report::{ClientProcessReport, Payments, Phases, ServerProcessReport};
use viewer::{Counters, Outcome, Prepared, Shared};

/// What `tollstream bench` was asked to do; each field is the flag of the
/// same name (`tollstream bench --help` says more).
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The server to load (http:// or https://).
    pub server: String,
    /// Extra CA certificates (PEM) trusted for an https server.
    pub ca_cert: Option<PathBuf>,
    /// JSON-RPC endpoint of the server's chain, used to open the channels.
    pub rpc_url: String,
    /// The funded wallet that opens and funds every channel.
    pub wallet: SigningKey,
    /// Number of viewers, each with its own channel, key and connection.
    pub viewers: u64,
    /// Payments (windows) each viewer makes.
    pub windows: u64,
    /// Extra windows deposited but not paid: channels stay open after the run.
    pub spare_windows: u64,
    /// The stream to play; `None` for the server's first.
    pub stream: Option<String>,
    /// The viewers' starts are spread evenly over this many seconds.
    pub ramp_seconds: f64,
    /// The run stops after this many seconds; `None` for ramp + 3 × windows
    /// × window_seconds + 60.
    pub duration: Option<f64>,
    /// Viewers that may be between connecting and their `newChannel` reply.
    pub connect_concurrency: u64,
    /// `open` transactions per wave.
    pub wave: u64,
    /// Seconds to wait for one wave's receipts.
    pub receipt_timeout: f64,
    /// Lifetime of each channel; `None` for the server's minimum + 3600 s.
    pub channel_lifetime: Option<u64>,
    /// Seconds to wait for the acks of `newChannel` and `play`.
    pub request_timeout: f64,
    /// The server's process id, for its CPU time and memory.
    pub server_pid: Option<u32>,
    /// Pin every thread of the server to this CPU.
    pub server_cpu: Option<usize>,
    /// Pin the bench itself to this CPU.
    pub client_cpu: Option<usize>,
    /// Include each viewer's exactly-once data in the report.
    pub per_viewer: bool,
    /// SIGKILL the server this many seconds into the run.
    pub kill_server_after: Option<f64>,
    /// The server's data directory or database URL, checked after the run.
    pub verify_store: Option<PathBuf>,
}

/// Runs the payment bench: opens the channels, pre-signs, runs the viewers
/// until they are done, `limit` passes or `interrupt` resolves (Ctrl-C),
/// and returns the report. Progress bars go to stderr.
///
/// # Errors
/// When the server, the chain or the wallet cannot be used, opening the
/// channels fails, or `--verify-store` cannot read the store. What went
/// wrong for viewers during the run is in the report, not an error.
pub async fn run(args: BenchConfig, interrupt: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<Report> {
    let started = Instant::now();
    if let Some(cpu) = args.client_cpu {
        system::pin_self(cpu).context("--client-cpu")?;
    }
    let server_process = match args.server_pid {
        Some(pid) => Some(system::Process::new(pid).context("--server-pid")?),
        None => None,
    };
    if let (Some(process), Some(cpu)) = (&server_process, args.server_cpu) {
        process.pin(cpu).context("--server-cpu")?;
    }
    let wallet = args.wallet.clone();

    // Who the server is and what it sells.
    let tls = Tls::new(args.ca_cert.as_deref())?;
    let client = Client::connect_with(&args.server, &tls)
        .await
        .with_context(|| format!("cannot reach the server at {}", args.server))?;
    let info = client.public_key().await.context("publicKey failed")?;
    client.close().await;
    let stream = match &args.stream {
        Some(id) => id.clone(),
        None => info.streams.first().map(|s| s.id.clone()).context("the server sells no streams")?,
    };
    if !info.streams.iter().any(|s| s.id == stream) {
        let ids: Vec<&str> = info.streams.iter().map(|s| s.id.as_str()).collect();
        bail!("the server has no stream {stream:?}; it has {ids:?}");
    }
    let domain = ChannelDomain::new(info.chain_id, info.channel_address);
    let price = info.window_price;
    let windows_per_channel = args.windows + args.spare_windows;
    let deposit = price
        .0
        .checked_mul(U256::from(windows_per_channel))
        .filter(|d| *d < U256::from(1u128 << 96))
        .context("the deposit (windows × window_price) does not fit the contract's uint96")?;

    // The chain.
    let chain = connect_chain(&args.rpc_url, info.channel_address).await.map_err(|e| chain_error(e, info.chain_id))?;
    if chain.chain_id() != info.chain_id {
        let wrong =
            ViewerError::WrongChain { url: args.rpc_url.clone(), actual: chain.chain_id(), expected: info.chain_id };
        return Err(chain_error(wrong, info.chain_id));
    }
    let lifetime = args.channel_lifetime.unwrap_or(info.min_channel_seconds + 3_600);
    if lifetime < info.min_channel_seconds {
        bail!("--channel-lifetime {lifetime} is below the server's minimum of {} s", info.min_channel_seconds);
    }
    let expires_at = chain.now().await.context("cannot read the chain's time")? + lifetime;

    // Keys and channel ids.
    let viewers = args.viewers as usize;
    let keys: Vec<_> = (0..viewers).map(|_| random_key()).collect();
    let salts: Vec<B256> = keys
        .iter()
        .map(|key| alloy::primitives::keccak256([key.public_key().0.as_slice(), b"tollstream bench salt"].concat()))
        .collect();

    // Phase 1: open every channel.
    let open_started = Instant::now();
    let bar = progress_bar(viewers as u64, "opening channels");
    let to_open: Vec<open::ToOpen> =
        keys.iter().zip(&salts).map(|(key, salt)| open::ToOpen { signer: key.address(), salt: *salt }).collect();
    let plan = open::OpenPlan {
        contract: info.channel_address,
        payee: info.wallet_address,
        deposit,
        expires_at,
        chain_id: info.chain_id,
        wave: args.wave as usize,
        send_concurrency: 16,
        receipt_timeout: Duration::from_secs_f64(args.receipt_timeout),
    };
    let provider = connect_provider(&args.rpc_url, None)?;
    open::open_all(&provider, &wallet_of(&wallet), wallet.address(), &plan, &to_open, &bar)
        .await
        .context("opening the channels failed")?;
    bar.finish_and_clear();
    let open_seconds = open_started.elapsed().as_secs_f64();

    // Phase 2: pre-sign every state, on every CPU the bench may use.
    let sign_started = Instant::now();
    let bar = progress_bar(viewers as u64, "signing states");
    let deposit = Amount(deposit);
    let prepared = tokio::task::block_in_place(|| {
        presign(keys, &salts, wallet.address(), info.wallet_address, &domain, deposit, price, args.windows, &bar)
    });
    bar.finish_and_clear();
    let presign_seconds = sign_started.elapsed().as_secs_f64();

    // Phase 3: the run.
    let t0 = Instant::now();
    let shared = Arc::new(Shared {
        url: args.server.clone(),
        tls,
        stream_id: stream.clone(),
        domain,
        price,
        payments: args.windows,
        last_is_final: args.spare_windows == 0,
        connecting: Semaphore::new(args.connect_concurrency as usize),
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        t0,
        counters: Counters::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let client_cpu_before = system::self_usage().cpu_seconds;
    let server_cpu_before = match &server_process {
        Some(process) => Some(process.cpu_seconds().context("cannot read the server's CPU time")?),
        None => None,
    };
    let sampler = server_process.clone().map(|process| tokio::spawn(sample(process, t0, stop_rx.clone())));
    let mut tasks = Vec::with_capacity(viewers);
    for (index, prepared) in prepared.into_iter().enumerate() {
        let offset = Duration::from_secs_f64(args.ramp_seconds * index as f64 / viewers as f64);
        tasks.push(tokio::spawn(viewer::run(shared.clone(), prepared, t0 + offset, stop_rx.clone())));
    }
    let limit = args.duration.unwrap_or(args.ramp_seconds + 3.0 * args.windows as f64 * info.window_seconds + 60.0);
    let watchdog = tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs_f64(limit)) => {}
                () = interrupt => {}
            }
            stop_tx.send_replace(true);
        }
    });
    let progress = tokio::spawn(show_progress(shared.clone(), viewers as u64, stop_rx.clone()));
    let killer = match (args.kill_server_after, &server_process) {
        (Some(after), Some(process)) => {
            Some(tokio::spawn(kill_after(process.pid, t0 + Duration::from_secs_f64(after))))
        }
        _ => None,
    };

    let mut outcomes: Vec<Outcome> = Vec::with_capacity(viewers);
    for (task, salt) in tasks.into_iter().zip(&salts) {
        outcomes.push(task.await.unwrap_or_else(|error| Outcome {
            channel_id: channel_id(wallet.address(), info.wallet_address, *salt),
            secrets: vec![0; args.windows as usize],
            failure: Some(("panicked", error.to_string())),
            ..Default::default()
        }));
    }
    let run_micros = t0.elapsed().as_micros() as u64;
    let client_cpu = system::self_usage().cpu_seconds - client_cpu_before;
    let server_cpu_after = match &server_process {
        Some(process) => process.cpu_seconds().ok(),
        None => None,
    };
    stop_tx.send_replace(true);
    watchdog.abort();
    if let Some(killer) = killer {
        killer.abort();
    }
    let _ = progress.await;
    let (samples, run_peak_rss) = match sampler {
        Some(sampler) => sampler.await.unwrap_or_default(),
        None => (Vec::new(), None),
    };

    // Phase 4: the report.
    let run_seconds = run_micros as f64 / 1e6;
    let steady = report::steady_interval(&outcomes);
    let server_process = match (&server_process, server_cpu_before, server_cpu_after) {
        (Some(process), Some(before), Some(after)) => {
            let memory = process.memory().unwrap_or_default();
            let steady_cpu = steady.and_then(|(lo, hi, n)| {
                let cpu = report::cpu_at(&samples, hi)? - report::cpu_at(&samples, lo)?;
                Some((cpu / ((hi - lo) as f64 / 1e6) * 100.0, cpu / n as f64 * 1e6))
            });
            Some(ServerProcessReport {
                pid: process.pid,
                cpu_seconds: after - before,
                cpu_percent: (after - before) / run_seconds.max(1e-9) * 100.0,
                steady_cpu_percent: steady_cpu.map(|(percent, _)| percent),
                steady_cpu_micros_per_payment: steady_cpu.map(|(_, per)| per),
                // VmHWM is kept from per-thread counters that lag a little;
                // a sample above it is the better figure.
                peak_rss_bytes: memory.peak_rss_bytes.max(run_peak_rss),
                run_peak_rss_bytes: run_peak_rss.or(memory.rss_bytes),
                pinned_cpu: args.server_cpu,
            })
        }
        (Some(process), _, None) => {
            eprintln!("warning: the server process {} ended during the run; no CPU report", process.pid);
            None
        }
        _ => None,
    };
    let store_check = match &args.verify_store {
        Some(dir) => Some(store_check::check(dir, &outcomes).await.context("--verify-store")?),
        None => None,
    };
    let (errors, client_failures, failure_examples) = viewer::tally(&outcomes);
    let secrets_total: u64 = outcomes.iter().flat_map(|o| &o.secrets).map(|&n| u64::from(n)).sum();
    let acknowledged: u64 = outcomes.iter().map(|o| o.samples.len() as u64).sum();
    let counted: u64 = outcomes.iter().flat_map(|o| &o.secrets).filter(|&&n| n > 0).count() as u64;
    let exactly_once = outcomes.iter().all(|o| o.secrets.iter().all(|&n| n == 1));
    let report = Report {
        total_seconds: started.elapsed().as_secs_f64(),
        server: args.server.clone(),
        stream,
        viewers: args.viewers,
        windows: args.windows,
        window_seconds: info.window_seconds,
        window_price: price.to_string(),
        last_payment_final: args.spare_windows == 0,
        ramp_seconds: args.ramp_seconds,
        phases: Phases { open_seconds, presign_seconds, run_seconds },
        viewers_connected: outcomes.iter().filter(|o| o.connected).count() as u64,
        viewers_announced: outcomes.iter().filter(|o| o.announced).count() as u64,
        viewers_playing: outcomes.iter().filter(|o| o.playing).count() as u64,
        viewers_completed: outcomes.iter().filter(|o| o.completed).count() as u64,
        payments: Payments {
            expected: args.viewers * args.windows,
            answered: outcomes.iter().map(|o| o.answered).sum(),
            acknowledged,
            duplicate_secrets: secrets_total - counted,
            unsolicited_secrets: outcomes.iter().map(|o| o.unsolicited_secrets).sum(),
        },
        exactly_once,
        throughput: report::throughput(&outcomes, steady),
        latency_ms: report::latency(&outcomes),
        errors,
        client_failures,
        failure_examples,
        server_process,
        client_process: {
            let usage = system::self_usage();
            ClientProcessReport {
                cpu_seconds: client_cpu,
                cpu_percent: client_cpu / run_seconds.max(1e-9) * 100.0,
                peak_rss_bytes: usage.peak_rss_bytes,
                pinned_cpu: args.client_cpu,
            }
        },
        store_check,
        per_viewer: args.per_viewer.then(|| report::viewer_reports(&outcomes)),
    };
    Ok(report)
}

/// SIGKILLs the server at `at`: a crash with payments in flight, for
/// --verify-store to show that none it acknowledged was lost.
async fn kill_after(pid: u32, at: Instant) {
    tokio::time::sleep_until(at.into()).await;
    // SAFETY: kill(2) with a process id and a signal number.
    let result = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    if result == 0 {
        eprintln!("killed the server (pid {pid}) with SIGKILL, as --kill-server-after asked");
    } else {
        eprintln!("warning: cannot kill the server (pid {pid}): {}", std::io::Error::last_os_error());
    }
}

/// Signs every viewer's states, splitting the viewers over the CPUs.
#[allow(clippy::too_many_arguments)]
fn presign(
    keys: Vec<tollstream_protocol::SigningKey>,
    salts: &[B256],
    wallet: tollstream_protocol::Address,
    payee: tollstream_protocol::Address,
    domain: &ChannelDomain,
    deposit: Amount,
    price: Amount,
    payments: u64,
    bar: &ProgressBar,
) -> Vec<Prepared> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
    let chunk = keys.len().div_ceil(threads).max(1);
    let mut work: Vec<(tollstream_protocol::SigningKey, B256)> = keys.into_iter().zip(salts.iter().copied()).collect();
    let mut chunks = Vec::new();
    while !work.is_empty() {
        let rest = work.split_off(chunk.min(work.len()));
        chunks.push(std::mem::replace(&mut work, rest));
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|(key, salt)| {
                            let id = channel_id(wallet, payee, salt);
                            let prepared = viewer::prepare(key, id, wallet, domain, deposit, price, payments);
                            bar.inc(1);
                            prepared
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|handle| handle.join().expect("signing does not panic")).collect()
    })
}

/// Samples the server's CPU time and RSS every 100 ms until `stop`; returns
/// the CPU samples and the highest RSS seen (the kernel keeps only the peak
/// of the process's whole life, VmHWM).
async fn sample(
    process: system::Process,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) -> (report::CpuSamples, Option<u64>) {
    let mut samples = Vec::new();
    let mut peak_rss = None::<u64>;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let at = t0.elapsed().as_micros() as u64;
        match process.cpu_seconds() {
            Ok(cpu) => samples.push((at, cpu)),
            Err(_) => break,
        }
        if let Ok(memory) = process.memory() {
            peak_rss = peak_rss.max(memory.rss_bytes);
        }
    }
    if let Ok(cpu) = process.cpu_seconds() {
        samples.push((t0.elapsed().as_micros() as u64, cpu));
    }
    (samples, peak_rss)
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{msg}}"))
            .expect("valid progress template"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// The run's progress bar: payments acknowledged, viewers playing and done.
async fn show_progress(shared: Arc<Shared>, viewers: u64, mut stop: watch::Receiver<bool>) {
    let bar = progress_bar(viewers * shared.payments, "payments acknowledged");
    let c = &shared.counters;
    loop {
        bar.set_position(c.acknowledged.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{} connected, {} playing, {}/{viewers} done, {} failed",
            c.connected.load(Ordering::Relaxed),
            c.playing.load(Ordering::Relaxed),
            c.finished.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        ));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    bar.finish_and_clear();
}

/// A chain error, with the hint the CLI gives for `--rpc-url`.
fn chain_error(error: ViewerError, chain_id: u64) -> anyhow::Error {
    match error {
        ViewerError::ChainUnreachable { .. } | ViewerError::WrongChain { .. } => anyhow::anyhow!(
            "{error}; pass --rpc-url with a JSON-RPC endpoint of chain {chain_id}, the server's chain (or set TOLLSTREAM_RPC_URL)"
        ),
        other => other.into(),
    }
}
