//! The channel id the contract assigns: keccak256(abi.encode(client, payee,
//! salt)), so a client knows its channel's id before the transaction lands.

use alloy_primitives::{Address, B256, keccak256};

pub fn channel_id(client: Address, payee: Address, salt: B256) -> B256 {
    // abi.encode pads each address to a 32-byte word.
    let mut words = [0u8; 96];
    words[12..32].copy_from_slice(client.as_slice());
    words[44..64].copy_from_slice(payee.as_slice());
    words[64..].copy_from_slice(salt.as_slice());
    keccak256(words)
}
