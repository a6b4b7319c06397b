//! Segment keys: every segment of a stream has its own AES-128 key and IV,
//! derived from the stream's master secret, so any server process holding
//! the secret can release a window's keys without a key table, and leaking
//! one segment's key reveals nothing about another's.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// A stream's 32-byte master secret. Never logged, never served.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterSecret(pub [u8; 32]);

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

/// The AES-128 key and IV of one segment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SegmentKey {
    pub key: [u8; 16],
    pub iv: [u8; 16],
}

impl fmt::Debug for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SegmentKey(..)")
    }
}

impl MasterSecret {
    /// A fresh random secret from the operating system's generator.
    pub fn generate() -> Self {
        MasterSecret(rand::random())
    }

    /// The key and IV of `segment` of `stream_id`: HMAC-SHA256 keyed by the
    /// master secret over a label, the stream id and the segment index; the
    /// first 16 bytes of the MAC are the key, the last 16 the IV. The stream
    /// id is length-prefixed so no two (stream, segment) pairs share input.
    pub fn segment_key(&self, stream_id: &str, segment: u64) -> SegmentKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"tollstream segment key v1\0");
        mac.update(&(stream_id.len() as u64).to_be_bytes());
        mac.update(stream_id.as_bytes());
        mac.update(&segment.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let mut key = [0u8; 16];
        let mut iv = [0u8; 16];
        key.copy_from_slice(&out[..16]);
        iv.copy_from_slice(&out[16..]);
        SegmentKey { key, iv }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_segment_stream_and_secret() {
        let secret = MasterSecret([7; 32]);
        let a = secret.segment_key("demo", 0);
        assert_eq!(a, secret.segment_key("demo", 0));
        assert_ne!(a, secret.segment_key("demo", 1));
        assert_ne!(a, secret.segment_key("demo2", 0));
        assert_ne!(a, MasterSecret([8; 32]).segment_key("demo", 0));
        assert_ne!(a.key, a.iv);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let secret = MasterSecret([7; 32]);
        assert_eq!(format!("{secret:?}"), "MasterSecret(..)");
        assert_eq!(format!("{:?}", secret.segment_key("demo", 0)), "SegmentKey(..)");
    }
}
