//! Packaging against the real ffmpeg: what lands in the stream folder is
//! ciphertext a paying player can decrypt back to exactly what ffmpeg cut,
//! and nothing secret ever lands there.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use tollstream_media::{
    KeyStore, MediaError, PackageOptions, PackageProgress, PackagedStream, decrypt_segment, generate_test_video,
    load_stream, load_streams, package, package_in, parse_playlist, playlist,
};

const CLIP_SECONDS: u32 = 7;
const TS_PACKET: usize = 188;

fn options(input: &Path, out_dir: &Path, segment_seconds: f64) -> PackageOptions {
    PackageOptions {
        input: input.to_path_buf(),
        stream_id: "demo".into(),
        title: Some("Test pattern".into()),
        out_dir: out_dir.to_path_buf(),
        segment_seconds,
    }
}

/// Whether `bytes` starts like an MPEG-TS file: the 0x47 sync byte at the
/// start of each of its first packets.
fn looks_like_ts(bytes: &[u8]) -> bool {
    let packets = (bytes.len() / TS_PACKET).min(8);
    packets > 0 && (0..packets).all(|i| bytes[i * TS_PACKET] == 0x47)
}

/// ffprobe's view of a file: (exit ok, codec types of streams it could
/// identify a codec for, format duration).
fn ffprobe(path: &Path) -> (bool, Vec<String>, Option<f64>) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_type,codec_name:format=duration", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let streams = report["streams"].as_array().cloned().unwrap_or_default();
    let kinds = streams
        .iter()
        .filter(|s| s["codec_name"].is_string())
        .filter_map(|s| s["codec_type"].as_str().map(str::to_owned))
        .collect();
    let duration = report["format"]["duration"].as_str().and_then(|d| d.parse().ok());
    (output.status.success(), kinds, duration)
}

fn concat(dir: &Path, stream: &PackagedStream) -> Vec<u8> {
    stream.segments.iter().flat_map(|s| fs::read(dir.join(&s.file_name)).unwrap()).collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_packaged_stream_is_ciphertext_that_its_keys_turn_back_into_ffmpegs_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    let mut clip_progress = Vec::new();
    generate_test_video(&clip, CLIP_SECONDS, &mut |p| clip_progress.push(p)).unwrap();
    assert_eq!(clip_progress.last().map(|p| p.done_seconds), Some(f64::from(CLIP_SECONDS)));

    let keys = KeyStore::new(dir.path().join("keys"));
    let media = dir.path().join("media");
    let out = media.join("demo");
    let work = dir.path().join("work");
    let mut progress: Vec<PackageProgress> = Vec::new();
    let stream = package_in(&options(&clip, &out, 2.0), &keys, &work, &mut |p| progress.push(p)).unwrap();

    // Exactly 2 s segments thanks to the forced keyframes, then the rest.
    assert_eq!(stream.id, "demo");
    assert_eq!(stream.title, "Test pattern");
    let durations: Vec<f64> = stream.segments.iter().map(|s| s.duration).collect();
    assert_eq!(durations, [2.0, 2.0, 2.0, 1.0]);
    assert!(progress.len() >= 2, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0].done_seconds <= w[1].done_seconds), "{progress:?}");
    let last = progress.last().unwrap();
    assert!((last.total_seconds - 7.0).abs() < 0.1 && last.done_seconds == last.total_seconds, "{last:?}");

    // The folder holds ciphertext, the playlist and stream.json, nothing else.
    assert_eq!(
        files_in(&out),
        ["index.m3u8", "seg00000.ts", "seg00001.ts", "seg00002.ts", "seg00003.ts", "stream.json"]
    );
    let secret = keys.master_secret("demo").unwrap();
    for segment in &stream.segments {
        let key = secret.segment_key("demo", segment.index);
        let cipher = fs::read(out.join(&segment.file_name)).unwrap();
        let plain = fs::read(work.join(&segment.file_name)).unwrap();
        assert!(looks_like_ts(&plain), "ffmpeg's segment {} is MPEG-TS", segment.index);
        assert!(cipher.len() >= 8 * TS_PACKET);
        // Any one offset may hold 0x47 by chance (1 in 256); all eight only
        // if the bytes are still MPEG-TS.
        assert!(!looks_like_ts(&cipher), "segment {} shows TS sync bytes", segment.index);
        assert_eq!(decrypt_segment(&key, &cipher).unwrap(), plain, "segment {}", segment.index);
        assert_eq!(segment.iv, key.iv);
    }

    // One key line per segment, with the derived IV and the agreed URI.
    let text = fs::read_to_string(out.join("index.m3u8")).unwrap();
    assert_eq!(text.matches("#EXT-X-KEY:").count(), 4);
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:0\n") && text.ends_with("#EXT-X-ENDLIST\n"));
    let listed = parse_playlist(text.as_bytes()).unwrap();
    for (i, entry) in (0u64..).zip(&listed) {
        let key = secret.segment_key("demo", i);
        assert_eq!(entry.key_uri, format!("tollstream://demo/{i}"));
        assert_eq!(entry.iv, key.iv);
        assert!(text.contains(&format!(
            "#EXT-X-KEY:METHOD=AES-128,URI=\"tollstream://demo/{i}\",IV={}\n",
            playlist::hex16(&key.iv)
        )));
    }

    // What ffmpeg cut plays: video and audio, the clip's length give or
    // take a segment.
    let plain_path = dir.path().join("plain.ts");
    fs::write(&plain_path, concat(&work, &stream)).unwrap();
    let (ok, kinds, duration) = ffprobe(&plain_path);
    assert!(ok && kinds.contains(&"video".into()) && kinds.contains(&"audio".into()), "{kinds:?}");
    let duration = duration.unwrap();
    assert!((duration - 7.0).abs() <= 2.0, "{duration}");

    // Without keys, the served bytes are nothing ffprobe can decode.
    let cipher_path = dir.path().join("cipher.ts");
    fs::write(&cipher_path, concat(&out, &stream)).unwrap();
    let (ok, kinds, _) = ffprobe(&cipher_path);
    assert!(!ok || kinds.is_empty(), "ffprobe decoded {kinds:?} from ciphertext");

    // No key material anywhere in the served folder.
    let secret_hex: String = secret.0.iter().map(|b| format!("{b:02x}")).collect();
    for name in files_in(&out) {
        let bytes = fs::read(out.join(&name)).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(!text.contains(&secret_hex), "{name} holds the master secret");
        assert!(!bytes.windows(32).any(|w| w == secret.0), "{name} holds the master secret");
        for i in 0..stream.segments.len() as u64 {
            let key = secret.segment_key("demo", i).key;
            assert!(!text.contains(&playlist::hex16(&key)[2..]), "{name} holds key {i}");
            assert!(!bytes.windows(16).any(|w| w == key), "{name} holds key {i}");
        }
    }

    // The master secret lives owner-only in the key store, outside the output.
    let key_file = keys.dir().join("demo.key");
    assert_eq!(fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!fs::canonicalize(&key_file).unwrap().starts_with(fs::canonicalize(&out).unwrap()));

    // The server reads back exactly what was written, and skips folders
    // that are not streams.
    let loaded = load_stream(&out).unwrap();
    assert_eq!(loaded, stream);
    loaded.verify_secret(&secret).unwrap();
    let other = tollstream_media::MasterSecret([9; 32]);
    assert!(matches!(loaded.verify_secret(&other), Err(MediaError::KeysDoNotMatch { segment: 0, .. })));
    fs::create_dir_all(media.join("not-a-stream")).unwrap();
    fs::write(media.join("notes.txt"), "hello").unwrap();
    assert_eq!(load_streams(&media).unwrap(), std::slice::from_ref(&stream));
    let json: serde_json::Value = serde_json::from_slice(&fs::read(out.join("stream.json")).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"id": "demo", "title": "Test pattern", "segment_seconds": 2.0,
                           "segment_count": 4, "duration_seconds": 7.0})
    );

    // Packaging again (through the throw-away work folder) with longer
    // segments replaces the stream whole: no stale segment stays behind,
    // and segment 0 keeps its key, since keys depend only on the secret.
    let repackaged = package(&options(&clip, &out, 3.0), &keys, &mut |_| {}).unwrap();
    let durations: Vec<f64> = repackaged.segments.iter().map(|s| s.duration).collect();
    assert_eq!(durations, [3.0, 3.0, 1.0]);
    assert_eq!(files_in(&out), ["index.m3u8", "seg00000.ts", "seg00001.ts", "seg00002.ts", "stream.json"]);
    assert_eq!(load_stream(&out).unwrap(), repackaged);
    let first = fs::read(out.join("seg00000.ts")).unwrap();
    assert!(looks_like_ts(&decrypt_segment(&secret.segment_key("demo", 0), &first).unwrap()));
}

#[test]
fn a_video_without_audio_packages_as_video_only() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("silent.mp4");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=3"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(status.success());
    let keys = KeyStore::new(dir.path().join("keys"));
    let out = dir.path().join("out");
    let work = dir.path().join("work");
    let stream = package_in(&options(&clip, &out, 2.0), &keys, &work, &mut |_| {}).unwrap();
    assert_eq!(stream.segments.len(), 2);
    let plain_path = dir.path().join("plain.ts");
    fs::write(&plain_path, concat(&work, &stream)).unwrap();
    let (ok, kinds, _) = ffprobe(&plain_path);
    assert!(ok && kinds == ["video"], "{kinds:?}");
}

#[test]
fn inputs_that_are_not_videos_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::new(dir.path().join("keys"));
    let out = dir.path().join("out");

    let text = dir.path().join("notes.txt");
    fs::write(&text, "this is not a video\n").unwrap();
    let error = package(&options(&text, &out, 2.0), &keys, &mut |_| {}).unwrap_err();
    assert!(matches!(error, MediaError::NotAVideo { .. }), "{error:?}");
    assert!(error.to_string().contains("notes.txt is not a video"), "{error}");

    let missing = dir.path().join("missing.mp4");
    let error = package(&options(&missing, &out, 2.0), &keys, &mut |_| {}).unwrap_err();
    assert!(matches!(error, MediaError::InputNotFound(ref path) if path == &missing), "{error:?}");
    assert!(error.to_string().contains("missing.mp4 does not exist"), "{error}");

    // A sound alone is not a video either.
    let tone = dir.path().join("tone.wav");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-f", "lavfi", "-i", "sine=duration=1"])
        .arg(&tone)
        .status()
        .unwrap();
    assert!(status.success());
    let error = package(&options(&tone, &out, 2.0), &keys, &mut |_| {}).unwrap_err();
    assert!(matches!(error, MediaError::NotAVideo { .. }), "{error:?}");

    assert!(!out.exists(), "nothing was written for refused inputs");
    assert!(!keys.dir().join("demo.key").exists(), "no secret was made for refused inputs");
}

#[test]
fn bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::new(dir.path().join("keys"));
    let input = PathBuf::from("/nonexistent.mp4");
    for seconds in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let error = package(&options(&input, dir.path(), seconds), &keys, &mut |_| {}).unwrap_err();
        assert!(matches!(error, MediaError::BadSegmentSeconds(_)), "{error:?}");
    }
    let mut bad_id = options(&input, dir.path(), 2.0);
    bad_id.stream_id = "../demo".into();
    let error = package(&bad_id, &keys, &mut |_| {}).unwrap_err();
    assert!(matches!(error, MediaError::BadStreamId(_)), "{error:?}");

    let error = generate_test_video(&dir.path().join("x.mp4"), 0, &mut |_| {}).unwrap_err();
    assert!(matches!(error, MediaError::EmptyClip), "{error:?}");

    // A key store inside the served folder would serve the master secret.
    let clip = dir.path().join("clip.mp4");
    generate_test_video(&clip, 1, &mut |_| {}).unwrap();
    let out = dir.path().join("out");
    let inside = KeyStore::new(out.join("keys"));
    let error = package(&options(&clip, &out, 2.0), &inside, &mut |_| {}).unwrap_err();
    assert!(matches!(error, MediaError::UnsafeLayout(_)), "{error:?}");
    assert!(!out.join("keys/demo.key").exists());
}

#[test]
fn loading_refuses_a_folder_whose_files_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let stream_dir = dir.path().join("demo");
    fs::create_dir_all(&stream_dir).unwrap();
    let segments: Vec<_> = (0..2u64)
        .map(|i| tollstream_media::PlaylistSegment {
            uri: playlist::segment_file_name(i),
            duration: 2.0,
            key_uri: playlist::key_uri("demo", i),
            iv: [i as u8; 16],
        })
        .collect();
    fs::write(stream_dir.join("index.m3u8"), tollstream_media::write_playlist(&segments)).unwrap();
    fs::write(stream_dir.join("seg00000.ts"), [0u8; 16]).unwrap();
    fs::write(stream_dir.join("seg00001.ts"), [0u8; 16]).unwrap();
    let json = |count: u64| {
        format!(r#"{{"id":"demo","title":"T","segment_seconds":2,"segment_count":{count},"duration_seconds":4}}"#)
    };
    fs::write(stream_dir.join("stream.json"), json(2)).unwrap();
    assert_eq!(load_stream(&stream_dir).unwrap().segments.len(), 2);

    fs::write(stream_dir.join("stream.json"), json(3)).unwrap();
    assert!(matches!(load_stream(&stream_dir), Err(MediaError::BadStream { .. })));
    fs::write(stream_dir.join("stream.json"), json(2)).unwrap();

    fs::remove_file(stream_dir.join("seg00001.ts")).unwrap();
    assert!(matches!(load_stream(&stream_dir), Err(MediaError::Io { .. })));
    fs::write(stream_dir.join("seg00001.ts"), [0u8; 16]).unwrap();

    // The same stream twice in one media folder is ambiguous.
    let copy = dir.path().join("demo-copy");
    fs::create_dir_all(&copy).unwrap();
    for name in files_in(&stream_dir) {
        fs::copy(stream_dir.join(&name), copy.join(&name)).unwrap();
    }
    assert!(matches!(load_streams(dir.path()), Err(MediaError::DuplicateStream { .. })));
}
