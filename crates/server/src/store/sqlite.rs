//! The SQLite store: one file in the server's data directory, WAL mode,
//! `synchronous = FULL` so a committed payment survives a power cut.

use super::group_commit::PaymentWriter;
use super::{ChannelStatus, Store, StoreError, StoredChannel, Window};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, Row, SqlitePool};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tollstream_protocol::{Amount, B256, ChannelState, PublicKey};

/// Channels in a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The group-commit writer of payments; `None` commits each payment in
    /// a transaction of its own (for comparison in benchmarks).
    writer: Option<PaymentWriter>,
}

/// How payments are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitMode {
    /// Concurrent payments share a transaction (the default).
    #[default]
    Group,
    /// Every payment is a transaction (and an fsync) of its own.
    PerPayment,
}

const COLUMNS: &str = "channel_id, channel_address, client_wallet_address, client_public_key, deposit, \
     expires_at, settle_by, client_balance, server_balance, sequence, signature, window_stream, \
     window_first_segment, window_segment_count, status, close_tx, close_tx_raw, created_at";

/// The status a channel returns to when a close is abandoned: derived from
/// its state, so it need not be remembered.
const STATUS_WITHOUT_CLOSE: &str = "CASE WHEN client_balance = '0' THEN 'final' ELSE 'open' END";

pub(super) fn db(error: sqlx::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    format!("0x{}", alloy_primitives::hex::encode(bytes))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies the
    /// migrations.
    ///
    /// # Errors
    /// When the file cannot be opened or a migration fails.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, CommitMode::Group).await
    }

    /// Like [`open`](Self::open), choosing how payments are committed.
    ///
    /// # Errors
    /// When the file cannot be opened or a migration fails.
    pub async fn open_with(path: &Path, mode: CommitMode) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options.clone()).await.map_err(db)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))?;
        let writer = match mode {
            CommitMode::Group => Some(PaymentWriter::spawn(options.connect().await.map_err(db)?)),
            CommitMode::PerPayment => None,
        };
        Ok(SqliteStore { pool, writer })
    }

    /// Opens an existing database for reading only: no migration, no
    /// writer, nothing created, so a tool may look at a live server's
    /// store without touching it.
    ///
    /// # Errors
    /// When the file does not exist or cannot be opened.
    pub async fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new().filename(path).read_only(true).busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(db)?;
        Ok(SqliteStore { pool, writer: None })
    }

    async fn fetch_one_where(&self, clause: &str, value: String) -> Result<Option<StoredChannel>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM channels WHERE {clause}");
        let row = sqlx::query(&sql).bind(value).fetch_optional(&self.pool).await.map_err(db)?;
        row.as_ref().map(decode_row).transpose()
    }
}

fn decode_row(row: &SqliteRow) -> Result<StoredChannel, StoreError> {
    let text = |name: &str| -> Result<String, StoreError> { row.try_get::<String, _>(name).map_err(db) };
    let corrupt = |name: &str, why: String| StoreError::Corrupt(format!("{name}: {why}"));
    let parse_hex_field =
        |name: &str| -> Result<serde_json::Value, StoreError> { Ok(serde_json::Value::String(text(name)?)) };

    // Decode through the wire types, so the store accepts exactly what the
    // protocol accepts.
    let state_json = serde_json::json!({
        "channel_id": parse_hex_field("channel_id")?,
        "channel_address": parse_hex_field("channel_address")?,
        "client_wallet_address": parse_hex_field("client_wallet_address")?,
        "client_public_key": parse_hex_field("client_public_key")?,
        "client_balance": text("client_balance")?,
        "server_balance": text("server_balance")?,
        "client_sequence_number": row.try_get::<i64, _>("sequence").map_err(db)?,
        "client_signature": text("signature")?,
    });
    let state: ChannelState = tollstream_protocol::decode(state_json).map_err(|e| corrupt("state", e.message))?;
    let window = match row.try_get::<Option<String>, _>("window_stream").map_err(db)? {
        Some(stream_id) => Some(Window {
            stream_id,
            first_segment: row.try_get::<i64, _>("window_first_segment").map_err(db)? as u64,
            segment_count: row.try_get::<i64, _>("window_segment_count").map_err(db)? as u64,
        }),
        None => None,
    };
    let close_tx = match row.try_get::<Option<String>, _>("close_tx").map_err(db)? {
        Some(tx) => Some(
            tollstream_protocol::encoding::parse_hex::<32>(&tx, "close_tx")
                .map(B256::from)
                .map_err(|e| corrupt("close_tx", e))?,
        ),
        None => None,
    };
    let close_tx_raw = match row.try_get::<Option<String>, _>("close_tx_raw").map_err(db)? {
        Some(raw) => Some(
            alloy_primitives::hex::decode(raw.trim_start_matches("0x"))
                .map_err(|e| corrupt("close_tx_raw", e.to_string()))?,
        ),
        None => None,
    };
    Ok(StoredChannel {
        state,
        window,
        expires_at: row.try_get::<i64, _>("expires_at").map_err(db)? as u64,
        settle_by: row.try_get::<i64, _>("settle_by").map_err(db)? as u64,
        close_tx_raw,
        status: text("status")?.parse().map_err(|e| corrupt("status", e))?,
        close_tx,
        created_at: row.try_get::<i64, _>("created_at").map_err(db)?,
    })
}

/// The compare-and-swap that stores a payment: `next` replaces the stored
/// state only if that is its predecessor and the channel is open.
pub(super) async fn update_payment<'e, E: sqlx::SqliteExecutor<'e>>(
    executor: E,
    next: &ChannelState,
    window: &Window,
) -> Result<(), StoreError> {
    let previous = next.client_sequence_number.checked_sub(1).ok_or(StoreError::Conflict)?;
    let status = if next.is_final() { ChannelStatus::Final } else { ChannelStatus::Open };
    let result = sqlx::query(
        "UPDATE channels SET client_balance = ?, server_balance = ?, sequence = ?, signature = ?, \
         window_stream = ?, window_first_segment = ?, window_segment_count = ?, status = ?, updated_at = ? \
         WHERE channel_id = ? AND sequence = ? AND status = 'open'",
    )
    .bind(next.client_balance.to_string())
    .bind(next.server_balance.to_string())
    .bind(next.client_sequence_number as i64)
    .bind(next.client_signature.to_string())
    .bind(&window.stream_id)
    .bind(window.first_segment as i64)
    .bind(window.segment_count as i64)
    .bind(status.as_str())
    .bind(now_millis())
    .bind(hex(next.channel_id.as_slice()))
    .bind(previous as i64)
    .execute(executor)
    .await
    .map_err(db)?;
    if result.rows_affected() == 1 { Ok(()) } else { Err(StoreError::Conflict) }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_channel(
        &self,
        state: &ChannelState,
        expires_at: u64,
        settle_by: u64,
    ) -> Result<StoredChannel, StoreError> {
        let deposit: Amount = state.deposit().ok_or_else(|| StoreError::Corrupt("deposit overflows".into()))?;
        let now = now_millis();
        // INSERT OR IGNORE makes a repeated announcement a no-op; the
        // caller gets whatever is stored.
        sqlx::query(
            "INSERT OR IGNORE INTO channels (channel_id, channel_address, client_wallet_address, \
             client_public_key, deposit, expires_at, settle_by, client_balance, server_balance, sequence, signature, \
             status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)",
        )
        .bind(hex(state.channel_id.as_slice()))
        .bind(state.channel_address.to_checksum(None))
        .bind(state.client_wallet_address.to_checksum(None))
        .bind(state.client_public_key.to_string())
        .bind(deposit.to_string())
        .bind(expires_at as i64)
        .bind(settle_by as i64)
        .bind(state.client_balance.to_string())
        .bind(state.server_balance.to_string())
        .bind(state.client_sequence_number as i64)
        .bind(state.client_signature.to_string())
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.channel(&state.channel_id).await?.ok_or(StoreError::NotFound)
    }

    async fn channel(&self, id: &B256) -> Result<Option<StoredChannel>, StoreError> {
        self.fetch_one_where("channel_id = ?", hex(id.as_slice())).await
    }

    async fn newest_for_client(&self, key: &PublicKey) -> Result<Option<StoredChannel>, StoreError> {
        self.fetch_one_where("client_public_key = ? ORDER BY created_at DESC, rowid DESC LIMIT 1", key.to_string())
            .await
    }

    async fn record_payment(&self, next: &ChannelState, window: &Window) -> Result<(), StoreError> {
        match &self.writer {
            Some(writer) => writer.record(next, window).await,
            None => update_payment(&self.pool, next, window).await,
        }
    }

    async fn awaiting_settlement(&self, now: u64) -> Result<Vec<StoredChannel>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM channels WHERE status IN ('final', 'closing') \
             OR (status = 'open' AND server_balance != '0' AND settle_by <= ?) ORDER BY settle_by"
        );
        let rows = sqlx::query(&sql).bind(now as i64).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(decode_row).collect()
    }

    async fn record_close(&self, id: &B256, sequence: u64, tx: &B256, raw: &[u8]) -> Result<(), StoreError> {
        let result = sqlx::query(
            "UPDATE channels SET status = 'closing', close_tx = ?, close_tx_raw = ?, updated_at = ? \
             WHERE channel_id = ? AND sequence = ? AND status IN ('open', 'final')",
        )
        .bind(hex(tx.as_slice()))
        .bind(hex(raw))
        .bind(now_millis())
        .bind(hex(id.as_slice()))
        .bind(sequence as i64)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if result.rows_affected() == 1 { Ok(()) } else { Err(StoreError::Conflict) }
    }

    async fn abandon_close(&self, id: &B256) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE channels SET status = {STATUS_WITHOUT_CLOSE}, close_tx = NULL, close_tx_raw = NULL, \
             updated_at = ? WHERE channel_id = ? AND status = 'closing'"
        );
        sqlx::query(&sql).bind(now_millis()).bind(hex(id.as_slice())).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    async fn mark_closed(&self, id: &B256, tx: Option<&B256>) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE channels SET status = 'closed', close_tx = COALESCE(?, close_tx), updated_at = ? \
             WHERE channel_id = ? AND status NOT IN ('closed', 'refunded')",
        )
        .bind(tx.map(|t| hex(t.as_slice())))
        .bind(now_millis())
        .bind(hex(id.as_slice()))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(result.rows_affected() == 1)
    }

    async fn mark_refunded(&self, id: &B256) -> Result<Option<StoredChannel>, StoreError> {
        let Some(before) = self.channel(id).await? else { return Ok(None) };
        let result = sqlx::query(
            "UPDATE channels SET status = 'refunded', updated_at = ? \
             WHERE channel_id = ? AND status NOT IN ('closed', 'refunded')",
        )
        .bind(now_millis())
        .bind(hex(id.as_slice()))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok((result.rows_affected() == 1).then_some(before))
    }

    async fn cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let value: Option<i64> = sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(value.map(|v| v as u64))
    }

    async fn set_cursor(&self, name: &str, value: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value as i64)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<StoredChannel>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM channels ORDER BY created_at DESC, rowid DESC");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(decode_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollstream_protocol::{Address, ChannelDomain, Signature, SigningKey, U256};

    /// A signed opening state of channel `id` holding `deposit`.
    pub(super) fn signed_opening(key: &SigningKey, id: B256, deposit: u64) -> ChannelState {
        let domain = ChannelDomain::new(31337, Address::repeat_byte(0xc0));
        let mut state = ChannelState {
            channel_id: id,
            channel_address: domain.contract,
            client_wallet_address: Address::repeat_byte(0xa1),
            client_public_key: key.public_key(),
            client_balance: Amount(U256::from(deposit)),
            server_balance: Amount::ZERO,
            client_sequence_number: 0,
            client_signature: Signature([0; 65]),
        };
        state.sign(&domain, key);
        state
    }

    fn opening(key: &SigningKey, id: u8, windows: u64) -> ChannelState {
        signed_opening(key, B256::repeat_byte(id), 100 * windows)
    }

    fn window(first: u64) -> Window {
        Window { stream_id: "demo".into(), first_segment: first, segment_count: 1 }
    }

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.sqlite")).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn payments_advance_by_compare_and_swap_only() {
        let (_dir, store) = store().await;
        let key = SigningKey::from_bytes([3; 32]).unwrap();
        let first = opening(&key, 1, 2);
        let stored = store.insert_channel(&first, 1_000, 900).await.unwrap();
        assert_eq!(
            (stored.state.clone(), stored.status, stored.window.clone()),
            (first.clone(), ChannelStatus::Open, None)
        );

        let one = first.pay(Amount::from(100)).unwrap();
        store.record_payment(&one, &window(0)).await.unwrap();
        // The same successor again, or one that skips, loses the swap.
        assert!(matches!(store.record_payment(&one, &window(0)).await, Err(StoreError::Conflict)));
        let skip = one.pay(Amount::from(100)).unwrap().pay(Amount::ZERO).unwrap();
        assert!(matches!(store.record_payment(&skip, &window(5)).await, Err(StoreError::Conflict)));

        let two = one.pay(Amount::from(100)).unwrap();
        store.record_payment(&two, &window(1)).await.unwrap();
        let stored = store.channel(&first.channel_id).await.unwrap().unwrap();
        assert_eq!(stored.state, two);
        assert_eq!(stored.window, Some(window(1)));
        assert_eq!(stored.status, ChannelStatus::Final);
        // A final channel takes no more payments.
        let three = ChannelState { client_sequence_number: 3, ..two.clone() };
        assert!(matches!(store.record_payment(&three, &window(2)).await, Err(StoreError::Conflict)));
    }

    #[tokio::test]
    async fn insert_is_idempotent_and_the_newest_channel_wins() {
        let (_dir, store) = store().await;
        let key = SigningKey::from_bytes([4; 32]).unwrap();
        let old = opening(&key, 1, 3);
        store.insert_channel(&old, 1_000, 900).await.unwrap();
        let paid = old.pay(Amount::from(100)).unwrap();
        store.record_payment(&paid, &window(0)).await.unwrap();
        // Announcing it again returns the stored, paid state.
        assert_eq!(store.insert_channel(&old, 1_000, 900).await.unwrap().state, paid);

        let new = opening(&key, 2, 3);
        store.insert_channel(&new, 2_000, 1_900).await.unwrap();
        let newest = store.newest_for_client(&key.public_key()).await.unwrap().unwrap();
        assert_eq!(newest.state.channel_id, new.channel_id);
        // The old channel, with its money, is still there.
        assert_eq!(store.list().await.unwrap().len(), 2);
        let other = SigningKey::from_bytes([5; 32]).unwrap();
        assert!(store.newest_for_client(&other.public_key()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_committed_payment_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let key = SigningKey::from_bytes([6; 32]).unwrap();
        let first = opening(&key, 9, 5);
        let one = first.pay(Amount::from(100)).unwrap();
        {
            let store = SqliteStore::open(&path).await.unwrap();
            store.insert_channel(&first, 1_000, 900).await.unwrap();
            store.record_payment(&one, &window(0)).await.unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.channel(&first.channel_id).await.unwrap().unwrap().state, one);
    }
}

#[cfg(test)]
mod settlement_tests {
    use super::*;
    use tollstream_protocol::SigningKey;

    fn opening(id: u8, windows: u64) -> ChannelState {
        super::tests::signed_opening(&SigningKey::from_bytes([id; 32]).unwrap(), B256::repeat_byte(id), 100 * windows)
    }

    fn window() -> Window {
        Window { stream_id: "demo".into(), first_segment: 0, segment_count: 1 }
    }

    #[tokio::test]
    async fn only_channels_owing_the_server_are_due_and_closes_are_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.sqlite")).await.unwrap();
        let idle = opening(1, 2);
        store.insert_channel(&idle, 1_000, 900).await.unwrap();
        let owing = opening(2, 2);
        store.insert_channel(&owing, 1_000, 900).await.unwrap();
        let paid = owing.pay(Amount::from(100)).unwrap();
        store.record_payment(&paid, &window()).await.unwrap();
        let spent = opening(3, 1);
        store.insert_channel(&spent, 5_000, 4_900).await.unwrap();
        let last = spent.pay(Amount::from(100)).unwrap();
        store.record_payment(&last, &window()).await.unwrap();

        let ids = |channels: Vec<StoredChannel>| channels.into_iter().map(|c| c.state.channel_id).collect::<Vec<_>>();
        // Before settle_by only the final channel is due; nothing owed is never due.
        assert_eq!(ids(store.awaiting_settlement(100).await.unwrap()), vec![spent.channel_id]);
        assert_eq!(ids(store.awaiting_settlement(950).await.unwrap()), vec![owing.channel_id, spent.channel_id]);

        // A close for a stale sequence loses; the right one wins once.
        let tx = B256::repeat_byte(0xee);
        assert!(matches!(store.record_close(&owing.channel_id, 0, &tx, b"raw").await, Err(StoreError::Conflict)));
        store.record_close(&owing.channel_id, 1, &tx, b"raw").await.unwrap();
        let closing = store.channel(&owing.channel_id).await.unwrap().unwrap();
        assert_eq!(
            (closing.status, closing.close_tx, closing.close_tx_raw),
            (ChannelStatus::Closing, Some(tx), Some(b"raw".to_vec()))
        );
        // No payment lands on a closing channel.
        let late = paid.pay(Amount::from(100)).unwrap();
        assert!(matches!(store.record_payment(&late, &window()).await, Err(StoreError::Conflict)));

        store.abandon_close(&owing.channel_id).await.unwrap();
        assert_eq!(store.channel(&owing.channel_id).await.unwrap().unwrap().status, ChannelStatus::Open);
        store.abandon_close(&spent.channel_id).await.unwrap();
        assert_eq!(store.channel(&spent.channel_id).await.unwrap().unwrap().status, ChannelStatus::Final);

        assert!(store.mark_closed(&spent.channel_id, Some(&tx)).await.unwrap());
        assert!(!store.mark_closed(&spent.channel_id, None).await.unwrap(), "closed once");
        let refunded = store.mark_refunded(&owing.channel_id).await.unwrap().unwrap();
        assert_eq!(refunded.state.server_balance, Amount::from(100));
        assert!(store.mark_refunded(&owing.channel_id).await.unwrap().is_none());
        assert!(store.awaiting_settlement(u64::MAX / 2).await.unwrap().is_empty());

        assert_eq!(store.cursor("events").await.unwrap(), None);
        store.set_cursor("events", 7).await.unwrap();
        store.set_cursor("events", 9).await.unwrap();
        assert_eq!(store.cursor("events").await.unwrap(), Some(9));
    }
}

#[cfg(test)]
mod group_commit_tests {
    use super::*;
    use tollstream_protocol::SigningKey;

    fn opening(id: u16) -> ChannelState {
        let mut channel_id = [0u8; 32];
        channel_id[..2].copy_from_slice(&id.to_be_bytes());
        super::tests::signed_opening(&SigningKey::from_bytes([7; 32]).unwrap(), B256::from(channel_id), 1000)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_payments_share_commits_and_keep_their_own_compare_and_swap() {
        for mode in [CommitMode::Group, CommitMode::PerPayment] {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open_with(&dir.path().join("t.sqlite"), mode).await.unwrap();
            let channels: Vec<ChannelState> = (0..200).map(opening).collect();
            for channel in &channels {
                store.insert_channel(channel, 10_000, 9_000).await.unwrap();
            }
            let window = Window { stream_id: "demo".into(), first_segment: 0, segment_count: 1 };
            // Every channel pays twice at once with the same predecessor:
            // exactly one of each pair may win, whatever batch they share.
            let mut tasks = tokio::task::JoinSet::new();
            for channel in &channels {
                for amount in [100u64, 200] {
                    let (store, next, window) =
                        (store.clone(), channel.pay(Amount::from(amount)).unwrap(), window.clone());
                    tasks.spawn(async move { (next.channel_id, store.record_payment(&next, &window).await) });
                }
            }
            let mut wins = std::collections::HashMap::new();
            while let Some(joined) = tasks.join_next().await {
                let (id, result) = joined.unwrap();
                match result {
                    Ok(()) => *wins.entry(id).or_insert(0) += 1,
                    Err(StoreError::Conflict) => {}
                    Err(other) => panic!("{other}"),
                }
            }
            assert_eq!(wins.len(), 200, "{mode:?}");
            assert!(wins.values().all(|&n| n == 1), "{mode:?}");
            for channel in &channels {
                let stored = store.channel(&channel.channel_id).await.unwrap().unwrap();
                assert_eq!(stored.state.client_sequence_number, 1);
                assert_eq!(stored.state.deposit(), channel.deposit());
            }
        }
    }
}
