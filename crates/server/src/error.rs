//! Why the server could not start or stopped.

use std::path::PathBuf;

/// A failure of the server as a whole (start-up, listener); failures of one
/// request are `ProtocolError`s answered to that client.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read the wallet key file {path}: {reason}")]
    WalletKey { path: PathBuf, reason: String },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("chain: {0}")]
    Chain(#[from] tollstream_chain::ChainError),
    #[error("media keys: {0}")]
    Keys(#[from] tollstream_media::KeyStoreError),
    #[error("{0}")]
    Config(String),
    #[error("--tls-cert/--tls-key")]
    Tls(#[from] crate::listener::TlsConfigError),
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}
