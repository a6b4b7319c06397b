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
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tollstream_client::{Client, Tls};

/// What `tollstream bench-connections` was asked to do; each field is the
/// flag of the same name.
#[derive(Debug, Clone)]
pub struct ConnectionsConfig {
    /// The servers; connections are spread over them round-robin.
    pub server: Vec<String>,
    /// Extra CA certificates (PEM) trusted for an https server.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Connections to open and hold.
    pub connections: u64,
    /// Connections being set up at once.
    pub concurrency: u64,
    /// Seconds to hold every connection once all are open.
    pub hold_seconds: f64,
    /// The server's process id, to read its memory.
    pub server_pid: Option<u32>,
    /// Pin the bench itself to this CPU.
    pub client_cpu: Option<usize>,
    /// No progress bar or chatter on stderr (the report is JSON).
    pub quiet: bool,
}

/// What the run measured. Memory per connection is the growth over every
/// connection opened (`connected`).
#[derive(Debug, Serialize)]
pub struct ConnectionsReport {
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
pub struct ServerMemory {
    pid: u32,
    rss_before_bytes: u64,
    rss_held_bytes: u64,
    peak_rss_bytes: u64,
    bytes_per_connection: f64,
}

/// Opens and holds the connections, until the hold ends or `interrupt`
/// resolves, and returns the report. The connections are left to close
/// when the process exits.
///
/// # Errors
/// When `--client-cpu`, `--server-pid` or `--ca-cert` cannot be used.
pub async fn run(
    args: ConnectionsConfig,
    interrupt: impl Future<Output = ()> + Send,
) -> anyhow::Result<ConnectionsReport> {
    anyhow::ensure!(!args.server.is_empty(), "no server to connect to");
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

    let bar = progress_bar(args.connections, args.quiet);
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
    if !args.quiet {
        eprintln!("{} connections open in {connect_seconds:.1} s; holding {} s", clients.len(), args.hold_seconds);
    }

    let hold_started = Instant::now();
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs_f64(args.hold_seconds)) => {}
        () = interrupt => {}
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
    let report = ConnectionsReport {
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
    // No close handshakes awaited: 50,000 of them one by one would take
    // minutes against a slow server; dropping the clients only starts them.
    Ok(report)
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

impl ConnectionsReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = self.write_table(&mut out);
        out
    }

    fn write_table(&self, out: &mut String) -> std::fmt::Result {
        let report = self;
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        writeln!(out, "tollstream bench-connections")?;
        writeln!(out, "  servers                  {}", report.servers.join(" "))?;
        writeln!(
            out,
            "  connected                {} of {} in {:.1} s",
            report.connected, report.requested, report.connect_seconds
        )?;
        writeln!(out, "  still connected          {} after {:.1} s held", report.still_connected, report.held_seconds)?;
        if report.failures.is_empty() {
            writeln!(out, "  failures                 none")?;
        }
        for (error, count) in &report.failures {
            writeln!(out, "  failures                 {count} × {error}")?;
        }
        match &report.server {
            Some(server) => {
                writeln!(
                    out,
                    "  server RSS               {:.1} MiB before, {:.1} MiB held, peak {:.1} MiB (pid {})",
                    mib(server.rss_before_bytes),
                    mib(server.rss_held_bytes),
                    mib(server.peak_rss_bytes),
                    server.pid
                )?;
                writeln!(out, "  server memory per conn.  {:.1} KiB", server.bytes_per_connection / 1024.0)?;
            }
            None => writeln!(out, "  server memory            not measured (no --server-pid)")?,
        }
        writeln!(out, "  bench peak RSS           {:.1} MiB", mib(report.bench_peak_rss_bytes))?;
        Ok(())
    }
}
