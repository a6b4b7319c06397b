//! The in-memory store: the test double of [`Store`] for unit tests of the
//! server's logic. It does no I/O, so a test can run it under a paused
//! Tokio clock, and it keeps nothing when dropped.
//!
//! Its semantics are the SQLite store's, statement by statement: the
//! comment on each method names the SQL it mirrors, and the shared suite
//! (`store/tests.rs`) runs against both so the two cannot drift. Like the
//! tables, it never removes a channel or a signed close.

use super::{ChannelStatus, CloseRecord, OpenState, Store, StoreError, StoredChannel, Window};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tollstream_chain::{BlockRef, Inclusion, SignedTx};
use tollstream_protocol::{B256, ChannelState, PublicKey};

/// Channels in memory. Share it as an `Arc<dyn Store>`, as the server does.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Every table behind one lock: each method is one transaction.
    tables: Mutex<Tables>,
}

/// The SQLite tables, as plain collections.
#[derive(Debug, Default)]
struct Tables {
    /// `channels`, in the order stored: a row's index is its `rowid`, which
    /// breaks ties between channels stored in the same millisecond.
    channels: Vec<ChannelRow>,
    /// Where each channel sits in `channels` (the primary key).
    by_id: HashMap<B256, usize>,
    /// `close_attempts`, in the order recorded (index as `rowid`).
    attempts: Vec<AttemptRow>,
    /// `meta`: the named counters.
    cursors: HashMap<String, u64>,
}

/// One row of `channels`.
#[derive(Debug)]
struct ChannelRow {
    /// The columns a caller sees.
    stored: StoredChannel,
    /// `close_sequence`: the sequence the close in flight closes with.
    close_sequence: Option<u64>,
    /// `close_signed_at_block`: the head when its newest version was signed.
    close_signed_at_block: Option<u64>,
    /// `close_mined_*`: where a version was seen mined.
    close_mined: Option<Inclusion>,
}

/// One row of `close_attempts`.
#[derive(Debug)]
struct AttemptRow {
    channel_id: B256,
    /// The signed close (its hash is the primary key).
    tx: SignedTx,
    created_at: i64,
    /// Set when its close was abandoned: kept as history, never returned.
    abandoned: bool,
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the lock for one transaction.
    ///
    /// # Errors
    /// `Database` when a thread panicked holding the lock: what it changed
    /// may be half done, as after a torn write.
    fn tables(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        self.tables.lock().map_err(|_| StoreError::database_text("a writer panicked inside the memory store"))
    }
}

impl Tables {
    fn row(&self, id: &B256) -> Option<&ChannelRow> {
        self.by_id.get(id).map(|&rowid| &self.channels[rowid])
    }

    fn row_mut(&mut self, id: &B256) -> Option<&mut ChannelRow> {
        self.by_id.get(id).map(|&rowid| &mut self.channels[rowid])
    }

    /// Rowids of the channels that `keep` selects, in the order stored.
    fn ordered(&self, keep: impl Fn(usize, &ChannelRow) -> bool) -> Vec<usize> {
        (0..self.channels.len()).filter(|&i| keep(i, &self.channels[i])).collect()
    }

    /// Whether the same client stored a channel after this one.
    fn superseded(&self, rowid: usize) -> bool {
        let row = &self.channels[rowid];
        let key = row.stored.state.client_public_key;
        self.channels.iter().skip(rowid + 1).any(|newer| newer.stored.state.client_public_key == key)
    }

    /// `INSERT … ON CONFLICT (tx_hash, channel_id) DO UPDATE`: a version
    /// already recorded for the channel (the same close signed again after
    /// an abandon) is live again.
    fn insert_attempt(&mut self, id: &B256, tx: &SignedTx, now: i64) {
        match self.attempts.iter_mut().find(|attempt| attempt.tx.hash == tx.hash && attempt.channel_id == *id) {
            Some(attempt) => {
                attempt.abandoned = false;
                attempt.created_at = now;
            }
            None => {
                self.attempts.push(AttemptRow { channel_id: *id, tx: tx.clone(), created_at: now, abandoned: false })
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn insert_channel(
        &self,
        state: &ChannelState,
        expires_at: u64,
        settle_by: u64,
        open: OpenState,
        open_block: Option<BlockRef>,
    ) -> Result<StoredChannel, StoreError> {
        state.deposit().ok_or_else(|| StoreError::Corrupt("deposit overflows".into()))?;
        let mut tables = self.tables()?;
        if !tables.by_id.contains_key(&state.channel_id) {
            let rowid = tables.channels.len();
            tables.channels.push(ChannelRow {
                stored: StoredChannel {
                    state: state.clone(),
                    window: None,
                    expires_at,
                    settle_by,
                    // Open whatever the state: as the SQL inserts it.
                    status: ChannelStatus::Open,
                    open_state: open,
                    open_block,
                    close_tx: None,
                    close_nonce: None,
                    created_at: now_millis(),
                    gasless: false,
                },
                close_sequence: None,
                close_signed_at_block: None,
                close_mined: None,
            });
            tables.by_id.insert(state.channel_id, rowid);
        }
        tables.row(&state.channel_id).map(|row| row.stored.clone()).ok_or(StoreError::NotFound)
    }

    async fn set_open(&self, id: &B256, open: OpenState, block: Option<BlockRef>) -> Result<(), StoreError> {
        if let Some(row) = self.tables()?.row_mut(id) {
            row.stored.open_state = open;
            // `COALESCE(?, open_block)`: no block keeps the one known.
            if block.is_some() {
                row.stored.open_block = block;
            }
        }
        Ok(())
    }

    async fn channel(&self, id: &B256) -> Result<Option<StoredChannel>, StoreError> {
        Ok(self.tables()?.row(id).map(|row| row.stored.clone()))
    }

    async fn newest_for_client(&self, key: &PublicKey) -> Result<Option<StoredChannel>, StoreError> {
        let tables = self.tables()?;
        let mine = tables.ordered(|_, row| row.stored.state.client_public_key == *key);
        Ok(mine.last().map(|&rowid| tables.channels[rowid].stored.clone()))
    }

    async fn record_payment(&self, next: &ChannelState, window: &Window) -> Result<(), StoreError> {
        let previous = next.client_sequence_number.checked_sub(1).ok_or(StoreError::Conflict)?;
        let mut tables = self.tables()?;
        // `WHERE channel_id = ? AND sequence = ? AND status = 'open'`
        let row = tables.row_mut(&next.channel_id).ok_or(StoreError::Conflict)?;
        let stored = &mut row.stored;
        if stored.state.client_sequence_number != previous || stored.status != ChannelStatus::Open {
            return Err(StoreError::Conflict);
        }
        // Only the columns the UPDATE sets: the channel's identity stays
        // as it was stored.
        stored.state.client_balance = next.client_balance;
        stored.state.server_balance = next.server_balance;
        stored.state.client_sequence_number = next.client_sequence_number;
        stored.state.client_signature = next.client_signature;
        stored.window = Some(window.clone());
        stored.status = if next.is_final() { ChannelStatus::Final } else { ChannelStatus::Open };
        Ok(())
    }

    async fn awaiting_settlement(&self, now: u64) -> Result<Vec<StoredChannel>, StoreError> {
        let tables = self.tables()?;
        let mut due = tables.ordered(|rowid, row| match row.stored.status {
            ChannelStatus::Final | ChannelStatus::Closing => true,
            ChannelStatus::Open => {
                (!row.stored.state.server_balance.is_zero() || row.stored.gasless)
                    && (row.stored.settle_by <= now || tables.superseded(rowid))
            }
            ChannelStatus::Closed | ChannelStatus::Refunded => false,
        });
        // `ORDER BY settle_by`; SQLite leaves ties unordered, here they
        // keep the order stored.
        due.sort_by_key(|&rowid| tables.channels[rowid].stored.settle_by);
        Ok(due.into_iter().map(|rowid| tables.channels[rowid].stored.clone()).collect())
    }

    async fn record_close(&self, id: &B256, sequence: u64, tx: &SignedTx, head: u64) -> Result<(), StoreError> {
        let stale = self.record_closes(&[(*id, sequence)], tx, head).await?;
        if stale.is_empty() { Ok(()) } else { Err(StoreError::Conflict) }
    }

    async fn record_closes(&self, closes: &[(B256, u64)], tx: &SignedTx, head: u64) -> Result<Vec<B256>, StoreError> {
        let mut tables = self.tables()?;
        // `WHERE channel_id = ? AND sequence = ? AND status IN ('open', 'final')`
        // for every entry first: all or nothing, as one transaction.
        let stale: Vec<B256> = closes
            .iter()
            .filter(|(id, sequence)| {
                !tables.row(id).is_some_and(|row| {
                    row.stored.state.client_sequence_number == *sequence
                        && matches!(row.stored.status, ChannelStatus::Open | ChannelStatus::Final)
                })
            })
            .map(|(id, _)| *id)
            .collect();
        if !stale.is_empty() {
            return Ok(stale);
        }
        let now = now_millis();
        for (id, sequence) in closes {
            let row = tables.row_mut(id).ok_or(StoreError::Conflict)?;
            row.stored.status = ChannelStatus::Closing;
            row.stored.close_tx = Some(tx.hash);
            row.stored.close_nonce = Some(tx.nonce);
            row.close_sequence = Some(*sequence);
            row.close_signed_at_block = Some(head);
            row.close_mined = None;
            tables.insert_attempt(id, tx, now);
        }
        Ok(Vec::new())
    }

    async fn record_replacement(&self, id: &B256, tx: &SignedTx, head: u64) -> Result<(), StoreError> {
        self.record_replacements(&[*id], tx, head).await
    }

    async fn record_replacements(&self, ids: &[B256], tx: &SignedTx, head: u64) -> Result<(), StoreError> {
        let mut tables = self.tables()?;
        let now = now_millis();
        let mut any = false;
        for id in ids {
            // `WHERE channel_id = ? AND status = 'closing'
            //  AND (close_nonce = ? OR close_nonce IS NULL)`
            let Some(row) = tables.row_mut(id) else { continue };
            if row.stored.status != ChannelStatus::Closing || row.stored.close_nonce.is_some_and(|n| n != tx.nonce) {
                continue;
            }
            row.stored.close_nonce = Some(tx.nonce);
            row.stored.close_tx = Some(tx.hash);
            row.close_signed_at_block = Some(head);
            tables.insert_attempt(id, tx, now);
            any = true;
        }
        if any { Ok(()) } else { Err(StoreError::Conflict) }
    }

    async fn mark_gasless(&self, id: &B256) -> Result<(), StoreError> {
        let mut tables = self.tables()?;
        let row = tables.row_mut(id).ok_or(StoreError::NotFound)?;
        row.stored.gasless = true;
        Ok(())
    }

    async fn record_close_mined(&self, id: &B256, mined: Option<&Inclusion>) -> Result<(), StoreError> {
        if let Some(row) = self.tables()?.row_mut(id).filter(|row| row.stored.status == ChannelStatus::Closing) {
            row.close_mined = mined.copied();
        }
        Ok(())
    }

    async fn close_record(&self, id: &B256) -> Result<Option<CloseRecord>, StoreError> {
        let tables = self.tables()?;
        let Some(row) = tables.row(id).filter(|row| row.stored.status == ChannelStatus::Closing) else {
            return Ok(None);
        };
        // `WHERE channel_id = ? AND abandoned = 0 ORDER BY created_at, rowid`
        let mut attempts: Vec<(i64, usize, &SignedTx)> = tables
            .attempts
            .iter()
            .enumerate()
            .filter(|(_, attempt)| attempt.channel_id == *id && !attempt.abandoned)
            .map(|(rowid, attempt)| (attempt.created_at, rowid, &attempt.tx))
            .collect();
        attempts.sort_by_key(|&(created_at, rowid, _)| (created_at, rowid));
        if attempts.is_empty() {
            return Err(StoreError::Corrupt(format!("channel {id} is closing with no signed close")));
        }
        Ok(Some(CloseRecord {
            sequence: row.close_sequence.unwrap_or(0),
            attempts: attempts.into_iter().map(|(_, _, tx)| tx.clone()).collect(),
            signed_at_block: row.close_signed_at_block.unwrap_or(0),
            mined: row.close_mined,
        }))
    }

    async fn abandon_close(&self, id: &B256) -> Result<(), StoreError> {
        let mut tables = self.tables()?;
        if let Some(row) = tables.row_mut(id).filter(|row| row.stored.status == ChannelStatus::Closing) {
            // The status it would have without a close, from its state.
            row.stored.status =
                if row.stored.state.client_balance.is_zero() { ChannelStatus::Final } else { ChannelStatus::Open };
            row.stored.close_tx = None;
            row.stored.close_nonce = None;
            row.close_sequence = None;
            row.close_signed_at_block = None;
            row.close_mined = None;
        }
        // Whatever the status, as the SQL does.
        for attempt in tables.attempts.iter_mut().filter(|attempt| attempt.channel_id == *id) {
            attempt.abandoned = true;
        }
        Ok(())
    }

    async fn mark_closed(&self, id: &B256, tx: Option<&B256>) -> Result<bool, StoreError> {
        let mut tables = self.tables()?;
        let Some(row) = tables.row_mut(id).filter(|row| !settled(row.stored.status)) else { return Ok(false) };
        row.stored.status = ChannelStatus::Closed;
        // `COALESCE(?, close_tx)`
        if let Some(tx) = tx {
            row.stored.close_tx = Some(*tx);
        }
        Ok(true)
    }

    async fn mark_refunded(&self, id: &B256) -> Result<Option<StoredChannel>, StoreError> {
        let mut tables = self.tables()?;
        let Some(row) = tables.row_mut(id).filter(|row| !settled(row.stored.status)) else { return Ok(None) };
        let before = row.stored.clone();
        row.stored.status = ChannelStatus::Refunded;
        Ok(Some(before))
    }

    async fn cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.tables()?.cursors.get(name).copied())
    }

    async fn set_cursor(&self, name: &str, value: u64) -> Result<(), StoreError> {
        self.tables()?.cursors.insert(name.to_owned(), value);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<StoredChannel>, StoreError> {
        let tables = self.tables()?;
        let rowids = tables.ordered(|_, _| true);
        Ok(rowids.into_iter().rev().map(|rowid| tables.channels[rowid].stored.clone()).collect())
    }
}

/// `status IN ('closed', 'refunded')`: settled on chain, for good.
fn settled(status: ChannelStatus) -> bool {
    matches!(status, ChannelStatus::Closed | ChannelStatus::Refunded)
}
