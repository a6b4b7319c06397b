//! `tollstream bench` and `tollstream bench-connections`: their flags, and
//! a call into the load generator, `tollstream-bench`, which has the
//! method (see its crate doc).

use anyhow::{Context, bail};
use clap::Args;
use std::path::PathBuf;
use tollstream_bench::{BenchConfig, ConnectionsConfig};
use tollstream_client::wallet::load_wallet;

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

/// Runs the payment bench and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let files = super::raise_open_files_limit();
    if args.viewers + 64 > files {
        bail!(
            "the open-files limit is {files}, too low for {} viewers (one socket each); raise it (ulimit -n)",
            args.viewers
        );
    }
    let config = BenchConfig {
        wallet: load_wallet(args.wallet_key_file.as_deref())?,
        server: args.server,
        ca_cert: args.ca_cert,
        rpc_url: args.rpc_url,
        viewers: args.viewers,
        windows: args.windows,
        spare_windows: args.spare_windows,
        stream: args.stream,
        ramp_seconds: args.ramp_seconds,
        duration: args.duration,
        connect_concurrency: args.connect_concurrency,
        wave: args.wave,
        receipt_timeout: args.receipt_timeout,
        channel_lifetime: args.channel_lifetime,
        request_timeout: args.request_timeout,
        server_pid: args.server_pid,
        server_cpu: args.server_cpu,
        client_cpu: args.client_cpu,
        per_viewer: args.per_viewer,
        kill_server_after: args.kill_server_after,
        verify_store: args.verify_store,
    };
    let report = tollstream_bench::run(config, super::shutdown_signal()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("cannot encode the report")?);
    } else {
        println!("tollstream bench ({:.1} s in all)", report.total_seconds);
        print!("{}", report.table());
    }
    if args.check {
        report.check().map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Hold many idle Socket.IO connections to a server and report its memory
/// per connection (with --server-pid) and whether they all stayed up.
#[derive(Debug, Args)]
#[command(after_long_help = CONNECTIONS_AFTER_HELP)]
pub struct ConnectionsArgs {
    /// The server to connect to; repeat it for a server listening on several
    /// addresses, and connections are spread round-robin.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: Vec<String>,

    /// Also trust the CA certificates in this PEM file for an https server
    /// (a private CA's, or a self-signed server's own certificate).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,

    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    connections: u64,

    /// Connections being set up at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,

    /// Seconds to hold every connection once all are open, before the
    /// server's memory is read again. The default outlasts the server's
    /// ping interval plus ping timeout (25 + 20 s by default), so a
    /// connection that failed to answer a ping is closed, and not
    /// counted, by then.
    #[arg(long, default_value_t = 50.0, value_parser = non_negative_seconds)]
    hold_seconds: f64,

    /// The server's process id (same machine), to read its memory from
    /// /proc/PID/status.
    #[arg(long)]
    server_pid: Option<u32>,

    /// Pin the bench itself to this CPU.
    #[arg(long)]
    client_cpu: Option<usize>,

    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

const CONNECTIONS_AFTER_HELP: &str = "\
Each connection is a WebSocket with the Engine.IO handshake and the Socket.IO
CONNECT to the default namespace, then nothing but Engine.IO pings until the
end. Server memory per connection = (VmRSS with all held − VmRSS before) /
connections held, from /proc/PID/status.

One client address reaches one server address with at most the ephemeral port
range of connections (about 28,000 on Linux); for more, let the server listen
on several loopback addresses and give each:
  tollstream serve --listen 127.0.0.1:8080 --listen '[::1]:8080' ... &
  tollstream bench-connections --server http://127.0.0.1:8080 \\
      --server 'http://[::1]:8080' --connections 50000 --server-pid $!";

/// Holds the connections and prints the report.
pub async fn run_connections(args: ConnectionsArgs) -> anyhow::Result<()> {
    let files = super::raise_open_files_limit();
    if args.connections + 64 > files {
        bail!("the open-files limit is {files}, too low for {} connections; raise it (ulimit -n)", args.connections);
    }
    let config = ConnectionsConfig {
        server: args.server,
        ca_cert: args.ca_cert,
        connections: args.connections,
        concurrency: args.concurrency,
        hold_seconds: args.hold_seconds,
        server_pid: args.server_pid,
        client_cpu: args.client_cpu,
        quiet: args.json,
    };
    let report = tollstream_bench::connections::run(config, super::shutdown_signal()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
