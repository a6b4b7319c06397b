//! The PostgreSQL store, for several server processes sharing one
//! database. Its semantics are the SQLite store's statement by statement
//! (the same tables, the same compare-and-swaps; `row_id`, an identity
//! column, stands for SQLite's `rowid`); the shared suite runs on both.
//!
//! Several processes are safe by the same compare-and-swap that makes
//! concurrent sessions safe in one: an `UPDATE … WHERE sequence = $n`
//! waits for a concurrent writer of the row to commit, then re-checks its
//! condition on the committed row, so of two payments with the same
//! predecessor exactly one is stored, in whichever process.
//!
//! Every connection runs with `synchronous_commit = on`, PostgreSQL's
//! default, set here anyway so that a database or role configured with
//! `off` cannot make the server release a window's secret for a payment a
//! crash then loses: a commit returns only once its WAL is flushed (and,
//! where synchronous standbys are configured, flushed on them too).

use super::group_commit::{PaymentSql, PaymentWriter};
use super::sql::{COLUMNS, ChannelRow, STATUS_WITHOUT_CLOSE, db, decode_raw, hex, now_millis, parse_b256};
use super::{ChannelStatus, CloseRecord, CommitMode, OpenState, Store, StoreError, StoredChannel, Window};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgConnection, PgPool, Postgres, Row};
use std::str::FromStr;
use std::time::Duration;
use tollstream_chain::{BlockRef, Inclusion, SignedTx};
use tollstream_protocol::{Amount, B256, ChannelState, PublicKey};

/// Connections in a process's pool, besides the payment writer's own: the
/// reads of sessions and the settlement worker's writes. Several servers
/// each hold this many, well within PostgreSQL's default 100.
const POOL_CONNECTIONS: u32 = 8;

/// How long a request waits for a free connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Channels in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The group-commit writer of payments; `None` commits each payment in
    /// a transaction of its own (for comparison in benchmarks).
    writer: Option<PaymentWriter>,
}

/// The options of `url` with the settings every connection needs.
fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    Ok(PgConnectOptions::from_str(url).map_err(db)?.options([("synchronous_commit", "on")]))
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://…`) and applies the
    /// migrations; payments are group-committed.
    ///
    /// # Errors
    /// When the URL is malformed, the database cannot be reached or a
    /// migration fails.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, CommitMode::Group).await
    }

    /// Like [`open`](Self::open), choosing how payments are committed.
    /// Several servers may open one database at once: the migrations run
    /// under an advisory lock.
    ///
    /// # Errors
    /// When the URL is malformed, the database cannot be reached or a
    /// migration fails.
    pub async fn open_with(url: &str, mode: CommitMode) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(db)?;
        sqlx::migrate!("./migrations_postgres").run(&pool).await.map_err(StoreError::database)?;
        let writer = match mode {
            CommitMode::Group => Some(PaymentWriter::spawn::<Postgres>(options.connect().await.map_err(db)?, options)),
            CommitMode::PerPayment => None,
        };
        Ok(PgStore { pool, writer })
    }

    /// Connects for reading only: every transaction is read-only
    /// (`default_transaction_read_only`), nothing is migrated and there is
    /// no writer, so a tool may look at a live server's store without
    /// touching it.
    ///
    /// # Errors
    /// When the URL is malformed or the database cannot be reached.
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        let options = connect_options(url)?.options([("default_transaction_read_only", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(PgStore { pool, writer: None })
    }

    async fn fetch_one_where(&self, clause: &str, value: String) -> Result<Option<StoredChannel>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM channels WHERE {clause}");
        let row: Option<ChannelRow> = sqlx::query_as(&sql).bind(value).fetch_optional(&self.pool).await.map_err(db)?;
        row.map(ChannelRow::decode).transpose()
    }
}

/// `INSERT … ON CONFLICT (tx_hash, channel_id) DO UPDATE`, as in the
/// SQLite store.
async fn insert_attempt(connection: &mut PgConnection, id: &B256, tx: &SignedTx, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        // Signing is deterministic: the same close signed again after an
        // abandon has the same hash, and is live again.
        "INSERT INTO close_attempts (tx_hash, channel_id, nonce, raw, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tx_hash, channel_id) DO UPDATE SET abandoned = FALSE, created_at = excluded.created_at",
    )
    .bind(hex(tx.hash.as_slice()))
    .bind(hex(id.as_slice()))
    .bind(tx.nonce as i64)
    .bind(hex(&tx.raw))
    .bind(now)
    .execute(connection)
    .await
    .map_err(db)?;
    Ok(())
}

/// The compare-and-swap that marks a channel closing with `tx`, as in the
/// SQLite store. Whether it did.
async fn claim_close(
    connection: &mut PgConnection,
    id: &B256,
    sequence: u64,
    tx: &SignedTx,
    head: u64,
    now: i64,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "UPDATE channels SET status = 'closing', close_tx = $1, close_sequence = $2, close_nonce = $3, \
         close_signed_at_block = $4, close_mined_tx = NULL, close_mined_block = NULL, \
         close_mined_block_hash = NULL, close_mined_success = NULL, updated_at = $5 \
         WHERE channel_id = $6 AND sequence = $2 AND status IN ('open', 'final')",
    )
    .bind(hex(tx.hash.as_slice()))
    .bind(sequence as i64)
    .bind(tx.nonce as i64)
    .bind(head as i64)
    .bind(now)
    .bind(hex(id.as_slice()))
    .execute(connection)
    .await
    .map_err(db)?;
    Ok(result.rows_affected() == 1)
}

/// Records `tx` as the newest version of the channel's close in flight at
/// its nonce, as in the SQLite store. Whether it did.
async fn claim_replacement(
    connection: &mut PgConnection,
    id: &B256,
    tx: &SignedTx,
    head: u64,
    now: i64,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        // As the SQLite store, whose closes from before version 1.1
        // have no nonce; here every close has one.
        "UPDATE channels SET close_tx = $1, close_signed_at_block = $2, close_nonce = $3, updated_at = $4 \
         WHERE channel_id = $5 AND status = 'closing' AND (close_nonce = $3 OR close_nonce IS NULL)",
    )
    .bind(hex(tx.hash.as_slice()))
    .bind(head as i64)
    .bind(tx.nonce as i64)
    .bind(now)
    .bind(hex(id.as_slice()))
    .execute(connection)
    .await
    .map_err(db)?;
    Ok(result.rows_affected() == 1)
}

/// The compare-and-swap that stores a payment: `next` replaces the stored
/// state only if that is its predecessor and the channel is open.
async fn update_payment<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    next: &ChannelState,
    window: &Window,
) -> Result<(), StoreError> {
    let previous = next.client_sequence_number.checked_sub(1).ok_or(StoreError::Conflict)?;
    let status = if next.is_final() { ChannelStatus::Final } else { ChannelStatus::Open };
    let result = sqlx::query(
        "UPDATE channels SET client_balance = $1, server_balance = $2, sequence = $3, signature = $4, \
         window_stream = $5, window_first_segment = $6, window_segment_count = $7, status = $8, updated_at = $9 \
         WHERE channel_id = $10 AND sequence = $11 AND status = 'open'",
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
impl PaymentSql for Postgres {
    async fn update_payment(
        connection: &mut PgConnection,
        next: &ChannelState,
        window: &Window,
    ) -> Result<(), StoreError> {
        update_payment(connection, next, window).await
    }
}

#[async_trait]
impl Store for PgStore {
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
        // A repeated announcement is a no-op; the caller gets whatever is
        // stored.
        sqlx::query(
            "INSERT INTO channels (channel_id, channel_address, client_wallet_address, \
             client_public_key, deposit, expires_at, settle_by, client_balance, server_balance, sequence, signature, \
             status, open_state, open_block, open_block_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'open', $12, $13, $14, $15, $16) \
             ON CONFLICT (channel_id) DO NOTHING",
        )
        .bind(hex(state.channel_id.as_slice()))
        .bind(state.channel_address.to_checksum(None))
        .bind(state.client_wallet_address.to_checksum(None))
        .bind(state.client_public_key.to_string())
        .bind(deposit.to_string())
        // BIGINT is signed: a client may pick an expiry past i64::MAX,
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
        self.fetch_one_where("channel_id = $1", hex(id.as_slice())).await
    }

    async fn newest_for_client(&self, key: &PublicKey) -> Result<Option<StoredChannel>, StoreError> {
        self.fetch_one_where("client_public_key = $1 ORDER BY row_id DESC LIMIT 1", key.to_string()).await
    }

    async fn record_payment(&self, next: &ChannelState, window: &Window) -> Result<(), StoreError> {
        match &self.writer {
            Some(writer) => writer.record(next, window).await,
            None => update_payment(&self.pool, next, window).await,
        }
    }

    async fn awaiting_settlement(&self, now: u64) -> Result<Vec<StoredChannel>, StoreError> {
        // Ties in `settle_by` in the order stored, as the memory store
        // keeps them (SQLite leaves them unordered).
        let sql = format!(
            "SELECT {COLUMNS} FROM channels AS c WHERE status IN ('final', 'closing') \
             OR (status = 'open' AND (server_balance != '0' OR gasless) AND (settle_by <= $1 OR EXISTS ( \
                 SELECT 1 FROM channels AS newer WHERE newer.client_public_key = c.client_public_key \
                 AND newer.row_id > c.row_id))) \
             ORDER BY settle_by, row_id"
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
            "UPDATE channels SET open_state = $1, open_block = COALESCE($2, open_block), \
             open_block_hash = COALESCE($3, open_block_hash), updated_at = $4 WHERE channel_id = $5",
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
        let result = sqlx::query("UPDATE channels SET gasless = TRUE, updated_at = $1 WHERE channel_id = $2")
            .bind(now_millis())
            .bind(hex(id.as_slice()))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if result.rows_affected() == 1 { Ok(()) } else { Err(StoreError::NotFound) }
    }

    async fn record_close_mined(&self, id: &B256, mined: Option<&Inclusion>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE channels SET close_mined_tx = $1, close_mined_block = $2, close_mined_block_hash = $3, \
             close_mined_success = $4, updated_at = $5 WHERE channel_id = $6 AND status = 'closing'",
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
        // One snapshot for both reads, so the attempts belong to the close
        // the row describes even while the settler records another.
        let mut transaction =
            self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.map_err(db)?;
        let Some(row) = sqlx::query(
            "SELECT close_sequence, close_nonce, close_signed_at_block, close_mined_tx, close_mined_block, \
             close_mined_block_hash, close_mined_success FROM channels WHERE channel_id = $1 AND status = 'closing'",
        )
        .bind(hex(id.as_slice()))
        .fetch_optional(&mut *transaction)
        .await
        .map_err(db)?
        else {
            return Ok(None);
        };
        let raws: Vec<String> = sqlx::query_scalar(
            "SELECT raw FROM close_attempts WHERE channel_id = $1 AND NOT abandoned ORDER BY created_at, row_id",
        )
        .bind(hex(id.as_slice()))
        .fetch_all(&mut *transaction)
        .await
        .map_err(db)?;
        transaction.commit().await.map_err(db)?;
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
             close_mined_block_hash = NULL, close_mined_success = NULL, updated_at = $1 \
             WHERE channel_id = $2 AND status = 'closing'"
        );
        sqlx::query(&sql).bind(now_millis()).bind(hex(id.as_slice())).execute(&mut *transaction).await.map_err(db)?;
        sqlx::query("UPDATE close_attempts SET abandoned = TRUE WHERE channel_id = $1")
            .bind(hex(id.as_slice()))
            .execute(&mut *transaction)
            .await
            .map_err(db)?;
        transaction.commit().await.map_err(db)
    }

    async fn mark_closed(&self, id: &B256, tx: Option<&B256>) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE channels SET status = 'closed', close_tx = COALESCE($1, close_tx), updated_at = $2 \
             WHERE channel_id = $3 AND status NOT IN ('closed', 'refunded')",
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
        // payment lands in between, in this process or another.
        loop {
            let Some(before) = self.channel(id).await? else { return Ok(None) };
            if matches!(before.status, ChannelStatus::Closed | ChannelStatus::Refunded) {
                return Ok(None);
            }
            let result = sqlx::query(
                "UPDATE channels SET status = 'refunded', updated_at = $1 \
                 WHERE channel_id = $2 AND sequence = $3 AND status NOT IN ('closed', 'refunded')",
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
        let value: Option<i64> = sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(value.map(|v| v as u64))
    }

    async fn set_cursor(&self, name: &str, value: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value as i64)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<StoredChannel>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM channels ORDER BY row_id DESC");
        let rows: Vec<ChannelRow> = sqlx::query_as(&sql).fetch_all(&self.pool).await.map_err(db)?;
        rows.into_iter().map(ChannelRow::decode).collect()
    }
}
