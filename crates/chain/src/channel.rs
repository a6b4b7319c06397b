//! A channel as the contract stores it.

use alloy::primitives::{Address, FixedBytes, U256, keccak256};
use alloy::sol_types::SolValue;

/// The status byte of `channels(bytes32)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelStatus {
    /// The id was never used.
    None,
    Open,
    Closed,
    Refunded,
}

impl ChannelStatus {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => ChannelStatus::None,
            1 => ChannelStatus::Open,
            2 => ChannelStatus::Closed,
            3 => ChannelStatus::Refunded,
            _ => return None,
        })
    }
}

/// The registry's commitment to a channel's payee and signer: the first 20
/// bytes of keccak256(abi.encode(payee, signer)), as `termsOf` computes it.
/// The contract keeps only this, not the two addresses (one storage slot
/// less per channel); a close proves them by its caller and its signature.
pub fn terms_of(payee: Address, signer: Address) -> FixedBytes<20> {
    FixedBytes::<20>::from_slice(&keccak256((payee, signer).abi_encode())[..20])
}

/// One entry of the registry, as `channels(bytes32)` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnChainChannel {
    /// The wallet whose funds the channel holds.
    pub client: Address,
    /// Unix seconds (block time) from which the deposit can be refunded.
    pub expires_at: u64,
    pub status: ChannelStatus,
    /// The deposit token, or the zero address for the native coin.
    pub token: Address,
    /// The deposit in the token's smallest unit (wei for the native coin).
    pub deposit: U256,
    /// [`terms_of`] the channel's payee and signer.
    pub terms: FixedBytes<20>,
}

impl OnChainChannel {
    /// Whether the channel pays `payee` and is signed for by `signer`.
    pub fn is_for(&self, payee: Address, signer: Address) -> bool {
        self.terms == terms_of(payee, signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_bind_the_payee_and_the_signer_in_order() {
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        assert_ne!(terms_of(a, b), terms_of(b, a));
        let channel = OnChainChannel {
            client: Address::ZERO,
            expires_at: 0,
            status: ChannelStatus::Open,
            token: Address::ZERO,
            deposit: U256::ZERO,
            terms: terms_of(a, b),
        };
        assert!(channel.is_for(a, b));
        assert!(!channel.is_for(b, a));
    }
}
