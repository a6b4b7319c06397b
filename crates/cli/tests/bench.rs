//! `tollstream bench` end to end, small: a real anvil, a real `tollstream
//! serve`, and the bench binary as a child process. The point is that every
//! payment completes exactly once and none is lost, on the bench's side
//! (one secret per sequence) and on the server's (the stored state); speed
//! is not asserted.

mod common;

use common::{ETH, PRICE, ServerOptions, ServerProcess, TestChain, hex};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use tollstream_protocol::{Amount, SigningKey, U256};
use tollstream_server::store::{ChannelStatus, Store};

fn write_key(dir: &Path, key: &SigningKey) -> String {
    let path = dir.join("bench.key");
    std::fs::write(&path, format!("0x{}\n", hex(&key.to_bytes()))).unwrap();
    path.display().to_string()
}

/// Runs `tollstream bench ARGS --json --per-viewer` and returns the report.
/// A load generator opens all its connections from one address, at once:
/// lift the per-address cap and the rate of new connections.
fn uncapped(mut options: ServerOptions) -> ServerOptions {
    options
        .extra_args
        .extend(["--max-connections-per-address", "0", "--new-connections-per-second", "0"].map(str::to_owned));
    options
}

async fn bench(args: &[String], server: &ServerProcess) -> Value {
    finish_bench(spawn_bench(args), server).await
}

fn spawn_bench(args: &[String]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tollstream"))
        .arg("bench")
        .args(args)
        .args(["--json", "--per-viewer"])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn finish_bench(child: tokio::process::Child, server: &ServerProcess) -> Value {
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the bench finishes within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}\n{stdout}\nserver log:\n{}", server.log());
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("the report is not JSON ({e}): {stdout}\n{stderr}"))
}

fn common_args(server: &ServerProcess, chain: &TestChain, key_file: &str) -> Vec<String> {
    [
        "--server",
        &server.url,
        "--rpc-url",
        &chain.rpc,
        "--wallet-key-file",
        key_file,
        "--ramp-seconds",
        "1",
        "--duration",
        "60",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Checks the bench's exactly-once data and returns the channel ids.
fn assert_exactly_once(report: &Value, viewers: u64, windows: u64) -> BTreeSet<String> {
    let expected = viewers * windows;
    assert_eq!(report["viewers_connected"], viewers, "{report:#}");
    assert_eq!(report["viewers_playing"], viewers, "{report:#}");
    assert_eq!(report["viewers_completed"], viewers, "{report:#}");
    assert_eq!(report["payments"]["expected"], expected);
    assert_eq!(report["payments"]["acknowledged"], expected, "{report:#}");
    assert_eq!(report["payments"]["answered"], expected, "{report:#}");
    assert_eq!(report["payments"]["duplicate_secrets"], 0);
    assert_eq!(report["payments"]["unsolicited_secrets"], 0);
    assert_eq!(report["exactly_once"], true);
    assert_eq!(report["errors"], serde_json::json!({}), "no error code: {report:#}");
    assert_eq!(report["client_failures"], serde_json::json!({}), "{report:#}");
    assert_eq!(report["latency_ms"]["count"], expected);
    assert!(report["latency_ms"]["p50"].as_f64().unwrap() <= report["latency_ms"]["max"].as_f64().unwrap());
    assert!(report["throughput"]["steady_payments_per_second"].as_f64().unwrap() > 0.0);

    let per_viewer = report["per_viewer"].as_array().expect("per-viewer data");
    assert_eq!(per_viewer.len() as u64, viewers);
    let once: Vec<Value> = (0..windows).map(|_| Value::from(1)).collect();
    let mut ids = BTreeSet::new();
    for viewer in per_viewer {
        assert_eq!(viewer["highest_acknowledged"], windows, "{viewer}");
        assert_eq!(viewer["secrets_per_sequence"], Value::Array(once.clone()), "one secret per sequence: {viewer}");
        assert_eq!(viewer["answered"], windows, "{viewer}");
        assert!(ids.insert(viewer["channel_id"].as_str().unwrap().to_owned()), "channels are distinct");
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_viewers_pay_five_windows_each_exactly_once() {
    const VIEWERS: u64 = 200;
    const WINDOWS: u64 = 5;
    let chain = TestChain::new().await;
    let options = ServerOptions {
        window_seconds: 0.2,
        // A loaded 2-core machine must not turn slowness into lost payments.
        pay_timeout: 30.0,
        streams: "bench=100000".into(),
        ..Default::default()
    };
    let server = ServerProcess::start(&chain, &uncapped(options));
    let pid = server.pid();
    let wallet = chain.node().funded_wallet(U256::from(10 * ETH)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_key(dir.path(), &wallet);

    let mut args = common_args(&server, &chain, &key_file);
    args.extend(["--viewers", "200", "--windows", "5", "--server-pid", &pid.to_string()].map(str::to_owned));
    let report = bench(&args, &server).await;

    let ids = assert_exactly_once(&report, VIEWERS, WINDOWS);
    assert_eq!(report["stream"], "bench");
    assert_eq!(report["last_payment_final"], true);
    let process = &report["server_process"];
    assert_eq!(process["pid"], pid);
    assert!(process["cpu_seconds"].as_f64().unwrap() > 0.0, "{process}");
    assert!(process["peak_rss_bytes"].as_u64().unwrap() > 0, "{process}");

    // Nothing acknowledged was lost: the server stored every final state.
    let stored = server.store().await.list().await.unwrap();
    let stored_ids: BTreeSet<String> = stored.iter().map(|c| format!("{:#x}", c.state.channel_id)).collect();
    assert_eq!(stored_ids, ids, "the server holds exactly the bench's channels");
    for channel in &stored {
        assert_eq!(channel.state.client_sequence_number, WINDOWS, "{channel:?}");
        assert_eq!(channel.state.server_balance, Amount::from(WINDOWS * PRICE));
        assert_eq!(channel.state.client_balance, Amount::ZERO);
        assert_eq!(channel.state.client_wallet_address, wallet.address());
        assert_ne!(channel.status, ChannelStatus::Open, "a spent channel is final or settled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_spare_windows_channels_stay_open_after_the_last_payment() {
    const VIEWERS: u64 = 40;
    const WINDOWS: u64 = 3;
    let chain = TestChain::new().await;
    let options = ServerOptions { pay_timeout: 30.0, streams: "bench=100000".into(), ..Default::default() };
    let server = ServerProcess::start(&chain, &uncapped(options));
    let wallet = chain.node().funded_wallet(U256::from(10 * ETH)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_key(dir.path(), &wallet);

    let mut args = common_args(&server, &chain, &key_file);
    args.extend(["--viewers", "40", "--windows", "3", "--spare-windows", "2", "--check"].map(str::to_owned));
    let report = bench(&args, &server).await;

    let ids = assert_exactly_once(&report, VIEWERS, WINDOWS);
    assert_eq!(report["last_payment_final"], false);
    assert_eq!(report["server_process"], Value::Null, "no --server-pid, no server figures");

    let stored = server.store().await.list().await.unwrap();
    assert_eq!(stored.len() as u64, VIEWERS);
    for channel in &stored {
        assert!(ids.contains(&format!("{:#x}", channel.state.channel_id)));
        assert_eq!(channel.state.client_sequence_number, WINDOWS, "no payment past the planned ones");
        assert_eq!(channel.state.server_balance, Amount::from(WINDOWS * PRICE));
        assert_eq!(channel.state.client_balance, Amount::from(2 * PRICE));
        assert_eq!(channel.status, ChannelStatus::Open);
    }
}

/// Issue 7's durability target: SIGKILL the server in the middle of the
/// run; every payment a viewer got a `secret` for must be in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_run_keeps_every_payment_it_acknowledged() {
    const VIEWERS: u64 = 150;
    let chain = TestChain::new().await;
    let options =
        ServerOptions { window_seconds: 0.2, pay_timeout: 30.0, streams: "bench=100000".into(), ..Default::default() };
    let mut server = ServerProcess::start(&chain, &uncapped(options));
    let wallet = chain.node().funded_wallet(U256::from(10 * ETH)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_key(dir.path(), &wallet);

    let mut args = common_args(&server, &chain, &key_file);
    args.extend(["--viewers", "150", "--windows", "40", "--spare-windows", "1"].map(str::to_owned));
    args.extend(["--verify-store".to_owned(), server.data_dir.display().to_string()]);
    let child = spawn_bench(&args);
    // Kill while payments flow: after a few hundred, long before the
    // 6,000 planned.
    common::within(90, async {
        while server.metrics().await.get("tollstream_payments_accepted_total").copied().unwrap_or(0.0) < 400.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.kill9();
    let report = finish_bench(child, &server).await;

    let acknowledged = report["payments"]["acknowledged"].as_u64().unwrap();
    // Each viewer has at most one payment between store and secret.
    assert!(acknowledged >= 400 - VIEWERS, "payments were flowing when the server died: {report:#}");
    assert!(acknowledged < VIEWERS * 40, "the kill interrupted the run: {report:#}");
    let stored = server.store().await.list().await.unwrap();
    let by_id: std::collections::BTreeMap<String, _> =
        stored.iter().map(|c| (format!("{:#x}", c.state.channel_id), c)).collect();
    let per_viewer = report["per_viewer"].as_array().expect("per-viewer data");
    assert_eq!(per_viewer.len() as u64, VIEWERS);
    let mut checked = 0;
    for viewer in per_viewer {
        let highest = viewer["highest_acknowledged"].as_u64().unwrap();
        if highest == 0 {
            continue;
        }
        let id = viewer["channel_id"].as_str().unwrap();
        let channel = by_id.get(id).unwrap_or_else(|| panic!("channel {id} acknowledged but not stored"));
        // The store may be ahead (stored, then killed before the secret
        // left), never behind.
        assert!(
            channel.state.client_sequence_number >= highest,
            "viewer got the secret of payment {highest} but the store holds {}: {viewer}",
            channel.state.client_sequence_number
        );
        assert_eq!(channel.state.server_balance, Amount::from(channel.state.client_sequence_number * PRICE));
        checked += 1;
    }
    assert!(checked > 0, "{report:#}");
    // The bench's own --verify-store reached the same verdict.
    let store_check = &report["store_check"];
    assert_eq!(store_check["viewers_checked"], checked, "{store_check}");
    assert_eq!(store_check["stored_behind"], 0, "{store_check}");
}

/// The same check driven by the bench alone, as `scripts/bench` does it
/// at scale: `--kill-server-after` and `--verify-store`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_kills_the_server_and_finds_nothing_acknowledged_missing() {
    kill_mid_run_and_verify_the_store(None).await;
}

/// The same on PostgreSQL: `--verify-store` takes the database URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_the_bench_kills_the_server_and_finds_nothing_acknowledged_missing() {
    let url = tollstream_server::store::testing::create_database().await;
    kill_mid_run_and_verify_the_store(Some(url)).await;
}

async fn kill_mid_run_and_verify_the_store(database_url: Option<String>) {
    let chain = TestChain::new().await;
    let extra_args = database_url.iter().flat_map(|url| ["--database-url".to_owned(), url.clone()]).collect();
    let options = ServerOptions {
        window_seconds: 0.2,
        pay_timeout: 30.0,
        streams: "bench=100000".into(),
        extra_args,
        ..Default::default()
    };
    let server = ServerProcess::start(&chain, &uncapped(options));
    let wallet = chain.node().funded_wallet(U256::from(10 * ETH)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_key(dir.path(), &wallet);

    let mut args = common_args(&server, &chain, &key_file);
    args.extend(["--viewers", "60", "--windows", "40", "--spare-windows", "1"].map(str::to_owned));
    args.extend([
        "--server-pid".to_owned(),
        server.pid().to_string(),
        "--kill-server-after".to_owned(),
        "3".to_owned(),
    ]);
    let store = database_url.unwrap_or_else(|| server.data_dir.display().to_string());
    args.extend(["--verify-store".to_owned(), store]);
    let report = bench(&args, &server).await;

    let acknowledged = report["payments"]["acknowledged"].as_u64().unwrap();
    assert!(acknowledged > 0 && acknowledged < 60 * 40, "killed mid-run: {report:#}");
    assert!(report["client_failures"]["disconnected"].as_u64().unwrap() > 0, "{report:#}");
    let store_check = &report["store_check"];
    assert!(store_check["viewers_checked"].as_u64().unwrap() > 0, "{store_check}");
    assert_eq!(store_check["stored_behind"], 0, "{store_check}");
    assert_eq!(store_check["behind_examples"], serde_json::json!([]));
}

/// Connection scale, small: a server listening on both loopback
/// addresses holds idle connections spread round-robin over them (a
/// refused address would show as failures), and the bench reads the
/// server's memory per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_held_on_every_listening_address() {
    let chain = TestChain::new().await;
    let listen = ["--listen", "[::1]:0"].map(str::to_owned).to_vec();
    let options = ServerOptions { extra_args: listen, ..Default::default() };
    let server = ServerProcess::start(&chain, &uncapped(options));
    assert_eq!(server.urls.len(), 2, "one URL per --listen");
    assert!(server.urls[0].starts_with("http://127.0.0.1:"), "{:?}", server.urls);
    assert!(server.urls[1].starts_with("http://[::1]:"), "{:?}", server.urls);

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollstream"))
        .args(["bench-connections", "--connections", "300", "--hold-seconds", "1", "--json"])
        .args(["--server", &server.urls[0], "--server", &server.urls[1]])
        .args(["--server-pid", &server.pid().to_string()])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output).await.expect("done within 60 s").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["connected"], 300, "{report:#}");
    assert_eq!(report["still_connected"], 300, "{report:#}");
    assert_eq!(report["failures"], serde_json::json!({}), "{report:#}");
    let memory = &report["server"];
    assert_eq!(memory["pid"], server.pid());
    assert!(memory["rss_held_bytes"].as_u64().unwrap() >= memory["rss_before_bytes"].as_u64().unwrap());
    assert!(memory["bytes_per_connection"].as_f64().unwrap() > 0.0, "{memory}");
}

#[test]
fn help_lists_every_option() {
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_tollstream")).args(["bench", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--server",
        "--rpc-url",
        "--wallet-key-file",
        "--viewers",
        "--windows",
        "--spare-windows",
        "--stream",
        "--ramp-seconds",
        "--duration",
        "--connect-concurrency",
        "--wave",
        "--server-pid",
        "--server-cpu",
        "--client-cpu",
        "--json",
        "--per-viewer",
        "--kill-server-after",
        "--verify-store",
        "--check",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}
