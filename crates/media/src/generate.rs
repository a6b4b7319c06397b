//! Test videos: a moving pattern with a clock burnt in and a 440 Hz tone,
//! so a viewer can see at a glance which second is playing and hear that
//! audio works. Used by `tollstream demo` and by tests.

use crate::error::{MediaError, io_at};
use crate::ffmpeg;
use crate::package::PackageProgress;
use std::ffi::OsString;
use std::path::Path;

/// Fonts tried for the clock, in order; without one, drawtext asks
/// fontconfig.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationMono-Bold.ttf",
];

/// Writes a `seconds`-long 640×360, 25 fps H.264 + AAC test clip to `out`;
/// the container follows the extension (`.mp4`, `.ts`, `.mkv`). The clock
/// needs ffmpeg's drawtext filter and a font; without them the clip falls
/// back to `testsrc2`'s own frame counter.
///
/// # Errors
/// [`MediaError::EmptyClip`] for 0 seconds, [`MediaError::FfmpegMissing`],
/// [`MediaError::Tool`] when ffmpeg fails, and [`MediaError::Io`].
pub fn generate_test_video(
    out: &Path,
    seconds: u32,
    progress: &mut dyn FnMut(PackageProgress),
) -> Result<(), MediaError> {
    if seconds == 0 {
        return Err(MediaError::EmptyClip);
    }
    ffmpeg::check_tools()?;
    let dir = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let extension = out.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    // Written beside `out` under the same extension (ffmpeg picks the
    // container from it), then renamed: an interrupted run leaves no
    // truncated clip behind.
    let partial =
        tempfile::Builder::new().prefix(".tollstream-clip-").suffix(&extension).tempfile_in(dir).map_err(io_at(dir))?;
    let total = f64::from(seconds);
    let mut drew_clock = false;
    if ffmpeg::has_filter("drawtext")? {
        match ffmpeg::run_ffmpeg(&args(seconds, Some(&clock_filter()), partial.path()), total, progress) {
            Ok(()) => drew_clock = true,
            // Typically no usable font; the plain pattern still has a counter.
            Err(error) => tracing::warn!(%error, "drawing the clock failed; generating the plain pattern"),
        }
    }
    if !drew_clock {
        ffmpeg::run_ffmpeg(&args(seconds, None, partial.path()), total, progress)?;
    }
    partial.persist(out).map_err(|error| io_at(out)(error.error))?;
    Ok(())
}

fn clock_filter() -> String {
    let font =
        FONTS.iter().find(|path| Path::new(path).is_file()).map(|path| format!("fontfile={path}:")).unwrap_or_default();
    format!(
        "drawtext={font}text='%{{pts\\:hms}}':fontsize=40:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=8:x=(w-text_w)/2:y=h-text_h-24"
    )
}

fn args(seconds: u32, clock: Option<&str>, out: &Path) -> Vec<OsString> {
    let video = format!("testsrc2=size=640x360:rate=25:duration={seconds}");
    let audio = format!("sine=frequency=440:sample_rate=48000:duration={seconds}");
    let mut args: Vec<OsString> =
        ["-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &audio].map(OsString::from).to_vec();
    if let Some(filter) = clock {
        args.extend(["-vf".into(), filter.into()]);
    }
    args.extend(
        ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-t"]
            .map(OsString::from),
    );
    args.push(seconds.to_string().into());
    args.push(ffmpeg::file_arg(out));
    args
}
