//! # tollstream-media
//!
//! Media is encrypted once, at packaging time, with a key per segment; only
//! keys travel over the paid socket. A packaged stream is a folder of
//! ciphertext segments, an HLS playlist naming each segment's key URI and
//! IV, and a `stream.json`; any web server can serve it, and a player that
//! paid for segment `i` gets the key for `tollstream://<stream>/<i>`.
//!
//! ## Layout
//! - [`keys`]: deriving a segment's AES-128 key and IV from a stream's
//!   master secret.
//! - [`key_store`]: the operator's master secrets on disk.
//! - [`crypto`]: encrypting and decrypting one segment (HLS `METHOD=AES-128`:
//!   AES-128-CBC with PKCS#7).
//! - [`playlist`]: writing and parsing the media playlist we serve.
//! - [`package`](mod@package): cutting a video into segments with ffmpeg, encrypting
//!   them, and writing the stream folder.
//! - [`stream`]: loading packaged streams back, as the server does.
//! - [`generate`]: a test clip with a clock and a tone.
//! - [`error`]: [`MediaError`], the crate's one error type.
//!
//! Packaging and [`generate_test_video`] need `ffmpeg` and `ffprobe` on
//! `PATH` (Debian package `ffmpeg`); keys, crypto, playlists and loading do
//! not.

pub mod crypto;
pub mod error;
mod ffmpeg;
pub mod generate;
pub mod key_store;
pub mod keys;
pub mod package;
pub mod playlist;
pub mod stream;

pub use crypto::{decrypt_segment, encrypt_segment};
pub use error::MediaError;
pub use ffmpeg::{MediaInfo, probe};
pub use generate::generate_test_video;
pub use key_store::{KeyStore, KeyStoreError, is_valid_stream_id};
pub use keys::{MasterSecret, SegmentKey};
pub use package::{PackageOptions, PackageProgress, PackagedStream, SegmentInfo, package, package_in};
pub use playlist::{PlaylistSegment, parse_playlist, write_playlist};
pub use stream::{load_stream, load_streams};
