//! The viewer's keys: the wallet that funds channels, and the session key
//! that signs states, derived from it so every run of the client finds and
//! resumes the same channel without keeping any other file.

use alloy::primitives::keccak256;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use tollstream_protocol::SigningKey;

/// The environment variable holding a wallet key in hex.
pub const WALLET_KEY_ENV: &str = "TOLLSTREAM_WALLET_KEY";

/// Why a wallet key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("cannot read wallet key file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write wallet key file {path}: {reason}")]
    Write { path: String, reason: String },
    #[error(
        "no wallet key: pass --wallet-key-file FILE or set {WALLET_KEY_ENV} (create one with `tollstream wallet new`)"
    )]
    Missing,
}

/// The wallet key from `file`, else from `$TOLLSTREAM_WALLET_KEY`.
///
/// # Errors
/// When neither is given or the key is malformed.
pub fn load_wallet(file: Option<&Path>) -> Result<SigningKey, WalletError> {
    if let Some(path) = file {
        let read = |reason: String| WalletError::Read { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        return SigningKey::from_hex(&text).map_err(read);
    }
    match std::env::var(WALLET_KEY_ENV) {
        Ok(text) => SigningKey::from_hex(&text)
            .map_err(|reason| WalletError::Read { path: format!("${WALLET_KEY_ENV}"), reason }),
        Err(_) => Err(WalletError::Missing),
    }
}

/// Writes `key` to a new file readable by its owner only (0600).
///
/// # Errors
/// When the file exists or cannot be written.
pub fn save_wallet(path: &Path, key: &SigningKey) -> Result<(), WalletError> {
    let write = |e: std::io::Error| WalletError::Write { path: path.display().to_string(), reason: e.to_string() };
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(write)?;
    let hex = format!("0x{}\n", alloy::primitives::hex::encode(key.to_bytes()));
    file.write_all(hex.as_bytes()).map_err(write)?;
    file.sync_all().map_err(write)
}

/// The session key of `wallet`: keccak256 of a label and the wallet key.
/// One-way, so a leaked session key (it lives in players and scripts) does
/// not reveal the wallet.
pub fn session_key(wallet: &SigningKey) -> SigningKey {
    let mut preimage = b"tollstream session key v1\0".to_vec();
    preimage.extend_from_slice(&wallet.to_bytes());
    // A hash that is zero or above the curve order has probability ~2^-128;
    // hashing again keeps the function total.
    let mut digest = keccak256(&preimage);
    loop {
        if let Ok(key) = SigningKey::from_bytes(digest.0) {
            return key;
        }
        digest = keccak256(digest);
    }
}

/// A new random key.
pub fn random_key() -> SigningKey {
    loop {
        if let Ok(key) = SigningKey::from_bytes(rand_bytes()) {
            return key;
        }
    }
}

fn rand_bytes() -> [u8; 32] {
    alloy::signers::local::PrivateKeySigner::random().to_bytes().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_key_is_stable_and_not_the_wallet() {
        let wallet = SigningKey::from_bytes([9; 32]).unwrap();
        assert_eq!(session_key(&wallet).address(), session_key(&wallet).address());
        assert_ne!(session_key(&wallet).address(), wallet.address());
        let other = SigningKey::from_bytes([10; 32]).unwrap();
        assert_ne!(session_key(&wallet).address(), session_key(&other).address());
    }

    #[test]
    fn a_saved_wallet_loads_back_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tollstream-wallet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wallet.key");
        let _ = std::fs::remove_file(&path);
        let key = random_key();
        save_wallet(&path, &key).unwrap();
        assert_eq!(load_wallet(Some(&path)).unwrap().address(), key.address());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(save_wallet(&path, &key).is_err(), "never overwrites a wallet");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
