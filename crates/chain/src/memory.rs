//! An in-memory chain for unit tests of the logic above the [`Chain`]
//! trait: blocks mined on request, a pool that behaves like a node's
//! (replacement rules, base fee, nonces), reorgs, foreign transactions,
//! outages. Real transactions are signed (so hashes, nonces and fees are
//! what the EVM implementation would produce); the registry's effects
//! (open, close, `closeMany` entry by entry, refund) are modelled, not
//! executed.

use crate::channel::{ChannelStatus, OnChainChannel, terms_of};
use crate::close_tx::Inclusion;
use crate::contract::TollstreamChannels;
use crate::error::ChainError;
use crate::evm::{BlockRef, Chain, ChannelEvent, Head, PayeeCall, Sent, payee_request, sign_transaction, wallet_of};
use crate::fees::Fees;
use crate::signed_tx::SignedTx;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, TxHash, U256, keccak256};
use alloy::sol_types::SolCall;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tollstream_protocol::{Amount, ChannelState, Signature, SigningKey};

/// Gas a close takes here.
pub const CLOSE_GAS: u64 = 60_000;
/// Gas a `closeMany` takes here: this much, plus
/// [`CLOSE_MANY_ENTRY_GAS`] per entry.
pub const CLOSE_MANY_BASE_GAS: u64 = 25_000;
/// Gas of one entry of a `closeMany` here.
pub const CLOSE_MANY_ENTRY_GAS: u64 = 30_000;

#[derive(Debug, Clone)]
enum Effect {
    Opened {
        id: B256,
        channel: OnChainChannel,
    },
    /// A payee transaction: ours (a close or `closeMany`) or foreign;
    /// `closes` holds each channel it tried to close, with the server
    /// balance and whether that entry closed (a skipped `closeMany` entry
    /// did not); `reverted` when the whole transaction failed (a `close`
    /// that could not close).
    Payee {
        tx: TxHash,
        closes: Vec<(B256, U256, bool)>,
        reverted: bool,
    },
    /// The client took the deposit back.
    Refunded {
        id: B256,
    },
}

#[derive(Debug, Clone)]
struct Block {
    hash: B256,
    timestamp: u64,
    effects: Vec<Effect>,
}

struct State {
    blocks: Vec<Block>,
    /// Pending payee transactions by nonce.
    pool: BTreeMap<u64, SignedTx>,
    base_fee: u128,
    tip: u128,
    /// The least tip a block takes (congestion the market's estimate
    /// does not show).
    min_tip: u128,
    balance: U256,
    unavailable: bool,
    /// Every transaction handed to `send`, in order.
    sent: Vec<SignedTx>,
    /// Distinguishes blocks that replace others at the same height.
    forks: u64,
    /// While set, `find_open` finds nothing, as an endpoint whose log
    /// index lags its head.
    hide_logs: bool,
    /// Channels whose next close entries the registry refuses (as for a
    /// signature it does not accept), with how many more times.
    refuse: BTreeMap<B256, u32>,
    /// Channels whose presence makes a whole `closeMany` revert.
    spoil_batches: std::collections::BTreeSet<B256>,
}

/// The in-memory chain. Starts at block 0, time 1,000,000, base fee 1 gwei.
pub struct MemoryChain {
    state: Mutex<State>,
    wallet: EthereumWallet,
    payee: Address,
    contract: Address,
}

impl Default for MemoryChain {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryChain {
    pub fn new() -> Self {
        let key = SigningKey::from_bytes([0x77; 32]).expect("a valid key");
        let genesis = Block { hash: B256::repeat_byte(0xb0), timestamp: 1_000_000, effects: Vec::new() };
        MemoryChain {
            state: Mutex::new(State {
                blocks: vec![genesis],
                pool: BTreeMap::new(),
                base_fee: 1_000_000_000,
                tip: 1_000_000_000,
                min_tip: 0,
                balance: U256::from(10u128.pow(18)),
                unavailable: false,
                sent: Vec::new(),
                forks: 0,
                hide_logs: false,
                refuse: BTreeMap::new(),
                spoil_batches: Default::default(),
            }),
            wallet: wallet_of(&key),
            payee: key.address(),
            contract: Address::repeat_byte(0xc0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory chain lock")
    }

    /// The payee's key, as the server would hold it.
    pub fn payee_key() -> SigningKey {
        SigningKey::from_bytes([0x77; 32]).expect("a valid key")
    }

    /// Opens a channel of client `id` (a key made of that byte) holding
    /// `deposit` wei, in a block of its own, and returns its opening state.
    pub fn open_channel(&self, id: u8, deposit: u64) -> ChannelState {
        let client = SigningKey::from_bytes([id; 32]).expect("a valid key");
        let channel_id = B256::repeat_byte(id);
        let now = self.lock().blocks.last().expect("blocks").timestamp;
        let channel = OnChainChannel {
            client: client.address(),
            expires_at: now + 86_400,
            status: ChannelStatus::Open,
            token: Address::ZERO,
            deposit: U256::from(deposit),
            terms: terms_of(self.payee, client.address()),
        };
        self.mine_with(vec![Effect::Opened { id: channel_id, channel }]);
        ChannelState {
            channel_id,
            channel_address: self.contract,
            client_wallet_address: client.address(),
            client_public_key: client.public_key(),
            client_balance: Amount(U256::from(deposit)),
            server_balance: Amount::ZERO,
            client_sequence_number: 0,
            client_signature: Signature([0; 65]),
        }
    }

    /// Opens a channel of `deposit` wei and returns a state that pays the
    /// server `paid` wei of it (the signature is not checked here).
    pub fn open_paid_channel(&self, id: u8, deposit: u64, paid: u64) -> ChannelState {
        let mut state = self.open_channel(id, deposit);
        state.client_balance = Amount(U256::from(deposit - paid));
        state.server_balance = Amount(U256::from(paid));
        state.client_sequence_number = paid;
        state
    }

    /// Mines a block with what the pool holds that can pay the base fee,
    /// in nonce order from the wallet's next nonce; transactions that
    /// cannot pay are dropped, as a node drops them.
    pub fn mine(&self) {
        let mut state = self.lock();
        let base_fee = state.base_fee;
        state.pool.retain(|_, tx| tx.fees.max_fee_per_gas >= base_fee);
        let mut nonce = used_nonces(&state.blocks);
        let mut effects = Vec::new();
        let mut closed: Vec<B256> = Vec::new();
        let min_tip = state.min_tip;
        let now = state.blocks.last().expect("blocks").timestamp + 2;
        let pays = |tx: &SignedTx| tx.fees.max_priority_fee_per_gas.min(tx.fees.max_fee_per_gas - base_fee) >= min_tip;
        while let Some(tx) = state.pool.get(&nonce).filter(|tx| pays(tx)).cloned() {
            state.pool.remove(&nonce);
            let input = tx.input().unwrap_or_default();
            // (channel, server balance) of each entry, and whether the
            // call is a `closeMany` (which skips) or a `close` (which reverts).
            let (entries, many) = if let Ok(call) = TollstreamChannels::closeCall::abi_decode(&input) {
                (vec![(call.channelId, call.serverBalance)], false)
            } else if let Ok(call) = TollstreamChannels::closeManyCall::abi_decode(&input) {
                (call.closes.iter().map(|c| (c.channelId, c.serverBalance)).collect(), true)
            } else {
                (Vec::new(), false)
            };
            let mut closes = Vec::new();
            for (id, server_balance) in entries {
                let refused = match state.refuse.get_mut(&id) {
                    Some(left) if *left > 0 => {
                        *left -= 1;
                        true
                    }
                    _ => false,
                };
                let ok = !refused
                    && !closed.contains(&id)
                    && channels(&state.blocks).get(&id).is_some_and(|c| {
                        c.status == ChannelStatus::Open && now < c.expires_at && server_balance <= c.deposit
                    });
                if ok {
                    closed.push(id);
                }
                closes.push((id, server_balance, ok));
            }
            let reverted = if many {
                closes.iter().any(|(id, _, _)| state.spoil_batches.contains(id))
            } else {
                closes.iter().any(|(_, _, ok)| !ok)
            };
            effects.push(Effect::Payee { tx: tx.hash, closes, reverted });
            nonce += 1;
        }
        drop(state);
        self.mine_with(effects);
    }

    fn mine_with(&self, effects: Vec<Effect>) {
        let mut state = self.lock();
        let parent = state.blocks.last().expect("blocks").clone();
        let number = state.blocks.len() as u64;
        let hash = keccak256([parent.hash.as_slice(), &number.to_be_bytes(), &state.forks.to_be_bytes()].concat());
        state.blocks.push(Block { hash, timestamp: parent.timestamp + 2, effects });
    }

    /// Mines a transaction of the payee wallet that is none of ours at its
    /// next nonce (an operator's transfer), replacing ours in the pool.
    pub fn mine_foreign_transaction(&self) {
        let mut state = self.lock();
        let nonce = used_nonces(&state.blocks);
        state.pool.remove(&nonce);
        drop(state);
        let tx = keccak256(format!("foreign {nonce}"));
        self.mine_with(vec![Effect::Payee { tx, closes: Vec::new(), reverted: false }]);
    }

    /// Mines the client's `refund` of channel `id` (as after expiry).
    pub fn refund(&self, id: B256) {
        self.mine_with(vec![Effect::Refunded { id }]);
    }

    /// Makes every `closeMany` holding `id` revert as a whole, while a
    /// plain `close` of it succeeds: what a client wallet that burns the
    /// gas of its payout did to batches priced without it.
    pub fn spoil_batches_with(&self, id: B256) {
        self.lock().spoil_batches.insert(id);
    }

    /// Makes the registry refuse the next `times` close entries of `id`
    /// (a `close` reverts, a `closeMany` skips the entry), as it refuses a
    /// state it cannot verify.
    pub fn refuse_closes_of(&self, id: B256, times: u32) {
        self.lock().refuse.insert(id, times);
    }

    /// How many `closeMany` transactions the canonical chain holds, with
    /// how many entries each.
    pub fn close_many_sizes(&self) -> Vec<usize> {
        let state = self.lock();
        let sent = state.sent.clone();
        state
            .blocks
            .iter()
            .flat_map(|b| &b.effects)
            .filter_map(|e| match e {
                Effect::Payee { tx, .. } => sent.iter().find(|s| s.hash == *tx),
                _ => None,
            })
            .filter_map(|tx| TollstreamChannels::closeManyCall::abi_decode(&tx.input().ok()?).ok())
            .map(|call| call.closes.len())
            .collect()
    }

    /// Drops the newest `depth` blocks and mines as many empty ones in
    /// their place; their payee transactions go back to the pool when
    /// `requeue` (geth does), or are lost (anvil's `anvil_reorg`).
    pub fn reorg(&self, depth: usize, requeue: bool) {
        let mut state = self.lock();
        state.forks += 1;
        let keep = state.blocks.len().saturating_sub(depth).max(1);
        let removed = state.blocks.split_off(keep);
        if requeue {
            let sent = state.sent.clone();
            for effect in removed.iter().flat_map(|b| &b.effects) {
                if let Effect::Payee { tx, .. } = effect
                    && let Some(signed) = sent.iter().find(|s| s.hash == *tx)
                {
                    state.pool.insert(signed.nonce, signed.clone());
                }
            }
        }
        drop(state);
        for _ in 0..removed.len() {
            self.mine_with(Vec::new());
        }
    }

    /// Removes the `open` of channel `id` from the chain, as a reorg that
    /// does not include it again would; returns it, for
    /// [`include_open`](Self::include_open).
    pub fn drop_open(&self, id: B256) -> Option<OnChainChannel> {
        let mut state = self.lock();
        state.forks += 1;
        let mut removed = None;
        for block in &mut state.blocks {
            block.effects.retain(|e| match e {
                Effect::Opened { id: opened, channel } if *opened == id => {
                    removed = Some(channel.clone());
                    false
                }
                _ => true,
            });
        }
        // Every block from the first changed one has a new hash.
        let forks = state.forks;
        for block in state.blocks.iter_mut().skip(1) {
            block.hash = keccak256([block.hash.as_slice(), &forks.to_be_bytes()].concat());
        }
        removed
    }

    /// Mines the same `open` again in a new block, as a node does with a
    /// transaction a reorg put back in its pool.
    pub fn include_open(&self, id: B256, channel: OnChainChannel) {
        self.mine_with(vec![Effect::Opened { id, channel }]);
    }

    /// While `lagging`, logs are not served (an endpoint whose log index
    /// lags its head).
    pub fn hide_logs(&self, lagging: bool) {
        self.lock().hide_logs = lagging;
    }

    pub fn set_base_fee(&self, wei: u128) {
        self.lock().base_fee = wei;
    }

    /// Blocks take only transactions tipping at least `wei` per gas.
    pub fn set_min_tip(&self, wei: u128) {
        self.lock().min_tip = wei;
    }

    pub fn set_balance(&self, wei: U256) {
        self.lock().balance = wei;
    }

    /// While set, every call fails with `Unavailable`, as a node that is down.
    pub fn set_unavailable(&self, down: bool) {
        self.lock().unavailable = down;
    }

    /// Moves the chain's clock: the next block is `seconds` later.
    pub fn advance_time(&self, seconds: u64) {
        let mut state = self.lock();
        state.blocks.last_mut().expect("blocks").timestamp += seconds;
    }

    /// Every transaction handed to `send`.
    pub fn sent(&self) -> Vec<SignedTx> {
        self.lock().sent.clone()
    }

    /// How many successful closes of `id` the canonical chain holds.
    pub fn closes_of(&self, id: B256) -> usize {
        let state = self.lock();
        closes(&state.blocks).filter(|(channel, _, ok)| *channel == id && *ok).count()
    }

    /// The server balance `id` was closed with, if it was.
    pub fn closed_with(&self, id: B256) -> Option<U256> {
        let state = self.lock();
        closes(&state.blocks).find(|(channel, _, ok)| *channel == id && *ok).map(|(_, balance, _)| balance)
    }

    fn available(&self) -> Result<std::sync::MutexGuard<'_, State>, ChainError> {
        let state = self.lock();
        if state.unavailable { Err(ChainError::Unavailable("the memory chain is down".into())) } else { Ok(state) }
    }
}

fn never_opened() -> OnChainChannel {
    OnChainChannel {
        client: Address::ZERO,
        expires_at: 0,
        status: ChannelStatus::None,
        token: Address::ZERO,
        deposit: U256::ZERO,
        terms: Default::default(),
    }
}

fn used_nonces(blocks: &[Block]) -> u64 {
    blocks.iter().flat_map(|b| &b.effects).filter(|e| matches!(e, Effect::Payee { .. })).count() as u64
}

/// Every close entry mined, with whether it closed.
fn closes(blocks: &[Block]) -> impl Iterator<Item = (B256, U256, bool)> + '_ {
    blocks.iter().flat_map(|b| &b.effects).flat_map(|e| match e {
        Effect::Payee { closes, reverted: false, .. } => closes.clone(),
        _ => Vec::new(),
    })
}

fn channels(blocks: &[Block]) -> BTreeMap<B256, OnChainChannel> {
    let mut channels = BTreeMap::new();
    for effect in blocks.iter().flat_map(|b| &b.effects) {
        match effect {
            Effect::Opened { id, channel } => {
                channels.insert(*id, channel.clone());
            }
            Effect::Payee { closes, reverted: false, .. } => {
                for (id, _, _) in closes.iter().filter(|(_, _, ok)| *ok) {
                    if let Some(channel) = channels.get_mut(id) {
                        channel.status = ChannelStatus::Closed;
                    }
                }
            }
            Effect::Refunded { id } => {
                if let Some(channel) = channels.get_mut(id) {
                    channel.status = ChannelStatus::Refunded;
                }
            }
            Effect::Payee { .. } => {}
        }
    }
    channels
}

#[async_trait]
impl Chain for MemoryChain {
    fn chain_id(&self) -> u64 {
        31337
    }

    fn contract(&self) -> Address {
        self.contract
    }

    fn payee(&self) -> Option<Address> {
        Some(self.payee)
    }

    async fn channel(&self, id: B256) -> Result<OnChainChannel, ChainError> {
        let state = self.available()?;
        Ok(channels(&state.blocks).remove(&id).unwrap_or_else(never_opened))
    }

    async fn head(&self) -> Result<Head, ChainError> {
        let state = self.available()?;
        let block = state.blocks.last().expect("blocks");
        Ok(Head { number: state.blocks.len() as u64 - 1, hash: block.hash, timestamp: block.timestamp })
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, ChainError> {
        Ok(self.available()?.blocks.get(number as usize).map(|b| b.hash))
    }

    async fn find_open(&self, id: B256, from: u64, to: u64) -> Result<Option<BlockRef>, ChainError> {
        let state = self.available()?;
        if state.hide_logs {
            return Ok(None);
        }
        Ok(state.blocks.iter().enumerate().skip(from as usize).take((to + 1).saturating_sub(from) as usize).find_map(
            |(number, block)| {
                block
                    .effects
                    .iter()
                    .any(|e| matches!(e, Effect::Opened { id: opened, .. } if *opened == id))
                    .then_some(BlockRef { number: number as u64, hash: block.hash })
            },
        ))
    }

    async fn channel_events(&self, from: u64, to: u64) -> Result<Vec<ChannelEvent>, ChainError> {
        let state = self.available()?;
        let mut events = Vec::new();
        for block in state.blocks.iter().skip(from as usize).take((to + 1).saturating_sub(from) as usize) {
            for effect in &block.effects {
                if let Effect::Refunded { id } = effect {
                    let amount = channels(&state.blocks).get(id).map_or(U256::ZERO, |c| c.deposit);
                    events.push(ChannelEvent::Refunded { channel_id: *id, amount });
                }
                if let Effect::Payee { tx, closes, reverted: false } = effect {
                    for (id, server_balance, _) in closes.iter().filter(|(_, _, ok)| *ok) {
                        let deposit = channels(&state.blocks).get(id).map_or(U256::ZERO, |c| c.deposit);
                        events.push(ChannelEvent::Closed {
                            channel_id: *id,
                            server_balance: *server_balance,
                            client_balance: deposit.saturating_sub(*server_balance),
                            tx: Some(*tx),
                        });
                    }
                }
            }
        }
        Ok(events)
    }

    async fn nonce(&self, account: Address) -> Result<u64, ChainError> {
        let state = self.available()?;
        Ok(if account == self.payee { used_nonces(&state.blocks) } else { 0 })
    }

    async fn nonce_at(&self, account: Address, block: u64) -> Result<u64, ChainError> {
        let state = self.available()?;
        let upto = state.blocks.len().min(block as usize + 1);
        Ok(if account == self.payee { used_nonces(&state.blocks[..upto]) } else { 0 })
    }

    async fn balance(&self, account: Address) -> Result<U256, ChainError> {
        let state = self.available()?;
        Ok(if account == self.payee { state.balance } else { U256::ZERO })
    }

    async fn market_fees(&self) -> Result<Fees, ChainError> {
        let state = self.available()?;
        Ok(Fees { max_fee_per_gas: 2 * state.base_fee + state.tip, max_priority_fee_per_gas: state.tip })
    }

    async fn estimate_close(&self, state: &ChannelState) -> Result<u64, ChainError> {
        let chain = self.available()?;
        let now = chain.blocks.last().expect("blocks").timestamp;
        match channels(&chain.blocks).get(&state.channel_id) {
            Some(c) if c.status == ChannelStatus::Open && now < c.expires_at && state.server_balance.0 <= c.deposit => {
                Ok(CLOSE_GAS)
            }
            _ => Err(ChainError::Reverted("the close would fail".into())),
        }
    }

    async fn estimate_closes(&self, states: &[ChannelState]) -> Result<u64, ChainError> {
        drop(self.available()?);
        Ok(CLOSE_MANY_BASE_GAS + CLOSE_MANY_ENTRY_GAS * states.len() as u64)
    }

    async fn closed_in(&self, tx: TxHash) -> Result<Vec<B256>, ChainError> {
        let state = self.available()?;
        Ok(state
            .blocks
            .iter()
            .flat_map(|b| &b.effects)
            .find_map(|e| match e {
                Effect::Payee { tx: mined, closes, reverted: false } if *mined == tx => {
                    Some(closes.iter().filter(|(_, _, ok)| *ok).map(|(id, _, _)| *id).collect())
                }
                _ => None,
            })
            .unwrap_or_default())
    }

    async fn sign(&self, call: &PayeeCall, nonce: u64, gas_limit: u64, fees: Fees) -> Result<SignedTx, ChainError> {
        let request = payee_request(&self.wallet, self.contract, self.chain_id(), call)?;
        sign_transaction(&self.wallet, request, nonce, gas_limit, fees).await
    }

    async fn channel_at(&self, id: B256, block: u64) -> Result<OnChainChannel, ChainError> {
        let state = self.available()?;
        let upto = state.blocks.len().min(usize::try_from(block).unwrap_or(usize::MAX).saturating_add(1));
        Ok(channels(&state.blocks[..upto]).remove(&id).unwrap_or_else(never_opened))
    }

    async fn is_pending(&self, tx: TxHash) -> Result<bool, ChainError> {
        Ok(self.available()?.pool.values().any(|pending| pending.hash == tx))
    }

    async fn send(&self, tx: &SignedTx) -> Result<Sent, ChainError> {
        let mut state = self.available()?;
        state.sent.push(tx.clone());
        if tx.nonce < used_nonces(&state.blocks) {
            return Ok(Sent::NonceTooLow);
        }
        if let Some(pending) = state.pool.get(&tx.nonce) {
            if pending.hash == tx.hash {
                return Ok(Sent::AlreadyKnown);
            }
            // geth's rule: both fields 10 % higher.
            let old = pending.fees;
            if tx.fees.max_fee_per_gas * 10 < old.max_fee_per_gas * 11
                || tx.fees.max_priority_fee_per_gas * 10 < old.max_priority_fee_per_gas * 11
            {
                return Ok(Sent::Underpriced);
            }
        }
        if tx.fees.max_fee_per_gas < state.base_fee {
            return Ok(Sent::FeeCapTooLow);
        }
        if state.balance < U256::from(tx.fees.max_fee_per_gas) * U256::from(tx.gas_limit) {
            return Ok(Sent::InsufficientFunds);
        }
        state.pool.insert(tx.nonce, tx.clone());
        Ok(Sent::Accepted)
    }

    async fn receipt(&self, tx: TxHash) -> Result<Option<Inclusion>, ChainError> {
        let state = self.available()?;
        for (number, block) in state.blocks.iter().enumerate() {
            for effect in &block.effects {
                if let Effect::Payee { tx: mined, reverted, .. } = effect
                    && *mined == tx
                {
                    let success = !reverted;
                    return Ok(Some(Inclusion { tx, block: number as u64, block_hash: block.hash, success }));
                }
            }
        }
        Ok(None)
    }
}
