//! The signed channel state, as it travels and as it is stored.

use crate::eip712::{self, ChannelDomain};
use crate::encoding::{Amount, PublicKey, Signature, checksummed, hex_bytes, sequence};
use crate::signing::SigningKey;
use alloy_primitives::{Address, B256};
use serde::{Deserialize, Serialize};

/// One state of a payment channel, signed by the client's session key.
/// The field names are the seed document's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// The channel's id inside the registry contract.
    #[serde(with = "hex_bytes")]
    pub channel_id: B256,
    /// The registry contract; the EIP-712 `verifyingContract`.
    #[serde(with = "checksummed")]
    pub channel_address: Address,
    /// The wallet that opened (and funded) the channel; it gets back the
    /// client balance when the channel closes.
    #[serde(with = "checksummed")]
    pub client_wallet_address: Address,
    /// The session key that signs states: the channel's `signer` on chain.
    pub client_public_key: PublicKey,
    /// What is still the client's.
    pub client_balance: Amount,
    /// What the client has paid the server so far.
    pub server_balance: Amount,
    /// Counts payments: 0 for the opening state.
    #[serde(with = "sequence")]
    pub client_sequence_number: u64,
    /// The EIP-712 `ChannelState` signature by `client_public_key`.
    pub client_signature: Signature,
}

impl ChannelState {
    /// A state is final when the client has nothing left: the channel's
    /// last payment.
    pub fn is_final(&self) -> bool {
        self.client_balance.is_zero()
    }

    /// The channel's deposit: both balances together, or `None` when a
    /// forged state's sum overflows.
    pub fn deposit(&self) -> Option<Amount> {
        self.client_balance.checked_add(self.server_balance)
    }

    /// The EIP-712 struct this state signs.
    pub fn typed(&self) -> eip712::ChannelState {
        eip712::ChannelState {
            channelId: self.channel_id,
            clientBalance: self.client_balance.0,
            serverBalance: self.server_balance.0,
            sequenceNumber: self.client_sequence_number,
            isFinal: self.is_final(),
        }
    }

    /// The digest `client_signature` signs, under `domain`.
    pub fn signing_hash(&self, domain: &ChannelDomain) -> B256 {
        domain.signing_hash(&self.typed())
    }

    /// Replaces `client_signature` with `key`'s signature of this state.
    pub fn sign(&mut self, domain: &ChannelDomain, key: &SigningKey) {
        self.client_signature = key.sign_digest(&self.signing_hash(domain));
    }

    /// Whether two states belong to the same channel of the same client.
    pub fn same_channel(&self, other: &ChannelState) -> bool {
        self.channel_id == other.channel_id
            && self.channel_address == other.channel_address
            && self.client_wallet_address == other.client_wallet_address
            && self.client_public_key == other.client_public_key
    }

    /// The unsigned successor of this state paying `amount`, or `None` when
    /// the client balance cannot cover it.
    pub fn pay(&self, amount: Amount) -> Option<ChannelState> {
        Some(ChannelState {
            client_balance: self.client_balance.checked_sub(amount)?,
            server_balance: self.server_balance.checked_add(amount)?,
            client_sequence_number: self.client_sequence_number.checked_add(1)?,
            client_signature: Signature([0; 65]),
            ..self.clone()
        })
    }
}
