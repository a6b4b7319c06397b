//! Signing with a local secp256k1 key and recovering signers, on
//! libsecp256k1: the server recovers one signer per payment, and
//! libsecp256k1 does it several times faster than pure-Rust k256.

use crate::encoding::{PublicKey, Signature};
use alloy_primitives::{Address, B256, keccak256};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, SECP256K1, SecretKey};
use std::fmt;

/// secp256k1n / 2, big-endian: a signature with a larger `s` is the
/// malleable twin of a low-`s` one, and the contract refuses it.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x5d, 0x57, 0x6e,
    0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// The Ethereum address of a public key: the last 20 bytes of the keccak256
/// of its uncompressed coordinates.
pub fn address_of(key: &secp256k1::PublicKey) -> Address {
    let uncompressed = key.serialize_uncompressed();
    Address::from_slice(&keccak256(&uncompressed[1..])[12..])
}

/// Recovers the key that signed `digest`. Accepts only what the contract's
/// `ecrecover` check accepts: `v` ∈ {27, 28} and a low `s`. Checking `v` is
/// what makes an accepted state collectable: with the other `v`, `ecrecover`
/// on chain would yield a different signer.
///
/// # Errors
/// A static description of why the signature is unusable.
pub fn recover(digest: &B256, signature: &Signature) -> Result<PublicKey, &'static str> {
    let bytes = &signature.0;
    let id = match bytes[64] {
        27 => RecoveryId::Zero,
        28 => RecoveryId::One,
        _ => return Err("signature v must be 27 or 28"),
    };
    if bytes[32..64] > HALF_ORDER[..] {
        return Err("signature s must be in the lower half of the curve order");
    }
    let recoverable =
        RecoverableSignature::from_compact(&bytes[..64], id).map_err(|_| "signature r or s is out of range")?;
    let key = SECP256K1
        .recover_ecdsa(Message::from_digest(digest.0), &recoverable)
        .map_err(|_| "signature does not recover to a key")?;
    Ok(PublicKey(key.serialize()))
}

/// A secp256k1 private key held in memory: a client's session key, or a
/// wallet key in tests and tools.
#[derive(Clone)]
pub struct SigningKey {
    secret: SecretKey,
    public: PublicKey,
}

impl SigningKey {
    /// # Errors
    /// When the 32 bytes are zero or not below the curve order.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, &'static str> {
        let secret = SecretKey::from_byte_array(bytes).map_err(|_| "not a valid secp256k1 private key")?;
        let public = PublicKey(secret.public_key(SECP256K1).serialize());
        Ok(SigningKey { secret, public })
    }

    /// Parses `0x` + 64 hex digits (the `0x` is optional, as key files and
    /// environment variables commonly omit it).
    ///
    /// # Errors
    /// When the text is not 32 bytes of hex or not a valid key.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let prefixed = if text.starts_with("0x") { text.to_owned() } else { format!("0x{text}") };
        let bytes = crate::encoding::parse_hex::<32>(&prefixed, "private key")?;
        Self::from_bytes(bytes).map_err(str::to_owned)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret.secret_bytes()
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn address(&self) -> Address {
        self.public.address()
    }

    /// Signs a 32-byte digest deterministically (RFC 6979), as `r ‖ s ‖ v`
    /// with `v` ∈ {27, 28}; libsecp256k1 always produces a low `s`.
    pub fn sign_digest(&self, digest: &B256) -> Signature {
        let signature = SECP256K1.sign_ecdsa_recoverable(Message::from_digest(digest.0), &self.secret);
        let (id, compact) = signature.serialize_compact();
        let mut bytes = [0u8; 65];
        bytes[..64].copy_from_slice(&compact);
        bytes[64] = 27 + i32::from(id) as u8;
        Signature(bytes)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("SigningKey").field("public", &self.public).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes([byte; 32]).unwrap()
    }

    #[test]
    fn a_signature_recovers_to_its_signer() {
        let digest = keccak256(b"tollstream");
        let signature = key(1).sign_digest(&digest);
        assert!(matches!(signature.0[64], 27 | 28));
        assert!(signature.0[32..64] <= HALF_ORDER[..]);
        assert_eq!(recover(&digest, &signature).unwrap(), key(1).public_key());
        assert_ne!(recover(&digest, &signature).unwrap(), key(2).public_key());
    }

    #[test]
    fn flipped_v_or_high_s_is_refused() {
        let digest = keccak256(b"tollstream");
        let signature = key(3).sign_digest(&digest);
        let mut flipped = signature;
        flipped.0[64] = 55 - signature.0[64];
        assert_ne!(recover(&digest, &flipped).ok(), Some(key(3).public_key()));
        let mut bad_v = signature;
        bad_v.0[64] = 1;
        assert!(recover(&digest, &bad_v).is_err());
        let mut high_s = signature;
        high_s.0[32..64].copy_from_slice(&[0xff; 32]);
        assert!(recover(&digest, &high_s).is_err());
    }

    #[test]
    fn hex_keys_parse_with_or_without_prefix() {
        let hex = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        let with = SigningKey::from_hex(&format!("0x{hex}\n")).unwrap();
        let without = SigningKey::from_hex(hex).unwrap();
        assert_eq!(with.address(), without.address());
        assert_eq!(with.address().to_checksum(None), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert!(SigningKey::from_hex("0x00").is_err());
        assert!(SigningKey::from_bytes([0; 32]).is_err());
    }
}
