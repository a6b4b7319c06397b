//! `tollstream package`: cut a video into encrypted HLS segments.

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use tollstream_media::{KeyStore, PackageOptions, package};

#[derive(Debug, Args)]
pub struct PackageArgs {
    /// Any video ffmpeg can read.
    input: PathBuf,
    /// The stream's id (letters, digits, '-' and '_').
    #[arg(long)]
    stream: String,
    /// A title shown to viewers (default: the id).
    #[arg(long)]
    title: Option<String>,
    /// The server's data directory: the master secret goes into its key
    /// store, and the stream into its media folder unless --out is given.
    #[arg(long, env = "TOLLSTREAM_DATA_DIR", default_value = "tollstream-data")]
    data_dir: PathBuf,
    /// The key store the master secret goes into, the one `serve
    /// --keys-dir` reads [default: DATA_DIR/keys].
    #[arg(long, env = "TOLLSTREAM_KEYS_DIR")]
    keys_dir: Option<PathBuf>,
    /// Where to write the stream [default: DATA_DIR/media/STREAM].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Segment length in seconds: the server's window length or a whole
    /// fraction of it.
    #[arg(long, default_value_t = 10.0)]
    segment_seconds: f64,
}

pub async fn run(args: PackageArgs) -> anyhow::Result<()> {
    let out_dir = args.out.clone().unwrap_or_else(|| args.data_dir.join("media").join(&args.stream));
    let keys = KeyStore::new(args.keys_dir.clone().unwrap_or_else(|| args.data_dir.join("keys")));
    let options = PackageOptions {
        input: args.input.clone(),
        stream_id: args.stream.clone(),
        title: args.title.clone(),
        out_dir: out_dir.clone(),
        segment_seconds: args.segment_seconds,
    };
    let stream = tokio::task::spawn_blocking(move || package_with_progress(&options, &keys))
        .await
        .context("the packaging task failed")??;
    println!(
        "packaged {:?}: {} segments, {:.1} s, in {}",
        stream.id,
        stream.segments.len(),
        stream.duration_seconds(),
        out_dir.display()
    );
    Ok(())
}

/// Packages with a progress bar over the input's duration.
pub fn package_with_progress(
    options: &PackageOptions,
    keys: &KeyStore,
) -> Result<tollstream_media::PackagedStream, tollstream_media::MediaError> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} packaging {msg} [{bar:30}] {pos}/{len} s")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(options.stream_id.clone());
    let result = package(options, keys, &mut |progress| {
        bar.set_length(progress.total_seconds.ceil() as u64);
        bar.set_position(progress.done_seconds as u64);
    });
    bar.finish_and_clear();
    result
}
