//! The one error type of this crate.

use crate::key_store::KeyStoreError;
use std::path::PathBuf;

/// Why packaging, loading or decrypting media failed.
///
/// Messages are meant for the operator running `tollstream`: they name the
/// file involved and, where there is one, the fix. None of them ever holds
/// a key.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// `ffmpeg` or `ffprobe` is not on `PATH`.
    #[error("`{program}` was not found on PATH; install the Debian package `ffmpeg` (apt-get install ffmpeg)")]
    FfmpegMissing {
        /// Which of the two programs is missing.
        program: &'static str,
    },
    /// The input file does not exist.
    #[error("input {0} does not exist")]
    InputNotFound(PathBuf),
    /// ffprobe could not read the input, or found no video in it.
    #[error("{path} is not a video: {reason}")]
    NotAVideo {
        /// The input file.
        path: PathBuf,
        /// ffprobe's own message, or what was missing.
        reason: String,
    },
    /// ffmpeg or ffprobe ran but failed.
    #[error("{program} failed ({status}): {stderr}")]
    Tool {
        /// `ffmpeg` or `ffprobe`.
        program: &'static str,
        /// The exit status, as the OS reports it.
        status: String,
        /// The tail of the tool's standard error.
        stderr: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The stream's master secret could not be read or created.
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    /// The stream id is not usable in file names and URLs.
    #[error("stream id {0:?} may use only letters, digits, '-' and '_' (1 to 64 of them)")]
    BadStreamId(String),
    /// `segment_seconds` is not a positive, finite number.
    #[error("segment length must be a positive number of seconds, not {0}")]
    BadSegmentSeconds(f64),
    /// Packaging would put secrets or plaintext where the stream is served.
    #[error("refusing to package: {0}")]
    UnsafeLayout(String),
    /// A ciphertext did not decrypt: wrong key, or not an AES-128-CBC/PKCS#7
    /// ciphertext at all.
    #[error("segment did not decrypt: wrong key, or not a whole number of AES blocks with PKCS#7 padding")]
    Decrypt,
    /// A playlist is not the kind this crate writes.
    #[error("bad playlist: {0}")]
    BadPlaylist(String),
    /// A `stream.json` is malformed or disagrees with its playlist.
    #[error("stream {path}: {reason}")]
    BadStream {
        /// The stream folder or file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key store's master secret is not the one a stream was packaged
    /// with, so the keys it would sell decrypt nothing.
    #[error(
        "stream {id:?} was packaged with another master secret than the key store holds (segment {segment}'s IV differs); package it again"
    )]
    KeysDoNotMatch {
        /// The stream id.
        id: String,
        /// The first segment found to differ.
        segment: u64,
    },
    /// A test video must last at least a second.
    #[error("a test video must last at least one second")]
    EmptyClip,
    /// Two folders of a media directory hold the same stream id.
    #[error("stream id {id:?} is packaged twice: in {first} and {second}")]
    DuplicateStream {
        /// The id both claim.
        id: String,
        /// One folder.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
}

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> MediaError {
    let path = path.into();
    move |source| MediaError::Io { path, source }
}
