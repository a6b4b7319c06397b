//! What the two SQL stores share: the column list, the row both decode a
//! channel from, and how values are written as text. The tables hold the
//! same columns in SQLite and PostgreSQL, so a channel reads back the same
//! from either.

use super::{StoreError, StoredChannel, Window};
use std::time::{SystemTime, UNIX_EPOCH};
use tollstream_chain::{BlockRef, SignedTx};
use tollstream_protocol::{B256, ChannelState};

/// The columns of `channels` that [`ChannelRow`] reads.
pub(super) const COLUMNS: &str = "channel_id, channel_address, client_wallet_address, client_public_key, deposit, \
     expires_at, settle_by, client_balance, server_balance, sequence, signature, window_stream, \
     window_first_segment, window_segment_count, status, close_tx, close_nonce, open_state, open_block, \
     open_block_hash, created_at, gasless";

/// The status a channel returns to when a close is abandoned: derived from
/// its state, so it need not be remembered.
pub(super) const STATUS_WITHOUT_CLOSE: &str = "CASE WHEN client_balance = '0' THEN 'final' ELSE 'open' END";

/// A database failure, its cause kept.
pub(super) fn db(error: sqlx::Error) -> StoreError {
    StoreError::database(error)
}

/// Unix milliseconds now (`created_at`, `updated_at`).
pub(super) fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Bytes as `0x…` hex, as the columns hold them.
pub(super) fn hex(bytes: &[u8]) -> String {
    format!("0x{}", alloy_primitives::hex::encode(bytes))
}

/// A 32-byte hash read back from a column.
pub(super) fn parse_b256(text: &str, name: &str) -> Result<B256, StoreError> {
    tollstream_protocol::encoding::parse_hex::<32>(text, name)
        .map(B256::from)
        .map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
}

/// A signed close read back from `close_attempts.raw`.
pub(super) fn decode_raw(text: &str) -> Result<SignedTx, StoreError> {
    let raw = alloy_primitives::hex::decode(text.trim_start_matches("0x"))
        .map_err(|e| StoreError::Corrupt(format!("close_attempts.raw: {e}")))?;
    SignedTx::decode(&raw).map_err(|e| StoreError::Corrupt(format!("close_attempts.raw: {e}")))
}

/// One row of `channels` as [`COLUMNS`] selects it, before it is checked.
/// Integer columns are signed in both databases; values are stored as
/// `u64 as i64` and read back the same way.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ChannelRow {
    channel_id: String,
    channel_address: String,
    client_wallet_address: String,
    client_public_key: String,
    expires_at: i64,
    settle_by: i64,
    client_balance: String,
    server_balance: String,
    sequence: i64,
    signature: String,
    window_stream: Option<String>,
    window_first_segment: Option<i64>,
    window_segment_count: Option<i64>,
    status: String,
    close_tx: Option<String>,
    close_nonce: Option<i64>,
    open_state: String,
    open_block: Option<i64>,
    open_block_hash: Option<String>,
    created_at: i64,
    gasless: bool,
}

impl ChannelRow {
    /// The channel the row holds.
    ///
    /// # Errors
    /// `Corrupt` when a column does not hold what the protocol accepts.
    pub(super) fn decode(self) -> Result<StoredChannel, StoreError> {
        let corrupt = |name: &str, why: String| StoreError::Corrupt(format!("{name}: {why}"));
        // Decode through the wire types, so the store accepts exactly what
        // the protocol accepts.
        let state_json = serde_json::json!({
            "channel_id": self.channel_id,
            "channel_address": self.channel_address,
            "client_wallet_address": self.client_wallet_address,
            "client_public_key": self.client_public_key,
            "client_balance": self.client_balance,
            "server_balance": self.server_balance,
            "client_sequence_number": self.sequence,
            "client_signature": self.signature,
        });
        let state: ChannelState = tollstream_protocol::decode(state_json).map_err(|e| corrupt("state", e.message))?;
        let window = match (self.window_stream, self.window_first_segment, self.window_segment_count) {
            (Some(stream_id), Some(first), Some(count)) => {
                Some(Window { stream_id, first_segment: first as u64, segment_count: count as u64 })
            }
            (None, _, _) => None,
            (Some(_), _, _) => return Err(corrupt("window", "a stream with no segments".into())),
        };
        let close_tx = self.close_tx.map(|tx| parse_b256(&tx, "close_tx")).transpose()?;
        let open_block = match (self.open_block, self.open_block_hash) {
            (Some(number), Some(hash)) => {
                Some(BlockRef { number: number as u64, hash: parse_b256(&hash, "open_block_hash")? })
            }
            _ => None,
        };
        Ok(StoredChannel {
            state,
            window,
            expires_at: self.expires_at as u64,
            settle_by: self.settle_by as u64,
            status: self.status.parse().map_err(|e| corrupt("status", e))?,
            open_state: self.open_state.parse().map_err(|e| corrupt("open_state", e))?,
            open_block,
            close_tx,
            close_nonce: self.close_nonce.map(|n| n as u64),
            created_at: self.created_at,
            gasless: self.gasless,
        })
    }
}
