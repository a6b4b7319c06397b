//! The player page in headless Chromium against `tollstream demo`: buy,
//! watch, reload, pause and spend (`tests/browser/player.mjs`); its modules'
//! unit tests (`tests/browser/web-modules.test.mjs`); and the embedded
//! bundle is the one its sources build.
//!
//! Needs Debian's `chromium` (at /usr/bin/chromium) and the npm packages
//! (`npm ci`); no browser is downloaded.

mod common;

use common::Demo;
use std::path::Path;
use std::process::Command;

const REPO_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn the_player_page_buys_watches_resumes_and_spends_in_chromium() {
    assert!(Path::new(CHROMIUM).exists(), "this test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)");
    // 6 s windows of a 90 s video: enough for the minute the test buys,
    // without reaching the stream's end.
    let demo = Demo::start(&["--video-seconds", "90", "--window-seconds", "6"]);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("player-test");
    let output = Command::new("node")
        .arg("tests/browser/player.mjs")
        .args(["--server", &demo.url, "--timeout", "240", "--out"])
        .arg(&out)
        .current_dir(REPO_ROOT)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser test failed:\n{stderr}\n{stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["windows"], 10, "{summary}");
    assert!(out.join("player-playing.png").exists());
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
