//! Confirmations (PROTOCOL.md 1.1): where each channel's `open` stands,
//! followed block by block, and the chain clock, refreshed here rather
//! than on the payment path.
//!
//! A channel seen in the latest block is accepted at once, but until its
//! `open` is `--confirmations` deep at most `--unconfirmed-windows` windows
//! are sold on it. The watcher reads the head every tick; for every
//! channel whose open is not yet confirmed it checks that the block
//! holding the open is still canonical (its hash), finds the open again
//! when a reorg moved it, and marks the channel missing when the open is
//! gone: nothing more is sold or settled on it until it is back. Channels
//! absent from the tracker are confirmed: that is every channel but the
//! newest few, so the tracker stays small.

use crate::metrics::Metrics;
use crate::state::ChainClock;
use crate::store::{OpenState, Store, StoredChannel};
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tollstream_chain::{BlockRef, Chain, ChainError, ChannelStatus, OnChainChannel};
use tollstream_protocol::Address;
use tollstream_protocol::B256;

/// How often the watcher reads the head.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The opens that are not (yet) confirmed, and the latest head seen.
pub struct Opens {
    /// `--confirmations`.
    confirmations: u64,
    /// `--log-range-blocks`: the widest `eth_getLogs` range.
    log_range: u64,
    /// Pending and missing opens; an absent channel is confirmed.
    tracked: DashMap<B256, (OpenState, Option<BlockRef>)>,
    /// Bumped on every change, so sessions waiting for a confirmation wake.
    changed: watch::Sender<u64>,
    /// The latest block number read, 0 before the first read.
    head: AtomicU64,
}

impl Opens {
    pub fn new(confirmations: u64, log_range: u64) -> Self {
        Opens {
            confirmations,
            log_range: log_range.max(1),
            tracked: DashMap::new(),
            changed: watch::Sender::new(0),
            head: AtomicU64::new(0),
        }
    }

    /// Where the open of `id` stands, as last seen.
    pub fn state(&self, id: &B256) -> OpenState {
        self.tracked.get(id).map_or(OpenState::Confirmed, |entry| entry.0)
    }

    /// Where the open of a stored channel stands: as this process last saw
    /// it, or, for a channel it does not follow yet (another process of a
    /// fleet accepted it, or saw its open go), as the store says, and it is
    /// followed from then on.
    pub fn resolve(&self, channel: &StoredChannel) -> OpenState {
        let id = channel.state.channel_id;
        if let Some(entry) = self.tracked.get(&id) {
            return entry.0;
        }
        if channel.open_state != OpenState::Confirmed {
            self.track(id, channel.open_state, channel.open_block);
        }
        channel.open_state
    }

    /// A receiver that changes whenever an open's state does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The latest block number read by the watcher.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Whether an open in block `block` is deep enough at head `head`: it
    /// has `head − block + 1` confirmations; 0 and 1 trust the latest block.
    pub fn is_deep(&self, block: u64, head: u64) -> bool {
        head.saturating_add(1).saturating_sub(block) >= self.confirmations.max(1)
    }

    /// Follows `id` from now on (unless confirmed).
    pub fn track(&self, id: B256, state: OpenState, block: Option<BlockRef>) {
        match state {
            OpenState::Confirmed => {
                self.tracked.remove(&id);
            }
            _ => {
                self.tracked.insert(id, (state, block));
            }
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Finds where the open of `id` is and how deep: searches the newest
    /// `--log-range-blocks` blocks; an open older than that is deep.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn locate(&self, chain: &dyn Chain, id: B256) -> Result<(OpenState, Option<BlockRef>), ChainError> {
        if self.confirmations <= 1 {
            return Ok((OpenState::Confirmed, None));
        }
        let head = chain.head().await?.number;
        let from = head.saturating_add(1).saturating_sub(self.log_range);
        Ok(match chain.find_open(id, from, head).await? {
            Some(block) if self.is_deep(block.number, head) => (OpenState::Confirmed, Some(block)),
            Some(block) => (OpenState::Pending, Some(block)),
            // No log: older than the range, or an endpoint whose log index
            // lags its head. Only the registry at the confirmed height can
            // tell which; an open missing there is pending, never trusted.
            None => {
                let confirmed = head.saturating_add(1).saturating_sub(self.confirmations.max(1));
                match chain.channel_at(id, confirmed).await?.status {
                    ChannelStatus::None => (OpenState::Pending, None),
                    _ => (OpenState::Confirmed, None),
                }
            }
        })
    }

    /// Records in the store and here that the open of `id` is gone.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn mark_missing(
        &self,
        store: &dyn Store,
        metrics: &Metrics,
        id: B256,
    ) -> Result<(), crate::store::StoreError> {
        if self.state(&id) == OpenState::Missing {
            return Ok(());
        }
        store.set_open(&id, OpenState::Missing, None).await?;
        metrics.channels_dropped.inc();
        tracing::warn!(channel = %id, "the channel's open was removed by a reorg; selling nothing more on it");
        self.track(id, OpenState::Missing, None);
        Ok(())
    }
}

/// Whether the registry's channel is the one the server accepted: open,
/// paying `payee`, funded by the stored client wallet with exactly the
/// stored deposit, signed for by the stored key, expiring when stored.
pub fn terms_match(onchain: &OnChainChannel, stored: &StoredChannel, payee: Address) -> bool {
    let state = &stored.state;
    onchain.status == ChannelStatus::Open
        && onchain.is_for(payee, state.client_public_key.address())
        && onchain.client == state.client_wallet_address
        && Some(onchain.deposit) == state.deposit().map(|d| d.0)
        && onchain.expires_at == stored.expires_at
}

/// The task that reads the head every tick, refreshes the chain clock and
/// moves opens between pending, confirmed and missing.
pub struct ChainWatcher {
    pub chain: Arc<dyn Chain>,
    pub store: Arc<dyn Store>,
    pub opens: Arc<Opens>,
    pub clock: Arc<ChainClock>,
    pub metrics: Metrics,
}

impl ChainWatcher {
    /// Loads the opens still pending or missing, then watches until
    /// `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        match self.store.list().await {
            Ok(channels) => {
                for channel in channels.into_iter().filter(|c| c.open_state != OpenState::Confirmed) {
                    self.opens.track(channel.state.channel_id, channel.open_state, channel.open_block);
                }
            }
            Err(error) => tracing::error!(%error, "cannot load unconfirmed channels"),
        }
        loop {
            if let Err(error) = self.tick().await {
                self.metrics.chain_errors.inc();
                tracing::warn!(%error, "cannot follow the chain; streams of confirmed channels go on");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }

    /// One look at the chain.
    ///
    /// # Errors
    /// When the chain cannot be read (the store's failures are logged).
    pub async fn tick(&self) -> Result<(), ChainError> {
        let head = self.chain.head().await?;
        self.clock.set(head.timestamp);
        self.opens.head.store(head.number, Ordering::Release);
        let tracked: Vec<(B256, OpenState, Option<BlockRef>)> =
            self.opens.tracked.iter().map(|entry| (*entry.key(), entry.0, entry.1)).collect();
        // One channel's failing call leaves the others followed.
        for (id, state, block) in tracked {
            match self.follow(id, state, block, head.number).await {
                Ok(now) if now != (state, block) => {
                    if let Err(error) = self.record(id, now).await {
                        tracing::error!(%error, channel = %id, "cannot record where the channel's open stands");
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    self.metrics.chain_errors.inc();
                    tracing::warn!(%error, channel = %id, "cannot follow the channel's open this tick");
                }
            }
        }
        Ok(())
    }

    /// Where the open of `id` stands now, given where it stood.
    async fn follow(
        &self,
        id: B256,
        state: OpenState,
        block: Option<BlockRef>,
        head: u64,
    ) -> Result<(OpenState, Option<BlockRef>), ChainError> {
        if state == OpenState::Pending
            && let Some(block) = block
            && self.chain.block_hash(block.number).await? == Some(block.hash)
        {
            if !self.opens.is_deep(block.number, head) {
                return Ok((OpenState::Pending, Some(block)));
            }
            // Deep enough: confirmed only on the terms it was accepted on.
            return Ok(if self.terms_hold(id).await? {
                (OpenState::Confirmed, Some(block))
            } else {
                (OpenState::Missing, None)
            });
        }
        // Moved, gone, or never located: the registry must hold the very
        // channel that was accepted (a client whose open a reorg removed
        // could open the same id again on other terms), then the logs say
        // where.
        if !self.terms_hold(id).await? {
            return Ok((OpenState::Missing, None));
        }
        self.opens.locate(self.chain.as_ref(), id).await
    }

    /// Whether the registry now holds channel `id` on the terms it was
    /// stored with. A store failure counts as not (nothing is sold until
    /// the next tick can tell).
    async fn terms_hold(&self, id: B256) -> Result<bool, ChainError> {
        let onchain = self.chain.channel(id).await?;
        let Some(payee) = self.chain.payee() else { return Ok(false) };
        match self.store.channel(&id).await {
            Ok(Some(stored)) => Ok(terms_match(&onchain, &stored, payee)),
            Ok(None) => Ok(false),
            Err(error) => {
                tracing::error!(%error, channel = %id, "cannot read the stored channel");
                Ok(false)
            }
        }
    }

    async fn record(
        &self,
        id: B256,
        (state, block): (OpenState, Option<BlockRef>),
    ) -> Result<(), crate::store::StoreError> {
        match state {
            OpenState::Missing => return self.opens.mark_missing(self.store.as_ref(), &self.metrics, id).await,
            OpenState::Confirmed => tracing::info!(channel = %id, "channel open confirmed"),
            OpenState::Pending => {
                tracing::info!(channel = %id, block = ?block.map(|b| b.number), "channel open pending")
            }
        }
        self.store.set_open(&id, state, block).await?;
        self.opens.track(id, state, block);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use tollstream_chain::memory::MemoryChain;

    fn watcher(confirmations: u64) -> (Arc<MemoryChain>, ChainWatcher) {
        let store = Arc::new(MemoryStore::new());
        let chain = Arc::new(MemoryChain::new());
        let watcher = ChainWatcher {
            chain: chain.clone(),
            store,
            opens: Arc::new(Opens::new(confirmations, 2_000)),
            clock: Arc::new(ChainClock::new()),
            metrics: Metrics::new(),
        };
        (chain, watcher)
    }

    async fn announce(watcher: &ChainWatcher, chain: &MemoryChain, id: u8) -> B256 {
        let state = chain.open_channel(id, 1_000);
        let (open, block) = watcher.opens.locate(chain, state.channel_id).await.unwrap();
        let expires_at = chain.channel(state.channel_id).await.unwrap().expires_at;
        watcher.store.insert_channel(&state, expires_at, expires_at - 3_600, open, block).await.unwrap();
        watcher.opens.track(state.channel_id, open, block);
        state.channel_id
    }

    #[tokio::test]
    async fn an_open_is_confirmed_at_the_configured_depth() {
        let (chain, watcher) = watcher(3);
        let id = announce(&watcher, &chain, 1).await;
        assert_eq!(watcher.opens.state(&id), OpenState::Pending);
        chain.mine();
        watcher.tick().await.unwrap();
        assert_eq!(watcher.opens.state(&id), OpenState::Pending, "two confirmations");
        chain.mine();
        watcher.tick().await.unwrap();
        assert_eq!(watcher.opens.state(&id), OpenState::Confirmed);
        let stored = watcher.store.channel(&id).await.unwrap().unwrap();
        assert_eq!(stored.open_state, OpenState::Confirmed);
    }

    #[tokio::test]
    async fn a_reorged_open_is_missing_until_it_is_back() {
        let (chain, watcher) = watcher(3);
        let id = announce(&watcher, &chain, 1).await;
        let open = chain.drop_open(id).unwrap();
        watcher.tick().await.unwrap();
        assert_eq!(watcher.opens.state(&id), OpenState::Missing);
        assert_eq!(watcher.store.channel(&id).await.unwrap().unwrap().open_state, OpenState::Missing);
        assert_eq!(watcher.metrics.channels_dropped.get(), 1);
        // The same open mined again later: pending once more, then confirmed.
        chain.include_open(id, open);
        watcher.tick().await.unwrap();
        assert_eq!(watcher.opens.state(&id), OpenState::Pending);
        chain.mine();
        chain.mine();
        watcher.tick().await.unwrap();
        assert_eq!(watcher.opens.state(&id), OpenState::Confirmed);
    }

    #[tokio::test]
    async fn one_confirmation_trusts_the_latest_block_and_the_clock_follows_the_head() {
        let (chain, watcher) = watcher(1);
        let id = announce(&watcher, &chain, 1).await;
        assert_eq!(watcher.opens.state(&id), OpenState::Confirmed);
        chain.advance_time(100);
        chain.mine();
        watcher.tick().await.unwrap();
        assert_eq!(watcher.clock.now().unwrap(), chain.now().await.unwrap());
    }

    #[tokio::test]
    async fn an_open_back_on_other_terms_stays_missing() {
        let (chain, watcher) = watcher(3);
        let id = announce(&watcher, &chain, 1).await;
        chain.drop_open(id);
        watcher.tick().await.unwrap();
        assert_eq!(watcher.opens.state(&id), OpenState::Missing);
        // The same id opened again with a smaller deposit: never sold on.
        chain.open_channel(1, 10);
        for _ in 0..4 {
            chain.mine();
            watcher.tick().await.unwrap();
        }
        assert_eq!(watcher.opens.state(&id), OpenState::Missing);
    }

    #[tokio::test]
    async fn an_open_whose_log_cannot_be_found_is_trusted_only_once_deep_in_the_registry() {
        let (chain, watcher) = watcher(3);
        let state = chain.open_channel(1, 1_000);
        chain.hide_logs(true);
        // Seen at the head only: its log is not served, so it is pending.
        let (open, block) = watcher.opens.locate(&*chain, state.channel_id).await.unwrap();
        assert_eq!((open, block), (OpenState::Pending, None));
        chain.mine();
        chain.mine();
        let (open, _) = watcher.opens.locate(&*chain, state.channel_id).await.unwrap();
        assert_eq!(open, OpenState::Confirmed, "three deep in the registry");
    }

    #[tokio::test]
    async fn an_outage_fails_the_tick_and_changes_nothing() {
        let (chain, watcher) = watcher(3);
        let id = announce(&watcher, &chain, 1).await;
        chain.set_unavailable(true);
        assert!(watcher.tick().await.is_err());
        assert_eq!(watcher.opens.state(&id), OpenState::Pending);
    }
}
