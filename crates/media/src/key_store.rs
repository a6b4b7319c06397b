//! The operator's key store: one master secret per stream, in a file only
//! the operator can read (mode 0600), created on first use.

use crate::keys::MasterSecret;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a master secret could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("key store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("key file {0} is not 64 hex digits")]
    Corrupt(PathBuf),
    #[error("stream id {0:?} may use only letters, digits, '-' and '_' (1 to 64 of them)")]
    BadStreamId(String),
}

/// A folder of `<stream>.key` files.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

/// Whether `id` is a valid stream id: it names files and URL paths, so it
/// is kept to a safe alphabet.
pub fn is_valid_stream_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl KeyStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        KeyStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The master secret of `stream_id`, generated and saved (0600) if the
    /// stream has none yet.
    ///
    /// # Errors
    /// When the file cannot be read or written, or is corrupt.
    pub fn master_secret(&self, stream_id: &str) -> Result<MasterSecret, KeyStoreError> {
        if !is_valid_stream_id(stream_id) {
            return Err(KeyStoreError::BadStreamId(stream_id.to_owned()));
        }
        let path = self.dir.join(format!("{stream_id}.key"));
        let io = |source| KeyStoreError::Io { path: path.clone(), source };
        match fs::read_to_string(&path) {
            Ok(text) => parse(text.trim()).ok_or_else(|| KeyStoreError::Corrupt(path.clone())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir).map_err(io)?;
                fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
                let secret = MasterSecret::generate();
                // create_new: two processes racing to create it must not
                // both win with different secrets.
                match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                    Ok(mut file) => {
                        let text: String = secret.0.iter().map(|b| format!("{b:02x}")).collect();
                        file.write_all(format!("{text}\n").as_bytes()).map_err(io)?;
                        file.sync_all().map_err(io)?;
                        Ok(secret)
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => self.master_secret(stream_id),
                    Err(error) => Err(io(error)),
                }
            }
            Err(error) => Err(io(error)),
        }
    }
}

fn parse(text: &str) -> Option<MasterSecret> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(MasterSecret(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path().join("keys"));
        let first = store.master_secret("demo").unwrap();
        let again = store.master_secret("demo").unwrap();
        assert_eq!(first, again);
        assert_ne!(first, store.master_secret("other").unwrap());
        let mode = fs::metadata(dir.path().join("keys/demo.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unsafe_stream_ids_and_corrupt_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        assert!(matches!(store.master_secret("../etc"), Err(KeyStoreError::BadStreamId(_))));
        assert!(matches!(store.master_secret(""), Err(KeyStoreError::BadStreamId(_))));
        fs::write(dir.path().join("bad.key"), "nothex").unwrap();
        assert!(matches!(store.master_secret("bad"), Err(KeyStoreError::Corrupt(_))));
    }
}
