//! `tollstream demo` end to end: a real chain, a packaged video, the server,
//! and `tollstream watch -o` writing a file that ffprobe decodes.

mod common;

use common::Demo;
use std::path::Path;
use std::process::Command;
use tollstream_server::store::{SqliteStore, Store};

/// A short video cut in 2 s windows: quick to generate and to watch.
const DEMO: &[&str] = &["--video-seconds", "12", "--window-seconds", "2"];

/// What ffprobe sees in a file: (codec types, duration in seconds).
fn probe(path: &Path) -> (Vec<String>, Option<f64>) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_type:format=duration", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs (Debian package ffmpeg)");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let types = json["streams"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["codec_type"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let duration = json["format"]["duration"].as_str().and_then(|d| d.parse().ok());
    (types, duration)
}

/// `tollstream watch` of the demo's first viewer for `windows` windows,
/// written to `out`.
async fn watch(demo: &Demo, windows: u32, out: &Path) -> std::process::Output {
    let info = demo.demo_json();
    let (url, rpc) = (demo.url.clone(), info["rpc_url"].as_str().unwrap().to_owned());
    let (key, out) = (demo.path("viewer-1.key"), out.to_owned());
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tollstream"))
            .args(["watch", &url, "--rpc-url", &rpc, "--windows", &windows.to_string(), "--wallet-key-file"])
            .arg(key)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.unwrap()
}

#[tokio::test]
async fn watch_pays_three_windows_and_writes_video_that_decodes() {
    let demo = Demo::start(DEMO);
    let info = demo.demo_json();
    assert_eq!(info["server_url"], demo.url);
    assert!(!info["viewer_private_keys"].as_array().unwrap().is_empty());

    let out = demo.path("out.ts");
    let output = watch(&demo, 3, &out).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("paid 3 windows"), "{stdout}");

    let (types, duration) = probe(&out);
    assert!(types.contains(&"video".to_owned()) && types.contains(&"audio".to_owned()), "{types:?}");
    let duration = duration.expect("a duration");
    assert!((4.0..=8.0).contains(&duration), "3 windows of 2 s, got {duration} s");

    // The server's store shows the three payments.
    let store = SqliteStore::open(&demo.path("tollstream.sqlite")).await.unwrap();
    let channels = store.list().await.unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].state.client_sequence_number, 3);
}

#[tokio::test]
async fn segments_fetched_without_paying_decode_to_nothing() {
    let demo = Demo::start(DEMO);
    let playlist = get(&format!("{}/streams/demo/index.m3u8", demo.url)).await.text().await.unwrap();
    let mut all = Vec::new();
    for name in playlist.lines().filter(|l| l.ends_with(".ts")) {
        all.extend_from_slice(&get(&format!("{}/streams/demo/{name}", demo.url)).await.bytes().await.unwrap());
    }
    assert!(all.len() > 10_000);
    let path = demo.path("stolen.ts");
    std::fs::write(&path, &all).unwrap();
    let (types, _) = probe(&path);
    assert!(types.is_empty(), "ciphertext must not decode, ffprobe saw {types:?}");
    // And no key is anywhere in what is served.
    assert!(!playlist.contains("demo.key") && playlist.contains("tollstream://demo/0"));
}

#[tokio::test]
async fn media_is_served_with_types_caching_and_ranges_and_nothing_else_is_reachable() {
    let demo = Demo::start(DEMO);
    let base = &demo.url;
    let playlist = get(&format!("{base}/streams/demo/index.m3u8")).await;
    assert_eq!(playlist.status(), 200);
    assert_eq!(playlist.headers()["content-type"], "application/vnd.apple.mpegurl");

    let segment = get(&format!("{base}/streams/demo/seg00000.ts")).await;
    assert_eq!(segment.status(), 200);
    assert_eq!(segment.headers()["content-type"], "video/mp2t");
    assert!(segment.headers()["cache-control"].to_str().unwrap().contains("immutable"));

    let ranged = reqwest::Client::new()
        .get(format!("{base}/streams/demo/seg00000.ts"))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap().len(), 100);

    // A symlink planted in the stream folder is not followed.
    std::os::unix::fs::symlink(demo.path("server.key"), demo.path("media/demo/seg99999.ts")).unwrap();
    for path in [
        "/streams/demo/../../keys/demo.key",
        "/streams/demo/..%2F..%2Fkeys%2Fdemo.key",
        "/streams/demo/%2e%2e/%2e%2e/server.key",
        "/streams/demo/stream.json",
        "/streams/demo/seg99999.ts",
        "/streams/nope/index.m3u8",
        "/streams/demo/",
        "/keys/demo.key",
        "/server.key",
    ] {
        let response = get(&format!("{base}{path}")).await;
        assert_eq!(response.status(), 404, "{path}");
    }
    // A server not started by the demo would not hand out keys; this one does.
    assert_eq!(get(&format!("{base}/demo.json")).await.status(), 200);
}

/// `tollstream demo --database-url` keeps its channels in PostgreSQL, and
/// the operator's `tollstream channels --database-url` lists them there.
#[tokio::test]
async fn the_demo_and_the_channel_listing_work_on_postgresql() {
    let url = tollstream_server::store::testing::create_database().await;
    let demo = Demo::start(&[DEMO, &["--database-url", &url]].concat());
    let output = watch(&demo, 2, &demo.path("out.ts")).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!demo.path("tollstream.sqlite").exists(), "no SQLite file beside a PostgreSQL store");

    let store = tollstream_server::store::open_read_only(&url).await.unwrap();
    let channels = store.list().await.unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].state.client_sequence_number, 2);

    let listing =
        Command::new(env!("CARGO_BIN_EXE_tollstream")).args(["channels", "--database-url", &url]).output().unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.status.success(), "{text}{}", String::from_utf8_lossy(&listing.stderr));
    let id = format!("{:#x}", channels[0].state.channel_id);
    assert!(text.lines().any(|line| line.starts_with(&id[..10])), "the channel is listed: {text}");
}
