//! Packaging: cutting a video into fixed-length HLS segments with ffmpeg,
//! encrypting each with its own key, and writing the folder the server
//! serves.
//!
//! A packaged stream folder holds exactly:
//! - `seg00000.ts`, `seg00001.ts`, …: AES-128-CBC ciphertext of MPEG-TS
//!   segments (H.264 main profile, AAC audio when the input has audio);
//! - `index.m3u8`: the playlist ([`crate::playlist`]), one key line per
//!   segment;
//! - `stream.json`: id, title and segment counts, written last, so a folder
//!   with a `stream.json` is a complete stream.
//!
//! No key and no plaintext is ever written there: plaintext segments live
//! only in a private temporary folder, and keys only in the [`KeyStore`].

use crate::crypto::encrypt_segment;
use crate::error::{MediaError, io_at};
use crate::ffmpeg::{self, MediaInfo};
use crate::key_store::{KeyStore, is_valid_stream_id};
use crate::keys::MasterSecret;
use crate::playlist::{self, PLAYLIST_FILE, PlaylistSegment};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File name of the stream description inside a stream folder.
pub const STREAM_FILE: &str = "stream.json";

/// What to package, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct PackageOptions {
    /// Any file ffmpeg can read with a video stream.
    pub input: PathBuf,
    /// The id clients ask for; it names the key file and appears in key URIs.
    pub stream_id: String,
    /// Shown to viewers; the stream id when absent.
    pub title: Option<String>,
    /// The stream folder to write (created if missing). Anything in it is
    /// public: the server serves it as is.
    pub out_dir: PathBuf,
    /// Length of every segment but the last; one payment window should be a
    /// whole number of them.
    pub segment_seconds: f64,
}

/// How far a long ffmpeg run has got, in seconds of output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackageProgress {
    /// Seconds of the output written so far.
    pub done_seconds: f64,
    /// Seconds the output will have when done.
    pub total_seconds: f64,
}

/// One segment of a packaged stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    /// Its number: the media sequence number, and the `segment` of the
    /// `secret` message that carries its key.
    pub index: u64,
    /// Its file in the stream folder (`seg00000.ts`).
    pub file_name: String,
    /// Its length in seconds.
    pub duration: f64,
    /// Its CBC IV as the playlist states it; lets the server check that the
    /// key store still holds the secret the stream was packaged with.
    pub iv: [u8; 16],
}

/// A packaged stream: what [`package`] wrote, or
/// [`load_stream`](crate::load_stream) read back.
#[derive(Debug, Clone, PartialEq)]
pub struct PackagedStream {
    /// The stream id.
    pub id: String,
    /// Its title for viewers.
    pub title: String,
    /// The nominal segment length it was cut with.
    pub segment_seconds: f64,
    /// Every segment, in order, numbered from 0.
    pub segments: Vec<SegmentInfo>,
    /// The stream folder.
    pub dir: PathBuf,
}

impl PackagedStream {
    /// Total length in seconds (the sum of the segments).
    pub fn duration_seconds(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// Path of `index.m3u8`.
    pub fn playlist_path(&self) -> PathBuf {
        self.dir.join(PLAYLIST_FILE)
    }

    /// Path of segment `index`'s ciphertext, if the stream has it.
    pub fn segment_path(&self, index: u64) -> Option<PathBuf> {
        let segment = self.segments.get(usize::try_from(index).ok()?)?;
        Some(self.dir.join(&segment.file_name))
    }

    /// Checks that `secret` is the one this stream was packaged with, by
    /// comparing every IV it derives with the playlist's. Call it at start-up:
    /// a server selling keys from a replaced key file would sell keys that
    /// decrypt nothing.
    ///
    /// # Errors
    /// [`MediaError::KeysDoNotMatch`] on the first segment whose IV differs.
    pub fn verify_secret(&self, secret: &MasterSecret) -> Result<(), MediaError> {
        match self.segments.iter().find(|s| secret.segment_key(&self.id, s.index).iv != s.iv) {
            None => Ok(()),
            Some(segment) => Err(MediaError::KeysDoNotMatch { id: self.id.clone(), segment: segment.index }),
        }
    }
}

/// The `stream.json` file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StreamFile {
    pub id: String,
    pub title: String,
    pub segment_seconds: f64,
    pub segment_count: u64,
    pub duration_seconds: f64,
}

/// Packages `options.input` into `options.out_dir`, encrypting segment `i`
/// with the key of (`stream_id`, `i`) derived from the stream's master
/// secret in `keys` (created on first use). Plaintext segments go to a
/// private temporary folder that is removed on return.
///
/// # Errors
/// [`MediaError::BadStreamId`], [`MediaError::BadSegmentSeconds`],
/// [`MediaError::InputNotFound`], [`MediaError::FfmpegMissing`],
/// [`MediaError::NotAVideo`], [`MediaError::Tool`] when ffmpeg fails,
/// [`MediaError::KeyStore`], [`MediaError::UnsafeLayout`] when the key store
/// lies inside `out_dir`, and [`MediaError::Io`].
pub fn package(
    options: &PackageOptions,
    keys: &KeyStore,
    progress: &mut dyn FnMut(PackageProgress),
) -> Result<PackagedStream, MediaError> {
    let work = tempfile::Builder::new().prefix("tollstream-package-").tempdir().map_err(io_at(std::env::temp_dir()))?;
    package_in(options, keys, work.path(), progress)
}

/// [`package`], with the plaintext segments left in `work_dir` as
/// `seg00000.ts`, … (and ffmpeg's own `index.m3u8`) for the caller to
/// inspect or remove. Meant for tests and for debugging a packaging;
/// `work_dir` must be private, since its contents are the unencrypted
/// stream.
///
/// # Errors
/// As [`package`], and [`MediaError::UnsafeLayout`] when `work_dir` lies
/// inside `out_dir`.
pub fn package_in(
    options: &PackageOptions,
    keys: &KeyStore,
    work_dir: &Path,
    progress: &mut dyn FnMut(PackageProgress),
) -> Result<PackagedStream, MediaError> {
    let id = options.stream_id.as_str();
    if !is_valid_stream_id(id) {
        return Err(MediaError::BadStreamId(id.to_owned()));
    }
    let seconds = options.segment_seconds;
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(MediaError::BadSegmentSeconds(seconds));
    }
    // Cheap checks first: the encode is the slow part.
    ffmpeg::check_tools()?;
    let info = ffmpeg::probe(&options.input)?;
    fs::create_dir_all(&options.out_dir).map_err(io_at(&options.out_dir))?;
    fs::create_dir_all(work_dir).map_err(io_at(work_dir))?;
    // The layout check needs the key store's folder to exist, and must come
    // before a secret is written somewhere it would be served.
    fs::DirBuilder::new().recursive(true).mode(0o700).create(keys.dir()).map_err(io_at(keys.dir()))?;
    check_layout(&options.out_dir, keys.dir(), work_dir)?;
    let secret = keys.master_secret(id)?;

    tracing::info!(stream_id = id, input = %options.input.display(), seconds = info.duration_seconds, "packaging");
    let plain = cut(&options.input, &info, seconds, work_dir, progress)?;
    let stream = encrypt_into(&plain, work_dir, options, &secret)?;
    tracing::info!(stream_id = id, segments = stream.segments.len(), dir = %stream.dir.display(), "packaged");
    Ok(stream)
}

/// Refuses layouts where serving `out_dir` would serve a master secret or
/// plaintext.
fn check_layout(out_dir: &Path, keys_dir: &Path, work_dir: &Path) -> Result<(), MediaError> {
    let real = |path: &Path| fs::canonicalize(path).map_err(io_at(path));
    let out = real(out_dir)?;
    if real(keys_dir)?.starts_with(&out) {
        return Err(MediaError::UnsafeLayout(format!(
            "the key store {} is inside the output folder {}, which is served to everyone",
            keys_dir.display(),
            out_dir.display()
        )));
    }
    if real(work_dir)?.starts_with(&out) {
        return Err(MediaError::UnsafeLayout(format!(
            "the plaintext work folder {} is inside the output folder {}",
            work_dir.display(),
            out_dir.display()
        )));
    }
    Ok(())
}

/// The ffmpeg arguments (after the global ones `run_ffmpeg` adds) that cut
/// `input` into `seconds`-long MPEG-TS segments in `work_dir`.
pub(crate) fn cut_args(input: &Path, info: &MediaInfo, seconds: f64, work_dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-i".into(), ffmpeg::file_arg(input), "-map".into(), "0:v:0".into()];
    if info.has_audio {
        args.extend(["-map".into(), "0:a:0".into()]);
    }
    args.extend(
        [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "main",
            "-pix_fmt",
            "yuv420p",
            // yuv420p needs even dimensions; odd-sized inputs lose a pixel.
            "-vf",
            "scale=trunc(iw/2)*2:trunc(ih/2)*2",
            // A keyframe at every boundary and none from scene cuts, so the
            // muxer can cut exactly every `seconds` and a paid window is a
            // whole number of segments.
            "-force_key_frames",
            &format!("expr:gte(t,n_forced*{seconds})"),
            "-sc_threshold",
            "0",
        ]
        .map(OsString::from),
    );
    if info.has_audio {
        args.extend(["-c:a", "aac", "-b:a", "128k", "-ac", "2"].map(OsString::from));
    }
    args.extend(
        [
            "-f",
            "hls",
            "-hls_time",
            &seconds.to_string(),
            "-hls_playlist_type",
            "vod",
            "-hls_segment_type",
            "mpegts",
            "-hls_segment_filename",
        ]
        .map(OsString::from),
    );
    args.push(ffmpeg::file_arg(&work_dir.join("seg%05d.ts")));
    args.push(ffmpeg::file_arg(&work_dir.join(PLAYLIST_FILE)));
    args
}

/// Cuts the input into plaintext segments in `work_dir`; returns each
/// segment's file name and duration, in order.
fn cut(
    input: &Path,
    info: &MediaInfo,
    seconds: f64,
    work_dir: &Path,
    progress: &mut dyn FnMut(PackageProgress),
) -> Result<Vec<(String, f64)>, MediaError> {
    ffmpeg::run_ffmpeg(&cut_args(input, info, seconds, work_dir), info.duration_seconds, progress)?;
    let playlist_path = work_dir.join(PLAYLIST_FILE);
    let text = fs::read(&playlist_path).map_err(io_at(&playlist_path))?;
    let segments = playlist::parse_plain_playlist(&text)?;
    if segments.is_empty() {
        return Err(MediaError::BadPlaylist(format!("ffmpeg wrote no segment into {}", playlist_path.display())));
    }
    segments
        .into_iter()
        .enumerate()
        .map(|(i, (uri, duration))| {
            let expected = playlist::segment_file_name(i as u64);
            // ffmpeg names segments after our pattern; anything else means
            // the numbering we key by is not the playlist's.
            match Path::new(&uri).file_name() {
                Some(name) if name == expected.as_str() => Ok((expected, duration)),
                _ => Err(MediaError::BadPlaylist(format!("ffmpeg's segment {i} is {uri:?}, expected {expected}"))),
            }
        })
        .collect()
}

/// Encrypts the plaintext segments into `options.out_dir` and writes the
/// playlist and `stream.json`.
fn encrypt_into(
    plain: &[(String, f64)],
    work_dir: &Path,
    options: &PackageOptions,
    secret: &MasterSecret,
) -> Result<PackagedStream, MediaError> {
    let id = options.stream_id.as_str();
    let out_dir = options.out_dir.as_path();
    let mut segments = Vec::with_capacity(plain.len());
    for (index, (file_name, duration)) in (0u64..).zip(plain) {
        let source = work_dir.join(file_name);
        let plaintext = fs::read(&source).map_err(io_at(&source))?;
        let key = secret.segment_key(id, index);
        write_atomic(out_dir, file_name, &encrypt_segment(&key, &plaintext))?;
        segments.push(SegmentInfo { index, file_name: file_name.clone(), duration: *duration, iv: key.iv });
    }
    remove_stale_segments(out_dir, segments.len() as u64)?;

    let listed: Vec<PlaylistSegment> = segments
        .iter()
        .map(|s| PlaylistSegment {
            uri: s.file_name.clone(),
            duration: s.duration,
            key_uri: playlist::key_uri(id, s.index),
            iv: s.iv,
        })
        .collect();
    write_atomic(out_dir, PLAYLIST_FILE, playlist::write_playlist(&listed).as_bytes())?;

    let stream = PackagedStream {
        id: id.to_owned(),
        title: options.title.clone().unwrap_or_else(|| id.to_owned()),
        segment_seconds: options.segment_seconds,
        segments,
        dir: out_dir.to_path_buf(),
    };
    let description = StreamFile {
        id: stream.id.clone(),
        title: stream.title.clone(),
        segment_seconds: stream.segment_seconds,
        segment_count: stream.segments.len() as u64,
        duration_seconds: (stream.duration_seconds() * 1e6).round() / 1e6,
    };
    let mut json = serde_json::to_vec_pretty(&description).map_err(|error| io_at(STREAM_FILE)(error.into()))?;
    json.push(b'\n');
    write_atomic(out_dir, STREAM_FILE, &json)?;
    Ok(stream)
}

/// Removes segment files left from an earlier, longer packaging of the same
/// folder, so the folder holds exactly the stream it describes.
fn remove_stale_segments(out_dir: &Path, count: u64) -> Result<(), MediaError> {
    for entry in fs::read_dir(out_dir).map_err(io_at(out_dir))? {
        let entry = entry.map_err(io_at(out_dir))?;
        let name = entry.file_name();
        let Some(index) = name.to_str().and_then(segment_index) else { continue };
        if index >= count {
            fs::remove_file(entry.path()).map_err(io_at(entry.path()))?;
        }
    }
    Ok(())
}

/// The index in a name [`playlist::segment_file_name`] made.
fn segment_index(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg")?.strip_suffix(".ts")?;
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index = digits.parse().ok()?;
    (playlist::segment_file_name(index) == name).then_some(index)
}

/// Writes `dir/name` through a temporary file and a rename, so a reader
/// (the server, mid-repackaging) sees the old file or the new one, never
/// half of one.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), MediaError> {
    let target = dir.join(name);
    let mut file = tempfile::Builder::new().prefix(".tollstream-").tempfile_in(dir).map_err(io_at(dir))?;
    file.write_all(bytes).map_err(io_at(file.path()))?;
    // Temporary files are 0600; these are public by design (ciphertext and
    // metadata) and the server may run as another user.
    file.as_file().set_permissions(fs::Permissions::from_mode(0o644)).map_err(io_at(file.path()))?;
    file.persist(&target).map_err(|error| io_at(&target)(error.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_strangers_are_ignored() {
        assert_eq!(segment_index("seg00000.ts"), Some(0));
        assert_eq!(segment_index("seg00042.ts"), Some(42));
        assert_eq!(segment_index("seg123456.ts"), Some(123_456));
        assert_eq!(segment_index("seg0001.ts"), None);
        assert_eq!(segment_index("seg000001.ts"), None);
        assert_eq!(segment_index("seg0000a.ts"), None);
        assert_eq!(segment_index("index.m3u8"), None);
    }

    #[test]
    fn the_cut_forces_a_keyframe_at_every_boundary() {
        let info = MediaInfo { duration_seconds: 7.0, has_audio: true };
        let line = ffmpeg::command_line(&cut_args(Path::new("/in.mp4"), &info, 2.0, Path::new("/w")));
        assert!(line.contains("-force_key_frames expr:gte(t,n_forced*2) -sc_threshold 0"), "{line}");
        assert!(line.contains("-hls_time 2 -hls_playlist_type vod -hls_segment_type mpegts"), "{line}");
        assert!(line.contains("-c:a aac"), "{line}");
        let silent = MediaInfo { has_audio: false, ..info };
        let line = ffmpeg::command_line(&cut_args(Path::new("/in.mp4"), &silent, 2.5, Path::new("/w")));
        assert!(!line.contains("0:a:0") && !line.contains("aac"), "{line}");
        assert!(line.contains("n_forced*2.5") && line.contains("-hls_time 2.5"), "{line}");
    }

    #[test]
    fn a_key_store_inside_the_output_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let work = dir.path().join("work");
        for path in [&out, &work, &out.join("keys")] {
            fs::create_dir_all(path).unwrap();
        }
        assert!(check_layout(&out, &dir.path().join("work"), &work).is_ok());
        assert!(matches!(check_layout(&out, &out.join("keys"), &work), Err(MediaError::UnsafeLayout(_))));
        assert!(matches!(check_layout(&out, &work, &out), Err(MediaError::UnsafeLayout(_))));
    }
}
