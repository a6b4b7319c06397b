//! The payee wallet's transaction manager: the I/O around the pure close
//! state machine of [`crate::close_tx`].
//!
//! Why it is written here: alloy has nonce and gas fillers but no fee
//! bumping, no replacement at the same nonce and no confirmation depth,
//! and no maintained crate on alloy does this. The design follows the
//! managers that keep hot wallets' transactions landing (Optimism's
//! `op-service/txmgr`, Chainlink's `txm`): the manager owns the wallet's
//! nonces, every transaction is signed and recorded by the caller before
//! it is broadcast, and a stuck one is re-signed at the same nonce with
//! higher fees.
//!
//! Nonces: the next close takes the lowest nonce that is neither used on
//! chain (the wallet's transaction count, re-read for every new close)
//! nor held by a close in flight. Allocation, signing and recording run
//! under one lock, so a close whose record loses its compare-and-swap
//! leaves no gap behind it, and closes of different channels are still in
//! flight together: nobody waits for anybody's receipt.
//!
//! Batches: [`start_closes`](TxManager::start_closes) closes several
//! channels with one `closeMany` transaction at one nonce. From then on it
//! is one transaction like any other: re-priced, confirmed and re-sent
//! after a reorg as a whole; which of its entries closed is read from its
//! receipt ([`Chain::closed_in`]).

use crate::close_tx::{CloseTx, Decision, Observation, Policy};
use crate::error::ChainError;
use crate::evm::{Chain, PayeeCall, Sent, TRANSFER_GAS, close_calldata, close_many_calldata};
use crate::fees::Fees;
use crate::signed_tx::SignedTx;
use alloy::primitives::{Address, B256};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::Mutex;
use tollstream_protocol::ChannelState;

/// The payee's transaction manager.
pub struct TxManager {
    chain: Arc<dyn Chain>,
    payee: Address,
    policy: Policy,
    /// Nonces of closes recorded and not yet confirmed or abandoned. The
    /// lock also serializes allocate → sign → record.
    in_flight: Mutex<BTreeSet<u64>>,
}

/// Where [`TxManager::start_closes`] records a signed close before it is
/// broadcast (a trait rather than a closure, so that the future of a
/// caller holding one stays `Send`).
#[async_trait::async_trait]
pub trait RecordCloses: Send + Sync {
    type Error: std::error::Error + Send + 'static;

    /// Records `tx`, which closes `entries`, signed when the latest block
    /// was `head`, if every entry's state is still the latest stored;
    /// otherwise records nothing and returns the channels that are stale.
    async fn record(&self, tx: &SignedTx, entries: &[ChannelState], head: u64) -> Result<Vec<B256>, Self::Error>;
}

/// A close [`start_closes`](TxManager::start_closes) recorded and sent.
#[derive(Debug)]
pub struct Started {
    /// The signed transaction, as recorded.
    pub tx: SignedTx,
    /// The states it closes, in the order of its entries.
    pub states: Vec<ChannelState>,
    /// How the node took it; a failed broadcast is sent again by the next
    /// [`observe`](TxManager::observe).
    pub sent: Result<Sent, ChainError>,
}

/// Why a new close was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The caller's record of the signed close failed.
    #[error("cannot record the signed close: {0}")]
    Record(#[source] E),
}

impl TxManager {
    /// A manager for `chain`'s payee wallet.
    ///
    /// # Errors
    /// `Other` when `chain` has no wallet.
    pub fn new(chain: Arc<dyn Chain>, policy: Policy) -> Result<Self, ChainError> {
        let payee = chain.payee().ok_or_else(|| ChainError::Other("the transaction manager needs a wallet".into()))?;
        Ok(TxManager { chain, payee, policy, in_flight: Mutex::new(BTreeSet::new()) })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The wallet whose nonces this manager owns.
    pub fn payee(&self) -> Address {
        self.payee
    }

    /// Marks the nonces of recorded closes (after a restart) as taken.
    pub async fn restore(&self, nonces: impl IntoIterator<Item = u64>) {
        self.in_flight.lock().await.extend(nonces);
    }

    /// Frees the nonce of a close that is confirmed or abandoned.
    pub async fn release(&self, nonce: u64) {
        self.in_flight.lock().await.remove(&nonce);
    }

    /// Starts a close of `state`: simulates it, prices it at the market
    /// (held to the fee cap), signs it at a fresh nonce and hands it to
    /// `record` with the latest block number. Only when `record` answers
    /// `true` is it broadcast; `false` (a payment landed meanwhile, say)
    /// leaves nothing behind. Returns what was sent and how the node took
    /// it; a failed broadcast is not an error, as the close is recorded
    /// and the next [`observe`](Self::observe) sends it again.
    ///
    /// # Errors
    /// `Chain` (`Reverted` when the close would fail on chain;
    /// `Unavailable`); `Record` when `record` fails.
    pub async fn start_close<E: std::error::Error + 'static>(
        &self,
        state: &ChannelState,
        record: impl AsyncFnOnce(&SignedTx, u64) -> Result<bool, E>,
    ) -> Result<Option<(SignedTx, Result<Sent, ChainError>)>, StartError<E>> {
        let gas_limit = self.chain.estimate_close(state).await?;
        let fees = Fees::capped(self.chain.market_fees().await?, self.policy.max_fee_per_gas);
        let head = self.chain.head().await?.number;
        let mut in_flight = self.in_flight.lock().await;
        let used = self.chain.nonce(self.payee).await?;
        let nonce = (used..).find(|n| !in_flight.contains(n)).expect("a free nonce exists");
        let tx = self.chain.sign_close(state, nonce, gas_limit, fees).await?;
        if !record(&tx, head).await.map_err(StartError::Record)? {
            return Ok(None);
        }
        in_flight.insert(nonce);
        drop(in_flight);
        let sent = self.chain.send(&tx).await;
        Ok(Some((tx, sent)))
    }

    /// Starts one close of several channels: a `closeMany` of `states`
    /// (a plain `close` when there is one, which costs less gas and whose
    /// simulation fails when it would), estimated, priced at the market
    /// held to the fee cap, signed at one fresh nonce and handed to
    /// `record` with the entries it closes and the latest block number.
    /// `record` answers the channels whose state is no longer the latest
    /// stored (a payment landed meanwhile), having recorded nothing; the
    /// close is then signed again at the same nonce without them and
    /// recorded anew, until `record` takes it whole (answers none) or no
    /// entry is left. Only a close recorded whole is broadcast. Returns
    /// what was sent, the states it closes and how the node took it.
    ///
    /// # Errors
    /// `Chain` (`Reverted` when the call would fail as a whole;
    /// `Unavailable`); `Record` when `record` fails.
    pub async fn start_closes<R: RecordCloses + ?Sized>(
        &self,
        states: Vec<ChannelState>,
        record: &R,
    ) -> Result<Option<Started>, StartError<R::Error>> {
        let mut states = states;
        let many = match states.as_slice() {
            [] => return Ok(None),
            [_] => false,
            _ => true,
        };
        // The gas of the whole batch: an upper bound for any part of it.
        let gas_limit = if many {
            self.chain.estimate_closes(&states).await?
        } else {
            self.chain.estimate_close(&states[0]).await?
        };
        let fees = Fees::capped(self.chain.market_fees().await?, self.policy.max_fee_per_gas);
        let head = self.chain.head().await?.number;
        let mut in_flight = self.in_flight.lock().await;
        let used = self.chain.nonce(self.payee).await?;
        let nonce = (used..).find(|n| !in_flight.contains(n)).expect("a free nonce exists");
        let tx = loop {
            let input = if many { close_many_calldata(&states) } else { close_calldata(&states[0]) };
            let tx = self.chain.sign(&PayeeCall::Registry(input), nonce, gas_limit, fees).await?;
            let stale = record.record(&tx, &states, head).await.map_err(StartError::Record)?;
            if stale.is_empty() {
                break tx;
            }
            let before = states.len();
            states.retain(|state| !stale.contains(&state.channel_id));
            // Nothing left, or nothing the record named: nothing is sent.
            if states.is_empty() || states.len() == before {
                return Ok(None);
            }
        };
        in_flight.insert(nonce);
        drop(in_flight);
        let sent = self.chain.send(&tx).await;
        Ok(Some(Started { tx, states, sent }))
    }

    /// Sends a payee transaction that is not a close (a gasless open) at a
    /// fresh nonce, priced at the market held to the fee cap. Its nonce
    /// stays taken until [`release`](Self::release)d; one released while
    /// never mined is filled by [`fill_gaps`](Self::fill_gaps), so it
    /// cannot hold back later closes.
    ///
    /// # Errors
    /// `Unavailable`, or `Other` when signing fails; a failed broadcast
    /// comes back in the result, as for closes.
    pub async fn start_call(
        &self,
        call: &PayeeCall,
        gas_limit: u64,
    ) -> Result<(SignedTx, Result<Sent, ChainError>), ChainError> {
        let fees = Fees::capped(self.chain.market_fees().await?, self.policy.max_fee_per_gas);
        let mut in_flight = self.in_flight.lock().await;
        let used = self.chain.nonce(self.payee).await?;
        let nonce = (used..).find(|n| !in_flight.contains(n)).expect("a free nonce exists");
        let tx = self.chain.sign(call, nonce, gas_limit, fees).await?;
        in_flight.insert(nonce);
        drop(in_flight);
        let sent = self.chain.send(&tx).await;
        Ok((tx, sent))
    }

    /// Reads what the chain shows of `close` now: the wallet's nonces used
    /// at the confirmed height first, then the receipts of its versions (in that order, so a close
    /// mined between the reads is never taken for a foreign transaction).
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn observe(&self, close: &CloseTx) -> Result<Observation, ChainError> {
        let head = self.chain.head().await?.number;
        let confirmed = head.saturating_add(1).saturating_sub(self.policy.confirmations.max(1));
        let mined_nonce = self.chain.nonce_at(self.payee, confirmed).await?;
        // No version can be mined while the nonce is unused at the latest
        // block: a stuck close with many versions costs two calls, not one
        // per version.
        let mut receipt = None;
        if self.chain.nonce(self.payee).await? > close.nonce {
            for attempt in close.attempts.iter().rev() {
                if let Some(found) = self.chain.receipt(attempt.hash).await? {
                    receipt = Some(found);
                    break;
                }
            }
        }
        let in_pool = receipt.is_none() && self.chain.is_pending(close.latest().hash).await?;
        let market = self.chain.market_fees().await?;
        Ok(Observation { head, mined_nonce, receipt, market, in_pool })
    }

    /// The next step for `close` given `seen`.
    pub fn decide(&self, close: &CloseTx, seen: &Observation) -> Decision {
        close.step(seen, &self.policy)
    }

    /// Signs `previous` (a close's newest version) again with `fees`: the
    /// same call, nonce and gas limit, so every version closes with the
    /// very state first recorded.
    ///
    /// # Errors
    /// `Other` when signing fails or `previous` is not a registry call.
    pub async fn sign_replacement(&self, previous: &SignedTx, fees: Fees) -> Result<SignedTx, ChainError> {
        let call = PayeeCall::Registry(previous.input()?);
        self.chain.sign(&call, previous.nonce, previous.gas_limit, fees).await
    }

    /// Fills every nonce gap below the closes in flight: a nonce that is
    /// neither used on chain nor held by a recorded close (its close was
    /// given up before it was ever mined, e.g. the channel was refunded)
    /// would hold back every later close for good, so it gets a 0-wei
    /// transfer to the payee itself at the market's fees. Returns the
    /// fillers sent.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn fill_gaps(&self) -> Result<Vec<SignedTx>, ChainError> {
        let in_flight = self.in_flight.lock().await.clone();
        let Some(&highest) = in_flight.last() else { return Ok(Vec::new()) };
        let used = self.chain.nonce(self.payee).await?;
        let gaps: Vec<u64> = (used..highest).filter(|n| !in_flight.contains(n)).collect();
        if gaps.is_empty() {
            return Ok(Vec::new());
        }
        let fees = Fees::capped(self.chain.market_fees().await?, self.policy.max_fee_per_gas);
        let mut fillers = Vec::new();
        for nonce in gaps {
            let filler = self.chain.sign(&PayeeCall::SelfTransfer, nonce, TRANSFER_GAS, fees).await?;
            self.chain.send(&filler).await?;
            fillers.push(filler);
        }
        Ok(fillers)
    }

    /// Broadcasts a recorded transaction.
    ///
    /// # Errors
    /// `Unavailable`, or `Rejected` for a refusal `Sent` cannot name.
    pub async fn broadcast(&self, tx: &SignedTx) -> Result<Sent, ChainError> {
        self.chain.send(tx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close_tx::{Attempt, Inclusion};
    use crate::memory::MemoryChain;
    use alloy::primitives::{B256, U256};

    const POLICY: Policy = Policy { confirmations: 3, resubmit_blocks: 3, max_fee_per_gas: 100_000_000_000 };

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    /// Records nothing, calling `stale` stale; remembers each record's
    /// nonce and size.
    struct Recorder {
        stale: Vec<B256>,
        records: std::sync::Mutex<Vec<(u64, usize)>>,
    }

    #[async_trait::async_trait]
    impl RecordCloses for Recorder {
        type Error = Never;

        async fn record(&self, tx: &SignedTx, entries: &[ChannelState], _: u64) -> Result<Vec<B256>, Never> {
            self.records.lock().unwrap().push((tx.nonce, entries.len()));
            Ok(entries.iter().map(|s| s.channel_id).filter(|id| self.stale.contains(id)).collect())
        }
    }

    fn as_close(tx: &SignedTx, head: u64) -> CloseTx {
        CloseTx {
            nonce: tx.nonce,
            attempts: vec![Attempt { hash: tx.hash, fees: tx.fees }],
            signed_at_block: head,
            mined: None,
        }
    }

    async fn start(manager: &TxManager, state: &ChannelState) -> (SignedTx, u64) {
        let mut recorded = None;
        let (tx, sent) = manager
            .start_close(state, async |_: &SignedTx, head| {
                recorded = Some(head);
                Ok::<_, Never>(true)
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sent.unwrap(), Sent::Accepted);
        (tx, recorded.unwrap())
    }

    #[tokio::test]
    async fn closes_of_different_channels_take_consecutive_nonces_and_a_lost_record_leaves_no_gap() {
        let chain = Arc::new(MemoryChain::new());
        let manager = TxManager::new(chain.clone(), POLICY).unwrap();
        let a = chain.open_paid_channel(1, 3, 1);
        let b = chain.open_paid_channel(2, 3, 1);
        let c = chain.open_paid_channel(3, 3, 1);
        let (first, _) = start(&manager, &a).await;
        // A record that loses its compare-and-swap sends nothing and keeps
        // no nonce.
        let lost = manager.start_close(&b, async |_: &SignedTx, _| Ok::<_, Never>(false)).await.unwrap();
        assert!(lost.is_none());
        let (second, _) = start(&manager, &c).await;
        assert_eq!((first.nonce, second.nonce), (0, 1));
        assert_eq!(chain.sent().len(), 2);
    }

    #[tokio::test]
    async fn a_batch_is_one_transaction_at_one_nonce_signed_again_without_a_stale_entry() {
        let chain = Arc::new(MemoryChain::new());
        let manager = TxManager::new(chain.clone(), POLICY).unwrap();
        let states: Vec<_> = (1..=3).map(|id| chain.open_paid_channel(id, 3, 1)).collect();
        let stale = states[1].channel_id;
        // A payment landed on the second channel: its state is stale.
        let recorder = Recorder { stale: vec![stale], records: Default::default() };
        let started = manager.start_closes(states.clone(), &recorder).await.unwrap().unwrap();
        assert_eq!(
            *recorder.records.lock().unwrap(),
            vec![(0, 3), (0, 2)],
            "signed again at the same nonce without the stale entry"
        );
        assert_eq!(
            started.states.iter().map(|s| s.channel_id).collect::<Vec<_>>(),
            [states[0].channel_id, states[2].channel_id]
        );
        assert_eq!(started.sent.unwrap(), Sent::Accepted);
        assert_eq!(chain.sent().len(), 1, "only the close recorded whole is sent");
        chain.mine();
        assert_eq!(chain.closed_in(started.tx.hash).await.unwrap(), vec![states[0].channel_id, states[2].channel_id]);
        assert_eq!(chain.close_many_sizes(), vec![2]);
        assert_eq!(chain.closes_of(stale), 0);
        // A batch all of whose entries are stale sends nothing and keeps no nonce.
        let none = manager.start_closes(vec![states[1].clone()], &recorder).await.unwrap();
        assert!(none.is_none());
        assert_eq!(manager.in_flight.lock().await.len(), 1);
    }

    #[tokio::test]
    async fn an_entry_that_cannot_close_is_skipped_and_the_others_close() {
        let chain = Arc::new(MemoryChain::new());
        let manager = TxManager::new(chain.clone(), POLICY).unwrap();
        let states: Vec<_> = (1..=3).map(|id| chain.open_paid_channel(id, 3, 1)).collect();
        chain.refund(states[0].channel_id);
        let recorder = Recorder { stale: Vec::new(), records: Default::default() };
        let started = manager.start_closes(states.clone(), &recorder).await.unwrap().unwrap();
        chain.mine();
        let receipt = chain.receipt(started.tx.hash).await.unwrap().unwrap();
        assert!(receipt.success, "a skipped entry does not revert the batch");
        assert_eq!(chain.closed_in(started.tx.hash).await.unwrap(), vec![states[1].channel_id, states[2].channel_id]);
    }

    #[tokio::test]
    async fn a_dropped_close_is_priced_anew_at_the_same_nonce_and_whichever_version_is_mined_counts() {
        let chain = Arc::new(MemoryChain::new());
        let manager = TxManager::new(chain.clone(), POLICY).unwrap();
        let state = chain.open_paid_channel(1, 3, 1);
        let (tx, head) = start(&manager, &state).await;
        let mut close = as_close(&tx, head);
        // The base fee jumps past the close's fee cap: the node drops it.
        chain.set_base_fee(tx.fees.max_fee_per_gas * 10);
        for _ in 0..3 {
            chain.mine();
        }
        let seen = manager.observe(&close).await.unwrap();
        // Dropped from the pool, it is priced anew at the market.
        assert!(!seen.in_pool);
        let Decision::Reprice(fees) = manager.decide(&close, &seen) else { panic!("expected a new price") };
        assert_eq!(fees, Fees::capped(seen.market, POLICY.max_fee_per_gas));
        let replacement = manager.sign_replacement(&tx, fees).await.unwrap();
        assert_eq!(replacement.nonce, tx.nonce);
        close.attempts.push(Attempt { hash: replacement.hash, fees });
        close.signed_at_block = seen.head;
        assert_eq!(manager.broadcast(&replacement).await.unwrap(), Sent::Accepted);
        chain.mine();
        let seen = manager.observe(&close).await.unwrap();
        let Decision::Mined(inclusion) = manager.decide(&close, &seen) else { panic!("expected mined") };
        assert_eq!(inclusion.tx, replacement.hash);
        close.mined = Some(inclusion);
        chain.mine();
        chain.mine();
        let seen = manager.observe(&close).await.unwrap();
        assert_eq!(manager.decide(&close, &seen), Decision::Confirmed(inclusion));
        assert_eq!(chain.closed_with(state.channel_id), Some(U256::from(1u64)));
    }

    #[tokio::test]
    async fn a_nonce_taken_by_a_foreign_transaction_is_seen_as_such() {
        let chain = Arc::new(MemoryChain::new());
        let manager = TxManager::new(chain.clone(), POLICY).unwrap();
        let state = chain.open_paid_channel(1, 3, 1);
        let (tx, head) = start(&manager, &state).await;
        chain.mine_foreign_transaction();
        let close = as_close(&tx, head);
        // Not before the foreign transaction is as deep as a close must be.
        let seen = manager.observe(&close).await.unwrap();
        assert_eq!(manager.decide(&close, &seen), Decision::Rebroadcast);
        chain.mine();
        chain.mine();
        let seen = manager.observe(&close).await.unwrap();
        assert_eq!(manager.decide(&close, &seen), Decision::NonceTaken);
        // Released, the nonce is not reused: the chain has used it.
        manager.release(tx.nonce).await;
        let (again, _) = start(&manager, &state).await;
        assert_eq!(again.nonce, tx.nonce + 1);
    }

    #[tokio::test]
    async fn a_receipt_removed_by_a_reorg_is_seen_and_the_same_bytes_land_again() {
        let chain = Arc::new(MemoryChain::new());
        let manager = TxManager::new(chain.clone(), POLICY).unwrap();
        let state = chain.open_paid_channel(1, 3, 1);
        let (tx, head) = start(&manager, &state).await;
        chain.mine();
        let mut close = as_close(&tx, head);
        let Decision::Mined(inclusion) = manager.decide(&close, &manager.observe(&close).await.unwrap()) else {
            panic!("expected mined")
        };
        close.mined = Some(inclusion);
        chain.reorg(1, false);
        assert_eq!(manager.decide(&close, &manager.observe(&close).await.unwrap()), Decision::Reorged);
        close.mined = None;
        assert_eq!(manager.broadcast(&tx).await.unwrap(), Sent::Accepted);
        chain.mine();
        let seen = manager.observe(&close).await.unwrap();
        assert!(
            matches!(manager.decide(&close, &seen), Decision::Mined(Inclusion { tx: hash, .. }) if hash == tx.hash)
        );
        assert_eq!(chain.closes_of(state.channel_id), 1);
        let _ = B256::ZERO;
    }
}
