//! What the end-to-end tests share: a contract and a funded server wallet on
//! the test binary's anvil, and `tollstream serve` as a real child process
//! on a port the kernel picked.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tollstream_chain::anvil::{self, Anvil};
use tollstream_chain::{connect_provider, deploy};
use tollstream_client::Viewer;
use tollstream_protocol::{Address, SigningKey, U256};
use tollstream_server::store::{SqliteStore, Store, StoredChannel};

pub const ETH: u128 = 1_000_000_000_000_000_000;
/// The window price the test servers ask, in wei.
pub const PRICE: u64 = 1_000_000_000;
/// A channel lifetime well past the servers' minimum and margin.
pub const LIFETIME: u64 = 4 * 3600;

/// A contract of this test's own, and a funded payee, on the test binary's
/// shared node or on a node of the test's own (for tests that move the
/// clock, stop mining or stop the node).
pub struct TestChain {
    own: Option<Anvil>,
    /// Where the server reaches the chain (the node, or a proxy to it).
    pub rpc: String,
    pub contract: Address,
    pub server_wallet: SigningKey,
}

impl TestChain {
    pub async fn new() -> TestChain {
        Self::on(None).await
    }

    /// A chain on a node of this test's own.
    pub async fn own() -> TestChain {
        Self::on(Some(Anvil::spawn().unwrap())).await
    }

    async fn on(own: Option<Anvil>) -> TestChain {
        let node = own.as_ref().unwrap_or_else(|| anvil::shared());
        let deployer = node.funded_wallet(U256::from(10 * ETH)).await.unwrap();
        let contract = deploy(connect_provider(node.endpoint(), Some(&deployer)).unwrap()).await.unwrap();
        let server_wallet = node.funded_wallet(U256::from(10 * ETH)).await.unwrap();
        let rpc = node.endpoint().to_owned();
        TestChain { own, rpc, contract, server_wallet }
    }

    pub fn node(&self) -> &Anvil {
        self.own.as_ref().unwrap_or_else(|| anvil::shared())
    }

    /// The node's own endpoint (not a proxy).
    pub fn node_rpc(&self) -> String {
        self.node().endpoint().to_owned()
    }

    /// A new viewer wallet holding 100 ETH.
    pub async fn viewer_wallet(&self) -> SigningKey {
        self.node().funded_wallet(U256::from(100 * ETH)).await.unwrap()
    }
}

/// Flags of a test server, beyond the chain's.
#[derive(Clone)]
pub struct ServerOptions {
    pub window_seconds: f64,
    pub pay_timeout: f64,
    pub streams: String,
    pub settle_interval: f64,
    /// More `serve` flags.
    pub extra_args: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            window_seconds: 0.2,
            pay_timeout: 3.0,
            streams: "demo=1000".into(),
            settle_interval: 0.2,
            extra_args: Vec::new(),
        }
    }
}

/// `tollstream serve` running as a child process; killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// The first listening address's URL.
    pub url: String,
    /// One URL per `--listen`.
    pub urls: Vec<String>,
    pub data_dir: PathBuf,
    command: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    pub fn start(chain: &TestChain, options: &ServerOptions) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("server.key");
        std::fs::write(&key_file, format!("0x{}", hex(&chain.server_wallet.to_bytes()))).unwrap();
        let data_dir = dir.path().join("data");
        let mut command = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--rpc-url".into(),
            chain.rpc.clone(),
            "--contract".into(),
            chain.contract.to_checksum(None),
            "--wallet-key-file".into(),
            key_file.display().to_string(),
            "--window-seconds".into(),
            options.window_seconds.to_string(),
            "--window-price".into(),
            PRICE.to_string(),
            "--pay-timeout".into(),
            options.pay_timeout.to_string(),
            "--min-channel-seconds".into(),
            "3600".into(),
            "--settle-margin".into(),
            "60".into(),
            "--stream".into(),
            options.streams.clone(),
            "--settle-interval".into(),
            options.settle_interval.to_string(),
        ];
        command.extend(options.extra_args.iter().cloned());
        let (child, urls) = spawn(&command, &data_dir);
        ServerProcess { child, url: urls[0].clone(), urls, data_dir, command, _dir: Some(dir) }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the process to exit; its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        self.child.wait().unwrap()
    }

    /// SIGKILL: no shutdown, no flush beyond what was committed.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same data directory (a new port).
    pub fn restart(&mut self) {
        self.kill9();
        let (child, urls) = spawn(&self.command, &self.data_dir);
        self.child = child;
        self.url = urls[0].clone();
        self.urls = urls;
    }

    /// The server's database, opened beside the running server (SQLite's
    /// WAL mode lets a reader in while it writes).
    pub async fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.data_dir.join("tollstream.sqlite")).await.unwrap()
    }

    pub async fn stored(&self, viewer: &Viewer) -> Option<StoredChannel> {
        self.store().await.newest_for_client(&viewer.session_key().public_key()).await.unwrap()
    }

    /// The server's `/metrics`, parsed as Prometheus text: name → value
    /// (labels folded into the name as `name{label="value"}`).
    pub async fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let text = reqwest::get(format!("{}/metrics", self.url)).await.unwrap().text().await.unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
        scrape
            .samples
            .into_iter()
            .map(|sample| {
                let labels: Vec<String> = sample.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                let name = if labels.is_empty() {
                    sample.metric
                } else {
                    format!("{}{{{}}}", sample.metric, labels.join(","))
                };
                let value = match sample.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                };
                (name, value)
            })
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts the server; its URLs, one per `--listen`, in order.
fn spawn(command: &[String], data_dir: &Path) -> (Child, Vec<String>) {
    std::fs::create_dir_all(data_dir).unwrap();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("server.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollstream"))
        .args(command)
        .env("RUST_LOG", "info,tollstream_server=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let listens = command.iter().filter(|arg| *arg == "--listen").count();
    let urls = (0..listens)
        .map(|_| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix("tollstream listening on ")
                .unwrap_or_else(|| {
                    let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
                    panic!("the server did not start: {line:?}\n{log}")
                })
                .to_owned()
        })
        .collect();
    (child, urls)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits at most `seconds` for `future`.
pub async fn within<T>(seconds: u64, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future).await.expect("timed out")
}

/// `tollstream demo` as a child process; stopped with SIGTERM when dropped.
pub struct Demo {
    child: Child,
    pub url: String,
    dir: tempfile::TempDir,
}

impl Demo {
    /// Starts a demo on a free port in a fresh data directory, with `args`
    /// (e.g. the video's length and the window's).
    pub fn start(args: &[&str]) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollstream"))
            .args(["demo", "--port", "0", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // Keep reading: the demo prints more, and a closed pipe would kill it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let url = line.trim().strip_prefix("tollstream listening on ").expect("the demo starts").to_owned();
        Demo { child, url, dir }
    }

    /// A file in the demo's data directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `demo.json` it wrote.
    pub fn demo_json(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.path("demo.json")).unwrap()).unwrap()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}
