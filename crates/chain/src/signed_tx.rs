//! A transaction signed by the payee, as recorded before it is broadcast.

use crate::error::ChainError;
use crate::fees::Fees;
use alloy::consensus::{Transaction, TxEnvelope};
use alloy::eips::Decodable2718;
use alloy::primitives::{Bytes, TxHash};

/// A signed transaction, ready to broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    pub hash: TxHash,
    /// The EIP-2718 encoding, as `eth_sendRawTransaction` takes it.
    pub raw: Bytes,
    pub nonce: u64,
    /// Gas units it may use.
    pub gas_limit: u64,
    /// Its EIP-1559 fees, in wei per gas.
    pub fees: Fees,
}

impl SignedTx {
    /// Reads a transaction back from its recorded EIP-2718 bytes.
    ///
    /// # Errors
    /// `Other` when the bytes are not a signed EIP-1559 transaction.
    pub fn decode(raw: &[u8]) -> Result<SignedTx, ChainError> {
        let envelope = TxEnvelope::decode_2718(&mut &raw[..])
            .map_err(|e| ChainError::Other(format!("not a signed transaction: {e}")))?;
        let fees = Fees {
            max_fee_per_gas: envelope.max_fee_per_gas(),
            max_priority_fee_per_gas: envelope.max_priority_fee_per_gas().unwrap_or(envelope.max_fee_per_gas()),
        };
        Ok(SignedTx {
            hash: *envelope.tx_hash(),
            raw: Bytes::copy_from_slice(raw),
            nonce: envelope.nonce(),
            gas_limit: envelope.gas_limit(),
            fees,
        })
    }

    /// The call data it carries.
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    pub fn input(&self) -> Result<Bytes, ChainError> {
        let envelope = TxEnvelope::decode_2718(&mut &self.raw[..])
            .map_err(|e| ChainError::Other(format!("not a signed transaction: {e}")))?;
        Ok(envelope.input().clone())
    }
}
