//! # tollstream-media
//!
//! Media is encrypted once, at packaging time, with a key per segment; only
//! keys travel over the paid socket.
//!
//! ## Layout
//! - [`keys`]: deriving a segment's AES-128 key and IV from a stream's
//!   master secret.
//! - [`key_store`]: the operator's master secrets on disk.

pub mod key_store;
pub mod keys;

pub use key_store::{KeyStore, KeyStoreError, is_valid_stream_id};
pub use keys::{MasterSecret, SegmentKey};
