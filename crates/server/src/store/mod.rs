//! Durable channel storage behind a trait: SQLite by default
//! ([`SqliteStore`]), PostgreSQL when several server processes share one
//! database ([`PgStore`]). [`open`] picks one from a database URL.
//!
//! The store keeps, per channel, the latest accepted state and the window it
//! paid for. A payment is written with a compare-and-swap on the sequence
//! number and is durable when [`Store::record_payment`] returns, which is
//! what lets the server emit the window's `secret` afterwards. Rows are
//! never deleted: a signed state is money until its close is on chain.
//!
//! # Layout
//!
//! - `mod.rs`: the [`Store`] trait and the types it speaks.
//! - `sqlite.rs`: [`SqliteStore`], the real store; its SQL is the reference
//!   semantics of the trait. Schema in `migrations/`.
//! - `postgres.rs`: [`PgStore`], the same SQL on PostgreSQL. Schema in
//!   `migrations_postgres/`.
//! - `sql.rs`: what the two share: the row a channel is decoded from, and
//!   how values are written as text.
//! - `group_commit.rs`: the writer that commits concurrent payments in one
//!   transaction ([`CommitMode::Group`]), on either database.
//! - `testing.rs` (feature `test-postgres`): a throwaway PostgreSQL server
//!   for tests, this crate's and others'.
//! - `memory.rs`: [`MemoryStore`], the test double: the same semantics in
//!   plain collections, no I/O and no durability, for unit tests of server
//!   logic (under a paused clock, say). Never for serving.
//! - `tests.rs`: one suite, written once against `&dyn Store` and run on
//!   every backend (SQLite and PostgreSQL in both commit modes, memory),
//!   so no backend can drift from the others; plus the tests of what only
//!   a file or a server does.

mod group_commit;
mod memory;
mod postgres;
mod sql;
mod sqlite;
#[cfg(feature = "test-postgres")]
pub mod testing;
#[cfg(test)]
mod tests;

pub use memory::MemoryStore;
pub use postgres::PgStore;
pub use sqlite::{CommitMode, SqliteStore};

use async_trait::async_trait;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use tollstream_chain::{BlockRef, Inclusion, SignedTx};
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

/// Where a channel's `open` stands on chain (PROTOCOL.md 1.1,
/// "Confirmations").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpenState {
    /// In a block, fewer than `--confirmations` deep: at most
    /// `--unconfirmed-windows` windows are sold on it.
    Pending,
    /// Deep enough to count as final.
    Confirmed,
    /// A reorg removed it: nothing more is sold or settled until it is
    /// back; its stored states are kept.
    Missing,
}

impl OpenState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpenState::Pending => "pending",
            OpenState::Confirmed => "confirmed",
            OpenState::Missing => "missing",
        }
    }
}

impl FromStr for OpenState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "pending" => OpenState::Pending,
            "confirmed" => OpenState::Confirmed,
            "missing" => OpenState::Missing,
            other => return Err(format!("unknown open state {other:?}")),
        })
    }
}

/// A close in flight, as recorded: every signed version at one nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRecord {
    /// The sequence number of the state it closes with.
    pub sequence: u64,
    /// Every signed version, oldest first (never empty).
    pub attempts: Vec<SignedTx>,
    /// The latest block number when the newest version was signed.
    pub signed_at_block: u64,
    /// Where a version was last seen mined.
    pub mined: Option<Inclusion>,
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
    /// Where the channel's `open` stands on chain.
    pub open_state: OpenState,
    /// The block holding the `open`, when known.
    pub open_block: Option<BlockRef>,
    /// The newest signed close (recorded before broadcast), or the close
    /// transaction seen on chain once closed.
    pub close_tx: Option<B256>,
    /// The nonce of the close in flight.
    pub close_nonce: Option<u64>,
    /// Unix milliseconds when the server first stored the channel; orders a
    /// client's channels.
    pub created_at: i64,
    /// Opened by the server for its client (`openChannel`, see
    /// [`Store::mark_gasless`]): closed even when it holds none of the
    /// server's money, so the client need not pay gas to get the deposit
    /// back.
    pub gasless: bool,
}

impl StoreError {
    /// A database failure caused by `error`.
    pub fn database(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Database(Arc::new(error))
    }

    /// A database failure with no underlying error but `what`.
    pub fn database_text(what: &str) -> Self {
        StoreError::Database(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(what)))
    }
}

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The compare-and-swap failed: the stored state is no longer the one
    /// the payment succeeds (a concurrent payment won), or the channel is
    /// not open.
    #[error("the channel's stored state changed or it is not open")]
    Conflict,
    #[error("no such channel")]
    NotFound,
    /// The database failed; the cause is kept (shared, so one failed group
    /// commit can answer every payment in it).
    #[error("database: {0}")]
    Database(#[source] Arc<dyn std::error::Error + Send + Sync + 'static>),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A database URL that names no store this server has.
    #[error("bad database URL: {0}")]
    BadUrl(String),
}

impl From<StoreError> for ProtocolError {
    /// The client learns only what it can act on; the database's own words,
    /// with their causes, go to the server's log here.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict => {
                ProtocolError::new(ErrorCode::StaleSequence, "the channel advanced concurrently; ask latestState")
            }
            StoreError::NotFound => ProtocolError::new(ErrorCode::UnknownChannel, "no such channel"),
            StoreError::Database(_) | StoreError::Corrupt(_) | StoreError::BadUrl(_) => {
                tracing::error!(error = %tollstream_chain::error::causes(&error), "store failure answered as internal");
                ProtocolError::new(ErrorCode::Internal, "the server could not store the request")
            }
        }
    }
}

/// Durable channel storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a verified opening state of a channel expiring at
    /// `expires_at`, to be settled from `settle_by`, whose `open` stands at
    /// `open` in block `open_block`. Idempotent: when the channel is
    /// already stored, returns the stored channel unchanged.
    ///
    /// # Errors
    /// `Database` when the write fails.
    async fn insert_channel(
        &self,
        state: &ChannelState,
        expires_at: u64,
        settle_by: u64,
        open: OpenState,
        open_block: Option<BlockRef>,
    ) -> Result<StoredChannel, StoreError>;

    /// Marks the channel as opened gaslessly (the server sent its
    /// `openWithAuthorization`): from then on it is due for a close even
    /// when it holds none of the server's money, once superseded or at its
    /// `settle_by` (PROTOCOL.md 1.1, "openChannel"). Idempotent; an
    /// unknown channel is `NotFound`.
    ///
    /// # Errors
    /// `NotFound`; `Database`.
    async fn mark_gasless(&self, id: &B256) -> Result<(), StoreError>;

    /// Records where the channel's `open` stands now.
    ///
    /// # Errors
    /// `Database`.
    async fn set_open(&self, id: &B256, open: OpenState, block: Option<BlockRef>) -> Result<(), StoreError>;

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
    /// server money — or opened gaslessly, whatever they hold — whose
    /// `settle_by` has come or that a newer channel of the same client
    /// superseded (PROTOCOL.md 1.1: it will never be paid again, so it is
    /// closed promptly).
    ///
    /// # Errors
    /// `Database` or `Corrupt`.
    async fn awaiting_settlement(&self, now: u64) -> Result<Vec<StoredChannel>, StoreError>;

    /// How many channels owe the server: open with server money, final,
    /// or closing — what the payee's gas must cover. The default counts
    /// what [`awaiting_settlement`](Self::awaiting_settlement) lists at
    /// the end of time; a database counts without loading the rows.
    ///
    /// # Errors
    /// `Database` or `Corrupt`.
    async fn count_owing(&self) -> Result<u64, StoreError> {
        Ok(self.awaiting_settlement(u64::MAX).await?.len() as u64)
    }

    /// Records a signed close of the channel at `sequence`, signed when
    /// the latest block was `head`, and marks it closing, if its latest
    /// state is still `sequence` and it is open or final: a payment stored
    /// meanwhile makes the close stale.
    ///
    /// # Errors
    /// `Conflict` when the compare-and-swap fails; `Database`.
    async fn record_close(&self, id: &B256, sequence: u64, tx: &SignedTx, head: u64) -> Result<(), StoreError>;

    /// Records one signed close of several channels (a `closeMany`), each
    /// `(id, sequence)` as [`record_close`](Self::record_close) records
    /// one, all or nothing: when the compare-and-swap of any entry fails
    /// nothing is recorded and the channels that failed are returned, so
    /// the close can be signed again without them. An empty answer means
    /// every entry was recorded.
    ///
    /// # Errors
    /// `Database`.
    async fn record_closes(&self, closes: &[(B256, u64)], tx: &SignedTx, head: u64) -> Result<Vec<B256>, StoreError>;

    /// Records a replacement of one close of several channels (same nonce,
    /// higher fees), signed when the latest block was `head`, for each of
    /// `ids` whose close in flight is at that nonce, in one transaction;
    /// the others (refunded meanwhile, say) are left alone.
    ///
    /// # Errors
    /// `Conflict` when none of `ids` has a close in flight at that nonce;
    /// `Database`.
    async fn record_replacements(&self, ids: &[B256], tx: &SignedTx, head: u64) -> Result<(), StoreError>;

    /// Records a replacement of the close in flight (same nonce, higher
    /// fees), signed when the latest block was `head`.
    ///
    /// # Errors
    /// `Conflict` when the channel has no close in flight; `Database`.
    async fn record_replacement(&self, id: &B256, tx: &SignedTx, head: u64) -> Result<(), StoreError>;

    /// Records where a version of the close in flight was seen mined, or
    /// `None` when a reorg removed it.
    ///
    /// # Errors
    /// `Database`.
    async fn record_close_mined(&self, id: &B256, mined: Option<&Inclusion>) -> Result<(), StoreError>;

    /// The close in flight, with every signed version.
    ///
    /// # Errors
    /// `Database` or `Corrupt`.
    async fn close_record(&self, id: &B256) -> Result<Option<CloseRecord>, StoreError>;

    /// Forgets a close that failed or whose nonce another transaction
    /// took, putting the channel back to open or final, so a fresh close
    /// can be sent. Its signed versions stay, marked abandoned.
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

/// Where a store lives, as a database URL says: `sqlite://PATH` (or
/// `sqlite:PATH`) for a file, `postgres://…` or `postgresql://…` for a
/// PostgreSQL database shared by several servers.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file; a relative path is relative to the working directory.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL, passed on as written (it may carry a
    /// password: [`Display`](fmt::Display) hides it).
    Postgres(String),
}

impl FromStr for DatabaseUrl {
    type Err = StoreError;

    /// # Errors
    /// `BadUrl` when the scheme is none of the above, a SQLite URL has no
    /// path, or a PostgreSQL URL does not parse. The message never repeats
    /// the URL, which may hold a password.
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Parsed now, so a malformed URL is refused before any use.
            sqlx::postgres::PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::BadUrl(format!("not a PostgreSQL URL: {e}")))?;
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(StoreError::BadUrl("sqlite:// needs the database file's path".into()));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        let scheme = url.split_once(':').map_or("none", |(scheme, _)| scheme);
        Err(StoreError::BadUrl(format!(
            "unknown scheme {scheme:?}: use postgres://USER@HOST/DATABASE or sqlite://PATH"
        )))
    }
}

impl fmt::Display for DatabaseUrl {
    /// The URL with any password replaced by `***`, fit for a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => f.write_str(&without_password(url)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// `scheme://user:secret@host/…` as `scheme://user:***@host/…`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl DatabaseUrl {
    /// Opens the store for a server: creates the SQLite file or connects
    /// to PostgreSQL, and applies the migrations.
    ///
    /// # Errors
    /// When the store cannot be opened or migrated.
    pub async fn open(&self, mode: CommitMode) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            DatabaseUrl::Sqlite(path) => Arc::new(SqliteStore::open_with(path, mode).await?),
            DatabaseUrl::Postgres(url) => Arc::new(PgStore::open_with(url, mode).await?),
        })
    }

    /// Opens an existing store for reading only, as a tool looking at a
    /// live server's store does: nothing is created or migrated, and every
    /// write fails with `Database`.
    ///
    /// # Errors
    /// When the store does not exist or cannot be reached.
    pub async fn open_read_only(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            DatabaseUrl::Sqlite(path) => Arc::new(SqliteStore::open_read_only(path).await?),
            DatabaseUrl::Postgres(url) => Arc::new(PgStore::open_read_only(url).await?),
        })
    }
}

/// Opens the store at `url` (see [`DatabaseUrl`]) for a server.
///
/// # Errors
/// `BadUrl` when `url` names no store; otherwise as [`DatabaseUrl::open`].
pub async fn open(url: &str, mode: CommitMode) -> Result<Arc<dyn Store>, StoreError> {
    url.parse::<DatabaseUrl>()?.open(mode).await
}

/// Opens the existing store at `url` for reading only.
///
/// # Errors
/// `BadUrl` when `url` names no store; otherwise as
/// [`DatabaseUrl::open_read_only`].
pub async fn open_read_only(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    url.parse::<DatabaseUrl>()?.open_read_only().await
}
