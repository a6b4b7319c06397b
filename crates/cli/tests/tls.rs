//! `serve --tls-cert/--tls-key` with a test CA's certificate, and the
//! clients over https/wss: `watch --ca-cert` buys and decodes a stream,
//! and a client that does not trust the CA refuses the server.

mod common;

use common::{ServerOptions, ServerProcess, TestCa, TestChain, hex};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tollstream_client::{Client, Tls};
use tollstream_media::{KeyStore, PackageOptions, generate_test_video, package};

/// Seconds of stream one payment buys, and the segments' length.
const WINDOW_SECONDS: f64 = 2.0;

/// A 6 s test video packaged as stream `clip` (three 2 s segments) into
/// `dir/media`, its master secret into `dir/keys`.
fn package_clip(dir: &Path) -> (PathBuf, PathBuf) {
    let (media, keys) = (dir.join("media"), dir.join("keys"));
    let video = dir.join("clip.mp4");
    generate_test_video(&video, 6, &mut |_| {}).expect("ffmpeg generates the test video");
    let options = PackageOptions {
        input: video,
        stream_id: "clip".into(),
        title: None,
        out_dir: media.join("clip"),
        segment_seconds: WINDOW_SECONDS,
    };
    package(&options, &KeyStore::new(keys.clone()), &mut |_| {}).expect("the clip packages");
    (media, keys)
}

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

async fn tollstream(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_tollstream")).args(&args).output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn watch_buys_and_decodes_a_stream_from_a_server_with_a_private_ca_certificate() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (media, keys) = package_clip(dir.path());
    let chain = TestChain::new().await;
    let mut extra_args = ca.serve_args();
    extra_args.extend(["--media-dir".into(), media.display().to_string()]);
    extra_args.extend(["--keys-dir".into(), keys.display().to_string()]);
    let options = ServerOptions { window_seconds: WINDOW_SECONDS, extra_args, ..ServerOptions::default() };
    let server = ServerProcess::start(&chain, &options);
    assert!(server.url.starts_with("https://127.0.0.1:"), "the server says where it listens: {}", server.url);

    let key_file = dir.path().join("viewer.key");
    std::fs::write(&key_file, hex(&chain.viewer_wallet().await.to_bytes())).unwrap();
    let out = dir.path().join("out.ts");
    let watch = |trust: Option<&Path>| {
        let mut args: Vec<String> =
            ["watch", &server.url, "--rpc-url", &chain.rpc, "--stream", "clip"].map(str::to_owned).into();
        args.extend(["--windows".into(), "3".into(), "--wallet-key-file".into(), key_file.display().to_string()]);
        args.extend(["-o".into(), out.display().to_string()]);
        if let Some(ca_cert) = trust {
            args.extend(["--ca-cert".into(), ca_cert.display().to_string()]);
        }
        tollstream(args)
    };

    // Without the CA, the system's roots do not trust the server: a clear
    // refusal, before anything is bought.
    let refused = watch(None).await;
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("cannot reach the server at {}", server.url)), "{stderr}");
    assert!(stderr.contains("certificate"), "the error names the certificate: {stderr}");
    assert!(stderr.contains("--ca-cert"), "the error says how to trust a private CA: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "nothing is written before the server is trusted");

    // With it: the socket (wss) and the media (https) both go through.
    let watched = watch(Some(&ca.ca_cert)).await;
    let stdout = text(&watched.stdout);
    assert!(watched.status.success(), "{stdout}{}\n{}", text(&watched.stderr), server.log());
    assert!(stdout.contains("paid 3 windows"), "{stdout}");
    let (types, duration) = probe(&out);
    assert!(types.contains(&"video".to_owned()), "ffprobe decodes the video: {types:?}");
    let duration = duration.expect("a duration");
    assert!((4.0..=8.0).contains(&duration), "3 windows of 2 s, got {duration} s");
}

#[tokio::test]
async fn the_library_client_trusts_the_ca_it_is_given_and_no_other() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let chain = TestChain::new().await;
    let options = ServerOptions { extra_args: ca.serve_args(), ..ServerOptions::default() };
    let server = ServerProcess::start(&chain, &options);

    let trusted = Tls::new(Some(&ca.ca_cert)).unwrap();
    let client = Client::connect_with(&server.url, &trusted).await.expect("the CA's certificate is trusted");
    let info = client.public_key().await.unwrap();
    assert_eq!(info.channel_address, chain.contract);
    client.close().await;

    // Another CA, or none beyond the system's: refused at the handshake.
    let untrusted = Tls::new(Some(&other.ca_cert)).unwrap();
    for tls in [&untrusted, Tls::system()] {
        let error = Client::connect_with(&server.url, tls).await.err().expect("an untrusted server is refused");
        assert!(error.to_string().contains("certificate"), "{error}");
    }
}

#[test]
fn a_ca_cert_that_is_missing_or_not_a_certificate_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let watch = |ca_cert: &Path| {
        Command::new(env!("CARGO_BIN_EXE_tollstream"))
            .args(["watch", "https://127.0.0.1:9", "--ca-cert"])
            .arg(ca_cert)
            .env("TOLLSTREAM_WALLET_KEY", format!("0x{}", "11".repeat(32)))
            .output()
            .unwrap()
    };
    let missing = watch(&dir.path().join("nowhere.pem"));
    let stderr = text(&missing.stderr);
    assert!(!missing.status.success());
    assert!(stderr.contains("cannot read the CA certificate file") && stderr.contains("nowhere.pem"), "{stderr}");

    // A key is not a certificate.
    let key = watch(&ca.server_key);
    let stderr = text(&key.stderr);
    assert!(!key.status.success());
    assert!(stderr.contains("holds no PEM certificate"), "{stderr}");
}
