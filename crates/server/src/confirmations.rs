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
use crate::store::{OpenState, Store};
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tollstream_chain::{BlockRef, Chain, ChainError, ChannelStatus};
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
        (head + 1).saturating_sub(block) >= self.confirmations.max(1)
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
        let from = (head + 1).saturating_sub(self.log_range);
        Ok(match chain.find_open(id, from, head).await? {
            Some(block) if self.is_deep(block.number, head) => (OpenState::Confirmed, Some(block)),
            Some(block) => (OpenState::Pending, Some(block)),
            // On chain (the caller read it) but older than the range.
            None => (OpenState::Confirmed, None),
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
        for (id, state, block) in tracked {
            let now = self.follow(id, state, block, head.number).await?;
            if now != (state, block)
                && let Err(error) = self.record(id, now).await
            {
                tracing::error!(%error, channel = %id, "cannot record where the channel's open stands");
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
            let depth = if self.opens.is_deep(block.number, head) { OpenState::Confirmed } else { OpenState::Pending };
            return Ok((depth, Some(block)));
        }
        // Moved, gone, or never located: ask the registry, then the logs.
        if self.chain.channel(id).await?.status == ChannelStatus::None {
            return Ok((OpenState::Missing, None));
        }
        self.opens.locate(self.chain.as_ref(), id).await
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
        watcher.store.insert_channel(&state, u64::MAX / 4, u64::MAX / 8, open, block).await.unwrap();
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
        chain.drop_open(id);
        watcher.tick().await.unwrap();
        assert_eq!(watcher.opens.state(&id), OpenState::Missing);
        assert_eq!(watcher.store.channel(&id).await.unwrap().unwrap().open_state, OpenState::Missing);
        assert_eq!(watcher.metrics.channels_dropped.get(), 1);
        // Mined again later: pending once more, then confirmed.
        chain.open_channel(1, 1_000);
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
    async fn an_outage_fails_the_tick_and_changes_nothing() {
        let (chain, watcher) = watcher(3);
        let id = announce(&watcher, &chain, 1).await;
        chain.set_unavailable(true);
        assert!(watcher.tick().await.is_err());
        assert_eq!(watcher.opens.state(&id), OpenState::Pending);
    }
}
