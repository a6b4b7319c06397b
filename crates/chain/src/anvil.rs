//! Runs a real anvil node (from the project's npm install) on a free
//! loopback port, for `tollstream demo` and the tests.
//!
//! alloy's own node bindings pick a port before anvil binds it, which races
//! between parallel tests; here anvil binds port 0 itself and we read the
//! port it reports, and we keep its output drained so a chatty node never
//! blocks on a full pipe.

use crate::error::ChainError;
use crate::evm::connect_provider;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;
use tollstream_protocol::SigningKey;

/// Where the npm package puts the binary, relative to the project root.
const NPM_BIN: &str = "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

/// A running anvil process, killed when dropped.
pub struct Anvil {
    child: Child,
    endpoint: String,
    dev_keys: Vec<SigningKey>,
}

/// How to start anvil.
#[derive(Debug, Clone, Default)]
pub struct AnvilOptions {
    /// Extra command-line arguments, e.g. `["--state", "chain.json"]`.
    pub args: Vec<String>,
    /// Kill anvil when the thread that started it exits (Linux
    /// `PR_SET_PDEATHSIG`), so it cannot outlive a crashed parent.
    pub die_with_parent_thread: bool,
}

impl Anvil {
    /// Starts anvil on a free loopback port with default options.
    ///
    /// # Errors
    /// When the binary is missing or anvil does not report its address.
    pub fn spawn() -> Result<Anvil, ChainError> {
        Self::spawn_with(&AnvilOptions::default())
    }

    /// Starts anvil with `options`.
    ///
    /// # Errors
    /// When the binary is missing or anvil does not report its address.
    pub fn spawn_with(options: &AnvilOptions) -> Result<Anvil, ChainError> {
        let binary = binary()?;
        let mut command = Command::new(&binary);
        command
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if options.die_with_parent_thread {
            // SAFETY: prctl is async-signal-safe and touches only this process.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child =
            command.spawn().map_err(|e| ChainError::Anvil(format!("cannot start {}: {e}", binary.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");

        // Read the banner on a thread that then keeps draining the output.
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("anvil-output".into())
            .spawn(move || read_banner(BufReader::new(stdout), ready_tx))
            .map_err(|e| ChainError::Anvil(format!("cannot start output thread: {e}")))?;
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok((endpoint, dev_keys)) => Ok(Anvil { child, endpoint, dev_keys }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                Err(ChainError::Anvil(format!("anvil did not report its address (exit status {status:?})")))
            }
        }
    }

    /// The JSON-RPC endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The funded dev accounts anvil printed at start.
    pub fn dev_keys(&self) -> &[SigningKey] {
        &self.dev_keys
    }

    /// The process id, for tests that stop the node on purpose.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the node and waits for it to exit.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        // SIGTERM first so a node started with `--dump-state` writes it.
        // SAFETY: plain kill(2) of our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Moves the node's clock forward by `seconds` and mines a block, so
    /// the next block's timestamp reflects it.
    ///
    /// # Errors
    /// When the node cannot be reached.
    pub async fn increase_time(&self, seconds: u64) -> Result<(), ChainError> {
        let provider = connect_provider(&self.endpoint, None)?;
        let _: serde_json::Value =
            provider.raw_request("evm_increaseTime".into(), (seconds,)).await.map_err(ChainError::from_transport)?;
        let _: serde_json::Value =
            provider.raw_request("evm_mine".into(), ()).await.map_err(ChainError::from_transport)?;
        Ok(())
    }

    /// Sets `address`'s balance to `wei`.
    ///
    /// # Errors
    /// When the node cannot be reached.
    pub async fn set_balance(&self, address: Address, wei: U256) -> Result<(), ChainError> {
        let provider = connect_provider(&self.endpoint, None)?;
        let _: serde_json::Value = provider
            .raw_request("anvil_setBalance".into(), (address, wei))
            .await
            .map_err(ChainError::from_transport)?;
        Ok(())
    }

    /// A new random wallet holding `wei`. Tests that share a node each use
    /// their own wallets, so their transactions never race for a nonce.
    ///
    /// # Errors
    /// When the node cannot be reached.
    pub async fn funded_wallet(&self, wei: U256) -> Result<SigningKey, ChainError> {
        let key =
            SigningKey::from_bytes(PrivateKeySigner::random().to_bytes().0).expect("a random signer is a valid key");
        self.set_balance(key.address(), wei).await?;
        Ok(key)
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One node shared by every test of a test binary, started on first use
/// and killed when the process exits. It is spawned from a thread that
/// never ends, so `PR_SET_PDEATHSIG` fires only at process exit.
///
/// # Panics
/// When anvil cannot be started: every test that needs it fails then.
pub fn shared() -> &'static Anvil {
    static SHARED: OnceLock<Anvil> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let options = AnvilOptions { die_with_parent_thread: true, ..Default::default() };
            let _ = tx.send(Anvil::spawn_with(&options));
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("the anvil thread reports").expect("anvil starts")
    })
}

/// Finds the anvil binary: `$TOLLSTREAM_ANVIL`, then the npm package in this
/// directory or a parent (of the working directory, of the running program,
/// and of this crate's source), then `anvil` on `PATH`.
///
/// # Errors
/// When none exists, with the command that installs it.
pub fn binary() -> Result<PathBuf, ChainError> {
    if let Some(path) = std::env::var_os("TOLLSTREAM_ANVIL") {
        return Ok(PathBuf::from(path));
    }
    let mut starts: Vec<PathBuf> = Vec::new();
    starts.extend(std::env::current_dir().ok());
    starts.extend(std::env::current_exe().ok());
    starts.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for start in &starts {
        for dir in start.ancestors() {
            let candidate = dir.join(NPM_BIN);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("anvil");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(ChainError::Anvil(
        "anvil not found: run `npm ci` in the project root (it installs @foundry-rs/anvil-linux-amd64), or set TOLLSTREAM_ANVIL".into(),
    ))
}

/// Reads anvil's start-up banner: the dev private keys and the
/// `Listening on HOST:PORT` line; then drains the rest of the output.
fn read_banner(reader: impl BufRead, ready: mpsc::Sender<(String, Vec<SigningKey>)>) {
    let mut lines = reader.lines();
    let mut keys = Vec::new();
    let mut in_private_keys = false;
    for line in lines.by_ref() {
        let Ok(line) = line else { return };
        let line = line.trim();
        if line.starts_with("Private Keys") {
            in_private_keys = true;
        } else if in_private_keys && line.starts_with('(') {
            if let Some(key) = line.split_whitespace().nth(1).and_then(|hex| SigningKey::from_hex(hex).ok()) {
                keys.push(key);
            }
        } else if line.starts_with("Wallet") || line.starts_with("Chain ID") {
            in_private_keys = false;
        }
        if let Some(address) = line.strip_prefix("Listening on ") {
            let _ = ready.send((format!("http://{}", address.trim()), std::mem::take(&mut keys)));
            break;
        }
    }
    for line in lines {
        if line.is_err() {
            break;
        }
    }
}

/// Whether `path` looks like the project root (it has the npm install).
pub fn is_project_root(path: &Path) -> bool {
    path.join(NPM_BIN).is_file()
}
