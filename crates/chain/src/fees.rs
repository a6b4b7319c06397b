//! EIP-1559 fees of the payee's transactions and the rule that re-prices
//! a stuck one.
//!
//! A node replaces a pending transaction only with one at the same nonce
//! whose `maxFeePerGas` *and* `maxPriorityFeePerGas` are both higher by a
//! margin: geth's txpool `PriceBump` is 10 %. We bump by 12.5 % (the
//! base fee's own per-block step, as Optimism's `txmgr` and Chainlink's
//! `txm` do), rounded up, so a replacement is never refused for being a
//! few wei short; and never past the operator's cap.

/// The two fee fields of an EIP-1559 transaction, in wei per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fees {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// The smallest raise of both fee fields that a replacement needs, as a
/// fraction: 1/8 = 12.5 % (geth requires 10 %).
pub const BUMP_NUMERATOR: u128 = 1;
pub const BUMP_DENOMINATOR: u128 = 8;

/// What re-pricing a stuck transaction gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bump {
    /// Sign again with these fees.
    To(Fees),
    /// The bumped fees would pass the cap: the transaction waits at the
    /// fees it has until the market comes back under the cap.
    AtCap,
}

impl Fees {
    /// `value` raised by 12.5 %, rounded up, and by at least 1 wei.
    fn raised(value: u128) -> u128 {
        let step = (value * BUMP_NUMERATOR).div_ceil(BUMP_DENOMINATOR).max(1);
        value.saturating_add(step)
    }

    /// Fees for a new transaction: the market's, with `maxFeePerGas` held
    /// to `cap` (and the tip never above the fee cap).
    pub fn capped(market: Fees, cap: u128) -> Fees {
        let max_fee_per_gas = market.max_fee_per_gas.min(cap);
        Fees { max_fee_per_gas, max_priority_fee_per_gas: market.max_priority_fee_per_gas.min(max_fee_per_gas) }
    }

    /// The fees of a replacement for a transaction priced `self`, given
    /// what the market asks now: each field raised by at least 12.5 %, or
    /// to the market's when that is higher; `AtCap` when the raised
    /// `maxFeePerGas` would exceed `cap` (a replacement under 12.5 % is
    /// refused by nodes, so there is nothing useful to send).
    pub fn bump(self, market: Fees, cap: u128) -> Bump {
        let max_fee_per_gas = Self::raised(self.max_fee_per_gas).max(market.max_fee_per_gas);
        let max_priority_fee_per_gas =
            Self::raised(self.max_priority_fee_per_gas).max(market.max_priority_fee_per_gas).min(max_fee_per_gas);
        if Self::raised(self.max_fee_per_gas) > cap {
            return Bump::AtCap;
        }
        let max_fee_per_gas = max_fee_per_gas.min(cap);
        // The tip must rise as much as the fee cap does, or the node
        // refuses the replacement; when the cap squeezes it, give up.
        if max_priority_fee_per_gas > max_fee_per_gas {
            return Bump::AtCap;
        }
        Bump::To(Fees { max_fee_per_gas, max_priority_fee_per_gas })
    }

    /// Whether `self` may replace a pending transaction priced `old`:
    /// both fields at least 12.5 % higher.
    pub fn replaces(self, old: Fees) -> bool {
        self.max_fee_per_gas >= Self::raised(old.max_fee_per_gas)
            && self.max_priority_fee_per_gas >= Self::raised(old.max_priority_fee_per_gas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GWEI: u128 = 1_000_000_000;

    fn fees(max: u128, tip: u128) -> Fees {
        Fees { max_fee_per_gas: max, max_priority_fee_per_gas: tip }
    }

    #[test]
    fn a_bump_raises_both_fields_by_an_eighth_rounded_up() {
        let old = fees(10 * GWEI, GWEI);
        assert_eq!(old.bump(fees(GWEI, 1), 100 * GWEI), Bump::To(fees(11_250_000_000, 1_125_000_000)));
        // Rounded up: 12.5 % of 9 wei is 1.125, so 2 wei.
        assert_eq!(fees(9, 9).bump(fees(0, 0), 1_000), Bump::To(fees(11, 11)));
        // A zero tip still rises, by the 1 wei minimum.
        assert_eq!(fees(8, 0).bump(fees(0, 0), 1_000), Bump::To(fees(9, 1)));
    }

    #[test]
    fn a_bump_follows_the_market_when_it_moved_further() {
        let old = fees(10 * GWEI, GWEI);
        let market = fees(40 * GWEI, 2 * GWEI);
        assert_eq!(old.bump(market, 100 * GWEI), Bump::To(market));
        // Past the cap, the market is followed only up to it.
        assert_eq!(old.bump(fees(400 * GWEI, 2 * GWEI), 100 * GWEI), Bump::To(fees(100 * GWEI, 2 * GWEI)));
    }

    #[test]
    fn nothing_is_sent_past_the_cap() {
        assert_eq!(fees(100 * GWEI, GWEI).bump(fees(500 * GWEI, GWEI), 100 * GWEI), Bump::AtCap);
        assert_eq!(fees(95 * GWEI, GWEI).bump(fees(0, 0), 100 * GWEI), Bump::AtCap);
    }

    #[test]
    fn new_fees_are_held_to_the_cap() {
        assert_eq!(Fees::capped(fees(300, 50), 200), fees(200, 50));
        assert_eq!(Fees::capped(fees(300, 250), 200), fees(200, 200));
        assert_eq!(Fees::capped(fees(100, 5), 200), fees(100, 5));
    }

    proptest! {
        /// Whatever the market does, a bump below the cap is a valid
        /// replacement for geth (≥ 10 %) and for our own 12.5 % rule, and
        /// never passes the cap.
        #[test]
        fn every_bump_is_a_valid_replacement_under_the_cap(
            max in 1u128..1_000_000 * GWEI,
            tip_share in 0u128..=100,
            market_max in 0u128..1_000_000 * GWEI,
            market_tip in 0u128..1_000 * GWEI,
            cap in 1u128..2_000_000 * GWEI,
        ) {
            let old = fees(max, max * tip_share / 100);
            match old.bump(fees(market_max, market_tip), cap) {
                Bump::To(new) => {
                    prop_assert!(new.replaces(old));
                    prop_assert!(new.max_fee_per_gas * 10 >= old.max_fee_per_gas * 11);
                    prop_assert!(new.max_priority_fee_per_gas * 10 >= old.max_priority_fee_per_gas * 11);
                    prop_assert!(new.max_fee_per_gas <= cap);
                    prop_assert!(new.max_priority_fee_per_gas <= new.max_fee_per_gas);
                }
                Bump::AtCap => prop_assert!(Fees::raised(old.max_fee_per_gas) > cap
                    || Fees::raised(old.max_priority_fee_per_gas).max(market_tip) > cap.min(Fees::raised(old.max_fee_per_gas).max(market_max))),
            }
        }
    }
}
