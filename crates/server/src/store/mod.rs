//! Durable channel storage behind a trait: SQLite by default
//! ([`SqliteStore`]); the trait is what a PostgreSQL store implements.
//!
//! The store keeps, per channel, the latest accepted state and the window it
//! paid for. A payment is written with a compare-and-swap on the sequence
//! number and is durable when [`Store::record_payment`] returns, which is
//! what lets the server emit the window's `secret` afterwards. Rows are
//! never deleted: a signed state is money until its close is on chain.

mod group_commit;
mod sqlite;

pub use sqlite::{CommitMode, SqliteStore};

use async_trait::async_trait;
use std::fmt;
use std::str::FromStr;
use tollstream_protocol::{B256, ChannelState, ErrorCode, ProtocolError, PublicKey};

/// What one payment bought: `segment_count` segments of `stream_id` from
/// `first_segment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub stream_id: String,
    pub first_segment: u64,
    pub segment_count: u64,
}

impl Window {
    /// The first segment after this window.
    pub fn end(&self) -> u64 {
        self.first_segment + self.segment_count
    }
}

/// Where a channel stands, from the server's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelStatus {
    /// Accepting payments.
    Open,
    /// Its last state is final (client balance 0): nothing more to pay,
    /// waiting to be closed on chain.
    Final,
    /// A close transaction was sent.
    Closing,
    Closed,
    /// The client took the deposit back after expiry.
    Refunded,
}

impl ChannelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelStatus::Open => "open",
            ChannelStatus::Final => "final",
            ChannelStatus::Closing => "closing",
            ChannelStatus::Closed => "closed",
            ChannelStatus::Refunded => "refunded",
        }
    }
}

impl fmt::Display for ChannelStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "open" => ChannelStatus::Open,
            "final" => ChannelStatus::Final,
            "closing" => ChannelStatus::Closing,
            "closed" => ChannelStatus::Closed,
            "refunded" => ChannelStatus::Refunded,
            other => return Err(format!("unknown channel status {other:?}")),
        })
    }
}

/// A channel as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChannel {
    /// The latest accepted state.
    pub state: ChannelState,
    /// What that state's payment bought; `None` for the opening state.
    pub window: Option<Window>,
    /// Unix seconds (chain time) from which the client can take a refund.
    pub expires_at: u64,
    /// Chain time from which the channel takes no more payments and is
    /// closed if it holds server money: `expires_at` less the margin.
    pub settle_by: u64,
    pub status: ChannelStatus,
    /// The close transaction, once signed (recorded before broadcast).
    pub close_tx: Option<B256>,
    /// Its raw bytes, to broadcast the very same transaction again.
    pub close_tx_raw: Option<Vec<u8>>,
    /// Unix milliseconds when the server first stored the channel; orders a
    /// client's channels.
    pub created_at: i64,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The compare-and-swap failed: the stored state is no longer the one
    /// the payment succeeds (a concurrent payment won), or the channel is
    /// not open.
    #[error("the channel's stored state changed or it is not open")]
    Conflict,
    #[error("no such channel")]
    NotFound,
    #[error("database: {0}")]
    Database(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<StoreError> for ProtocolError {
    /// The client learns only what it can act on; the database's own words
    /// stay in the server's log.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict => {
                ProtocolError::new(ErrorCode::StaleSequence, "the channel advanced concurrently; ask latestState")
            }
            StoreError::NotFound => ProtocolError::new(ErrorCode::UnknownChannel, "no such channel"),
            _ => ProtocolError::new(ErrorCode::Internal, "the server could not store the request"),
        }
    }
}

/// Durable channel storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a verified opening state of a channel expiring at
    /// `expires_at`, to be settled from `settle_by`. Idempotent: when the
    /// channel is already stored, returns the stored channel unchanged.
    ///
    /// # Errors
    /// `Database` when the write fails.
    async fn insert_channel(
        &self,
        state: &ChannelState,
        expires_at: u64,
        settle_by: u64,
    ) -> Result<StoredChannel, StoreError>;

    /// One channel by id.
    ///
    /// # Errors
    /// `Database` or `Corrupt`.
    async fn channel(&self, id: &B256) -> Result<Option<StoredChannel>, StoreError>;

    /// The channel the client stored last, whatever its status.
    ///
    /// # Errors
    /// `Database` or `Corrupt`.
    async fn newest_for_client(&self, key: &PublicKey) -> Result<Option<StoredChannel>, StoreError>;

    /// Makes `next` the channel's latest state, with the `window` it paid
    /// for, if and only if the stored state is its predecessor (sequence
    /// `next.client_sequence_number - 1`) and the channel is open; marks
    /// the channel final when `next` is. Durable when it returns.
    ///
    /// # Errors
    /// `Conflict` when the compare-and-swap fails; `Database`.
    async fn record_payment(&self, next: &ChannelState, window: &Window) -> Result<(), StoreError>;

    /// Channels the settlement worker must act on at chain time `now`:
    /// final ones, ones with a close in flight, and open ones holding
    /// server money whose `settle_by` has come.
    ///
    /// # Errors
    /// `Database` or `Corrupt`.
    async fn awaiting_settlement(&self, now: u64) -> Result<Vec<StoredChannel>, StoreError>;

    /// Records a signed close of the channel at `sequence` and marks it
    /// closing, if its latest state is still `sequence` and it is open or
    /// final: a payment stored meanwhile makes the close stale.
    ///
    /// # Errors
    /// `Conflict` when the compare-and-swap fails; `Database`.
    async fn record_close(&self, id: &B256, sequence: u64, tx: &B256, raw: &[u8]) -> Result<(), StoreError>;

    /// Forgets a close that failed, putting the channel back to open or
    /// final, so a fresh close can be sent.
    ///
    /// # Errors
    /// `Database`.
    async fn abandon_close(&self, id: &B256) -> Result<(), StoreError>;

    /// Marks the channel closed on chain (by us or anyone); `tx` when known.
    /// Returns whether it changed.
    ///
    /// # Errors
    /// `Database`.
    async fn mark_closed(&self, id: &B256, tx: Option<&B256>) -> Result<bool, StoreError>;

    /// Marks the channel refunded to its client. Returns the channel as it
    /// was when this changed it, so the caller can account for a loss.
    ///
    /// # Errors
    /// `Database` or `Corrupt`.
    async fn mark_refunded(&self, id: &B256) -> Result<Option<StoredChannel>, StoreError>;

    /// A named counter (e.g. the last block read), if set.
    ///
    /// # Errors
    /// `Database`.
    async fn cursor(&self, name: &str) -> Result<Option<u64>, StoreError>;

    /// Sets a named counter.
    ///
    /// # Errors
    /// `Database`.
    async fn set_cursor(&self, name: &str, value: u64) -> Result<(), StoreError>;

    /// Every channel, newest first.
    ///
    /// # Errors
    /// `Database` or `Corrupt`.
    async fn list(&self) -> Result<Vec<StoredChannel>, StoreError>;
}
