//! The SQLite store: one file in the server's data directory, WAL mode,
//! `synchronous = FULL` so a committed payment survives a power cut.

use super::group_commit::{PaymentSql, PaymentWriter};
use super::sql::{COLUMNS, ChannelRow, STATUS_WITHOUT_CLOSE, db, decode_raw, hex, now_millis, parse_b256};
use super::{ChannelStatus, CloseRecord, OpenState, Store, StoreError, StoredChannel, Window};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Row, Sqlite, SqliteConnection, SqlitePool};
use std::path::Path;
use std::time::Duration;
use tollstream_chain::{BlockRef, Inclusion, SignedTx};
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
        sqlx::migrate!("./migrations").run(&pool).await.map_err(StoreError::database)?;
        let writer = match mode {
            CommitMode::Group => Some(PaymentWriter::spawn::<Sqlite>(options.connect().await.map_err(db)?, options)),
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
        let row: Option<ChannelRow> = sqlx::query_as(&sql).bind(value).fetch_optional(&self.pool).await.map_err(db)?;
        row.map(ChannelRow::decode).transpose()
    }
}

async fn insert_attempt(
    transaction: &mut sqlx::SqliteConnection,
    id: &B256,
    tx: &SignedTx,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        // Signing is deterministic: the same close signed again after an
        // abandon has the same hash, and is live again. One version of a
        // batch has a row per channel.
        "INSERT INTO close_attempts (tx_hash, channel_id, nonce, raw, created_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (tx_hash, channel_id) DO UPDATE SET abandoned = 0, created_at = excluded.created_at",
    )
    .bind(hex(tx.hash.as_slice()))
    .bind(hex(id.as_slice()))
    .bind(tx.nonce as i64)
    .bind(hex(&tx.raw))
    .bind(now)
    .execute(transaction)
    .await
    .map_err(db)?;
    Ok(())
}

/// The compare-and-swap that marks a channel closing with `tx`: only if
/// its latest state is still `sequence` and it is open or final. Whether
/// it did.
async fn claim_close(
    connection: &mut SqliteConnection,
    id: &B256,
    sequence: u64,
    tx: &SignedTx,
    head: u64,
    now: i64,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "UPDATE channels SET status = 'closing', close_tx = ?, close_sequence = ?, close_nonce = ?, \
         close_signed_at_block = ?, close_mined_tx = NULL, close_mined_block = NULL, \
         close_mined_block_hash = NULL, close_mined_success = NULL, updated_at = ? \
         WHERE channel_id = ? AND sequence = ? AND status IN ('open', 'final')",
    )
    .bind(hex(tx.hash.as_slice()))
    .bind(sequence as i64)
    .bind(tx.nonce as i64)
    .bind(head as i64)
    .bind(now)
    .bind(hex(id.as_slice()))
    .bind(sequence as i64)
    .execute(connection)
    .await
    .map_err(db)?;
    Ok(result.rows_affected() == 1)
}

/// Records `tx` as the newest version of the channel's close in flight,
/// if that is at `tx`'s nonce (or a close recorded before version 1.1,
/// with no nonce column). Whether it did.
async fn claim_replacement(
    connection: &mut SqliteConnection,
    id: &B256,
    tx: &SignedTx,
    head: u64,
    now: i64,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "UPDATE channels SET close_tx = ?, close_signed_at_block = ?, close_nonce = ?, updated_at = ? \
         WHERE channel_id = ? AND status = 'closing' AND (close_nonce = ? OR close_nonce IS NULL)",
    )
    .bind(hex(tx.hash.as_slice()))
    .bind(head as i64)
    .bind(tx.nonce as i64)
    .bind(now)
    .bind(hex(id.as_slice()))
    .bind(tx.nonce as i64)
    .execute(connection)
    .await
    .map_err(db)?;
    Ok(result.rows_affected() == 1)
}

/// The compare-and-swap that stores a payment: `next` replaces the stored
/// state only if that is its predecessor and the channel is open.
async fn update_payment<'e, E: sqlx::SqliteExecutor<'e>>(
    executor: E,
    next: &ChannelState,
    window: &Window,
) -> Result<(), StoreError> {
    let previous = next.client_sequence_number.checked_sub(1).ok_or(StoreError::Conflict)?;
    // Only the final payment sets `status`: SQLite rewrites the entries of
    // every index on a column the statement sets, changed or not, and
    // `channels_by_status` would cost each payment two more pages in the
    // log (BENCHMARKS.md, "The store").
    macro_rules! payment_update {
        ($status:literal) => {
            concat!(
                "UPDATE channels SET client_balance = ?, server_balance = ?, sequence = ?, signature = ?, \
                 window_stream = ?, window_first_segment = ?, window_segment_count = ?, updated_at = ?",
                $status,
                " WHERE channel_id = ? AND sequence = ? AND status = 'open'"
            )
        };
    }
    let sql = if next.is_final() { payment_update!(", status = 'final'") } else { payment_update!("") };
    let result = sqlx::query(sql)
        .bind(next.client_balance.to_string())
        .bind(next.server_balance.to_string())
        .bind(next.client_sequence_number as i64)
        .bind(next.client_signature.to_string())
        .bind(&window.stream_id)
        .bind(window.first_segment as i64)
        .bind(window.segment_count as i64)
        .bind(now_millis())
        .bind(hex(next.channel_id.as_slice()))
        .bind(previous as i64)
        .execute(executor)
        .await
        .map_err(db)?;
    if result.rows_affected() == 1 { Ok(()) } else { Err(StoreError::Conflict) }
}

#[async_trait]
impl PaymentSql for Sqlite {
    async fn update_payment(
        connection: &mut SqliteConnection,
        next: &ChannelState,
        window: &Window,
    ) -> Result<(), StoreError> {
        update_payment(connection, next, window).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_channel(
        &self,
        state: &ChannelState,
        expires_at: u64,
        settle_by: u64,
        open: OpenState,
        open_block: Option<BlockRef>,
    ) -> Result<StoredChannel, StoreError> {
        let deposit: Amount = state.deposit().ok_or_else(|| StoreError::Corrupt("deposit overflows".into()))?;
        let now = now_millis();
        // INSERT OR IGNORE makes a repeated announcement a no-op; the
        // caller gets whatever is stored.
        sqlx::query(
            "INSERT OR IGNORE INTO channels (channel_id, channel_address, client_wallet_address, \
             client_public_key, deposit, expires_at, settle_by, client_balance, server_balance, sequence, signature, \
             status, open_state, open_block, open_block_hash, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?)",
        )
        .bind(hex(state.channel_id.as_slice()))
        .bind(state.channel_address.to_checksum(None))
        .bind(state.client_wallet_address.to_checksum(None))
        .bind(state.client_public_key.to_string())
        .bind(deposit.to_string())
        // INTEGER is signed: a client may pick an expiry past i64::MAX,
        // which is as good as never for the server.
        .bind(expires_at.min(i64::MAX as u64) as i64)
        .bind(settle_by.min(i64::MAX as u64) as i64)
        .bind(state.client_balance.to_string())
        .bind(state.server_balance.to_string())
        .bind(state.client_sequence_number as i64)
        .bind(state.client_signature.to_string())
        .bind(open.as_str())
        .bind(open_block.map(|b| b.number as i64))
        .bind(open_block.map(|b| hex(b.hash.as_slice())))
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
        self.fetch_one_where("client_public_key = ? ORDER BY rowid DESC LIMIT 1", key.to_string()).await
    }

    async fn record_payment(&self, next: &ChannelState, window: &Window) -> Result<(), StoreError> {
        match &self.writer {
            Some(writer) => writer.record(next, window).await,
            None => update_payment(&self.pool, next, window).await,
        }
    }

    async fn awaiting_settlement(&self, now: u64) -> Result<Vec<StoredChannel>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM channels AS c WHERE status IN ('final', 'closing') \
             OR (status = 'open' AND (server_balance != '0' OR gasless != 0) AND (settle_by <= ? OR EXISTS ( \
                 SELECT 1 FROM channels AS newer WHERE newer.client_public_key = c.client_public_key \
                 AND newer.rowid > c.rowid))) \
             ORDER BY settle_by"
        );
        let rows: Vec<ChannelRow> =
            sqlx::query_as(&sql).bind(now.min(i64::MAX as u64) as i64).fetch_all(&self.pool).await.map_err(db)?;
        rows.into_iter().map(ChannelRow::decode).collect()
    }

    async fn count_owing(&self) -> Result<u64, StoreError> {
        let owing: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM channels WHERE status IN ('final', 'closing') \
             OR (status = 'open' AND server_balance != '0')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(owing as u64)
    }

    async fn set_open(&self, id: &B256, open: OpenState, block: Option<BlockRef>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE channels SET open_state = ?, open_block = COALESCE(?, open_block), \
             open_block_hash = COALESCE(?, open_block_hash), updated_at = ? WHERE channel_id = ?",
        )
        .bind(open.as_str())
        .bind(block.map(|b| b.number as i64))
        .bind(block.map(|b| hex(b.hash.as_slice())))
        .bind(now_millis())
        .bind(hex(id.as_slice()))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn record_close(&self, id: &B256, sequence: u64, tx: &SignedTx, head: u64) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(db)?;
        let now = now_millis();
        if !claim_close(&mut transaction, id, sequence, tx, head, now).await? {
            return Err(StoreError::Conflict);
        }
        insert_attempt(&mut transaction, id, tx, now).await?;
        transaction.commit().await.map_err(db)
    }

    async fn record_closes(&self, closes: &[(B256, u64)], tx: &SignedTx, head: u64) -> Result<Vec<B256>, StoreError> {
        let mut transaction = self.pool.begin().await.map_err(db)?;
        let now = now_millis();
        let mut stale = Vec::new();
        for (id, sequence) in closes {
            if !claim_close(&mut transaction, id, *sequence, tx, head, now).await? {
                stale.push(*id);
            }
        }
        if !stale.is_empty() {
            // Dropping the transaction rolls every entry back.
            return Ok(stale);
        }
        for (id, _) in closes {
            insert_attempt(&mut transaction, id, tx, now).await?;
        }
        transaction.commit().await.map_err(db)?;
        Ok(Vec::new())
    }

    async fn record_replacement(&self, id: &B256, tx: &SignedTx, head: u64) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(db)?;
        let now = now_millis();
        if !claim_replacement(&mut transaction, id, tx, head, now).await? {
            return Err(StoreError::Conflict);
        }
        insert_attempt(&mut transaction, id, tx, now).await?;
        transaction.commit().await.map_err(db)
    }

    async fn record_replacements(&self, ids: &[B256], tx: &SignedTx, head: u64) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(db)?;
        let now = now_millis();
        let mut any = false;
        for id in ids {
            if claim_replacement(&mut transaction, id, tx, head, now).await? {
                insert_attempt(&mut transaction, id, tx, now).await?;
                any = true;
            }
        }
        if !any {
            return Err(StoreError::Conflict);
        }
        transaction.commit().await.map_err(db)
    }

    async fn mark_gasless(&self, id: &B256) -> Result<(), StoreError> {
        let result = sqlx::query("UPDATE channels SET gasless = 1, updated_at = ? WHERE channel_id = ?")
            .bind(now_millis())
            .bind(hex(id.as_slice()))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if result.rows_affected() == 1 { Ok(()) } else { Err(StoreError::NotFound) }
    }

    async fn record_close_mined(&self, id: &B256, mined: Option<&Inclusion>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE channels SET close_mined_tx = ?, close_mined_block = ?, close_mined_block_hash = ?, \
             close_mined_success = ?, updated_at = ? WHERE channel_id = ? AND status = 'closing'",
        )
        .bind(mined.map(|m| hex(m.tx.as_slice())))
        .bind(mined.map(|m| m.block as i64))
        .bind(mined.map(|m| hex(m.block_hash.as_slice())))
        .bind(mined.map(|m| m.success))
        .bind(now_millis())
        .bind(hex(id.as_slice()))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn close_record(&self, id: &B256) -> Result<Option<CloseRecord>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT close_sequence, close_nonce, close_signed_at_block, close_mined_tx, close_mined_block, \
             close_mined_block_hash, close_mined_success FROM channels WHERE channel_id = ? AND status = 'closing'",
        )
        .bind(hex(id.as_slice()))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        else {
            return Ok(None);
        };
        let raws: Vec<String> = sqlx::query_scalar(
            "SELECT raw FROM close_attempts WHERE channel_id = ? AND abandoned = 0 ORDER BY created_at, rowid",
        )
        .bind(hex(id.as_slice()))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let attempts = raws.iter().map(|raw| decode_raw(raw)).collect::<Result<Vec<_>, _>>()?;
        if attempts.is_empty() {
            return Err(StoreError::Corrupt(format!("channel {id} is closing with no signed close")));
        }
        let mined = match (
            row.try_get::<Option<String>, _>("close_mined_tx").map_err(db)?,
            row.try_get::<Option<i64>, _>("close_mined_block").map_err(db)?,
            row.try_get::<Option<String>, _>("close_mined_block_hash").map_err(db)?,
            row.try_get::<Option<bool>, _>("close_mined_success").map_err(db)?,
        ) {
            (Some(tx), Some(block), Some(hash), Some(success)) => Some(Inclusion {
                tx: parse_b256(&tx, "close_mined_tx")?,
                block: block as u64,
                block_hash: parse_b256(&hash, "close_mined_block_hash")?,
                success,
            }),
            _ => None,
        };
        Ok(Some(CloseRecord {
            sequence: row.try_get::<Option<i64>, _>("close_sequence").map_err(db)?.unwrap_or(0) as u64,
            attempts,
            signed_at_block: row.try_get::<Option<i64>, _>("close_signed_at_block").map_err(db)?.unwrap_or(0) as u64,
            mined,
        }))
    }

    async fn abandon_close(&self, id: &B256) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(db)?;
        let sql = format!(
            "UPDATE channels SET status = {STATUS_WITHOUT_CLOSE}, close_tx = NULL, close_sequence = NULL, \
             close_nonce = NULL, close_signed_at_block = NULL, close_mined_tx = NULL, close_mined_block = NULL, \
             close_mined_block_hash = NULL, close_mined_success = NULL, updated_at = ? \
             WHERE channel_id = ? AND status = 'closing'"
        );
        sqlx::query(&sql).bind(now_millis()).bind(hex(id.as_slice())).execute(&mut *transaction).await.map_err(db)?;
        sqlx::query("UPDATE close_attempts SET abandoned = 1 WHERE channel_id = ?")
            .bind(hex(id.as_slice()))
            .execute(&mut *transaction)
            .await
            .map_err(db)?;
        transaction.commit().await.map_err(db)
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
        // A compare-and-swap on the sequence read, so the channel returned
        // (what the loss is counted from) is the one refunded, even if a
        // payment lands in between.
        loop {
            let Some(before) = self.channel(id).await? else { return Ok(None) };
            if matches!(before.status, ChannelStatus::Closed | ChannelStatus::Refunded) {
                return Ok(None);
            }
            let result = sqlx::query(
                "UPDATE channels SET status = 'refunded', updated_at = ? \
                 WHERE channel_id = ? AND sequence = ? AND status NOT IN ('closed', 'refunded')",
            )
            .bind(now_millis())
            .bind(hex(id.as_slice()))
            .bind(before.state.client_sequence_number as i64)
            .execute(&self.pool)
            .await
            .map_err(db)?;
            if result.rows_affected() == 1 {
                return Ok(Some(before));
            }
        }
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
        let sql = format!("SELECT {COLUMNS} FROM channels ORDER BY rowid DESC");
        let rows: Vec<ChannelRow> = sqlx::query_as(&sql).fetch_all(&self.pool).await.map_err(db)?;
        rows.into_iter().map(ChannelRow::decode).collect()
    }
}
