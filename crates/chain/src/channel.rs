//! A channel as the contract stores it.

use alloy::primitives::{Address, U256};

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

/// One entry of the registry, as `channels(bytes32)` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnChainChannel {
    /// The wallet that opened and funded the channel.
    pub client: Address,
    /// Unix seconds (block time) from which the deposit can be refunded.
    pub expires_at: u64,
    pub status: ChannelStatus,
    /// Who may close the channel and is paid the server balance.
    pub payee: Address,
    /// The deposit in wei.
    pub deposit: U256,
    /// The address whose signatures close the channel (the client's
    /// session key).
    pub signer: Address,
}
