//! Settlement: close on chain every channel that holds server money, with
//! its latest signed state, before it expires (or at once when it is spent
//! or superseded by a newer channel of its client); close a gaslessly
//! opened channel holding none of the server's money too, when superseded
//! or at its margin, so its client gets the deposit back without paying
//! gas (PROTOCOL.md 1.1, "openChannel"); follow the registry's events so
//! channels closed or refunded by anyone are marked so.
//!
//! Closes go out in batches: the channels due in a pass are closed
//! `--close-batch-size` at a time by one `closeMany` transaction (a batch
//! of one by a plain `close`, which costs less gas and whose simulation
//! refuses a close that would fail). A batch is one transaction at one
//! nonce: signed once, recorded for every channel of the batch before it
//! is broadcast, re-priced, confirmed and re-sent after a reorg as a
//! whole. The registry skips an entry that cannot close rather than
//! failing the batch, so a confirmed batch is read entry by entry: a
//! channel whose entry emitted no `Closed` is read again on chain and
//! handled as any other (closed already, refunded, or closed again in a
//! later batch).
//!
//! Each pass takes every due channel one step further and never waits for
//! a receipt, so batches are in flight together and shutdown never waits
//! for the chain. A close's steps (signed, sent, re-priced, replaced,
//! mined, confirmed, reorged, abandoned) are decided by
//! [`tollstream_chain::CloseTx::step`] and carried out here, every one
//! recorded in the store before the chain sees it:
//! - a close is signed and recorded *before* it is broadcast, and a
//!   restart sees the recorded versions through, so a close is never sent
//!   twice as two different transactions at two nonces, nor forgotten;
//! - the record is a compare-and-swap on the sequence number of every
//!   channel of the batch, all or nothing, so a payment stored meanwhile
//!   is never left out: that channel leaves the batch, which is signed
//!   again without it, and it is closed with its new state next pass;
//! - a close counts once its receipt is `--confirmations` deep; one a reorg
//!   removes is sent again; one whose nonce another transaction took is
//!   abandoned and its channels closed again at a fresh nonce.

use crate::confirmations::Opens;
use crate::metrics::Metrics;
use crate::store::{ChannelStatus, CloseRecord, OpenState, Store, StoreError, StoredChannel};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tollstream_chain::{
    Attempt, Chain, ChainError, ChannelEvent, ChannelStatus as OnChainStatus, CloseTx, Decision, RecordCloses, Sent,
    SignedTx, StartError, Started, TxManager,
};
use tollstream_protocol::{Amount, B256, ChannelState, U256};

/// The store's name for the next block whose events to read.
const EVENTS_CURSOR: &str = "next_event_block";
/// The longest pause between retries of a failing channel.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Gas of one close sent alone (`close`), with headroom: it costs
/// 45,000–65,000 gas (ETH or token, final or refunding the client; the
/// README's Gas table).
pub const CLOSE_GAS: u64 = 70_000;
/// Gas one channel adds to a `closeMany`, with headroom: past the first,
/// each costs about 27,000 at most (a batch of 20 costs 18,000–29,000 a
/// channel, its transaction's 21,000 included; the README's Gas table).
pub const BATCH_ENTRY_GAS: u64 = 34_000;
/// Gas of a `closeMany` besides [`BATCH_ENTRY_GAS`] per channel: the
/// transaction's 21,000, the call and the payout, with headroom.
pub const BATCH_BASE_GAS: u64 = 40_000;
/// `--close-batch-size` by default: channels closed by one transaction.
pub const DEFAULT_CLOSE_BATCH_SIZE: usize = 20;
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

/// The gas that closing `channels` channels takes, `batch_size` to a
/// transaction: full batches, then the rest (alone, a plain `close`).
pub fn close_gas(channels: u64, batch_size: usize) -> u64 {
    let batch_size = (batch_size as u64).max(1);
    if batch_size == 1 {
        return channels.saturating_mul(CLOSE_GAS);
    }
    let batch = |n: u64| BATCH_BASE_GAS + n * BATCH_ENTRY_GAS;
    let rest = match channels % batch_size {
        0 => 0,
        1 => CLOSE_GAS,
        n => batch(n),
    };
    (channels / batch_size).saturating_mul(batch(batch_size)).saturating_add(rest)
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

/// What reading a channel on chain before a close decided.
enum Ready {
    /// Open on chain and worth closing: it joins a batch.
    Close,
    /// Nothing to send.
    Done(Settled),
}

/// The channels of a batch, for a log line.
struct Channels<'a>(&'a [B256]);

impl fmt::Display for Channels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, id) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

/// Records a signed close in the store for every channel it closes, with
/// a compare-and-swap on each one's sequence number.
struct Recorder(Arc<dyn Store>);

#[async_trait::async_trait]
impl RecordCloses for Recorder {
    type Error = StoreError;

    async fn record(&self, tx: &SignedTx, entries: &[ChannelState], head: u64) -> Result<Vec<B256>, StoreError> {
        let closes: Vec<(B256, u64)> =
            entries.iter().map(|state| (state.channel_id, state.client_sequence_number)).collect();
        let stale = self.0.record_closes(&closes, tx, head).await?;
        if !stale.is_empty() {
            tracing::info!(
                channels = %Channels(&stale),
                "a payment landed since the batch was read: closing without these channels, with their new states next pass"
            );
        }
        Ok(stale)
    }
}

/// The nonce of a recorded close, read from its signed versions (a close
/// recorded before version 1.1 has no nonce column).
fn nonce_of(record: &CloseRecord) -> u64 {
    record.attempts.last().expect("a recorded close has a signed version").nonce
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
    /// `--close-batch-size`: the most channels one transaction closes.
    batch_size: usize,
    /// Per failing channel: failures so far and when to try next. The
    /// channels of a batch fail and recover together.
    backoff: HashMap<B256, (u32, Instant)>,
    /// Channels of a batch that reverted as a whole: each is closed alone
    /// from then on, so one channel that makes a batch fail (a client
    /// wallet that burns the gas of its payout, say) cannot keep the
    /// others of its batch from closing. A lone close is simulated first
    /// and is not sent when it would fail.
    alone: std::collections::HashSet<B256>,
    /// Whether the nonces of recorded closes were handed to the manager.
    restored: bool,
    /// Close transactions waiting at the fee cap in the current pass.
    at_cap: i64,
    /// Close transactions mined but not yet deep enough, in the current
    /// pass.
    mined_unconfirmed: i64,
    /// Where in the due list the next pass starts.
    turn: usize,
    /// Whether the payee's lack of gas was already warned about.
    gas_low: bool,
    /// When the payee's gas was last checked.
    gas_checked: Option<Instant>,
}

impl Settlement {
    /// A worker closing [`DEFAULT_CLOSE_BATCH_SIZE`] channels a
    /// transaction; see [`with_batch_size`](Self::with_batch_size).
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
            batch_size: DEFAULT_CLOSE_BATCH_SIZE,
            backoff: HashMap::new(),
            alone: Default::default(),
            restored: false,
            at_cap: 0,
            mined_unconfirmed: 0,
            turn: 0,
            gas_low: false,
            gas_checked: None,
        }
    }

    /// Closes at most `size` channels with one transaction (`--close-batch-size`;
    /// 0 counts as 1).
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
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
    /// due channel one step: each close in flight (one per transaction,
    /// whatever its batch) one step, then every channel to close read on
    /// chain and closed in batches. A failing channel or batch is logged
    /// and retried later with backoff; it never blocks the others. An
    /// outage ends the pass.
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
        if let Err(error) = self.settle_due(due, head.number, head.timestamp).await {
            self.failed_pass(&error, "settlement stopped by a chain outage; resuming next pass");
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

    /// Takes the due channels one step: closes in flight first, grouped by
    /// transaction, then fresh closes in batches (with the channels a
    /// close in flight gave back).
    ///
    /// # Errors
    /// Only an outage, which ends the pass; anything else is one channel's
    /// or one batch's failure, backed off.
    async fn settle_due(&mut self, due: Vec<StoredChannel>, head: u64, now: u64) -> Result<(), SettleError> {
        let mut in_flight: BTreeMap<u64, Vec<(StoredChannel, CloseRecord)>> = BTreeMap::new();
        let mut fresh = Vec::new();
        for channel in due {
            let id = channel.state.channel_id;
            if self.backing_off(&id) {
                continue;
            }
            match channel.status {
                ChannelStatus::Closed | ChannelStatus::Refunded => {}
                ChannelStatus::Closing => match self.store.close_record(&id).await {
                    Ok(Some(record)) => in_flight.entry(nonce_of(&record)).or_default().push((channel, record)),
                    // Settled or abandoned since it was listed.
                    Ok(None) => fresh.push(channel),
                    Err(error) => self.failed_channels(&[id], &error.into()),
                },
                ChannelStatus::Open | ChannelStatus::Final => fresh.push(channel),
            }
        }
        for batch in in_flight.into_values() {
            let ids: Vec<B256> = batch.iter().map(|(c, _)| c.state.channel_id).collect();
            match self.advance(batch).await {
                Ok(again) => {
                    self.recovered(&ids);
                    fresh.extend(again);
                }
                Err(error) if error.is_outage() => return Err(error),
                Err(error) => self.failed_channels(&ids, &error),
            }
        }
        let mut closable = Vec::new();
        for channel in fresh {
            let id = channel.state.channel_id;
            match self.prepare(&channel, now).await {
                Ok(Ready::Close) => closable.push(channel),
                Ok(Ready::Done(outcome)) => {
                    self.recovered(&[id]);
                    tracing::debug!(channel = %id, ?outcome, "settlement step");
                }
                Err(error) if error.is_outage() => return Err(error),
                Err(error) => self.failed_channels(&[id], &error),
            }
        }
        let (lone, mut closable): (Vec<_>, Vec<_>) =
            closable.into_iter().partition(|channel| self.alone.contains(&channel.state.channel_id));
        for channel in lone {
            let id = channel.state.channel_id;
            match self.start(vec![channel], head).await {
                Ok(()) => {
                    // Started alone; should it ever come back, a batch
                    // may try it again.
                    self.alone.remove(&id);
                    self.recovered(&[id]);
                }
                Err(error) if error.is_outage() => return Err(error),
                Err(error) => self.failed_channels(&[id], &error),
            }
        }
        while !closable.is_empty() {
            let rest = closable.split_off(self.batch_size.min(closable.len()));
            let batch = std::mem::replace(&mut closable, rest);
            let ids: Vec<B256> = batch.iter().map(|c| c.state.channel_id).collect();
            match self.start(batch, head).await {
                Ok(()) => self.recovered(&ids),
                Err(error) if error.is_outage() => return Err(error),
                Err(error) => self.failed_channels(&ids, &error),
            }
        }
        Ok(())
    }

    fn backing_off(&self, id: &B256) -> bool {
        self.backoff.get(id).is_some_and(|(_, next)| Instant::now() < *next)
    }

    fn recovered(&mut self, ids: &[B256]) {
        for id in ids {
            self.backoff.remove(id);
        }
    }

    /// Counts one failure of `ids` (a channel, or a batch's channels) and
    /// pauses them, twice as long each time up to [`MAX_BACKOFF`].
    fn failed_channels(&mut self, ids: &[B256], error: &SettleError) {
        let Some(first) = ids.first() else { return };
        self.metrics.settlement_failures.inc();
        let failures = self.backoff.get(first).map_or(0, |(n, _)| *n) + 1;
        let pause = Duration::from_secs(1u64 << failures.min(5)).min(MAX_BACKOFF);
        for id in ids {
            self.backoff.insert(*id, (failures, Instant::now() + pause));
        }
        tracing::warn!(channels = %Channels(ids), %error, failures, retry_in = ?pause, "settlement failed");
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
    /// close to be confirmed. A close in flight is taken a step with the
    /// rest of its batch; a new close is sent alone.
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
                {
                    nonces.push(nonce_of(&record));
                }
            }
            self.manager.restore(nonces).await;
            self.restored = true;
        }
        Ok(())
    }

    /// Every channel whose close in flight is at `nonce`: the batch it
    /// belongs to.
    async fn batch_at(&self, nonce: u64) -> Result<Vec<(StoredChannel, CloseRecord)>, StoreError> {
        let mut batch = Vec::new();
        for channel in self.store.awaiting_settlement(0).await? {
            if channel.status == ChannelStatus::Closing
                && let Some(record) = self.store.close_record(&channel.state.channel_id).await?
                && nonce_of(&record) == nonce
            {
                batch.push((channel, record));
            }
        }
        Ok(batch)
    }

    /// One channel one step, for [`settle_now`](Self::settle_now).
    async fn step(&mut self, channel: &StoredChannel, head: u64, now: u64) -> Result<Settled, SettleError> {
        let id = channel.state.channel_id;
        let mut channel = channel.clone();
        match channel.status {
            ChannelStatus::Closed | ChannelStatus::Refunded => return Ok(Settled::AlreadyClosed),
            ChannelStatus::Closing => {
                if let Some(record) = self.store.close_record(&id).await? {
                    let batch = self.batch_at(nonce_of(&record)).await?;
                    let again = self.advance(batch).await?;
                    let reread = again.into_iter().find(|c| c.state.channel_id == id);
                    match reread {
                        // Its close is gone: read it and close it again at once.
                        Some(reread) => channel = reread,
                        None => {
                            let now = self.store.channel(&id).await?.ok_or(StoreError::NotFound)?;
                            return Ok(match now.status {
                                ChannelStatus::Closed => Settled::Closed,
                                ChannelStatus::Refunded => Settled::Refunded,
                                _ => Settled::Pending,
                            });
                        }
                    }
                }
            }
            ChannelStatus::Open | ChannelStatus::Final => {}
        }
        match self.prepare(&channel, now).await? {
            Ready::Done(outcome) => Ok(outcome),
            Ready::Close => {
                self.start(vec![channel], head).await?;
                Ok(Settled::Pending)
            }
        }
    }

    /// Reads a channel without a close in flight on chain before it joins
    /// a batch: one closed or refunded already is marked so; one that
    /// holds nothing to close is left alone.
    async fn prepare(&mut self, channel: &StoredChannel, now: u64) -> Result<Ready, SettleError> {
        let id = channel.state.channel_id;
        // Nothing is settled on an open that may still be reorged away.
        if self.opens.resolve(channel) != OpenState::Confirmed {
            return Ok(Ready::Done(Settled::OpenUnconfirmed));
        }
        let onchain = self.chain.channel(id).await?;
        match onchain.status {
            OnChainStatus::Open => {}
            OnChainStatus::Closed => {
                self.store.mark_closed(&id, None).await?;
                return Ok(Ready::Done(Settled::AlreadyClosed));
            }
            OnChainStatus::Refunded => {
                self.refunded(&id, onchain.deposit.into()).await?;
                return Ok(Ready::Done(Settled::Refunded));
            }
            OnChainStatus::None => return Err(SettleError::NotOnChain),
        }
        if now >= onchain.expires_at {
            return Err(SettleError::Expired);
        }
        // A channel holding none of the server's money is closed only when
        // the server opened it for its client (the store lists it only
        // when superseded or at its margin): the client gets its deposit
        // back without paying gas.
        if channel.state.server_balance.is_zero() && !channel.gasless {
            return Ok(Ready::Done(Settled::NothingOwed));
        }
        Ok(Ready::Close)
    }

    /// Signs, records and sends one close of `batch` (channels read on
    /// chain just now). A channel whose state a payment replaced meanwhile
    /// leaves the batch, which is signed again without it; it is closed
    /// with its new state next pass.
    async fn start(&mut self, batch: Vec<StoredChannel>, head: u64) -> Result<(), SettleError> {
        let ids: Vec<B256> = batch.iter().map(|c| c.state.channel_id).collect();
        let states = batch.into_iter().map(|c| c.state).collect();
        let started = self.manager.start_closes(states, &Recorder(self.store.clone())).await;
        let started = match started {
            Err(StartError::Chain(error)) if error.is_insufficient_funds() => {
                self.warn_no_gas(&ids, &error);
                return Ok(());
            }
            other => other?,
        };
        let Some(Started { tx, states, sent }) = started else { return Ok(()) };
        self.metrics.close_batch_size.observe(states.len() as f64);
        let closing: Vec<B256> = states.iter().map(|s| s.channel_id).collect();
        for state in &states {
            tracing::debug!(
                channel = %state.channel_id,
                tx = %tx.hash,
                seq = state.client_sequence_number,
                server_balance = %state.server_balance,
                "channel in close batch"
            );
        }
        tracing::info!(
            channels = %Channels(&closing),
            size = states.len(),
            tx = %tx.hash,
            nonce = tx.nonce,
            max_fee_per_gas = tx.fees.max_fee_per_gas,
            gas_limit = tx.gas_limit,
            signed_at = head,
            "closing channels"
        );
        self.sent(&closing, &tx, sent);
        Ok(())
    }

    /// Takes one close in flight (every channel of its batch, which share
    /// its versions) one step. Returns the channels to read again and
    /// close anew: all of them when the close was abandoned, those whose
    /// entry the registry skipped when it was confirmed.
    async fn advance(&mut self, batch: Vec<(StoredChannel, CloseRecord)>) -> Result<Vec<StoredChannel>, SettleError> {
        // Every channel of a batch holds the same versions (a replacement
        // is recorded for all of them at once); the longest record is the
        // newest, should one channel have missed one.
        let mut newest: Option<CloseRecord> = None;
        let mut mined = None;
        let mut ids = Vec::with_capacity(batch.len());
        let mut channels = Vec::with_capacity(batch.len());
        for (channel, record) in batch {
            ids.push(channel.state.channel_id);
            channels.push(channel);
            mined = mined.or(record.mined);
            let longer = match &newest {
                Some(newest) => newest.attempts.len() < record.attempts.len(),
                None => true,
            };
            if longer {
                newest = Some(record);
            }
        }
        let Some(record) = newest else { return Ok(Vec::new()) };
        let latest = record.attempts.last().expect("a recorded close has a signed version").clone();
        let mut attempts = Vec::with_capacity(record.attempts.len());
        for attempt in &record.attempts {
            attempts.push(Attempt { hash: attempt.hash, fees: attempt.fees });
        }
        let close = CloseTx { nonce: latest.nonce, attempts, signed_at_block: record.signed_at_block, mined };
        let seen = self.manager.observe(&close).await?;
        match self.manager.decide(&close, &seen) {
            Decision::Confirmed(inclusion) => {
                let closed = self.chain.closed_in(inclusion.tx).await?;
                self.manager.release(close.nonce).await;
                let mut again = Vec::new();
                for channel in &channels {
                    let id = channel.state.channel_id;
                    if closed.contains(&id) {
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
                    } else {
                        self.metrics.close_entries_skipped.inc();
                        tracing::warn!(
                            channel = %id,
                            tx = %inclusion.tx,
                            "the registry skipped this channel's close entry; reading the channel again"
                        );
                        self.store.abandon_close(&id).await?;
                        again.push(id);
                    }
                }
                self.reread(&again).await
            }
            Decision::Reverted(inclusion) => {
                tracing::warn!(channels = %Channels(&ids), tx = %inclusion.tx, "close reverted on chain; reading the channels again");
                if ids.len() > 1 {
                    self.alone.extend(ids.iter().copied());
                }
                for id in &ids {
                    self.store.abandon_close(id).await?;
                }
                self.manager.release(close.nonce).await;
                self.reread(&ids).await
            }
            Decision::Mined(inclusion) => {
                self.mined_unconfirmed += 1;
                for id in &ids {
                    self.store.record_close_mined(id, Some(&inclusion)).await?;
                }
                tracing::info!(channels = %Channels(&ids), tx = %inclusion.tx, block = inclusion.block, "close mined; awaiting confirmations");
                Ok(Vec::new())
            }
            Decision::Wait => {
                self.mined_unconfirmed += 1;
                Ok(Vec::new())
            }
            Decision::Reorged => {
                self.metrics.closes_reorged.inc();
                tracing::warn!(channels = %Channels(&ids), tx = ?close.mined.map(|m| m.tx), "a reorg removed the mined close; sending it again");
                for id in &ids {
                    self.store.record_close_mined(id, None).await?;
                }
                let sent = self.manager.broadcast(&latest).await;
                self.sent(&ids, &latest, sent);
                Ok(Vec::new())
            }
            Decision::NonceTaken => {
                self.metrics.closes_nonce_taken.inc();
                tracing::warn!(
                    channels = %Channels(&ids),
                    nonce = close.nonce,
                    "another transaction of the payee wallet used the close's nonce; closing again at a fresh nonce"
                );
                for id in &ids {
                    self.store.abandon_close(id).await?;
                }
                self.manager.release(close.nonce).await;
                self.reread(&ids).await
            }
            Decision::Rebroadcast => {
                let sent = self.manager.broadcast(&latest).await;
                self.sent(&ids, &latest, sent);
                Ok(Vec::new())
            }
            Decision::Bump(fees) | Decision::Reprice(fees) => {
                let replacement = self.manager.sign_replacement(&latest, fees).await?;
                self.store.record_replacements(&ids, &replacement, seen.head).await?;
                self.metrics.close_fee_bumps.inc();
                tracing::info!(
                    channels = %Channels(&ids),
                    nonce = replacement.nonce,
                    tx = %replacement.hash,
                    replaces = %latest.hash,
                    max_fee_per_gas = fees.max_fee_per_gas,
                    max_priority_fee_per_gas = fees.max_priority_fee_per_gas,
                    "close not mined in time; re-signed at the same nonce at a new price"
                );
                let sent = self.manager.broadcast(&replacement).await;
                self.sent(&ids, &replacement, sent);
                Ok(Vec::new())
            }
            Decision::AtCap => {
                self.at_cap += 1;
                tracing::warn!(
                    channels = %Channels(&ids),
                    max_fee_per_gas = latest.fees.max_fee_per_gas,
                    market_max_fee_per_gas = seen.market.max_fee_per_gas,
                    cap = self.manager.policy().max_fee_per_gas,
                    "close waits at the fee cap (--max-fee-per-gas): the market asks more; it is re-priced when fees fall or the cap is raised"
                );
                let sent = self.manager.broadcast(&latest).await;
                self.sent(&ids, &latest, sent);
                Ok(Vec::new())
            }
        }
    }

    /// The channels `ids` as stored now.
    async fn reread(&self, ids: &[B256]) -> Result<Vec<StoredChannel>, SettleError> {
        let mut channels = Vec::new();
        for id in ids {
            if let Some(channel) = self.store.channel(id).await? {
                channels.push(channel);
            }
        }
        Ok(channels)
    }

    /// Logs how the node took a recorded transaction. A failed broadcast
    /// is no failure of the close: it is recorded, and the next pass sends
    /// it again or re-prices it.
    fn sent(&mut self, ids: &[B256], tx: &SignedTx, sent: Result<Sent, ChainError>) {
        match sent {
            Ok(Sent::Accepted | Sent::AlreadyKnown) => {}
            Ok(Sent::InsufficientFunds) => {
                self.warn_no_gas(ids, &ChainError::Rejected("insufficient funds for gas".into()));
            }
            Ok(outcome) => {
                tracing::info!(channels = %Channels(ids), tx = %tx.hash, ?outcome, "the node did not take the close; it is re-sent or re-priced")
            }
            Err(error) => {
                if error.is_transient() {
                    self.metrics.chain_errors.inc();
                }
                tracing::warn!(channels = %Channels(ids), tx = %tx.hash, %error, "cannot broadcast the close; it is sent again next pass");
            }
        }
    }

    fn warn_no_gas(&mut self, ids: &[B256], error: &ChainError) {
        self.metrics.payee_gas_low.set(1);
        tracing::warn!(
            channels = %Channels(ids),
            payee = %self.manager.payee(),
            %error,
            "payee wallet low on gas: it cannot pay for the close; fund it and the close is sent on the next pass"
        );
    }

    /// Publishes the payee's balance and the gas that closing `owing`
    /// channels needs at today's fees, `--close-batch-size` to a
    /// transaction; warns when the balance covers less than twice that.
    async fn check_gas(&mut self, owing: u64) -> Result<(), ChainError> {
        let payee = self.manager.payee();
        let balance = self.chain.balance(payee).await?;
        let fees = self.chain.market_fees().await?;
        let per_close = U256::from(CLOSE_GAS) * U256::from(fees.max_fee_per_gas);
        let needed = U256::from(close_gas(owing, self.batch_size)) * U256::from(fees.max_fee_per_gas);
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
        // A close in flight for it alone will never be mined: its nonce is
        // free for the next close (or a gap filler), not held back for
        // good. A batch still closing other channels keeps its nonce.
        if let Some(record) = self.store.close_record(id).await? {
            let nonce = nonce_of(&record);
            if self.batch_at(nonce).await?.iter().all(|(channel, _)| channel.state.channel_id == *id) {
                self.manager.release(nonce).await;
            }
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

    async fn apply(&mut self, event: ChannelEvent) -> Result<(), SettleError> {
        match event {
            ChannelEvent::Closed { channel_id, server_balance, tx, .. } => {
                let nonce = self.store.channel(&channel_id).await?.and_then(|c| c.close_nonce);
                if self.store.mark_closed(&channel_id, tx.as_ref()).await? {
                    // Its close's nonce is free once the chain used it; a
                    // batch still in flight at it, closing other channels,
                    // keeps it.
                    if let Some(nonce) = nonce
                        && self.chain.nonce(self.manager.payee()).await? > nonce
                    {
                        self.manager.release(nonce).await;
                    }
                    Metrics::add_wei(&self.metrics.wei_settled, server_balance.into());
                    tracing::info!(channel = %channel_id, %server_balance, "channel closed on chain");
                }
                Ok(())
            }
            ChannelEvent::Refunded { channel_id, amount } => Ok(self.refunded(&channel_id, amount.into()).await?),
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

    #[test]
    fn the_gas_owed_counts_full_batches_then_the_rest() {
        assert_eq!(close_gas(0, 20), 0);
        assert_eq!(close_gas(1, 20), CLOSE_GAS, "alone: a plain close");
        assert_eq!(close_gas(3, 1), 3 * CLOSE_GAS);
        assert_eq!(close_gas(20, 20), BATCH_BASE_GAS + 20 * BATCH_ENTRY_GAS);
        assert_eq!(close_gas(41, 20), 2 * (BATCH_BASE_GAS + 20 * BATCH_ENTRY_GAS) + CLOSE_GAS);
        // A batch of 20 budgets under 40,000 a channel, within the headroom
        // of the measured 18,000-29,000.
        assert!(close_gas(20, 20) / 20 < 40_000);
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
            self.settlement_over(self.store.clone())
        }

        /// A fresh worker closing at most `size` channels a transaction.
        fn settlement_batched(&self, size: usize) -> (Settlement, Metrics) {
            let (settlement, metrics) = self.settlement();
            (settlement.with_batch_size(size), metrics)
        }

        /// A fresh worker over `store` (the world's, seen through a test double).
        fn settlement_over(&self, store: Arc<dyn Store>) -> (Settlement, Metrics) {
            let metrics = Metrics::new();
            let manager = Arc::new(TxManager::new(self.chain.clone(), self.policy).unwrap());
            let opens = Arc::new(Opens::new(self.policy.confirmations, 2_000));
            let settlement = Settlement::new(store, self.chain.clone(), manager, opens, metrics.clone(), 2_000);
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
        // One channel a transaction: each a plain `close` of its own.
        let (mut settlement, _) = world.settlement_batched(1);
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
        // Due together, they went out as one batch and stayed one.
        assert_eq!(world.chain.close_many_sizes(), vec![2]);
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
        // Two closes of their own (a batch would share one nonce).
        let (mut settlement, _) = world.settlement_batched(1);
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

    /// The world's store, but a payment lands on `victim` just before the
    /// first close is recorded: the race a close must never lose.
    struct PaymentDuringRecord {
        inner: Arc<MemoryStore>,
        payment: std::sync::Mutex<Option<(ChannelState, Window)>>,
    }

    #[async_trait::async_trait]
    impl Store for PaymentDuringRecord {
        async fn insert_channel(
            &self,
            state: &ChannelState,
            expires_at: u64,
            settle_by: u64,
            open: OpenState,
            open_block: Option<tollstream_chain::BlockRef>,
        ) -> Result<StoredChannel, StoreError> {
            self.inner.insert_channel(state, expires_at, settle_by, open, open_block).await
        }
        async fn mark_gasless(&self, id: &B256) -> Result<(), StoreError> {
            self.inner.mark_gasless(id).await
        }
        async fn set_open(
            &self,
            id: &B256,
            open: OpenState,
            block: Option<tollstream_chain::BlockRef>,
        ) -> Result<(), StoreError> {
            self.inner.set_open(id, open, block).await
        }
        async fn channel(&self, id: &B256) -> Result<Option<StoredChannel>, StoreError> {
            self.inner.channel(id).await
        }
        async fn newest_for_client(
            &self,
            key: &tollstream_protocol::PublicKey,
        ) -> Result<Option<StoredChannel>, StoreError> {
            self.inner.newest_for_client(key).await
        }
        async fn record_payment(&self, next: &ChannelState, window: &Window) -> Result<(), StoreError> {
            self.inner.record_payment(next, window).await
        }
        async fn awaiting_settlement(&self, now: u64) -> Result<Vec<StoredChannel>, StoreError> {
            self.inner.awaiting_settlement(now).await
        }
        async fn record_close(&self, id: &B256, sequence: u64, tx: &SignedTx, head: u64) -> Result<(), StoreError> {
            self.inner.record_close(id, sequence, tx, head).await
        }
        async fn record_closes(
            &self,
            closes: &[(B256, u64)],
            tx: &SignedTx,
            head: u64,
        ) -> Result<Vec<B256>, StoreError> {
            let payment = self.payment.lock().unwrap().take();
            if let Some((state, window)) = payment {
                self.inner.record_payment(&state, &window).await?;
            }
            self.inner.record_closes(closes, tx, head).await
        }
        async fn record_replacements(&self, ids: &[B256], tx: &SignedTx, head: u64) -> Result<(), StoreError> {
            self.inner.record_replacements(ids, tx, head).await
        }
        async fn record_replacement(&self, id: &B256, tx: &SignedTx, head: u64) -> Result<(), StoreError> {
            self.inner.record_replacement(id, tx, head).await
        }
        async fn record_close_mined(
            &self,
            id: &B256,
            mined: Option<&tollstream_chain::Inclusion>,
        ) -> Result<(), StoreError> {
            self.inner.record_close_mined(id, mined).await
        }
        async fn close_record(&self, id: &B256) -> Result<Option<CloseRecord>, StoreError> {
            self.inner.close_record(id).await
        }
        async fn abandon_close(&self, id: &B256) -> Result<(), StoreError> {
            self.inner.abandon_close(id).await
        }
        async fn mark_closed(&self, id: &B256, tx: Option<&B256>) -> Result<bool, StoreError> {
            self.inner.mark_closed(id, tx).await
        }
        async fn mark_refunded(&self, id: &B256) -> Result<Option<StoredChannel>, StoreError> {
            self.inner.mark_refunded(id).await
        }
        async fn cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
            self.inner.cursor(name).await
        }
        async fn set_cursor(&self, name: &str, value: u64) -> Result<(), StoreError> {
            self.inner.set_cursor(name, value).await
        }
        async fn list(&self) -> Result<Vec<StoredChannel>, StoreError> {
            self.inner.list().await
        }
    }

    /// Mines `blocks` blocks, a pass after each.
    async fn mine_and_pass(world: &World, settlement: &mut Settlement, blocks: usize) {
        for _ in 0..blocks {
            world.chain.mine();
            settlement.pass().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn channels_due_together_are_closed_by_one_transaction_at_one_nonce() {
        let world = World::new(POLICY).await;
        let mut states = Vec::new();
        for id in 1..=5 {
            states.push(world.channel(id, 3, id as u64 % 3 + 1, true).await);
        }
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        assert_eq!(world.chain.sent().len(), 1, "one transaction for the five");
        for state in &states {
            assert_eq!(world.nonces_sent_for(state.channel_id), vec![0]);
            assert_eq!(world.status(state.channel_id).await, ChannelStatus::Closing, "recorded for every channel");
        }
        assert_eq!(metrics.close_batch_size.get_sample_count(), 1);
        assert_eq!(metrics.close_batch_size.get_sample_sum(), 5.0);
        world.chain.mine();
        settlement.pass().await;
        assert_eq!(metrics.closes_mined_unconfirmed.get(), 1, "one transaction mined, not five closes");
        mine_and_pass(&world, &mut settlement, 2).await;
        assert_eq!(world.chain.close_many_sizes(), vec![5]);
        let mut total = 0;
        for state in &states {
            assert_eq!(world.status(state.channel_id).await, ChannelStatus::Closed);
            assert_eq!(world.chain.closed_with(state.channel_id), Some(state.server_balance.0));
            total += u64::try_from(state.server_balance.0).unwrap();
        }
        assert_eq!(metrics.wei_settled.get(), total as f64);
        assert_eq!(world.chain.sent().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn channels_due_beyond_the_batch_size_go_in_several_batches() {
        let world = World::new(POLICY).await;
        let mut states = Vec::new();
        for id in 1..=5 {
            states.push(world.channel(id, 3, 1, true).await);
        }
        let (mut settlement, metrics) = world.settlement_batched(2);
        settlement.pass().await;
        // Two batches of two and a lone plain close, in flight together.
        let mut nonces: Vec<u64> = states.iter().flat_map(|s| world.nonces_sent_for(s.channel_id)).collect();
        nonces.sort();
        assert_eq!(nonces, vec![0, 0, 1, 1, 2]);
        assert_eq!(metrics.close_batch_size.get_sample_sum(), 5.0);
        mine_and_pass(&world, &mut settlement, 3).await;
        assert_eq!(world.chain.close_many_sizes(), vec![2, 2], "the fifth alone with a plain close");
        for state in &states {
            assert_eq!(world.status(state.channel_id).await, ChannelStatus::Closed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_batch_reverts_its_channels_close_alone_and_one_bad_channel_holds_back_none() {
        let world = World::new(POLICY).await;
        let states = [
            world.channel(1, 3, 1, true).await,
            world.channel(2, 3, 1, true).await,
            world.channel(3, 3, 1, true).await,
        ];
        // Channel 2 makes any batch it is in revert; alone it closes.
        world.chain.spoil_batches_with(states[1].channel_id);
        let (mut settlement, _) = world.settlement_batched(20);
        settlement.pass().await;
        assert_eq!(world.chain.sent().len(), 1, "one batch");
        mine_and_pass(&world, &mut settlement, 3).await;
        mine_and_pass(&world, &mut settlement, 3).await;
        for state in &states {
            assert_eq!(world.status(state.channel_id).await, ChannelStatus::Closed, "{}", state.channel_id);
            assert_eq!(world.chain.closes_of(state.channel_id), 1);
        }
        assert_eq!(world.chain.close_many_sizes(), vec![3], "the reverted batch, then plain closes");
        assert_eq!(world.chain.sent().len(), 4, "the batch and one close each");
    }

    #[tokio::test(start_paused = true)]
    async fn a_payment_landing_while_a_batch_is_recorded_leaves_its_channel_out_never_closed_stale() {
        let world = World::new(POLICY).await;
        let a = world.channel(1, 3, 1, true).await;
        let b = world.channel(2, 3, 1, true).await;
        let c = world.channel(3, 3, 1, true).await;
        // b's second payment lands between the read and the record.
        let paid = b.pay(Amount::from(PRICE)).unwrap();
        let window = Window { stream_id: "demo".into(), first_segment: 1, segment_count: 1 };
        let store =
            Arc::new(PaymentDuringRecord { inner: world.store.clone(), payment: Some((paid.clone(), window)).into() });
        let (mut settlement, _) = world.settlement_over(store);
        settlement.pass().await;
        // Signed again without b, at the same nonce; only that one sent.
        assert_eq!(world.chain.sent().len(), 1);
        assert_eq!(world.nonces_sent_for(a.channel_id), vec![0]);
        assert_eq!(world.nonces_sent_for(c.channel_id), vec![0]);
        assert!(world.nonces_sent_for(b.channel_id).is_empty(), "b's stale state was never sent");
        let stored_b = world.store.channel(&b.channel_id).await.unwrap().unwrap();
        assert_eq!((stored_b.status, stored_b.state.client_sequence_number), (ChannelStatus::Open, 2));
        // The next pass closes b with its new state.
        settlement.pass().await;
        assert_eq!(world.nonces_sent_for(b.channel_id), vec![1]);
        mine_and_pass(&world, &mut settlement, 3).await;
        assert_eq!(world.chain.closed_with(b.channel_id), Some(U256::from(2 * PRICE)));
        for id in [a.channel_id, b.channel_id, c.channel_id] {
            assert_eq!(world.status(id).await, ChannelStatus::Closed);
            assert_eq!(world.chain.closes_of(id), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_the_registry_skipped_is_read_again_and_closed_in_a_later_batch() {
        let world = World::new(POLICY).await;
        let a = world.channel(1, 3, 1, true).await;
        let b = world.channel(2, 3, 2, true).await;
        let c = world.channel(3, 3, 1, true).await;
        world.chain.refuse_closes_of(b.channel_id, 1);
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        mine_and_pass(&world, &mut settlement, 3).await;
        assert_eq!(metrics.close_entries_skipped.get(), 1);
        assert_eq!(world.status(a.channel_id).await, ChannelStatus::Closed);
        assert_eq!(world.status(c.channel_id).await, ChannelStatus::Closed);
        // b was read again and closed at once, at a fresh nonce.
        assert_eq!(world.status(b.channel_id).await, ChannelStatus::Closing);
        assert_eq!(world.nonces_sent_for(b.channel_id).last(), Some(&1));
        mine_and_pass(&world, &mut settlement, 3).await;
        assert_eq!(world.status(b.channel_id).await, ChannelStatus::Closed);
        assert_eq!(world.chain.closed_with(b.channel_id), Some(U256::from(2 * PRICE)));
        assert_eq!(world.chain.closes_of(b.channel_id), 1);
        assert_eq!(metrics.wei_settled.get(), (4 * PRICE) as f64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_skipped_entry_of_a_refunded_channel_is_marked_refunded_and_the_rest_closes() {
        let world = World::new(POLICY).await;
        let a = world.channel(1, 3, 1, true).await;
        let b = world.channel(2, 3, 1, true).await;
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        // The client refunds b before the batch is mined: its entry is skipped.
        world.chain.refund(b.channel_id);
        mine_and_pass(&world, &mut settlement, 4).await;
        assert_eq!(world.status(a.channel_id).await, ChannelStatus::Closed);
        assert_eq!(world.status(b.channel_id).await, ChannelStatus::Refunded);
        assert_eq!(metrics.wei_lost_to_refunds.get(), PRICE as f64);
        assert_eq!(world.chain.closes_of(b.channel_id), 0);
        assert_eq!(world.chain.sent().len(), 1, "nothing sent again for b");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_batch_is_bumped_as_one_transaction() {
        let world = World::new(POLICY).await;
        let states = [world.channel(1, 1, 1, false).await, world.channel(2, 3, 1, true).await];
        let (mut settlement, metrics) = world.settlement();
        world.chain.set_min_tip(3_000_000_000);
        let mut blocks = 0;
        while world.status(states[0].channel_id).await != ChannelStatus::Closed {
            settlement.pass().await;
            world.chain.mine();
            blocks += 1;
            assert!(blocks < 100, "never closed");
        }
        settlement.pass().await;
        let mut versions: Vec<_> = world.chain.sent().iter().map(|tx| (tx.hash, tx.nonce)).collect();
        versions.dedup();
        assert!(versions.len() >= 9, "{versions:?}");
        assert!(versions.iter().all(|(_, nonce)| *nonce == 0), "every version at one nonce");
        // Every version closes both channels; bumps count transactions.
        for state in &states {
            assert_eq!(world.nonces_sent_for(state.channel_id).len(), world.chain.sent().len());
            assert_eq!(world.status(state.channel_id).await, ChannelStatus::Closed);
            assert_eq!(world.chain.closes_of(state.channel_id), 1);
        }
        assert_eq!(metrics.close_fee_bumps.get() as usize, versions.len() - 1);
        assert_eq!(world.chain.close_many_sizes(), vec![2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reorged_batch_is_sent_again_once_and_closes_each_channel_once() {
        let world = World::new(POLICY).await;
        let states = [world.channel(1, 1, 1, false).await, world.channel(2, 3, 1, true).await];
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        world.chain.mine();
        settlement.pass().await;
        world.chain.reorg(1, false);
        settlement.pass().await;
        assert_eq!(metrics.closes_reorged.get(), 1, "one transaction reorged, not one per channel");
        mine_and_pass(&world, &mut settlement, 3).await;
        for state in &states {
            assert_eq!(world.status(state.channel_id).await, ChannelStatus::Closed);
            assert_eq!(world.chain.closes_of(state.channel_id), 1);
            assert_eq!(world.nonces_sent_for(state.channel_id).into_iter().max(), Some(0));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_whose_nonce_a_foreign_transaction_took_is_abandoned_and_every_channel_closed_again() {
        let world = World::new(POLICY).await;
        let states = [world.channel(1, 1, 1, false).await, world.channel(2, 3, 1, true).await];
        let (mut settlement, metrics) = world.settlement();
        settlement.pass().await;
        world.chain.mine_foreign_transaction();
        world.chain.mine();
        world.chain.mine();
        settlement.pass().await;
        assert_eq!(metrics.closes_nonce_taken.get(), 1);
        for state in &states {
            let mut nonces = world.nonces_sent_for(state.channel_id);
            nonces.dedup();
            assert_eq!(nonces, vec![0, 1], "closed again together at a fresh nonce");
        }
        mine_and_pass(&world, &mut settlement, 3).await;
        for state in &states {
            assert_eq!(world.status(state.channel_id).await, ChannelStatus::Closed);
        }
        assert_eq!(world.chain.close_many_sizes(), vec![2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_channel_and_a_batch_size_of_one_use_a_plain_close() {
        let world = World::new(POLICY).await;
        let a = world.channel(1, 3, 1, true).await;
        let (mut settlement, _) = world.settlement();
        settlement.pass().await;
        mine_and_pass(&world, &mut settlement, 3).await;
        assert_eq!(world.status(a.channel_id).await, ChannelStatus::Closed);
        let b = world.channel(2, 3, 1, true).await;
        let c = world.channel(3, 3, 1, true).await;
        let (mut settlement, _) = world.settlement_batched(1);
        settlement.pass().await;
        mine_and_pass(&world, &mut settlement, 3).await;
        assert_eq!(world.status(b.channel_id).await, ChannelStatus::Closed);
        assert_eq!(world.status(c.channel_id).await, ChannelStatus::Closed);
        assert!(world.chain.close_many_sizes().is_empty(), "no closeMany at all");
        assert_eq!(world.chain.sent().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gasless_channel_holding_nothing_is_closed_when_superseded_or_at_its_margin_only() {
        let world = World::new(POLICY).await;
        // Opened gaslessly, nothing paid, not due: left alone.
        let gasless = world.channel(1, 5, 0, false).await;
        world.store.mark_gasless(&gasless.channel_id).await.unwrap();
        // Opened by its client, nothing paid, superseded below: left alone too.
        let plain = world.channel(2, 5, 0, false).await;
        // Opened gaslessly, nothing paid, at its margin: closed.
        let late = world.channel(3, 5, 0, true).await;
        world.store.mark_gasless(&late.channel_id).await.unwrap();
        let (mut settlement, _) = world.settlement();
        settlement.pass().await;
        assert_eq!(world.nonces_sent_for(late.channel_id), vec![0]);
        assert!(world.nonces_sent_for(gasless.channel_id).is_empty(), "not superseded, not at its margin");
        // Both clients announce newer channels.
        for old in [&gasless, &plain] {
            let mut newer = world.chain.open_channel(old.channel_id.0[0] + 10, 5 * PRICE);
            newer.client_public_key = old.client_public_key;
            world.store.insert_channel(&newer, u64::MAX / 2, u64::MAX / 4, OpenState::Confirmed, None).await.unwrap();
        }
        settlement.pass().await;
        assert_eq!(world.nonces_sent_for(gasless.channel_id), vec![1]);
        mine_and_pass(&world, &mut settlement, 4).await;
        for state in [&gasless, &late] {
            assert_eq!(world.status(state.channel_id).await, ChannelStatus::Closed);
            // With the opening state: the whole deposit back to the client.
            assert_eq!(world.chain.closed_with(state.channel_id), Some(U256::ZERO));
        }
        assert_eq!(world.status(plain.channel_id).await, ChannelStatus::Open);
        assert!(world.nonces_sent_for(plain.channel_id).is_empty(), "a client who paid its own gas refunds itself");
    }
}
