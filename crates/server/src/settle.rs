//! Settlement: close on chain every channel that holds server money, with
//! its latest signed state, before it expires; follow the registry's events
//! so channels closed or refunded by anyone are marked so.
//!
//! Crash safety rests on two records in the store: a close is signed and
//! recorded (hash and raw bytes) *before* it is broadcast, and a restart
//! first looks the recorded transaction up, re-broadcasting the very same
//! bytes if the node never saw them. So a close is never sent twice as two
//! different transactions and never forgotten. Before signing a new close
//! the channel is read on chain, and the record is a compare-and-swap on
//! the sequence number, so a payment stored meanwhile is never left out.

use crate::metrics::Metrics;
use crate::store::{ChannelStatus, Store, StoreError, StoredChannel};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tollstream_chain::{Chain, ChainError, ChannelEvent, ChannelStatus as OnChainStatus, SignedTx};
use tollstream_protocol::{Amount, B256};

/// The store's name for the next block whose events to read.
const EVENTS_CURSOR: &str = "next_event_block";
/// How long one close waits for its receipt before leaving it to the next pass.
const RECEIPT_WAIT: Duration = Duration::from_secs(15);
/// The longest pause between retries of a failing channel.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The chain time from which a channel is settled rather than streamed:
/// `expires_at` less the margin, which is `margin` or a tenth of the
/// lifetime left at `now`, whichever is larger.
pub fn settle_by(expires_at: u64, now: u64, margin: u64) -> u64 {
    let lifetime = expires_at.saturating_sub(now);
    expires_at.saturating_sub(margin.max(lifetime / 10))
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
    #[error("close transaction {0} failed on chain")]
    CloseFailed(B256),
}

/// What a settlement attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Our close is confirmed.
    Closed,
    /// Someone closed it already.
    AlreadyClosed,
    /// The client took the deposit back.
    Refunded,
    /// A close is in flight; its receipt has not come yet.
    Pending,
    /// Nothing to collect.
    NothingOwed,
}

/// The settlement worker's parts and memory.
pub struct Settlement {
    store: Arc<dyn Store>,
    chain: Arc<dyn Chain>,
    metrics: Metrics,
    /// Per failing channel: failures so far and when to try next.
    backoff: HashMap<B256, (u32, Instant)>,
}

impl Settlement {
    pub fn new(store: Arc<dyn Store>, chain: Arc<dyn Chain>, metrics: Metrics) -> Self {
        Settlement { store, chain, metrics, backoff: HashMap::new() }
    }

    /// Runs a pass every `interval` until `cancel`.
    pub async fn run(mut self, interval: Duration, cancel: CancellationToken) {
        loop {
            self.pass().await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One pass: read new events, then settle every due channel. A failing
    /// channel is logged and retried later with backoff; it never blocks
    /// the others.
    pub async fn pass(&mut self) {
        if let Err(error) = self.follow_events().await {
            tracing::warn!(%error, "cannot read channel events; retrying next pass");
        }
        let now = match self.chain.now().await {
            Ok(now) => now,
            Err(error) => {
                self.metrics.settlement_failures.inc();
                tracing::warn!(%error, "cannot read chain time; settlement retries next pass");
                return;
            }
        };
        let due = match self.store.awaiting_settlement(now).await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "cannot list channels to settle");
                return;
            }
        };
        self.metrics.channels_awaiting_settlement.set(due.len() as i64);
        for channel in due {
            let id = channel.state.channel_id;
            if self.backoff.get(&id).is_some_and(|(_, next)| Instant::now() < *next) {
                continue;
            }
            match self.settle(&channel, now).await {
                Ok(outcome) => {
                    self.backoff.remove(&id);
                    tracing::debug!(channel = %id, ?outcome, "settlement step");
                }
                Err(error) => {
                    self.metrics.settlement_failures.inc();
                    let failures = self.backoff.get(&id).map_or(0, |(n, _)| *n) + 1;
                    let pause = Duration::from_secs(1u64 << failures.min(9)).min(MAX_BACKOFF);
                    self.backoff.insert(id, (failures, Instant::now() + pause));
                    tracing::warn!(channel = %id, %error, failures, retry_in = ?pause, "settlement failed");
                }
            }
        }
    }

    /// Settles one channel now if it holds server money, whether or not it
    /// is due (used by `tollstream settle`).
    ///
    /// # Errors
    /// Chain, store, expiry.
    pub async fn settle_now(&mut self, channel: &StoredChannel) -> Result<Settled, SettleError> {
        let now = self.chain.now().await?;
        self.settle(channel, now).await
    }

    async fn settle(&mut self, channel: &StoredChannel, now: u64) -> Result<Settled, SettleError> {
        let id = channel.state.channel_id;
        if matches!(channel.status, ChannelStatus::Closed | ChannelStatus::Refunded) {
            return Ok(Settled::AlreadyClosed);
        }
        // A close already signed: see that very transaction through.
        if let Some(hash) = channel.close_tx {
            match self.chain.receipt(hash).await? {
                Some(true) => return self.confirmed(channel, hash).await,
                Some(false) => {
                    tracing::warn!(channel = %id, tx = %hash, "close failed on chain; checking the channel");
                    self.store.abandon_close(&id).await?;
                }
                None => {
                    if let Some(raw) = &channel.close_tx_raw {
                        self.chain.broadcast(&SignedTx { hash, raw: raw.clone().into() }).await?;
                    }
                    return self.await_receipt(channel, hash).await;
                }
            }
        }

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

        let tx = self.chain.prepare_close(&channel.state).await?;
        match self.store.record_close(&id, channel.state.client_sequence_number, &tx.hash, &tx.raw).await {
            Ok(()) => {}
            // A payment landed since the channel was read: the next pass
            // closes with it.
            Err(StoreError::Conflict) => return Ok(Settled::Pending),
            Err(error) => return Err(error.into()),
        }
        tracing::info!(
            channel = %id,
            tx = %tx.hash,
            seq = channel.state.client_sequence_number,
            server_balance = %channel.state.server_balance,
            "closing channel"
        );
        self.chain.broadcast(&tx).await?;
        self.await_receipt(channel, tx.hash).await
    }

    async fn await_receipt(&mut self, channel: &StoredChannel, hash: B256) -> Result<Settled, SettleError> {
        let deadline = Instant::now() + RECEIPT_WAIT;
        loop {
            match self.chain.receipt(hash).await? {
                Some(true) => return self.confirmed(channel, hash).await,
                Some(false) => {
                    self.store.abandon_close(&channel.state.channel_id).await?;
                    return Err(SettleError::CloseFailed(hash));
                }
                None if Instant::now() >= deadline => return Ok(Settled::Pending),
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn confirmed(&mut self, channel: &StoredChannel, hash: B256) -> Result<Settled, SettleError> {
        if self.store.mark_closed(&channel.state.channel_id, Some(&hash)).await? {
            Metrics::add_wei(&self.metrics.wei_settled, channel.state.server_balance);
            tracing::info!(
                channel = %channel.state.channel_id,
                tx = %hash,
                server_balance = %channel.state.server_balance,
                "channel closed; payment collected"
            );
        }
        Ok(Settled::Closed)
    }

    async fn refunded(&self, id: &B256, amount: Amount) -> Result<(), StoreError> {
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

    /// Reads `Closed` and `Refunded` events since the last pass and marks
    /// stored channels accordingly.
    async fn follow_events(&mut self) -> Result<(), SettleError> {
        let from = match self.store.cursor(EVENTS_CURSOR).await? {
            Some(block) => block,
            // First start: channels are announced after they are opened,
            // so history before now holds nothing of ours.
            None => self.chain.latest_block().await?,
        };
        let (events, latest) = self.chain.channel_events(from).await?;
        for event in events {
            match event {
                ChannelEvent::Closed { channel_id, server_balance, tx, .. } => {
                    if self.store.mark_closed(&channel_id, tx.as_ref()).await? {
                        Metrics::add_wei(&self.metrics.wei_settled, server_balance.into());
                        tracing::info!(channel = %channel_id, %server_balance, "channel closed on chain");
                    }
                }
                ChannelEvent::Refunded { channel_id, amount } => self.refunded(&channel_id, amount.into()).await?,
            }
        }
        self.store.set_cursor(EVENTS_CURSOR, latest + 1).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_an_hour_or_a_tenth_of_the_lifetime() {
        // A day-long channel: 10% is 8640 s, more than an hour.
        assert_eq!(settle_by(1_000_000 + 86_400, 1_000_000, 3_600), 1_000_000 + 86_400 - 8_640);
        // A five-hour channel: an hour is more than 10%.
        assert_eq!(settle_by(18_000, 0, 3_600), 14_400);
        // Already inside the margin: due now.
        assert_eq!(settle_by(100, 50, 3_600), 0);
    }
}
