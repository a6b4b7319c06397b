//! What a viewer does on chain: open a channel, find its channels, and take
//! a deposit back after expiry.

use crate::channel::OnChainChannel;
use crate::contract::TollstreamChannels;
use crate::error::ChainError;
use crate::evm::{Chain, EvmChain, connect_provider};
use crate::token::{DepositToken, token_info};
use alloy::primitives::{Address, B256, Bytes, TxHash, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use tollstream_protocol::SigningKey;
use tollstream_protocol::channel_id::channel_id;
use tollstream_protocol::token::{Permit, TokenSigningDomain};

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
    let call = registry.open(request.payee, request.signer, request.expires_at, request.salt).value(request.deposit);
    let tx = mined(call.send().await).await?;
    Ok(Opened { channel_id: channel_id(wallet.address(), request.payee, request.salt), tx })
}

/// Opens a channel holding `request.deposit` of ERC-20 `token` from
/// `wallet`, which pays the gas: with an EIP-2612 permit in one
/// transaction when the token takes permits, else `approve` then
/// `openToken`. Waits until the open is mined.
///
/// # Errors
/// As [`open_channel`]; `Other` when `token` is no ERC-20.
pub async fn open_token_channel(
    rpc_url: &str,
    wallet: &SigningKey,
    token: Address,
    request: &OpenRequest,
) -> Result<Opened, ChainError> {
    let provider = connect_provider(rpc_url, Some(wallet))?;
    let info = token_info(&provider, token).await?;
    let registry = TollstreamChannels::new(request.contract, &provider);
    let tx = match info.domain.filter(|_| info.permit) {
        Some((name, version)) => {
            let chain_id = provider.get_chain_id().await.map_err(ChainError::from_transport)?;
            let nonce = DepositToken::new(token, &provider)
                .nonces(wallet.address())
                .call()
                .await
                .map_err(ChainError::from_contract)?;
            // The permit is used in the same transaction: it need not
            // outlive the channel.
            let deadline = U256::from(request.expires_at);
            let permit =
                Permit { owner: wallet.address(), spender: request.contract, value: request.deposit, nonce, deadline };
            let signature = TokenSigningDomain::new(name, version, chain_id, token).sign(&permit, wallet);
            let call = registry.openWithPermit(
                token,
                request.deposit,
                request.payee,
                request.signer,
                request.expires_at,
                request.salt,
                deadline,
                Bytes::copy_from_slice(&signature.0),
            );
            mined(call.send().await).await?
        }
        None => {
            let contract = DepositToken::new(token, &provider);
            mined(contract.approve(request.contract, request.deposit).send().await).await?;
            let call = registry.openToken(
                token,
                request.deposit,
                request.payee,
                request.signer,
                request.expires_at,
                request.salt,
            );
            mined(call.send().await).await?
        }
    };
    Ok(Opened { channel_id: channel_id(wallet.address(), request.payee, request.salt), tx })
}

/// Waits for a sent transaction to be mined and checks that it succeeded.
async fn mined(
    sent: Result<alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>, alloy::contract::Error>,
) -> Result<TxHash, ChainError> {
    let receipt = sent
        .map_err(ChainError::from_contract)?
        .get_receipt()
        .await
        .map_err(|e| ChainError::Unavailable(Box::new(e)))?;
    if !receipt.status() {
        return Err(ChainError::TransactionFailed(receipt.transaction_hash));
    }
    Ok(receipt.transaction_hash)
}

/// Every channel `client` opened on the registry at `contract`, oldest
/// first, with its state on chain now.
///
/// # Errors
/// `Unavailable` on RPC failure.
pub async fn channels_opened_by(
    rpc_url: &str,
    contract: Address,
    client: Address,
) -> Result<Vec<(B256, OnChainChannel)>, ChainError> {
    let chain = EvmChain::connect(rpc_url, None, contract).await?;
    let filter = Filter::new()
        .address(contract)
        .event_signature(TollstreamChannels::Opened::SIGNATURE_HASH)
        .topic2(client.into_word())
        .from_block(0u64);
    let logs = chain.provider().get_logs(&filter).await.map_err(ChainError::from_transport)?;
    let mut channels = Vec::new();
    for log in logs {
        if let Ok(opened) = log.log_decode::<TollstreamChannels::Opened>() {
            let id = opened.inner.data.channelId;
            channels.push((id, chain.channel(id).await?));
        }
    }
    Ok(channels)
}

/// Sends `refund` for channel `id` from `wallet` and waits until it is mined.
///
/// # Errors
/// `Reverted` before expiry or when the channel is not open; RPC failures.
pub async fn refund_channel(
    rpc_url: &str,
    wallet: &SigningKey,
    contract: Address,
    id: B256,
) -> Result<TxHash, ChainError> {
    let registry = TollstreamChannels::new(contract, connect_provider(rpc_url, Some(wallet))?);
    mined(registry.refund(id).send().await).await
}
