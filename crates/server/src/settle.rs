//! Settlement: close on chain every channel that holds server money, with
//! its latest signed state, before it expires (or at once when it is spent
//! or superseded by a newer channel of its client); follow the registry's
//! events so channels closed or refunded by anyone are marked so.
//!
//! Each pass takes every due channel one step further and never waits for
//! a receipt, so closes of different channels are in flight together and
//! shutdown never waits for the chain. A close's steps (signed, sent,
//! re-priced, replaced, mined, confirmed, reorged, abandoned) are decided
//! by [`tollstream_chain::CloseTx::step`] and carried out here, every one
//! recorded in the store before the chain sees it:
//! - a close is signed and recorded *before* it is broadcast, and a
//!   restart sees the recorded versions through, so a close is never sent
//!   twice as two different transactions at two nonces, nor forgotten;
//! - the record is a compare-and-swap on the sequence number, so a payment
//!   stored meanwhile is never left out;
//! - a close counts once its receipt is `--confirmations` deep; one a reorg
//!   removes is sent again; one whose nonce another transaction took is
//!   abandoned and the channel closed again at a fresh nonce.

use crate::confirmations::Opens;
use crate::metrics::Metrics;
use crate::store::{ChannelStatus, CloseRecord, OpenState, Store, StoreError, StoredChannel};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tollstream_chain::{
    Attempt, Chain, ChainError, ChannelEvent, ChannelStatus as OnChainStatus, CloseTx, Decision, Sent, SignedTx,
    StartError, TxManager,
};
use tollstream_protocol::{Amount, B256, U256};

/// The store's name for the next block whose events to read.
const EVENTS_CURSOR: &str = "next_event_block";
/// The longest pause between retries of a failing channel.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Gas one close takes, with headroom: what the payee's balance is
/// measured against (a close costs 46,000–56,000 gas, see the README).
pub const CLOSE_GAS: u64 = 70_000;
/// How often the payee's gas is checked while it is sufficient.
const GAS_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// The payee is warned while its balance covers fewer than this many
/// times the closes it owes.
const GAS_MARGIN: u64 = 2;

/// The chain time from which a channel is settled rather than streamed:
/// `expires_at` less the settlement margin, in seconds (PROTOCOL.md 1.1:
/// a channel is active while chain time is before
/// `expiresAt − settle_margin_seconds`, the margin `publicKey` publishes).
pub fn settle_by(expires_at: u64, margin: u64) -> u64 {
    expires_at.saturating_sub(margin)
}

/// Why one channel could not be settled this time.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the channel expired before it was closed; its client may take a refund")]
    Expired,
    #[error("the channel is not on chain")]
    NotOnChain,
}

impl From<StartError<StoreError>> for SettleError {
    fn from(error: StartError<StoreError>) -> Self {
        match error {
            StartError::Chain(error) => SettleError::Chain(error),
            StartError::Record(error) => SettleError::Store(error),
        }
    }
}

impl SettleError {
    /// Whether the chain could not be reached: the rest of the pass would
    /// fail the same way.
    fn is_outage(&self) -> bool {
        matches!(self, SettleError::Chain(error) if error.is_transient())
    }
}

/// What a settlement step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Our close is confirmed.
    Closed,
    /// Someone closed it already.
    AlreadyClosed,
    /// The client took the deposit back.
    Refunded,
    /// A close is in flight: sent, re-priced, or mined but not yet deep.
    Pending,
    /// Waiting for the channel's `open` to be confirmed (or back).
    OpenUnconfirmed,
    /// Nothing to collect.
    NothingOwed,
}

/// The settlement worker's parts and memory.
pub struct Settlement {
    store: Arc<dyn Store>,
    chain: Arc<dyn Chain>,
    manager: Arc<TxManager>,
    opens: Arc<Opens>,
    metrics: Metrics,
    /// `--log-range-blocks`.
    log_range: u64,
    /// Per failing channel: failures so far and when to try next.
    backoff: HashMap<B256, (u32, Instant)>,
    /// Whether the nonces of recorded closes were handed to the manager.
    restored: bool,
    /// Closes waiting at the fee cap in the current pass.
    at_cap: i64,
    /// Closes mined but not yet deep enough, in the current pass.
    mined_unconfirmed: i64,
    /// Where in the due list the next pass starts.
    turn: usize,
    /// Whether the payee's lack of gas was already warned about.
    gas_low: bool,
    /// When the payee's gas was last checked.
    gas_checked: Option<Instant>,
}

impl Settlement {
    pub fn new(
        store: Arc<dyn Store>,
        chain: Arc<dyn Chain>,
        manager: Arc<TxManager>,
        opens: Arc<Opens>,
        metrics: Metrics,
        log_range: u64,
    ) -> Self {
        Settlement {
            store,
            chain,
            manager,
            opens,
            metrics,
            log_range: log_range.max(1),
            backoff: HashMap::new(),
            restored: false,
            at_cap: 0,
            mined_unconfirmed: 0,
            turn: 0,
            gas_low: false,
            gas_checked: None,
        }
    }

    /// Runs a pass every `interval` until `cancel`. A pass in progress is
    /// dropped at cancellation: every step is recorded, so the next start
    /// picks up where it stood.
    pub async fn run(mut self, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.pass() => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One pass: read new events, check the payee's gas, then take every
    /// due channel one step. A failing channel is logged and retried later
    /// with backoff; it never blocks the others. An outage ends the pass.
    pub async fn pass(&mut self) {
        if let Err(error) = self.restore().await {
            tracing::error!(%error, "cannot load the closes in flight");
            return;
        }
        let head = match self.chain.head().await {
            Ok(head) => head,
            Err(error) => {
                self.failed(&error);
                tracing::warn!(%error, "cannot read the chain; settlement retries next pass");
                return;
            }
        };
        if let Err(error) = self.follow_events(head.number).await {
            self.failed_pass(&error, "cannot read channel events");
            if error.is_outage() {
                return;
            }
        }
        // The payee's gas against every channel owing the server, due or
        // not: every pass while it is short (so funding shows at once),
        // else every GAS_CHECK_INTERVAL.
        if self.gas_low || self.gas_checked.is_none_or(|at| at.elapsed() >= GAS_CHECK_INTERVAL) {
            match self.store.count_owing().await {
                Ok(owing) => match self.check_gas(owing).await {
                    Ok(()) => self.gas_checked = Some(Instant::now()),
                    Err(error) => {
                        self.failed(&error);
                        tracing::warn!(%error, "cannot read the payee's balance");
                    }
                },
                Err(error) => tracing::error!(%error, "cannot count the channels owing the server"),
            }
        }
        let due = match self.store.awaiting_settlement(head.timestamp).await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "cannot list channels to settle");
                return;
            }
        };
        self.metrics.channels_awaiting_settlement.set(due.len() as i64);
        self.at_cap = 0;
        self.mined_unconfirmed = 0;
        // Start each pass one channel further, so that a channel whose
        // calls keep failing cannot keep the ones after it from their turn.
        let mut due = due;
        if !due.is_empty() {
            let turn = self.turn % due.len();
            due.rotate_left(turn);
            self.turn = self.turn.wrapping_add(1);
        }
        for channel in due {
            let id = channel.state.channel_id;
            if self.backoff.get(&id).is_some_and(|(_, next)| Instant::now() < *next) {
                continue;
            }
            match self.step(&channel, head.number, head.timestamp).await {
                Ok(outcome) => {
                    self.backoff.remove(&id);
                    tracing::debug!(channel = %id, ?outcome, "settlement step");
                }
                Err(error) if error.is_outage() => {
                    self.failed_pass(&error, "settlement stopped by a chain outage; resuming next pass");
                    break;
                }
                Err(error) => {
                    self.metrics.settlement_failures.inc();
                    let failures = self.backoff.get(&id).map_or(0, |(n, _)| *n) + 1;
                    let pause = Duration::from_secs(1u64 << failures.min(5)).min(MAX_BACKOFF);
                    self.backoff.insert(id, (failures, Instant::now() + pause));
                    tracing::warn!(channel = %id, %error, failures, retry_in = ?pause, "settlement failed");
                }
            }
        }
        self.metrics.closes_at_fee_cap.set(self.at_cap);
        self.metrics.closes_mined_unconfirmed.set(self.mined_unconfirmed);
        match self.manager.fill_gaps().await {
            Ok(fillers) => {
                for filler in fillers {
                    tracing::warn!(nonce = filler.nonce, tx = %filler.hash, "filled a nonce gap of the payee wallet with a 0-wei transfer to itself");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot check the payee's nonces for gaps"),
        }
    }

    fn failed(&self, error: &ChainError) {
        self.metrics.settlement_failures.inc();
        if error.is_transient() {
            self.metrics.chain_errors.inc();
        }
    }

    fn failed_pass(&self, error: &SettleError, what: &str) {
        self.metrics.settlement_failures.inc();
        if error.is_outage() {
            self.metrics.chain_errors.inc();
        }
        tracing::warn!(%error, "{what}");
    }

    /// Takes one channel as far as it goes now, whether or not it is due
    /// (used by `tollstream settle`), waiting up to `patience` for its
    /// close to be confirmed.
    ///
    /// # Errors
    /// Chain, store, expiry.
    pub async fn settle_now(&mut self, channel: &StoredChannel, patience: Duration) -> Result<Settled, SettleError> {
        self.restore().await?;
        let deadline = Instant::now() + patience;
        let mut channel = channel.clone();
        loop {
            let head = self.chain.head().await?;
            let outcome = self.step(&channel, head.number, head.timestamp).await?;
            if outcome != Settled::Pending || Instant::now() >= deadline {
                return Ok(outcome);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            channel = self.store.channel(&channel.state.channel_id).await?.ok_or(StoreError::NotFound)?;
        }
    }

    /// Hands the nonces of closes recorded before a restart to the
    /// manager, once.
    async fn restore(&mut self) -> Result<(), StoreError> {
        if !self.restored {
            // The nonce is read back from the signed versions themselves:
            // a close recorded before version 1.1 has no nonce column.
            let mut nonces = Vec::new();
            for channel in self.store.awaiting_settlement(0).await? {
                if channel.status == ChannelStatus::Closing
                    && let Some(record) = self.store.close_record(&channel.state.channel_id).await?
                    && let Some(latest) = record.attempts.last()
                {
                    nonces.push(latest.nonce);
                }
            }
            self.manager.restore(nonces).await;
            self.restored = true;
        }
        Ok(())
    }

    async fn step(&mut self, channel: &StoredChannel, head: u64, now: u64) -> Result<Settled, SettleError> {
        let id = channel.state.channel_id;
        match channel.status {
            ChannelStatus::Closed | ChannelStatus::Refunded => return Ok(Settled::AlreadyClosed),
            ChannelStatus::Closing => {
                if let Some(record) = self.store.close_record(&id).await? {
                    match self.advance(channel, &record).await? {
                        // The close is gone: close again at once.
                        None => {}
                        Some(outcome) => return Ok(outcome),
                    }
                }
            }
            ChannelStatus::Open | ChannelStatus::Final => {}
        }
        // Nothing is settled on an open that may still be reorged away.
        if self.opens.resolve(channel) != OpenState::Confirmed {
            return Ok(Settled::OpenUnconfirmed);
        }
        self.start(channel, head, now).await
    }

    /// Signs, records and sends a first close of the channel, after
    /// reading it on chain.
    async fn start(&mut self, channel: &StoredChannel, head: u64, now: u64) -> Result<Settled, SettleError> {
        let id = channel.state.channel_id;
        let onchain = self.chain.channel(id).await?;
        match onchain.status {
            OnChainStatus::Open => {}
            OnChainStatus::Closed => {
                self.store.mark_closed(&id, None).await?;
                return Ok(Settled::AlreadyClosed);
            }
            OnChainStatus::Refunded => {
                self.refunded(&id, onchain.deposit.into()).await?;
                return Ok(Settled::Refunded);
            }
            OnChainStatus::None => return Err(SettleError::NotOnChain),
        }
        if now >= onchain.expires_at {
            return Err(SettleError::Expired);
        }
        if channel.state.server_balance.is_zero() {
            return Ok(Settled::NothingOwed);
        }
        let store = &self.store;
        let sequence = channel.state.client_sequence_number;
        let started = self
            .manager
            .start_close(&channel.state, async |tx: &SignedTx, signed_at: u64| {
                match store.record_close(&id, sequence, tx, signed_at).await {
                    Ok(()) => Ok(true),
                    // A payment landed since the channel was read: the
                    // next pass closes with it.
                    Err(StoreError::Conflict) => Ok(false),
                    Err(error) => Err(error),
                }
            })
            .await;
        let started = match started {
            Err(StartError::Chain(error)) if error.is_insufficient_funds() => {
                self.warn_no_gas(&id, &error);
                return Ok(Settled::Pending);
            }
            other => other?,
        };
        let Some((tx, sent)) = started else { return Ok(Settled::Pending) };
        tracing::info!(
            channel = %id,
            tx = %tx.hash,
            nonce = tx.nonce,
            max_fee_per_gas = tx.fees.max_fee_per_gas,
            seq = sequence,
            server_balance = %channel.state.server_balance,
            signed_at = head,
            "closing channel"
        );
        self.sent(&id, &tx, sent);
        Ok(Settled::Pending)
    }

    /// Takes a close in flight one step. `None` when it was abandoned and
    /// the channel must be closed again.
    async fn advance(&mut self, channel: &StoredChannel, record: &CloseRecord) -> Result<Option<Settled>, SettleError> {
        let id = channel.state.channel_id;
        let latest = record.attempts.last().expect("a recorded close has a signed version").clone();
        let close = CloseTx {
            nonce: latest.nonce,
            attempts: record.attempts.iter().map(|a| Attempt { hash: a.hash, fees: a.fees }).collect(),
            signed_at_block: record.signed_at_block,
            mined: record.mined,
        };
        let seen = self.manager.observe(&close).await?;
        match self.manager.decide(&close, &seen) {
            Decision::Confirmed(inclusion) => {
                self.manager.release(close.nonce).await;
                if self.store.mark_closed(&id, Some(&inclusion.tx)).await? {
                    Metrics::add_wei(&self.metrics.wei_settled, channel.state.server_balance);
                    tracing::info!(
                        channel = %id,
                        tx = %inclusion.tx,
                        block = inclusion.block,
                        server_balance = %channel.state.server_balance,
                        "channel closed and confirmed; payment collected"
                    );
                }
                Ok(Some(Settled::Closed))
            }
            Decision::Reverted(inclusion) => {
                tracing::warn!(channel = %id, tx = %inclusion.tx, "close reverted on chain; reading the channel again");
                self.store.abandon_close(&id).await?;
                self.manager.release(close.nonce).await;
                Ok(None)
            }
            Decision::Mined(inclusion) => {
                self.mined_unconfirmed += 1;
                self.store.record_close_mined(&id, Some(&inclusion)).await?;
                tracing::info!(channel = %id, tx = %inclusion.tx, block = inclusion.block, "close mined; awaiting confirmations");
                Ok(Some(Settled::Pending))
            }
            Decision::Wait => {
                self.mined_unconfirmed += 1;
                Ok(Some(Settled::Pending))
            }
            Decision::Reorged => {
                self.metrics.closes_reorged.inc();
                tracing::warn!(channel = %id, tx = ?record.mined.map(|m| m.tx), "a reorg removed the mined close; sending it again");
                self.store.record_close_mined(&id, None).await?;
                let sent = self.manager.broadcast(&latest).await;
                self.sent(&id, &latest, sent);
                Ok(Some(Settled::Pending))
            }
            Decision::NonceTaken => {
                self.metrics.closes_nonce_taken.inc();
                tracing::warn!(
                    channel = %id,
                    nonce = close.nonce,
                    "another transaction of the payee wallet used the close's nonce; closing again at a fresh nonce"
                );
                self.store.abandon_close(&id).await?;
                self.manager.release(close.nonce).await;
                Ok(None)
            }
            Decision::Rebroadcast => {
                let sent = self.manager.broadcast(&latest).await;
                self.sent(&id, &latest, sent);
                Ok(Some(Settled::Pending))
            }
            Decision::Bump(fees) | Decision::Reprice(fees) => {
                let replacement = self.manager.sign_replacement(&latest, fees).await?;
                self.store.record_replacement(&id, &replacement, seen.head).await?;
                self.metrics.close_fee_bumps.inc();
                tracing::info!(
                    channel = %id,
                    nonce = replacement.nonce,
                    tx = %replacement.hash,
                    replaces = %latest.hash,
                    max_fee_per_gas = fees.max_fee_per_gas,
                    max_priority_fee_per_gas = fees.max_priority_fee_per_gas,
                    "close not mined in time; re-signed at the same nonce at a new price"
                );
                let sent = self.manager.broadcast(&replacement).await;
                self.sent(&id, &replacement, sent);
                Ok(Some(Settled::Pending))
            }
            Decision::AtCap => {
                self.at_cap += 1;
                tracing::warn!(
                    channel = %id,
                    max_fee_per_gas = latest.fees.max_fee_per_gas,
                    market_max_fee_per_gas = seen.market.max_fee_per_gas,
                    cap = self.manager.policy().max_fee_per_gas,
                    "close waits at the fee cap (--max-fee-per-gas): the market asks more; it is re-priced when fees fall or the cap is raised"
                );
                let sent = self.manager.broadcast(&latest).await;
                self.sent(&id, &latest, sent);
                Ok(Some(Settled::Pending))
            }
        }
    }

    /// Logs how the node took a recorded transaction. A failed broadcast
    /// is no failure of the close: it is recorded, and the next pass sends
    /// it again or re-prices it.
    fn sent(&mut self, id: &B256, tx: &SignedTx, sent: Result<Sent, ChainError>) {
        match sent {
            Ok(Sent::Accepted | Sent::AlreadyKnown) => {}
            Ok(Sent::InsufficientFunds) => {
                self.warn_no_gas(id, &ChainError::Rejected("insufficient funds for gas".into()));
            }
            Ok(outcome) => {
                tracing::info!(channel = %id, tx = %tx.hash, ?outcome, "the node did not take the close; it is re-sent or re-priced")
            }
            Err(error) => {
                if error.is_transient() {
                    self.metrics.chain_errors.inc();
                }
                tracing::warn!(channel = %id, tx = %tx.hash, %error, "cannot broadcast the close; it is sent again next pass");
            }
        }
    }

    fn warn_no_gas(&mut self, id: &B256, error: &ChainError) {
        self.metrics.payee_gas_low.set(1);
        tracing::warn!(
            channel = %id,
            payee = %self.manager.payee(),
            %error,
            "payee wallet low on gas: it cannot pay for the close; fund it and the close is sent on the next pass"
        );
    }

    /// Publishes the payee's balance and the gas that closing `owing`
    /// channels needs at today's fees; warns when the balance covers less
    /// than twice that.
    async fn check_gas(&mut self, owing: u64) -> Result<(), ChainError> {
        let payee = self.manager.payee();
        let balance = self.chain.balance(payee).await?;
        let fees = self.chain.market_fees().await?;
        let per_close = U256::from(CLOSE_GAS) * U256::from(fees.max_fee_per_gas);
        let needed = per_close * U256::from(owing);
        Metrics::set_wei(&self.metrics.payee_balance_wei, balance);
        Metrics::set_wei(&self.metrics.close_gas_needed_wei, needed);
        let low = balance < needed * U256::from(GAS_MARGIN) || (owing == 0 && balance < per_close);
        self.metrics.payee_gas_low.set(i64::from(low));
        if low && !self.gas_low {
            tracing::warn!(
                %payee,
                balance_wei = %balance,
                needed_wei = %needed,
                channels = owing,
                "payee wallet low on gas: fund it before it cannot pay for the closes it owes"
            );
        } else if !low && self.gas_low {
            tracing::info!(%payee, balance_wei = %balance, "payee wallet funded for its closes again");
        }
        self.gas_low = low;
        Ok(())
    }

    async fn refunded(&self, id: &B256, amount: Amount) -> Result<(), StoreError> {
        // A close in flight for it will never be mined: its nonce is free
        // for the next close (or a gap filler), not held back for good.
        if let Some(record) = self.store.close_record(id).await?
            && let Some(latest) = record.attempts.last()
        {
            self.manager.release(latest.nonce).await;
        }
        if let Some(before) = self.store.mark_refunded(id).await? {
            if before.state.server_balance.is_zero() {
                tracing::info!(channel = %id, %amount, "channel refunded to its client; nothing was owed");
            } else {
                Metrics::add_wei(&self.metrics.wei_lost_to_refunds, before.state.server_balance);
                tracing::error!(
                    channel = %id,
                    lost = %before.state.server_balance,
                    seq = before.state.client_sequence_number,
                    "LOSS: channel refunded before it was closed; its server balance is lost"
                );
            }
        }
        Ok(())
    }

    /// Reads `Closed` and `Refunded` events from the last block read up to
    /// the confirmed height, in ranges of at most `--log-range-blocks`.
    async fn follow_events(&mut self, head: u64) -> Result<(), SettleError> {
        let confirmed = head.saturating_add(1).saturating_sub(self.manager.policy().confirmations.max(1));
        let mut from = match self.store.cursor(EVENTS_CURSOR).await? {
            Some(block) => block,
            // First start: channels are announced after they are opened,
            // so history before now holds nothing of ours.
            None => confirmed,
        };
        while from <= confirmed {
            let to = confirmed.min(from + self.log_range - 1);
            for event in self.chain.channel_events(from, to).await? {
                self.apply(event).await?;
            }
            self.store.set_cursor(EVENTS_CURSOR, to + 1).await?;
            from = to + 1;
        }
        Ok(())
    }

    async fn apply(&mut self, event: ChannelEvent) -> Result<(), StoreError> {
        match event {
            ChannelEvent::Closed { channel_id, server_balance, tx, .. } => {
                let nonce = self.store.channel(&channel_id).await?.and_then(|c| c.close_nonce);
                if self.store.mark_closed(&channel_id, tx.as_ref()).await? {
                    if let Some(nonce) = nonce {
                        self.manager.release(nonce).await;
                    }
                    Metrics::add_wei(&self.metrics.wei_settled, server_balance.into());
                    tracing::info!(channel = %channel_id, %server_balance, "channel closed on chain");
                }
                Ok(())
            }
            ChannelEvent::Refunded { channel_id, amount } => self.refunded(&channel_id, amount.into()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, Window};
    use tollstream_chain::Policy;
    use tollstream_chain::memory::MemoryChain;
    use tollstream_protocol::ChannelState;

    const POLICY: Policy = Policy { confirmations: 3, resubmit_blocks: 3, max_fee_per_gas: 100_000_000_000 };
    const PRICE: u64 = 100;

    #[test]
    fn a_channel_is_settled_from_its_expiry_less_the_published_margin() {
        assert_eq!(settle_by(1_000_000 + 86_400, 3_600), 1_000_000 + 82_800);
        // Whatever the lifetime: a year-long channel too.
        assert_eq!(settle_by(31_536_000, 3_600), 31_532_400);
        assert_eq!(settle_by(100, 3_600), 0);
    }

    /// The in-memory store and chain, and the settlement worker over them;
    /// no I/O, so the tests run on a paused clock.
    struct World {
        store: Arc<MemoryStore>,
        chain: Arc<MemoryChain>,
        policy: Policy,
    }

    impl World {
        async fn new(policy: Policy) -> World {
            World { store: Arc::new(MemoryStore::new()), chain: Arc::new(MemoryChain::new()), policy }
        }

        /// A fresh worker, as after a restart: nothing in memory but the store.
        fn settlement(&self) -> (Settlement, Metrics) {
            let metrics = Metrics::new();
            let manager = Arc::new(TxManager::new(self.chain.clone(), self.policy).unwrap());
            let opens = Arc::new(Opens::new(self.policy.confirmations, 2_000));
            let settlement =
                Settlement::new(self.store.clone(), self.chain.clone(), manager, opens, metrics.clone(), 2_000);
            (settlement, metrics)
        }

        /// Opens a channel of client `id` holding `windows` windows and pays
        /// `paid` of them; spent when `paid == windows`. `settle_by` far
        /// away unless `due`.
        async fn channel(&self, id: u8, windows: u64, paid: u64, due: bool) -> ChannelState {
            let mut state = self.chain.open_channel(id, windows * PRICE);
            let settle_by = if due { 0 } else { u64::MAX / 4 };
            self.store.insert_channel(&state, u64::MAX / 2, settle_by, OpenState::Confirmed, None).await.unwrap();
            for n in 0..paid {
                state = state.pay(Amount::from(PRICE)).unwrap();
                let window = Window { stream_id: "demo".into(), first_segment: n, segment_count: 1 };
                self.store.record_payment(&state, &window).await.unwrap();
            }
            state
        }

        async fn status(&self, id: B256) -> ChannelStatus {
            self.store.channel(&id).await.unwrap().unwrap().status
        }

        /// The nonces of every close of `id` handed to the node.
        fn nonces_sent_for(&self, id: B256) -> Vec<u64> {
            self.chain
                .sent()
                .into_iter()
                .filter(|tx| tx.input().unwrap().windows(32).any(|w| w == id.as_slice()))
                .map(|tx| tx.nonce)
                .collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_channel_is_closed_at_once_and_counts_at_the_confirmation_depth() {
        let world = World::new(POLICY).await;
        let spent = world.channel(1, 2, 2, false).await;
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        assert_eq!(world.status(spent.channel_id).await, ChannelStatus::Closing);
        assert_eq!(world.chain.sent().len(), 1);
        world.chain.mine();
        settlement.pass().await;
        assert_eq!(world.status(spent.channel_id).await, ChannelStatus::Closing, "one confirmation of three");
        world.chain.mine();
        world.chain.mine();
        settlement.pass().await;
        assert_eq!(world.status(spent.channel_id).await, ChannelStatus::Closed);
        assert_eq!(world.chain.closed_with(spent.channel_id), Some(U256::from(2 * PRICE)));
        assert_eq!(metrics.wei_settled.get(), (2 * PRICE) as f64);
    }

    #[tokio::test(start_paused = true)]
    async fn closes_of_different_channels_are_in_flight_together() {
        let world = World::new(POLICY).await;
        let a = world.channel(1, 1, 1, false).await;
        let b = world.channel(2, 3, 1, true).await;
        let (mut settlement, _) = world.settlement();
        settlement.pass().await;
        // Neither waited for the other's receipt: both sent in one pass.
        let mut nonces = [world.nonces_sent_for(a.channel_id), world.nonces_sent_for(b.channel_id)].concat();
        nonces.sort();
        assert_eq!(nonces, vec![0, 1]);
        world.chain.mine();
        world.chain.mine();
        world.chain.mine();
        settlement.pass().await;
        assert_eq!(world.status(a.channel_id).await, ChannelStatus::Closed);
        assert_eq!(world.status(b.channel_id).await, ChannelStatus::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_close_is_bumped_by_an_eighth_every_interval_until_it_lands() {
        let world = World::new(POLICY).await;
        let spent = world.channel(1, 1, 1, false).await;
        let (mut settlement, metrics) = world.settlement();
        // Congestion the market's estimate does not show: blocks take only
        // tips of 3 gwei, the estimate says 1.
        world.chain.set_min_tip(3_000_000_000);
        let mut blocks = 0;
        while world.status(spent.channel_id).await != ChannelStatus::Closed {
            settlement.pass().await;
            world.chain.mine();
            blocks += 1;
            assert!(blocks < 100, "never closed");
        }
        let mut versions: Vec<_> = world.chain.sent().iter().map(|tx| (tx.hash, tx.nonce, tx.fees)).collect();
        versions.dedup();
        assert!(versions.len() >= 9, "1 → 3 gwei takes nine bumps: {versions:?}");
        for pair in versions.windows(2) {
            let (old, new) = (pair[0].2, pair[1].2);
            assert_eq!(pair[0].1, pair[1].1, "every version at the same nonce");
            assert!(new.max_fee_per_gas * 8 >= old.max_fee_per_gas * 9, "{old:?} -> {new:?}");
            assert!(new.max_priority_fee_per_gas * 8 >= old.max_priority_fee_per_gas * 9, "{old:?} -> {new:?}");
        }
        // Three blocks between bumps, as configured.
        assert!(blocks >= 3 * (versions.len() - 1), "{blocks} blocks for {} versions", versions.len());
        assert_eq!(metrics.close_fee_bumps.get() as usize, versions.len() - 1);
        assert_eq!(world.chain.closes_of(spent.channel_id), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_priced_at_the_cap_waits_says_so_and_lands_when_fees_fall() {
        let policy = Policy { max_fee_per_gas: 20_000_000_000, ..POLICY };
        let world = World::new(policy).await;
        let spent = world.channel(1, 1, 1, false).await;
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        world.chain.set_base_fee(50_000_000_000);
        for _ in 0..12 {
            world.chain.mine();
            settlement.pass().await;
        }
        assert!(world.chain.sent().iter().all(|tx| tx.fees.max_fee_per_gas <= policy.max_fee_per_gas));
        assert!(world.chain.sent().iter().any(|tx| tx.fees.max_fee_per_gas == policy.max_fee_per_gas));
        assert_eq!(metrics.closes_at_fee_cap.get(), 1, "waits at the cap and says so");
        assert_eq!(world.status(spent.channel_id).await, ChannelStatus::Closing);
        world.chain.set_base_fee(10_000_000_000);
        for _ in 0..4 {
            settlement.pass().await;
            world.chain.mine();
        }
        settlement.pass().await;
        assert_eq!(world.status(spent.channel_id).await, ChannelStatus::Closed);
        assert_eq!(metrics.closes_at_fee_cap.get(), 0);
        assert_eq!(world.chain.closes_of(spent.channel_id), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_nonce_taken_by_a_foreign_transaction_is_followed_by_a_fresh_close() {
        let world = World::new(POLICY).await;
        let spent = world.channel(1, 1, 1, false).await;
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        world.chain.mine_foreign_transaction();
        settlement.pass().await;
        assert_eq!(metrics.closes_nonce_taken.get(), 0, "a foreign transaction counts once it is deep");
        world.chain.mine();
        world.chain.mine();
        settlement.pass().await;
        assert_eq!(metrics.closes_nonce_taken.get(), 1);
        let mut nonces = world.nonces_sent_for(spent.channel_id);
        nonces.dedup();
        assert_eq!(nonces, vec![0, 1], "sent again while the foreign one was shallow, then closed at a fresh nonce");
        for _ in 0..3 {
            world.chain.mine();
        }
        settlement.pass().await;
        assert_eq!(world.status(spent.channel_id).await, ChannelStatus::Closed);
        assert_eq!(world.chain.closed_with(spent.channel_id), Some(U256::from(PRICE)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reverted_close_is_abandoned_and_the_channel_read_again() {
        let world = World::new(POLICY).await;
        let paid = world.channel(1, 3, 1, true).await;
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        // The client's refund lands first: our close reverts.
        world.chain.refund(paid.channel_id);
        world.chain.mine();
        world.chain.mine();
        world.chain.mine();
        settlement.pass().await;
        settlement.pass().await;
        assert_eq!(world.status(paid.channel_id).await, ChannelStatus::Refunded);
        assert_eq!(metrics.wei_lost_to_refunds.get(), PRICE as f64);
        assert_eq!(world.chain.closes_of(paid.channel_id), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_mined_close_removed_by_a_reorg_is_sent_again_and_closes_once() {
        let world = World::new(POLICY).await;
        let spent = world.channel(1, 1, 1, false).await;
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        world.chain.mine();
        settlement.pass().await;
        // anvil's reorg drops the transactions it removes.
        world.chain.reorg(1, false);
        settlement.pass().await;
        assert_eq!(metrics.closes_reorged.get(), 1);
        assert_eq!(world.status(spent.channel_id).await, ChannelStatus::Closing);
        for _ in 0..3 {
            world.chain.mine();
            settlement.pass().await;
        }
        assert_eq!(world.status(spent.channel_id).await, ChannelStatus::Closed);
        assert_eq!(world.chain.closes_of(spent.channel_id), 1);
        assert_eq!(world.nonces_sent_for(spent.channel_id).into_iter().max(), Some(0), "one nonce only");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_at_every_step_sends_no_second_close_and_forgets_none() {
        let world = World::new(POLICY).await;
        let spent = world.channel(1, 1, 1, false).await;
        let other = world.channel(2, 2, 1, true).await;
        world.chain.set_base_fee(5_000_000_000);
        // Every pass by a new worker, as if the server restarted between
        // any two steps: send, wait, bump, mine, reorg, confirm.
        for round in 0..30 {
            let (mut settlement, _) = world.settlement();
            settlement.pass().await;
            match round {
                3 => world.chain.set_base_fee(60_000_000_000),
                12 => world.chain.set_base_fee(1_000_000_000),
                16 => world.chain.reorg(1, false),
                _ => {}
            }
            world.chain.mine();
        }
        let (mut settlement, _) = world.settlement();
        settlement.pass().await;
        for channel in [&spent, &other] {
            assert_eq!(world.status(channel.channel_id).await, ChannelStatus::Closed);
            assert_eq!(world.chain.closes_of(channel.channel_id), 1);
            let mut nonces = world.nonces_sent_for(channel.channel_id);
            nonces.dedup();
            assert_eq!(nonces.len(), 1, "every version of a close at one nonce: {nonces:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_payee_without_gas_is_warned_and_its_close_lands_on_the_next_pass_once_funded() {
        let world = World::new(POLICY).await;
        world.chain.set_balance(U256::ZERO);
        let spent = world.channel(1, 1, 1, false).await;
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        assert_eq!(metrics.payee_gas_low.get(), 1);
        assert!(metrics.close_gas_needed_wei.get() > 0.0);
        assert_eq!(metrics.payee_balance_wei.get(), 0.0);
        world.chain.mine();
        settlement.pass().await;
        assert_eq!(world.chain.closes_of(spent.channel_id), 0);
        world.chain.set_balance(U256::from(10u128.pow(18)));
        settlement.pass().await;
        assert_eq!(metrics.payee_gas_low.get(), 0);
        for _ in 0..3 {
            world.chain.mine();
        }
        settlement.pass().await;
        assert_eq!(world.status(spent.channel_id).await, ChannelStatus::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_superseded_channel_holding_money_is_closed_on_the_next_pass() {
        let world = World::new(POLICY).await;
        // Client 1 pays once on a channel due in a very long time ...
        let old = world.channel(1, 5, 1, false).await;
        let (mut settlement, _) = world.settlement();
        settlement.pass().await;
        assert!(world.chain.sent().is_empty(), "not due yet");
        // ... then announces a newer channel with the same key.
        let mut newer = world.chain.open_channel(9, 5 * PRICE);
        newer.client_public_key = old.client_public_key;
        world.store.insert_channel(&newer, u64::MAX / 2, u64::MAX / 4, OpenState::Confirmed, None).await.unwrap();
        settlement.pass().await;
        assert_eq!(world.nonces_sent_for(old.channel_id), vec![0]);
        assert!(world.nonces_sent_for(newer.channel_id).is_empty(), "the newer channel owes nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_counts_failures_and_settlement_resumes_by_itself() {
        let world = World::new(POLICY).await;
        let spent = world.channel(1, 1, 1, false).await;
        let (mut settlement, metrics) = world.settlement();
        world.chain.set_unavailable(true);
        settlement.pass().await;
        settlement.pass().await;
        assert!(metrics.settlement_failures.get() >= 2);
        assert!(metrics.chain_errors.get() >= 2);
        world.chain.set_unavailable(false);
        settlement.pass().await;
        for _ in 0..3 {
            world.chain.mine();
        }
        settlement.pass().await;
        assert_eq!(world.status(spent.channel_id).await, ChannelStatus::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_channel_is_retried_with_backoff_and_never_blocks_the_others() {
        let world = World::new(POLICY).await;
        // Stored, but its open is not on this chain: every attempt fails.
        let mut ghost = world.chain.open_channel(1, PRICE);
        world.chain.drop_open(ghost.channel_id);
        world.store.insert_channel(&ghost, u64::MAX / 2, 0, OpenState::Confirmed, None).await.unwrap();
        ghost = ghost.pay(Amount::from(PRICE)).unwrap();
        let window = Window { stream_id: "demo".into(), first_segment: 0, segment_count: 1 };
        world.store.record_payment(&ghost, &window).await.unwrap();
        let spent = world.channel(2, 1, 1, false).await;
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        assert_eq!(metrics.settlement_failures.get(), 1);
        assert_eq!(world.nonces_sent_for(spent.channel_id), vec![0], "the other channel went ahead");
        // Within the backoff (2 s after one failure) it is not tried again.
        settlement.pass().await;
        tokio::time::advance(Duration::from_millis(1_900)).await;
        settlement.pass().await;
        assert_eq!(metrics.settlement_failures.get(), 1);
        tokio::time::advance(Duration::from_millis(200)).await;
        settlement.pass().await;
        assert_eq!(metrics.settlement_failures.get(), 2);
        // The pause doubles, up to 30 s.
        tokio::time::advance(Duration::from_millis(3_900)).await;
        settlement.pass().await;
        assert_eq!(metrics.settlement_failures.get(), 2);
        for _ in 0..10 {
            tokio::time::advance(MAX_BACKOFF).await;
            settlement.pass().await;
        }
        assert_eq!(metrics.settlement_failures.get(), 12, "never paused longer than {MAX_BACKOFF:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_settled_on_an_open_that_is_not_confirmed() {
        let world = World::new(POLICY).await;
        let spent = world.channel(1, 1, 1, false).await;
        let (mut settlement, _) = world.settlement();
        settlement.opens.track(spent.channel_id, OpenState::Pending, None);
        settlement.pass().await;
        assert!(world.chain.sent().is_empty());
        settlement.opens.track(spent.channel_id, OpenState::Missing, None);
        settlement.pass().await;
        assert!(world.chain.sent().is_empty());
        settlement.opens.track(spent.channel_id, OpenState::Confirmed, None);
        settlement.pass().await;
        assert_eq!(world.chain.sent().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_open_another_process_accepted_is_not_settled_here() {
        let world = World::new(POLICY).await;
        // Stored by another server of the fleet, its open still pending;
        // this process's tracker has never seen it.
        let mut state = world.chain.open_channel(1, PRICE);
        world.store.insert_channel(&state, u64::MAX / 2, 0, OpenState::Pending, None).await.unwrap();
        state = state.pay(Amount::from(PRICE)).unwrap();
        let window = Window { stream_id: "demo".into(), first_segment: 0, segment_count: 1 };
        world.store.record_payment(&state, &window).await.unwrap();
        let (mut settlement, _) = world.settlement();
        settlement.pass().await;
        assert!(world.chain.sent().is_empty());
        assert_eq!(settlement.opens.state(&state.channel_id), OpenState::Pending, "followed from now on");
    }

    #[tokio::test(start_paused = true)]
    async fn a_nonce_left_by_a_refunded_channel_is_filled_so_later_closes_land() {
        let world = World::new(POLICY).await;
        world.chain.set_balance(U256::ZERO);
        let a = world.channel(1, 3, 1, true).await;
        let b = world.channel(2, 3, 1, true).await;
        let (mut settlement, _) = world.settlement();
        settlement.pass().await;
        // Both closes recorded (nonces 0 and 1), neither taken by the node.
        let nonce_of = async |id: B256| world.store.close_record(&id).await.unwrap().unwrap().attempts[0].nonce;
        let (first, second) = if nonce_of(a.channel_id).await == 0 { (a, b) } else { (b, a) };
        assert_eq!(nonce_of(second.channel_id).await, 1);
        // The channel holding nonce 0 is refunded: its close will never be mined.
        world.chain.refund(first.channel_id);
        for _ in 0..3 {
            world.chain.mine();
            settlement.pass().await;
        }
        assert_eq!(world.status(first.channel_id).await, ChannelStatus::Refunded);
        world.chain.set_balance(U256::from(10u128.pow(18)));
        for _ in 0..6 {
            settlement.pass().await;
            world.chain.mine();
        }
        settlement.pass().await;
        assert_eq!(world.status(second.channel_id).await, ChannelStatus::Closed);
        assert_eq!(world.chain.closes_of(second.channel_id), 1);
    }
}
