//! The player page in headless Chromium against `tollstream demo`: buy,
//! watch, reload, pause and spend (`tests/browser/player.mjs`), over http,
//! once over https, and once in a test dollar with a gasless open
//! (`demo --token`); its modules' unit tests
//! (`tests/browser/web-modules.test.mjs`); and the embedded bundle is the
//! one its sources build.
//!
//! Needs Debian's `chromium` (at /usr/bin/chromium) and the npm packages
//! (`npm ci`); no browser is downloaded.

mod common;

use common::{Demo, TestCa};
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, PoisonError};

const REPO_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const CHROMIUM: &str = "/usr/bin/chromium";

/// One browser run at a time: two at once on a small machine starve the
/// video of the CPU it needs to keep time.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// Runs `player.mjs` against `server` with `extra` arguments and
/// environment, and checks its summary: the minute bought was watched to
/// the end, in 10 windows, after one wallet confirmation (with
/// `--until-playing`: played past two windows, paying, after one wallet
/// confirmation). The summary is returned for further checks.
fn run_player(server: &str, name: &str, extra: &[&str], env: &[(&str, &Path)]) -> serde_json::Value {
    assert!(Path::new(CHROMIUM).exists(), "this test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _one_browser = ONE_BROWSER.lock().unwrap_or_else(PoisonError::into_inner);
    let output = Command::new("node")
        .arg("tests/browser/player.mjs")
        .args(["--server", server, "--timeout", "240", "--out"])
        .arg(&out)
        .args(extra)
        .envs(env.iter().copied())
        .current_dir(REPO_ROOT)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser test failed:\n{stderr}\n{stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["windows"], 10, "{summary}");
    if extra.contains(&"--until-playing") {
        assert_eq!(summary["until_playing"], true, "{summary}");
        assert!(summary["payments"].as_u64().unwrap_or(0) >= 2, "{summary}");
    }
    assert_eq!(summary["wallet_prompts"], 1, "{summary}");
    assert!(out.join("player-playing.png").exists());
    summary
}

/// The demo that both browser runs watch: 6 s windows of a 90 s video,
/// enough for the minute the test buys, without reaching the stream's end.
fn start_demo() -> Demo {
    Demo::start(&DEMO_ARGS)
}

const DEMO_ARGS: [&str; 4] = ["--video-seconds", "90", "--window-seconds", "6"];

#[test]
fn the_player_page_buys_watches_resumes_and_spends_in_chromium() {
    let demo = start_demo();
    run_player(&demo.url, "player-test", &[], &[]);
}

/// The page, its socket (wss) and its media (https) over TLS, up to
/// playback past two paid windows (the full run above covers reload,
/// pause and spending, which do not depend on the transport): the demo serves with a test CA's certificate
/// (`--tls-cert`/`--tls-key`, as `serve` takes them). Chromium accepts the
/// certificate by its public key (`--ignore-certificate-errors-spki-list`,
/// pinned to this certificate only); Node's own requests trust the CA
/// (`NODE_EXTRA_CA_CERTS`).
#[test]
fn the_player_page_plays_over_https_in_chromium() {
    let ca = TestCa::new();
    let (cert, key) = (ca.server_cert.display().to_string(), ca.server_key.display().to_string());
    let demo = Demo::start(&[&DEMO_ARGS[..], &["--tls-cert", &cert, "--tls-key", &key]].concat());
    assert!(demo.url.starts_with("https://"), "{}", demo.url);
    run_player(
        &demo.url,
        "player-test-https",
        &["--server-cert", &cert, "--until-playing"],
        &[("NODE_EXTRA_CA_CERTS", &ca.ca_cert)],
    );
}

/// The same run on a demo that sells in a test dollar (`demo --token`):
/// its viewers hold the token and no ETH, so the page must open its
/// channel gaslessly (`openChannel` with an EIP-3009 authorization the
/// wallet signs once). `player.mjs --token` checks the dollar prices and
/// balances, the single wallet prompt, and that the viewer's ETH balance
/// stays 0 with no transaction sent.
#[test]
fn the_player_page_buys_gaslessly_in_a_test_dollar_in_chromium() {
    let demo = Demo::start(&[&DEMO_ARGS[..], &["--token"]].concat());
    let json = demo.demo_json();
    let summary = run_player(&demo.url, "player-test-token", &["--token"], &[]);
    assert_eq!(summary["token_symbol"], "tUSD", "{summary}");
    assert_eq!(
        summary["token"].as_str().map(str::to_lowercase),
        json["token"].as_str().map(str::to_lowercase),
        "{summary}"
    );
    assert_eq!(summary["viewer_eth_wei"], "0", "{summary}");
    assert_eq!(summary["viewer_transactions"], 0, "{summary}");
    // 200 units of the dollar per second of a 6 s window: $0.72 an hour.
    assert_eq!(summary["window_price"], "1200", "{summary}");
}

#[test]
fn the_player_modules_sign_the_test_vectors() {
    let output = Command::new("node")
        .args(["--test", "tests/browser/web-modules.test.mjs"])
        .current_dir(REPO_ROOT)
        .output()
        .expect("node runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn the_embedded_player_bundle_is_built_from_its_sources() {
    let output =
        Command::new("node").args(["web/build.mjs", "--check"]).current_dir(REPO_ROOT).output().expect("node runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}
