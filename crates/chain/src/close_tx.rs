//! The life of one close transaction as a pure state machine: chain
//! observations in, a decision out. The transaction manager
//! ([`crate::tx_manager`]) does the I/O and persists every step; this
//! module decides, so each rule can be tested with no chain and no clock.
//!
//! A close is one transaction: a `close` of one channel or a `closeMany`
//! of a batch; either way it is signed, recorded and sent at one nonce
//! and lives as one `CloseTx` (which of a batch's entries closed is read
//! from its receipt once it is confirmed, by the caller).
//!
//! A close is signed, recorded and sent at one nonce. Until that nonce is
//! used on chain it may be re-signed at the *same* nonce with higher fees
//! (every version is kept; whichever is mined wins). It counts once its
//! receipt has `confirmations` confirmations. The shapes of failure it
//! handles, after the hot-wallet transaction managers of Optimism
//! (`op-service/txmgr`) and Chainlink (`txm`):
//! - no receipt after `resubmit_blocks` blocks: re-price (fee bump);
//! - the nonce used by a transaction that is none of ours: abandon, and
//!   let the caller re-read the channel and close again at a fresh nonce;
//! - a receipt that a reorg removed: send again;
//! - a receipt of a reverted close: abandon and re-read the channel
//!   (someone else may have closed it).

use crate::fees::{Bump, Fees};
use alloy::primitives::{B256, TxHash};

/// Where a transaction was mined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inclusion {
    pub tx: TxHash,
    /// Block number.
    pub block: u64,
    pub block_hash: B256,
    /// Whether it succeeded (`status` 1).
    pub success: bool,
}

/// One signed version of the close: every version has the same nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub hash: TxHash,
    pub fees: Fees,
}

/// A close in flight, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseTx {
    pub nonce: u64,
    /// Every version signed at `nonce`, oldest first; never empty.
    pub attempts: Vec<Attempt>,
    /// The latest block number when the newest version was signed: the
    /// resubmission interval runs from there.
    pub signed_at_block: u64,
    /// Where a version was last seen mined, if it was.
    pub mined: Option<Inclusion>,
}

/// The rules the manager runs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Blocks deep a receipt must be to count (`latest − b + 1`); 0 and 1
    /// both trust the latest block.
    pub confirmations: u64,
    /// Blocks without a receipt before the close is re-priced.
    pub resubmit_blocks: u64,
    /// The highest `maxFeePerGas` paid, in wei.
    pub max_fee_per_gas: u128,
}

/// What the chain shows now. Read `mined_nonce` *before* the receipts: a
/// version mined between the two reads then shows as mined, never as a
/// nonce taken by someone else.
///
/// `mined_nonce` is read at the confirmed height (`head − confirmations +
/// 1`), so a close is abandoned only for a foreign transaction as deep as
/// a close must be to count: one a reorg may still remove (or that a
/// lagging endpoint reports alone) never makes a second close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The latest block number.
    pub head: u64,
    /// The payee's transaction count at the confirmed height: nonces below
    /// it are used for good.
    pub mined_nonce: u64,
    /// The receipt of whichever version is mined, if one is.
    pub receipt: Option<Inclusion>,
    /// Whether the node holds the newest version in its pool. Only a
    /// version in a pool needs outbidding; one the node never took (the
    /// wallet could not pay for it) or dropped is priced anew instead, so
    /// fees never ratchet up while nothing is waiting.
    pub in_pool: bool,
    /// What a new transaction would pay now.
    pub market: Fees,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Mined and deep enough, and it succeeded: the channel is closed.
    Confirmed(Inclusion),
    /// Mined and deep enough, and it reverted: forget this close and read
    /// the channel again.
    Reverted(Inclusion),
    /// Newly seen mined (or mined elsewhere after a reorg): record where,
    /// then wait for confirmations.
    Mined(Inclusion),
    /// Mined where it was seen before, not yet deep enough.
    Wait,
    /// Seen mined before, gone now: a reorg removed it. Forget where it
    /// was and send the newest version again.
    Reorged,
    /// The nonce was used by a transaction that is none of ours: forget
    /// this close and close the channel again at a fresh nonce.
    NonceTaken,
    /// Not mined, still within the resubmission interval: send the newest
    /// version again (harmless if the node has it).
    Rebroadcast,
    /// Not mined past the interval, waiting in the pool: sign again at the
    /// same nonce with these fees (12.5 % more), record, send.
    Bump(Fees),
    /// Not mined past the interval and not in the pool: sign again at the
    /// same nonce at the market's fees (held to the cap), record, send.
    Reprice(Fees),
    /// Not mined past the interval, but a bump would pass the fee cap:
    /// send the newest version again and say that it waits at the cap.
    AtCap,
}

impl CloseTx {
    /// The newest version.
    ///
    /// # Panics
    /// If `attempts` is empty, which a recorded close never is.
    pub fn latest(&self) -> &Attempt {
        self.attempts.last().expect("a close has at least one signed version")
    }

    /// Whether `tx` is one of this close's versions.
    pub fn is_ours(&self, tx: &TxHash) -> bool {
        self.attempts.iter().any(|attempt| attempt.hash == *tx)
    }

    /// Decides the next step from what the chain shows now.
    pub fn step(&self, seen: &Observation, policy: &Policy) -> Decision {
        if let Some(receipt) = seen.receipt.filter(|r| self.is_ours(&r.tx)) {
            let depth = seen.head.saturating_add(1).saturating_sub(receipt.block);
            if depth >= policy.confirmations.max(1) {
                return if receipt.success { Decision::Confirmed(receipt) } else { Decision::Reverted(receipt) };
            }
            return if self.mined == Some(receipt) { Decision::Wait } else { Decision::Mined(receipt) };
        }
        if self.mined.is_some() {
            return Decision::Reorged;
        }
        if seen.mined_nonce > self.nonce {
            return Decision::NonceTaken;
        }
        if seen.head < self.signed_at_block.saturating_add(policy.resubmit_blocks) {
            return Decision::Rebroadcast;
        }
        if !seen.in_pool {
            let fees = Fees::capped(seen.market, policy.max_fee_per_gas);
            return if fees != self.latest().fees {
                Decision::Reprice(fees)
            } else if seen.market.max_fee_per_gas > policy.max_fee_per_gas {
                Decision::AtCap
            } else {
                Decision::Rebroadcast
            };
        }
        match self.latest().fees.bump(seen.market, policy.max_fee_per_gas) {
            Bump::To(fees) => Decision::Bump(fees),
            Bump::AtCap => Decision::AtCap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy { confirmations: 3, resubmit_blocks: 3, max_fee_per_gas: 1_000 };

    fn fees(max: u128, tip: u128) -> Fees {
        Fees { max_fee_per_gas: max, max_priority_fee_per_gas: tip }
    }

    fn close() -> CloseTx {
        CloseTx {
            nonce: 7,
            attempts: vec![Attempt { hash: B256::repeat_byte(1), fees: fees(100, 10) }],
            signed_at_block: 50,
            mined: None,
        }
    }

    fn seen(head: u64) -> Observation {
        Observation { head, mined_nonce: 7, receipt: None, market: fees(100, 10), in_pool: true }
    }

    fn mined(tx: u8, block: u64, success: bool) -> Inclusion {
        Inclusion { tx: B256::repeat_byte(tx), block, block_hash: B256::repeat_byte(block as u8), success }
    }

    #[test]
    fn a_pending_close_is_sent_again_then_bumped_after_the_interval() {
        assert_eq!(close().step(&seen(50), &POLICY), Decision::Rebroadcast);
        assert_eq!(close().step(&seen(52), &POLICY), Decision::Rebroadcast);
        assert_eq!(close().step(&seen(53), &POLICY), Decision::Bump(fees(113, 12)));
    }

    #[test]
    fn a_bump_follows_a_market_that_rose_past_an_eighth_and_stops_at_the_cap() {
        let spike = Observation { market: fees(900, 20), ..seen(60) };
        assert_eq!(close().step(&spike, &POLICY), Decision::Bump(fees(900, 20)));
        let over = Observation { market: fees(5_000, 20), ..seen(60) };
        assert_eq!(close().step(&over, &POLICY), Decision::Bump(fees(1_000, 20)));
        let mut at_cap = close();
        at_cap.attempts.push(Attempt { hash: B256::repeat_byte(2), fees: fees(1_000, 20) });
        assert_eq!(at_cap.step(&over, &POLICY), Decision::AtCap);
    }

    #[test]
    fn a_close_the_node_does_not_hold_is_priced_anew_not_outbid() {
        // Never taken (no gas) while the market stayed put: sent again as is.
        let dropped = Observation { in_pool: false, ..seen(60) };
        assert_eq!(close().step(&dropped, &POLICY), Decision::Rebroadcast);
        // The market moved, either way: priced at it, no 12.5 % ratchet.
        let cheaper = Observation { in_pool: false, market: fees(80, 10), ..seen(60) };
        assert_eq!(close().step(&cheaper, &POLICY), Decision::Reprice(fees(80, 10)));
        let dearer = Observation { in_pool: false, market: fees(5_000, 10), ..seen(60) };
        assert_eq!(close().step(&dearer, &POLICY), Decision::Reprice(fees(1_000, 10)));
        // At the cap already: it waits there.
        let mut capped = close();
        capped.attempts.push(Attempt { hash: B256::repeat_byte(2), fees: fees(1_000, 10) });
        assert_eq!(capped.step(&dearer, &POLICY), Decision::AtCap);
    }

    #[test]
    fn a_receipt_counts_only_at_the_confirmation_depth() {
        let receipt = mined(1, 55, true);
        let at = |head| Observation { receipt: Some(receipt), mined_nonce: 8, ..seen(head) };
        assert_eq!(close().step(&at(55), &POLICY), Decision::Mined(receipt));
        let recorded = CloseTx { mined: Some(receipt), ..close() };
        assert_eq!(recorded.step(&at(56), &POLICY), Decision::Wait);
        assert_eq!(recorded.step(&at(57), &POLICY), Decision::Confirmed(receipt));
        // With 0 or 1 confirmations the latest block is trusted.
        let trusting = Policy { confirmations: 0, ..POLICY };
        assert_eq!(close().step(&at(55), &trusting), Decision::Confirmed(receipt));
    }

    #[test]
    fn any_signed_version_may_be_the_one_mined() {
        let mut bumped = close();
        bumped.attempts.push(Attempt { hash: B256::repeat_byte(2), fees: fees(113, 12) });
        let first = mined(1, 60, true);
        let seen = Observation { receipt: Some(first), mined_nonce: 8, ..seen(70) };
        assert_eq!(bumped.step(&seen, &POLICY), Decision::Confirmed(first));
    }

    #[test]
    fn a_reverted_close_is_abandoned_once_deep() {
        let failed = mined(1, 55, false);
        let seen = Observation { receipt: Some(failed), mined_nonce: 8, ..seen(57) };
        assert_eq!(close().step(&seen, &POLICY), Decision::Reverted(failed));
    }

    #[test]
    fn a_receipt_a_reorg_removed_is_sent_again() {
        let was = CloseTx { mined: Some(mined(1, 55, true)), ..close() };
        // The nonce is free again and no version has a receipt.
        assert_eq!(was.step(&seen(56), &POLICY), Decision::Reorged);
        // Re-mined in another block: recorded anew.
        let again = mined(1, 57, true);
        let seen = Observation { receipt: Some(again), mined_nonce: 8, ..seen(57) };
        assert_eq!(was.step(&seen, &POLICY), Decision::Mined(again));
    }

    #[test]
    fn a_nonce_used_by_someone_else_abandons_the_close() {
        let taken = Observation { mined_nonce: 8, ..seen(51) };
        assert_eq!(close().step(&taken, &POLICY), Decision::NonceTaken);
        // A receipt of someone else's transaction is not ours.
        let foreign = Observation { receipt: Some(mined(9, 51, true)), ..taken };
        assert_eq!(close().step(&foreign, &POLICY), Decision::NonceTaken);
    }
}
