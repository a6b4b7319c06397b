//! `tollstream bench-connections`: hold many idle Socket.IO connections to a
//! server and measure what each costs it in memory.
//!
//! A connection here is what a viewer holds between payments: a WebSocket,
//! the Engine.IO handshake, the Socket.IO CONNECT to `/`, and the Engine.IO
//! ping/pong that keeps it alive. The server's resident memory (`VmRSS`) is
//! read before the first connection and again once all are held; the
//! difference over the number held is the cost of one connection.
//!
//! One loopback address reaches one server address with at most the
//! ephemeral port range (about 28,000 ports on Linux) of connections, so
//! more than that needs the server listening on several addresses
//! (`serve --listen 127.0.0.1:P --listen [::1]:P`) and the bench given each
//! (`--server` repeated): connections are spread round-robin.

use super::system;
use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tollstream_client::{Client, Tls};

/// Hold many idle Socket.IO connections to a server and report its memory
/// per connection (with --server-pid) and whether they all stayed up.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
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
    #[arg(long, default_value_t = 50.0, value_parser = super::non_negative_seconds)]
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

const AFTER_HELP: &str = "\
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

/// What the run measured. Memory per connection is the growth over every
/// connection opened (`connected`).
#[derive(Debug, Serialize)]
struct Report {
    servers: Vec<String>,
    requested: u64,
    connected: u64,
    /// Connections that failed to open, by error message.
    failures: BTreeMap<String, u64>,
    connect_seconds: f64,
    held_seconds: f64,
    /// Connections still up at the end of the hold.
    still_connected: u64,
    server: Option<ServerMemory>,
    bench_peak_rss_bytes: u64,
}

#[derive(Debug, Serialize)]
struct ServerMemory {
    pid: u32,
    rss_before_bytes: u64,
    rss_held_bytes: u64,
    peak_rss_bytes: u64,
    bytes_per_connection: f64,
}

pub async fn run(args: ConnectionsArgs) -> anyhow::Result<()> {
    let files = super::super::raise_open_files_limit();
    if args.connections + 64 > files {
        bail!("the open-files limit is {files}, too low for {} connections; raise it (ulimit -n)", args.connections);
    }
    if let Some(cpu) = args.client_cpu {
        system::pin_self(cpu).context("--client-cpu")?;
    }
    let server_process = match args.server_pid {
        Some(pid) => Some(system::Process::new(pid).context("--server-pid")?),
        None => None,
    };
    let rss = |process: &system::Process| -> anyhow::Result<u64> {
        process.memory()?.rss_bytes.context("no VmRSS in the server's /proc status")
    };
    let rss_before = server_process.as_ref().map(rss).transpose()?;

    let bar = progress_bar(args.connections, args.json);
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency as usize));
    let tls = Tls::new(args.ca_cert.as_deref())?;
    let tasks: Vec<_> = (0..args.connections)
        .map(|index| {
            let url = args.server[index as usize % args.server.len()].clone();
            let gate = gate.clone();
            let bar = bar.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("the semaphore is never closed");
                let client = Client::connect_with(&url, &tls).await;
                bar.inc(1);
                client.map_err(|error| error.to_string())
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(tasks.len());
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok(Ok(client)) => clients.push(client),
            Ok(Err(error)) => *failures.entry(error).or_default() += 1,
            Err(error) => *failures.entry(format!("task failed: {error}")).or_default() += 1,
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if !args.json {
        eprintln!("{} connections open in {connect_seconds:.1} s; holding {} s", clients.len(), args.hold_seconds);
    }

    let hold_started = Instant::now();
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs_f64(args.hold_seconds)) => {}
        () = super::super::shutdown_signal() => {}
    }
    let held_seconds = hold_started.elapsed().as_secs_f64();
    let still_connected = clients.iter().filter(|client| client.is_connected()).count() as u64;
    let server_memory = match (&server_process, rss_before) {
        (Some(process), Some(before)) => match (rss(process), process.memory()) {
            (Ok(rss_held), Ok(memory)) => Some(ServerMemory {
                pid: process.pid,
                rss_before_bytes: before,
                rss_held_bytes: rss_held,
                peak_rss_bytes: memory.peak_rss_bytes.unwrap_or(rss_held),
                bytes_per_connection: rss_held.saturating_sub(before) as f64 / (clients.len().max(1) as f64),
            }),
            // The server died during the hold: the rest of the report
            // still says what happened to the connections.
            (Err(error), _) | (_, Err(error)) => {
                eprintln!("warning: cannot read the server's memory after the hold: {error:#}");
                None
            }
        },
        _ => None,
    };
    let report = Report {
        servers: args.server.clone(),
        requested: args.connections,
        connected: clients.len() as u64,
        failures,
        connect_seconds,
        held_seconds,
        still_connected,
        server: server_memory,
        bench_peak_rss_bytes: system::self_usage().peak_rss_bytes,
    };
    print_report(&report, args.json)?;
    // No close handshakes: 50,000 of them one by one would take minutes
    // against a slow server; the sockets close when the process exits.
    Ok(())
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("connecting {bar:40} {pos}/{len} ({per_sec}, {eta} left)")
            .expect("a valid template"),
    );
    bar
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!("tollstream bench-connections");
    println!("  servers                  {}", report.servers.join(" "));
    println!(
        "  connected                {} of {} in {:.1} s",
        report.connected, report.requested, report.connect_seconds
    );
    println!("  still connected          {} after {:.1} s held", report.still_connected, report.held_seconds);
    if report.failures.is_empty() {
        println!("  failures                 none");
    }
    for (error, count) in &report.failures {
        println!("  failures                 {count} × {error}");
    }
    match &report.server {
        Some(server) => {
            println!(
                "  server RSS               {:.1} MiB before, {:.1} MiB held, peak {:.1} MiB (pid {})",
                mib(server.rss_before_bytes),
                mib(server.rss_held_bytes),
                mib(server.peak_rss_bytes),
                server.pid
            );
            println!("  server memory per conn.  {:.1} KiB", server.bytes_per_connection / 1024.0);
        }
        None => println!("  server memory            not measured (no --server-pid)"),
    }
    println!("  bench peak RSS           {:.1} MiB", mib(report.bench_peak_rss_bytes));
    Ok(())
}
