//! The `tollstream` commands as a user runs them.

mod common;

use alloy::providers::Provider;
use common::{ServerOptions, ServerProcess, TestChain, hex};
use std::process::{Command, Output};

fn tollstream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollstream")).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The subcommands a `--help` text lists under "Commands:".
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_command_has_help() {
    // Walks the command tree from `tollstream --help`, so a new
    // subcommand is covered without being named here.
    let mut pending = vec![Vec::<String>::new()];
    let mut seen = Vec::new();
    while let Some(path) = pending.pop() {
        let mut args = path.clone();
        args.push("--help".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = tollstream(&args);
        assert!(output.status.success(), "{args:?}");
        let help = text(&output.stdout);
        assert!(help.contains("Usage:"), "{args:?}: {help}");
        for command in listed_commands(&help) {
            let mut child = path.clone();
            child.push(command);
            pending.push(child);
        }
        seen.push(path.join(" "));
    }
    for expected in ["serve", "watch", "wallet new", "channel refund", "bench", "bench-connections"] {
        assert!(seen.iter().any(|command| command == expected), "{expected} not reached: {seen:?}");
    }
}

#[test]
fn wallet_new_writes_a_key_that_wallet_show_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.key");
    let path = path.to_str().unwrap();
    let created = tollstream(&["wallet", "new", "--out", path]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let address = text(&created.stdout).split_whitespace().nth(1).unwrap().to_owned();
    let shown = tollstream(&["wallet", "show", "--wallet-key-file", path]);
    assert!(text(&shown.stdout).contains(&address));
    // Never overwrites a wallet.
    let again = tollstream(&["wallet", "new", "--out", path]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("error:"));
}

#[test]
fn a_missing_wallet_is_a_clear_error_not_a_panic() {
    let output = Command::new(env!("CARGO_BIN_EXE_tollstream"))
        .args(["watch", "http://127.0.0.1:9"])
        .env_remove("TOLLSTREAM_WALLET_KEY")
        .env_remove("TOLLSTREAM_WALLET_KEY_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("no wallet key"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn watch_buys_pays_and_resumes_then_spends_the_channel() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let wallet = chain.viewer_wallet().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("viewer.key");
    std::fs::write(&key_file, hex(&wallet.to_bytes())).unwrap();
    let watch = |extra: &[&str]| {
        let mut args = vec!["watch", &server.url, "--rpc-url", &chain.rpc, "--wallet-key-file"];
        args.push(key_file.to_str().unwrap());
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_tollstream")).args(&args).output().unwrap()
            })
            .await
            .unwrap()
        }
    };

    // Buys 4 windows, pays 2, keeps the channel.
    let first = watch(&["--windows", "4", "--max-payments", "2"]).await;
    assert!(first.status.success(), "{}{}", text(&first.stdout), text(&first.stderr));
    assert!(text(&first.stdout).contains("paid 2 windows; stopped; channel kept"), "{}", text(&first.stdout));

    // Resumes the same channel (no purchase flag needed) and spends it.
    let second = watch(&["--from-segment", "2"]).await;
    assert!(second.status.success(), "{}{}", text(&second.stdout), text(&second.stderr));
    assert!(text(&second.stderr).contains("resuming channel"), "{}", text(&second.stderr));
    assert!(text(&second.stdout).contains("paid 2 windows; the channel is spent"), "{}", text(&second.stdout));
}

#[tokio::test]
async fn watch_with_an_unreachable_rpc_says_once_what_to_pass() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("viewer.key");
    std::fs::write(&key_file, hex(&chain.viewer_wallet().await.to_bytes())).unwrap();
    // A loopback port nothing listens on, as a new user's default
    // http://127.0.0.1:8545 is when no node runs there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let args: Vec<String> = ["watch", &server.url, "--rpc-url", &closed, "--windows", "1", "--wallet-key-file"]
        .iter()
        .map(|s| s.to_string())
        .chain([key_file.display().to_string()])
        .collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tollstream")).args(&args).output().unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|line| line.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let error = errors[0];
    assert!(
        error.starts_with(&format!("error: cannot reach the chain RPC at {closed}: connection refused")),
        "{error}"
    );
    assert!(error.contains("pass --rpc-url"), "says what to do: {error}");
    let chain_id = chain.provider().get_chain_id().await.unwrap();
    assert!(error.contains(&format!("chain {chain_id}")), "names the server's chain: {error}");
    // Said once: no cause repeated.
    assert_eq!(error.matches(&closed).count(), 1, "{error}");
    assert_eq!(error.matches("refused").count(), 1, "{error}");
}
