//! Opening a channel from the viewer's wallet.

use crate::contract::TollstreamChannels;
use crate::error::ChainError;
use crate::evm::connect_provider;
use alloy::primitives::{Address, B256, TxHash, U256};
use tollstream_protocol::SigningKey;
use tollstream_protocol::channel_id::channel_id;

/// What to open.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    pub contract: Address,
    /// The server's wallet.
    pub payee: Address,
    /// The session key's address, which signs the channel's states.
    pub signer: Address,
    pub deposit: U256,
    /// Unix seconds (block time).
    pub expires_at: u64,
    /// Makes the channel id unique; random in practice.
    pub salt: B256,
}

/// An opened channel.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub channel_id: B256,
    pub tx: TxHash,
}

/// Sends `open` from `wallet` and waits until it is mined.
///
/// # Errors
/// `Reverted` when the contract refuses (the id was used, bad expiry),
/// `TransactionFailed` when mined but failed, `Unavailable` on RPC failure.
pub async fn open_channel(rpc_url: &str, wallet: &SigningKey, request: &OpenRequest) -> Result<Opened, ChainError> {
    let provider = connect_provider(rpc_url, Some(wallet))?;
    let registry = TollstreamChannels::new(request.contract, provider);
    let receipt = registry
        .open(request.payee, request.signer, request.expires_at, request.salt)
        .value(request.deposit)
        .send()
        .await
        .map_err(ChainError::from_contract)?
        .get_receipt()
        .await
        .map_err(|e| ChainError::Unavailable(e.to_string()))?;
    if !receipt.status() {
        return Err(ChainError::TransactionFailed(receipt.transaction_hash));
    }
    Ok(Opened { channel_id: channel_id(wallet.address(), request.payee, request.salt), tx: receipt.transaction_hash })
}
