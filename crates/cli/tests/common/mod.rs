//! What the end-to-end tests share: a contract and a funded server wallet on
//! the test binary's anvil, and `tollstream serve` as a real child process
//! on a port the kernel picked; the node's controls (mining, reorgs, fees,
//! balances, the transaction pool) and a TCP proxy to it that the test can
//! stop or hang, for tests that make the chain behave like a public one.

#![allow(dead_code)]

use alloy::eips::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::B256;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tollstream_chain::anvil::{self, Anvil};
use tollstream_chain::{TollstreamChannels, connect_provider, deploy};
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
        ring_by_default();
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
        // anvil with automine makes blocks only when transactions come:
        // unless a test says otherwise, trust the latest block, as the demo
        // does, so selling never waits for blocks nobody mines.
        if !options.extra_args.iter().any(|arg| arg == "--confirmations") {
            command.extend(["--confirmations".into(), "1".into()]);
        }
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

    /// The store of a server started with `--database-url`, opened for
    /// reading; `None` for a server on its SQLite file.
    pub async fn shared_store(&self) -> Option<Arc<dyn Store>> {
        let at = self.command.iter().position(|arg| arg == "--database-url")?;
        Some(tollstream_server::store::open_read_only(&self.command[at + 1]).await.unwrap())
    }

    /// The server's key store when it has no `--keys-dir` (`DATA_DIR/keys`).
    pub fn keys_dir(&self) -> PathBuf {
        self.data_dir.join("keys")
    }

    pub async fn stored(&self, viewer: &Viewer) -> Option<StoredChannel> {
        let client = viewer.session_key().public_key();
        if let Some(store) = self.shared_store().await {
            return store.newest_for_client(&client).await.unwrap();
        }
        self.store().await.newest_for_client(&client).await.unwrap()
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

/// Makes rustls's ring provider the process's default, once. reqwest is
/// built without a provider of its own, so a client built the default way
/// (`reqwest::get`, `reqwest::Client::builder()`) needs one, or panics;
/// the project's own clients bring their configuration
/// (`tollstream_chain::rpc::http_client_builder`). Every test starts a chain
/// or a demo first, which calls this.
pub fn ring_by_default() {
    // An error means a provider is installed already: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate authority of the test's own, and a server certificate it
/// signed for 127.0.0.1 and localhost: PEM files in a temporary folder,
/// for `serve --tls-cert/--tls-key` and a client's `--ca-cert`.
pub struct TestCa {
    /// The CA's certificate, for `--ca-cert`.
    pub ca_cert: PathBuf,
    /// The server's certificate, for `--tls-cert`.
    pub server_cert: PathBuf,
    /// The server's PKCS#8 key, for `--tls-key`.
    pub server_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Tollstream test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        server_params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        TestCa {
            ca_cert: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server_cert.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            _dir: dir,
        }
    }

    /// `serve` flags that make it speak https with the server certificate.
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.server_cert.display().to_string(),
            "--tls-key".into(),
            self.server_key.display().to_string(),
        ]
    }
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
        ring_by_default();
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

/// A `Closed` event of the registry, as the canonical chain holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedEvent {
    pub server_balance: U256,
    pub client_balance: U256,
    pub tx: B256,
    pub block: u64,
}

/// A transaction waiting in the node's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTx {
    pub hash: B256,
    pub nonce: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// The node's controls, and what the tests read of the chain. Everything
/// here talks to the node itself, never through a proxy.
impl TestChain {
    /// A provider on the node, without a wallet.
    pub fn provider(&self) -> DynProvider {
        ProviderBuilder::new().connect_http(self.node_rpc().parse().expect("the node's URL")).erased()
    }

    /// One JSON-RPC call to the node; panics when the node refuses it.
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        node_rpc(&self.node_rpc(), method, params).await
    }

    /// Turns automatic mining (a block per transaction) on or off. Off,
    /// blocks come only from [`mine`](Self::mine) or a [`Miner`].
    pub async fn set_automine(&self, on: bool) {
        self.rpc("evm_setAutomine", json!([on])).await;
    }

    /// Mines `blocks` blocks now, with what the pool holds.
    pub async fn mine(&self, blocks: u64) {
        self.rpc("anvil_mine", json!([format!("0x{blocks:x}")])).await;
    }

    /// Replaces the latest `depth` blocks with as many empty ones. The node
    /// forgets the transactions they held: a reorged transaction that
    /// should come back must be sent again.
    pub async fn reorg(&self, depth: u64) {
        self.rpc("anvil_reorg", json!([depth, []])).await;
    }

    /// The base fee of the next block mined. The node also refuses new
    /// transactions offering less, and drops pooled ones that offer less
    /// when it mines that block.
    pub async fn set_next_base_fee(&self, wei: u128) {
        self.rpc("anvil_setNextBlockBaseFeePerGas", json!([format!("0x{wei:x}")])).await;
    }

    /// Removes a transaction from the pool.
    pub async fn drop_transaction(&self, tx: B256) {
        self.rpc("anvil_dropTransaction", json!([tx])).await;
    }

    pub async fn block_number(&self) -> u64 {
        self.provider().get_block_number().await.unwrap()
    }

    /// The latest block's timestamp.
    pub async fn now(&self) -> u64 {
        let block = self.rpc("eth_getBlockByNumber", json!(["latest", false])).await;
        hex_u64(&block["timestamp"])
    }

    /// The timestamp of block `number`.
    pub async fn timestamp_of(&self, number: u64) -> u64 {
        let block = self.rpc("eth_getBlockByNumber", json!([format!("0x{number:x}"), false])).await;
        hex_u64(&block["timestamp"])
    }

    /// The base fee of block `number`.
    pub async fn base_fee_of(&self, number: u64) -> u128 {
        let block = self.rpc("eth_getBlockByNumber", json!([format!("0x{number:x}"), false])).await;
        hex_u128(&block["baseFeePerGas"])
    }

    pub async fn balance(&self, account: Address) -> U256 {
        self.provider().get_balance(account).await.unwrap()
    }

    /// `account`'s transaction count: mined only, or with the pool's.
    pub async fn nonce(&self, account: Address, pending: bool) -> u64 {
        let tag = if pending { "pending" } else { "latest" };
        hex_u64(&self.rpc("eth_getTransactionCount", json!([account, tag])).await)
    }

    /// The first of `account`'s transactions waiting in the pool.
    pub async fn pool_tx(&self, account: Address) -> Option<PoolTx> {
        let content = self.rpc("txpool_content", json!([])).await;
        let wanted = account.to_string().to_lowercase();
        let by_nonce = content["pending"].as_object()?.iter().find(|(a, _)| a.to_lowercase() == wanted)?.1.clone();
        let tx = by_nonce.as_object()?.values().min_by_key(|tx| hex_u64(&tx["nonce"]))?.clone();
        Some(PoolTx {
            hash: tx["hash"].as_str()?.parse().ok()?,
            nonce: hex_u64(&tx["nonce"]),
            max_fee_per_gas: hex_u128(&tx["maxFeePerGas"]),
            max_priority_fee_per_gas: hex_u128(&tx["maxPriorityFeePerGas"]),
        })
    }

    /// Waits until `account` has a transaction in the pool (mining paused).
    pub async fn wait_for_pool_tx(&self, account: Address, seconds: u64) -> PoolTx {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(tx) = self.pool_tx(account).await {
                return tx;
            }
            assert!(tokio::time::Instant::now() < deadline, "no transaction of {account} reached the pool");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `tx` is in the canonical chain, and whether it succeeded.
    pub async fn receipt(&self, tx: B256) -> Option<bool> {
        self.provider().get_transaction_receipt(tx).await.unwrap().map(|r| r.status())
    }

    /// The registry's `Closed` events for `channel` in the canonical chain.
    pub async fn closed_events(&self, channel: B256) -> Vec<ClosedEvent> {
        let filter = Filter::new()
            .address(self.contract)
            .event_signature(TollstreamChannels::Closed::SIGNATURE_HASH)
            .topic1(channel)
            .from_block(0u64);
        let logs = self.provider().get_logs(&filter).await.unwrap();
        logs.iter()
            .map(|log| {
                let closed = log.log_decode::<TollstreamChannels::Closed>().expect("a Closed event");
                ClosedEvent {
                    server_balance: closed.inner.data.serverBalance,
                    client_balance: closed.inner.data.clientBalance,
                    tx: log.transaction_hash.expect("a mined log"),
                    block: log.block_number.expect("a mined log"),
                }
            })
            .collect()
    }

    /// The channel's status byte in the registry now (0: never opened,
    /// 1: open, 2: closed, 3: refunded).
    pub async fn channel_status(&self, channel: B256) -> u8 {
        TollstreamChannels::new(self.contract, self.provider()).channels(channel).call().await.unwrap().status
    }

    /// Wei `account` spent on gas in canonical blocks `from..=latest`.
    pub async fn gas_paid_by(&self, account: Address, from: u64) -> U256 {
        let mut paid = U256::ZERO;
        for number in from..=self.block_number().await {
            let receipts = self.rpc("eth_getBlockReceipts", json!([format!("0x{number:x}")])).await;
            for receipt in receipts.as_array().into_iter().flatten() {
                let sender: Address = serde_json::from_value(receipt["from"].clone()).unwrap();
                if sender == account {
                    paid +=
                        U256::from(hex_u128(&receipt["gasUsed"])) * U256::from(hex_u128(&receipt["effectiveGasPrice"]));
                }
            }
        }
        paid
    }

    /// Signs a transfer of nothing from `key`'s account to itself at
    /// `nonce` with the given fees, and sends it: another transaction of
    /// the same wallet, as an operator sending by hand would make.
    pub async fn send_self_transfer(&self, key: &SigningKey, nonce: u64, max_fee: u128, tip: u128) -> B256 {
        let signer = PrivateKeySigner::from_bytes(&B256::from(key.to_bytes())).unwrap();
        let wallet = EthereumWallet::from(signer);
        let chain_id = self.provider().get_chain_id().await.unwrap();
        let request = TransactionRequest::default()
            .with_from(key.address())
            .with_to(key.address())
            .with_value(U256::ZERO)
            .with_nonce(nonce)
            .with_chain_id(chain_id)
            .with_gas_limit(21_000)
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(tip);
        let envelope = request.build(&wallet).await.unwrap();
        let raw = envelope.encoded_2718();
        self.rpc("eth_sendRawTransaction", json!([format!("0x{}", hex(&raw))])).await;
        *envelope.tx_hash()
    }

    /// Mines one block as soon as `account` has a transaction in the pool.
    pub async fn mine_when_sent(&self, account: Address) {
        self.wait_for_pool_tx(account, 30).await;
        self.mine(1).await;
    }
}

/// One JSON-RPC call to `url`; panics when it fails.
pub async fn node_rpc(url: &str, method: &str, params: Value) -> Value {
    let provider = ProviderBuilder::new().connect_http(url.parse().expect("a URL"));
    provider.raw_request(method.to_owned().into(), params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// A quantity as JSON-RPC writes it (`"0x1a"`).
pub fn hex_u128(value: &Value) -> u128 {
    let text = value.as_str().unwrap_or_else(|| panic!("not a quantity: {value}"));
    u128::from_str_radix(text.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("not a quantity: {value}"))
}

pub fn hex_u64(value: &Value) -> u64 {
    u64::try_from(hex_u128(value)).expect("fits u64")
}

/// Mines a block every `interval` (a chain's block time, with automine
/// off) until dropped, optionally at a base fee the test sets.
pub struct Miner {
    /// The base fee of every block it mines, in wei; 0 leaves it to the node.
    base_fee: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Miner {
    pub fn start(chain: &TestChain, interval: Duration) -> Miner {
        Miner::start_with_base_fee(chain, interval, 0)
    }

    /// Like [`Miner::start`], with every block's base fee set to `wei` from
    /// the first block on: setting it after the start would race the first
    /// block.
    pub fn start_with_base_fee(chain: &TestChain, interval: Duration, wei: u128) -> Miner {
        let base_fee = Arc::new(AtomicU64::new(u64::try_from(wei).expect("a base fee below 18 ETH per gas")));
        let url = chain.node_rpc();
        let fee = base_fee.clone();
        let task = tokio::spawn(async move {
            loop {
                let wei = fee.load(Ordering::SeqCst);
                if wei > 0 {
                    node_rpc(&url, "anvil_setNextBlockBaseFeePerGas", json!([format!("0x{wei:x}")])).await;
                }
                node_rpc(&url, "anvil_mine", json!(["0x1"])).await;
                tokio::time::sleep(interval).await;
            }
        });
        Miner { base_fee, task }
    }

    /// Every block from the next one on has this base fee.
    pub fn set_base_fee(&self, wei: u128) {
        self.base_fee.store(u64::try_from(wei).expect("a base fee below 18 ETH per gas"), Ordering::SeqCst);
    }
}

impl Drop for Miner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the test sees of a running server beyond its URL.
impl ServerProcess {
    /// One metric's value, `None` while the server does not export it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        self.metrics().await.get(name).copied()
    }

    /// Polls `check` until it returns `Some`, for at most `seconds`; on
    /// timeout, fails naming `what`, with the server's log.
    pub async fn wait_for<T>(&self, seconds: u64, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {seconds} s waiting for {what}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Checks for `seconds` that `check` keeps holding (for what must not
    /// happen, there is no event to wait for).
    pub async fn holds_for(&self, seconds: f64, what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
        while tokio::time::Instant::now() < deadline {
            assert!(check().await, "{what} no longer holds\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `serve` flags from string slices.
pub fn args(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|flag| (*flag).to_owned()).collect()
}

/// A TCP proxy to the node on a loopback port that stays the same while the
/// test stops it (connections refused), hangs it (connections accepted,
/// never answered) and starts it again, so the server sees its RPC
/// endpoint go away, hang and come back.
pub struct Proxy {
    port: u16,
    target: String,
    tasks: Option<JoinSet<()>>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let mut proxy = Proxy { port: 0, target: target.trim_start_matches("http://").to_owned(), tasks: None };
        proxy.up().await;
        proxy
    }

    /// Forwards every connection to the node.
    pub async fn up(&mut self) {
        self.down().await;
        let listener = self.listen().await;
        let target = self.target.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Refuses connections, and cuts the open ones.
    pub async fn down(&mut self) {
        // Aborting the listener's task drops it and, with it, every
        // connection; waiting for that frees the port for the next mode.
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    /// Accepts connections and reads what is sent, but never answers: an
    /// endpoint that hangs. Open connections are cut first, so the server's
    /// next request meets the hang.
    pub async fn hang(&mut self) {
        self.down().await;
        let listener = self.listen().await;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut held = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                held.spawn(async move {
                    let _ = tokio::io::copy(&mut inbound, &mut tokio::io::sink()).await;
                });
            }
        });
        self.tasks = Some(tasks);
    }

    async fn listen(&mut self) -> TcpListener {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.port = listener.local_addr().unwrap().port();
        listener
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The test dollar (`TestStablecoin`: tUSD, 6 decimals, EIP-2612 and
/// EIP-3009) deployed for one test, and the wallet that may mint it.
pub struct TestDollar {
    pub address: Address,
    minter: SigningKey,
}

impl TestDollar {
    /// Mints `units` (the token's smallest unit) to `to` and waits until
    /// the mint is mined.
    pub async fn mint(&self, chain: &TestChain, to: Address, units: U256) {
        let provider = connect_provider(&chain.node_rpc(), Some(&self.minter)).unwrap();
        let token = tollstream_chain::TestStablecoin::new(self.address, provider);
        let receipt = token.mint(to, units).send().await.unwrap().get_receipt().await.unwrap();
        assert!(receipt.status(), "the mint succeeds");
    }

    /// `serve` flags that sell channels in this token.
    pub fn serve_args(&self) -> Vec<String> {
        vec!["--token".into(), self.address.to_checksum(None)]
    }
}

/// Deposit tokens on the test's chain.
impl TestChain {
    /// Deploys a test dollar of this test's own, minted by a new funded
    /// wallet.
    pub async fn deploy_test_dollar(&self) -> TestDollar {
        let minter = self.node().funded_wallet(U256::from(10 * ETH)).await.unwrap();
        let address =
            tollstream_chain::deploy_test_stablecoin(connect_provider(&self.node_rpc(), Some(&minter)).unwrap())
                .await
                .unwrap();
        TestDollar { address, minter }
    }

    /// A new wallet holding `units` of `dollar` and no ETH at all.
    pub async fn dollar_wallet(&self, dollar: &TestDollar, units: U256) -> SigningKey {
        let wallet = tollstream_client::wallet::random_key();
        if !units.is_zero() {
            dollar.mint(self, wallet.address(), units).await;
        }
        wallet
    }

    /// `account`'s balance of ERC-20 `token`, in its smallest unit.
    pub async fn token_balance(&self, token: Address, account: Address) -> U256 {
        tollstream_chain::token_balance(&self.provider(), token, account).await.unwrap()
    }
}

impl ServerProcess {
    /// Sets `flag` to `value` for the next [`restart`](Self::restart)
    /// (replacing the flag's value, or adding the flag).
    pub fn set_flag(&mut self, flag: &str, value: &str) {
        match self.command.iter().position(|arg| arg == flag) {
            Some(at) => self.command[at + 1] = value.to_owned(),
            None => self.command.extend([flag.to_owned(), value.to_owned()]),
        }
    }
}
