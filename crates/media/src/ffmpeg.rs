//! Running `ffmpeg` and `ffprobe`: finding them, probing an input, and
//! turning `-progress` output into progress callbacks.

use crate::error::{MediaError, io_at};
use crate::package::PackageProgress;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

pub(crate) const FFMPEG: &str = "ffmpeg";
pub(crate) const FFPROBE: &str = "ffprobe";

/// How much of a failing tool's standard error goes into the error.
const STDERR_TAIL: usize = 2000;

/// What [`probe`] learned about an input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaInfo {
    /// Length of the whole file in seconds.
    pub duration_seconds: f64,
    /// Whether it has an audio stream (the package then carries AAC audio).
    pub has_audio: bool,
}

/// Fails with [`MediaError::FfmpegMissing`] unless both tools run.
pub(crate) fn check_tools() -> Result<(), MediaError> {
    for program in [FFMPEG, FFPROBE] {
        let output = Command::new(program).arg("-version").stdin(Stdio::null()).output();
        match output {
            Ok(output) if output.status.success() => {}
            Ok(output) => return Err(tool_error(program, &output.status, &output.stderr)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(MediaError::FfmpegMissing { program });
            }
            Err(error) => return Err(io_at(program)(error)),
        }
    }
    Ok(())
}

/// Whether this ffmpeg build has the filter `name` (drawtext needs
/// libfreetype, which minimal builds leave out).
pub(crate) fn has_filter(name: &str) -> Result<bool, MediaError> {
    let output = Command::new(FFMPEG)
        .args(["-hide_banner", "-filters"])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| spawn_error(FFMPEG, error))?;
    Ok(String::from_utf8_lossy(&output.stdout).lines().any(|line| line.split_whitespace().nth(1) == Some(name)))
}

/// The argument that names `path` to ffmpeg as a plain file: the `file:`
/// prefix stops a name like `concat:x` or `-y` from being read as a
/// protocol or an option.
pub(crate) fn file_arg(path: &Path) -> OsString {
    let mut arg = OsString::from("file:");
    arg.push(path.as_os_str());
    arg
}

/// Probes `input` with ffprobe.
///
/// # Errors
/// [`MediaError::InputNotFound`] when there is no such file,
/// [`MediaError::FfmpegMissing`] without ffprobe, and
/// [`MediaError::NotAVideo`] with ffprobe's message when it cannot read the
/// file, or when the file has no video stream (cover art does not count)
/// or no duration.
pub fn probe(input: &Path) -> Result<MediaInfo, MediaError> {
    if !input.is_file() {
        return Err(MediaError::InputNotFound(input.to_path_buf()));
    }
    let output = Command::new(FFPROBE)
        .args(["-v", "error", "-show_entries", "format=duration:stream=codec_type:stream_disposition=attached_pic"])
        .args(["-of", "json"])
        .arg(file_arg(input))
        .stdin(Stdio::null())
        .output()
        .map_err(|error| spawn_error(FFPROBE, error))?;
    let not_a_video = |reason: String| MediaError::NotAVideo { path: input.to_path_buf(), reason };
    if !output.status.success() {
        return Err(not_a_video(tail(&output.stderr)));
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|error| not_a_video(format!("ffprobe printed something that is not JSON ({error})")))?;
    let streams = report["streams"].as_array().map(Vec::as_slice).unwrap_or_default();
    let is = |kind: &str| {
        streams.iter().any(|s| s["codec_type"] == kind && s["disposition"]["attached_pic"].as_i64().unwrap_or(0) == 0)
    };
    if !is("video") {
        return Err(not_a_video("ffprobe found no video stream".into()));
    }
    let duration_seconds = report["format"]["duration"]
        .as_str()
        .and_then(|text| text.parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
        .ok_or_else(|| not_a_video("ffprobe found no duration (a still image?)".into()))?;
    Ok(MediaInfo { duration_seconds, has_audio: is("audio") })
}

/// Runs ffmpeg with `args` (which must not contain `-progress`), reporting
/// progress against `total_seconds` of output.
pub(crate) fn run_ffmpeg(
    args: &[OsString],
    total_seconds: f64,
    progress: &mut dyn FnMut(PackageProgress),
) -> Result<(), MediaError> {
    tracing::debug!(command = %command_line(args), "running ffmpeg");
    let mut child = Command::new(FFMPEG)
        .args(["-hide_banner", "-nostdin", "-y", "-v", "error", "-nostats", "-progress", "pipe:1"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| spawn_error(FFMPEG, error))?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("both pipes were requested")
    };
    // Drained on its own thread so a chatty ffmpeg cannot block on a full
    // stderr pipe while we wait on stdout.
    let stderr_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let mut done_seconds = 0.0_f64;
    // Bytes, not `lines()`: a line that is not UTF-8 must not stop us
    // draining the pipe, or ffmpeg would block on it forever.
    for line in BufReader::new(stdout).split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line);
        let Some((key, value)) = line.split_once('=') else { continue };
        match key {
            // out_time_ms is microseconds too (a long-standing ffmpeg quirk);
            // either may read N/A before the first frame.
            "out_time_us" | "out_time_ms" => {
                if let Ok(micros) = value.trim().parse::<i64>() {
                    done_seconds = (micros.max(0) as f64 / 1e6).min(total_seconds);
                }
            }
            "progress" => progress(PackageProgress { done_seconds, total_seconds }),
            _ => {}
        }
    }
    let status = child.wait().map_err(io_at(FFMPEG))?;
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(tool_error(FFMPEG, &status, &stderr));
    }
    progress(PackageProgress { done_seconds: total_seconds, total_seconds });
    Ok(())
}

/// The command as a shell would show it, for logs.
pub(crate) fn command_line(args: &[OsString]) -> String {
    let mut line = String::from(FFMPEG);
    for arg in args {
        line.push(' ');
        line.push_str(&OsStr::to_string_lossy(arg));
    }
    line
}

fn spawn_error(program: &'static str, error: std::io::Error) -> MediaError {
    if error.kind() == std::io::ErrorKind::NotFound {
        MediaError::FfmpegMissing { program }
    } else {
        io_at(program)(error)
    }
}

fn tool_error(program: &'static str, status: &std::process::ExitStatus, stderr: &[u8]) -> MediaError {
    MediaError::Tool { program, status: status.to_string(), stderr: tail(stderr) }
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let start = text.len().saturating_sub(STDERR_TAIL);
    // Back up to a character boundary.
    let start = (0..=start).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    text[start..].to_owned()
}
