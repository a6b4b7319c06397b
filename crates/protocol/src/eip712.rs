//! The EIP-712 side of the protocol: the domain and the two signed structs.
//!
//! The structs are declared as Solidity with `sol!`, so their type strings
//! and hashing are alloy's, the same ones the contract and viem compute.

use alloy_primitives::{Address, B256, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, eip712_domain, sol};

sol! {
    /// What a client signs for every payment; the contract verifies exactly
    /// this when the payee closes the channel.
    #[derive(Debug, PartialEq, Eq)]
    struct ChannelState {
        bytes32 channelId;
        uint256 clientBalance;
        uint256 serverBalance;
        uint64 sequenceNumber;
        bool isFinal;
    }

    /// What a client signs to start streaming on one Socket.IO connection:
    /// `session` is that connection's socket id.
    #[derive(Debug, PartialEq, Eq)]
    struct Play {
        bytes32 channelId;
        string session;
    }
}

/// The EIP-712 domain of one channel contract on one chain, with its
/// separator computed once: hashing it again for every payment would double
/// the digest's cost on the server's hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDomain {
    /// The chain's id, as `eth_chainId` reports it.
    pub chain_id: u64,
    /// The channel contract, the domain's `verifyingContract`.
    pub contract: Address,
    separator: B256,
}

impl ChannelDomain {
    pub const NAME: &'static str = "Tollstream";
    pub const VERSION: &'static str = "1";

    pub fn new(chain_id: u64, contract: Address) -> Self {
        let separator = Self::eip712_domain(chain_id, contract).separator();
        ChannelDomain { chain_id, contract, separator }
    }

    fn eip712_domain(chain_id: u64, contract: Address) -> Eip712Domain {
        eip712_domain! {
            name: ChannelDomain::NAME,
            version: ChannelDomain::VERSION,
            chain_id: chain_id,
            verifying_contract: contract,
        }
    }

    /// The domain separator, as the contract's `domainSeparator()` returns it.
    pub fn separator(&self) -> B256 {
        self.separator
    }

    /// The digest a signer signs for `value`: keccak256(0x1901 ‖ separator ‖ hashStruct).
    pub fn signing_hash<T: SolStruct>(&self, value: &T) -> B256 {
        let mut preimage = [0u8; 66];
        preimage[0] = 0x19;
        preimage[1] = 0x01;
        preimage[2..34].copy_from_slice(self.separator.as_slice());
        preimage[34..].copy_from_slice(value.eip712_hash_struct().as_slice());
        keccak256(preimage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{U256, address};

    #[test]
    fn type_strings_are_the_protocols() {
        assert_eq!(
            ChannelState::eip712_encode_type(),
            "ChannelState(bytes32 channelId,uint256 clientBalance,uint256 serverBalance,uint64 sequenceNumber,bool isFinal)"
        );
        assert_eq!(Play::eip712_encode_type(), "Play(bytes32 channelId,string session)");
    }

    #[test]
    fn cached_separator_gives_alloys_signing_hash() {
        let contract = address!("5FbDB2315678afecb367f032d93F642f64180aa3");
        let domain = ChannelDomain::new(31337, contract);
        let state = ChannelState {
            channelId: B256::repeat_byte(7),
            clientBalance: U256::from(900),
            serverBalance: U256::from(100),
            sequenceNumber: 1,
            isFinal: false,
        };
        let expected = state.eip712_signing_hash(&ChannelDomain::eip712_domain(31337, contract));
        assert_eq!(domain.signing_hash(&state), expected);
    }
}
