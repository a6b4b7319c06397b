//! `tollstream bench`: a load generator for any server of PROTOCOL.md.
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
mod open;
mod report;
mod store_check;
mod system;
mod viewer;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tollstream_chain::{Chain, connect_provider, wallet_of};
use tollstream_client::viewer::connect_chain;
use tollstream_client::wallet::{load_wallet, random_key};
use tollstream_client::{Client, Tls, ViewerError};
use tollstream_protocol::channel_id::channel_id;
use tollstream_protocol::{Amount, B256, ChannelDomain, U256};

use report::{ClientProcessReport, Payments, Phases, Report, ServerProcessReport};
use viewer::{Counters, Outcome, Prepared, Shared};

/// Load-test a Tollstream server: open one channel per viewer on chain,
/// pre-sign every payment, then play and pay with many Socket.IO viewers at
/// once and report throughput, latency, errors and the server's CPU and
/// memory. Speaks only PROTOCOL.md, so any server of the protocol can be
/// driven.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct BenchArgs {
    /// The server to load (http:// or https://).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,

    /// Also trust the CA certificates in this PEM file for an https server
    /// (a private CA's, or a self-signed server's own certificate).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    /// JSON-RPC endpoint of the server's chain, used to open the channels.
    #[arg(long, env = "TOLLSTREAM_RPC_URL", default_value = "http://127.0.0.1:8545")]
    rpc_url: String,

    /// A funded wallet (hex key file) that opens and funds every channel;
    /// or set TOLLSTREAM_WALLET_KEY. It needs viewers × (windows +
    /// spare-windows) × window_price wei, plus gas.
    #[arg(long, env = "TOLLSTREAM_WALLET_KEY_FILE")]
    wallet_key_file: Option<PathBuf>,

    /// Number of viewers, each with its own channel, key and connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    viewers: u64,

    /// Payments (windows) each viewer makes.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    windows: u64,

    /// Extra windows deposited in each channel but not paid: the last
    /// payment is then not final, viewers send `stop` after it, and the
    /// server does not settle the channels during the run.
    #[arg(long, default_value_t = 0)]
    spare_windows: u64,

    /// The stream to play [default: the server's first].
    #[arg(long)]
    stream: Option<String>,

    /// Spread the viewers' starts evenly over this many seconds.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_seconds)]
    ramp_seconds: f64,

    /// Stop the run after this many seconds even if payments are missing
    /// [default: ramp + 3 × windows × window_seconds + 60].
    #[arg(long, value_parser = non_negative_seconds)]
    duration: Option<f64>,

    /// Viewers that may be between connecting and their `newChannel` reply
    /// at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    connect_concurrency: u64,

    /// `open` transactions per wave; a wave's receipts are awaited together.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    wave: u64,

    /// Seconds to wait for one wave's receipts.
    #[arg(long, default_value_t = 120.0, value_parser = non_negative_seconds)]
    receipt_timeout: f64,

    /// Lifetime of each channel in seconds [default: the server's
    /// min_channel_seconds + 3600].
    #[arg(long)]
    channel_lifetime: Option<u64>,

    /// Seconds to wait for the acks of `newChannel` and `play`.
    #[arg(long, default_value_t = 60.0, value_parser = non_negative_seconds)]
    request_timeout: f64,

    /// The server's process id (same machine): report its CPU time (utime +
    /// stime of /proc/PID/stat over the run) and peak RSS (VmHWM of
    /// /proc/PID/status).
    #[arg(long)]
    server_pid: Option<u32>,

    /// Pin every thread of the server (--server-pid) to this CPU, like
    /// `taskset -a -p -c N PID`.
    #[arg(long, requires = "server_pid")]
    server_cpu: Option<usize>,

    /// Pin the bench itself to this CPU.
    #[arg(long)]
    client_cpu: Option<usize>,

    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    json: bool,

    /// Include each viewer's exactly-once data in the JSON report: the
    /// highest sequence acknowledged and the number of secrets per sequence.
    #[arg(long, requires = "json")]
    per_viewer: bool,

    /// SIGKILL the server (--server-pid) this many seconds into the run, to
    /// check with --verify-store that it lost nothing it acknowledged.
    #[arg(long, requires = "server_pid", value_parser = non_negative_seconds)]
    kill_server_after: Option<f64>,

    /// After the run, read the server's database — its --data-dir (same
    /// machine) or its database URL (`postgres://…`) — and check that
    /// every payment a viewer got a secret for is stored.
    #[arg(long)]
    verify_store: Option<PathBuf>,

    /// Exit with an error (after the report) unless every payment was
    /// acknowledged exactly once, no error occurred, and (with
    /// --verify-store) the store is behind no viewer.
    #[arg(long)]
    check: bool,
}

const AFTER_HELP: &str = "\
One wallet opens one channel per viewer (transactions in waves, explicit
nonces, receipts awaited per wave). Each channel holds windows (+ spare-windows)
× window_price, so by default each viewer's last payment is final and the
server settles the channels during the run; --spare-windows keeps them open.

Each viewer has a fresh random session key and its own Socket.IO connection: it
announces its channel (newChannel), plays (signed over its socket id), answers
every pay with a state signed in advance, and ends at the secret of its last
payment. Only PROTOCOL.md is spoken, so any server of the protocol can be
driven.

Phases: open the channels (not measured), pre-sign every state (not measured),
then the run, which is measured. The steady-state rate counts the payments
acknowledged between the secret at the 10 % mark and the one at the 90 % mark
of all secrets, so the ramp-up and the tail are left out. Latency is from the
arrival of a `pay` to the arrival of its `secret`, over all payments. Server CPU
is utime + stime from /proc/PID/stat over the run (and, sampled every 100 ms,
over the steady interval); peak RSS is VmHWM from /proc/PID/status.
--server-cpu leaves the server pinned after the run.

The report goes to stdout (a table, or one JSON object with --json); progress
bars go to stderr when it is a terminal. The exit status is 0 once a report is
printed, whatever it says, unless --check is given.

Example, server and bench each on its own core:
  tollstream serve --stream bench=100000 --window-seconds 1 \\
    --max-connections-per-address 0 --new-connections-per-second 0 ... &
  tollstream bench --server http://127.0.0.1:8080 --wallet-key-file funded.key \\
      --viewers 2000 --windows 20 --ramp-seconds 5 \\
      --server-pid $! --server-cpu 0 --client-cpu 1 --json";

/// Seconds from 0 to a year: larger values would overflow a deadline.
fn non_negative_seconds(text: &str) -> Result<f64, String> {
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && (0.0..=YEAR).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a number of seconds between 0 and a year")),
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let files = super::raise_open_files_limit();
    if args.viewers + 64 > files {
        bail!(
            "the open-files limit is {files}, too low for {} viewers (one socket each); raise it (ulimit -n)",
            args.viewers
        );
    }
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
    let wallet = load_wallet(args.wallet_key_file.as_deref())?;

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
    let chain = connect_chain(&args.rpc_url, info.channel_address)
        .await
        .map_err(|e| super::watch::rpc_error(e, Some(info.chain_id)))?;
    if chain.chain_id() != info.chain_id {
        let wrong =
            ViewerError::WrongChain { url: args.rpc_url.clone(), actual: chain.chain_id(), expected: info.chain_id };
        return Err(super::watch::rpc_error(wrong, Some(info.chain_id)));
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
                () = super::shutdown_signal() => {}
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("cannot encode the report")?);
    } else {
        println!("tollstream bench ({:.1} s in all)", started.elapsed().as_secs_f64());
        print!("{}", report.table());
    }
    if args.check {
        let clean = report.exactly_once
            && report.payments.acknowledged == report.payments.expected
            && report.errors.is_empty()
            && report.client_failures.is_empty()
            && report.store_check.as_ref().is_none_or(|check| check.stored_behind == 0);
        if !clean {
            let behind = report.store_check.as_ref().map_or(0, |check| check.stored_behind);
            bail!(
                "check failed: {} of {} payments acknowledged, exactly once: {}, errors: {:?}, failures: {:?}, \
                 channels stored behind what their viewer was acknowledged: {behind}",
                report.payments.acknowledged,
                report.payments.expected,
                report.exactly_once,
                report.errors,
                report.client_failures
            );
        }
    }
    Ok(())
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
