//! The chain behind a trait, and its EVM implementation over JSON-RPC.

use crate::channel::{ChannelStatus, OnChainChannel};
use crate::contract::TollstreamChannels;
use crate::error::ChainError;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, TxHash, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::BlockNumberOrTag;
use alloy::signers::local::PrivateKeySigner;
use async_trait::async_trait;
use tollstream_protocol::{ChannelState, SigningKey};

/// What the server needs of the chain. The EVM implementation is
/// [`EvmChain`]; unit tests of server logic may use an in-memory one.
#[async_trait]
pub trait Chain: Send + Sync + 'static {
    /// The chain id, as signed in every EIP-712 domain.
    fn chain_id(&self) -> u64;

    /// The channel registry contract.
    fn contract(&self) -> Address;

    /// Reads a channel; an id never used comes back with status `None`.
    ///
    /// # Errors
    /// `Unavailable` when the node cannot be reached.
    async fn channel(&self, id: B256) -> Result<OnChainChannel, ChainError>;

    /// The latest block's timestamp: the clock `expiresAt` is measured by.
    ///
    /// # Errors
    /// `Unavailable` when the node cannot be reached.
    async fn now(&self) -> Result<u64, ChainError>;

    /// Sends `close` with `state` from the payee's wallet and returns the
    /// transaction's hash without waiting for it to be mined.
    ///
    /// # Errors
    /// `Reverted` when the node's gas estimate shows the close would fail
    /// (already closed, expired, bad signature); `Unavailable` on RPC failure.
    async fn send_close(&self, state: &ChannelState) -> Result<TxHash, ChainError>;

    /// Whether a transaction was mined, and if so whether it succeeded.
    ///
    /// # Errors
    /// `Unavailable` when the node cannot be reached.
    async fn receipt(&self, tx: TxHash) -> Result<Option<bool>, ChainError>;
}

/// The chain over an EVM JSON-RPC endpoint, optionally with a wallet that
/// signs transactions (the payee's, for closes).
#[derive(Clone)]
pub struct EvmChain {
    provider: DynProvider,
    chain_id: u64,
    contract: Address,
}

impl EvmChain {
    /// Connects to `rpc_url` and reads the chain id.
    ///
    /// # Errors
    /// When the URL is invalid or the node cannot be reached.
    pub async fn connect(rpc_url: &str, wallet: Option<&SigningKey>, contract: Address) -> Result<Self, ChainError> {
        let provider = connect_provider(rpc_url, wallet)?;
        let chain_id = provider.get_chain_id().await.map_err(ChainError::from_transport)?;
        Ok(EvmChain { provider, chain_id, contract })
    }

    /// The underlying provider, for callers that need more of the chain.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    fn registry(&self) -> TollstreamChannels::TollstreamChannelsInstance<&DynProvider> {
        TollstreamChannels::new(self.contract, &self.provider)
    }
}

/// A provider for `rpc_url` that fills gas, nonce and chain id, and signs
/// with `wallet` when one is given.
///
/// # Errors
/// When `rpc_url` is not a URL.
pub fn connect_provider(rpc_url: &str, wallet: Option<&SigningKey>) -> Result<DynProvider, ChainError> {
    let url = rpc_url.parse().map_err(|e| ChainError::Other(format!("invalid RPC URL {rpc_url:?}: {e}")))?;
    Ok(match wallet {
        Some(key) => ProviderBuilder::new().wallet(wallet_of(key)).connect_http(url).erased(),
        None => ProviderBuilder::new().connect_http(url).erased(),
    })
}

/// An alloy wallet holding `key`.
pub fn wallet_of(key: &SigningKey) -> EthereumWallet {
    let signer =
        PrivateKeySigner::from_bytes(&B256::from(key.to_bytes())).expect("a SigningKey is a valid secp256k1 key");
    EthereumWallet::from(signer)
}

#[async_trait]
impl Chain for EvmChain {
    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn contract(&self) -> Address {
        self.contract
    }

    async fn channel(&self, id: B256) -> Result<OnChainChannel, ChainError> {
        let entry = self.registry().channels(id).call().await.map_err(ChainError::from_contract)?;
        let status = ChannelStatus::from_u8(entry.status)
            .ok_or_else(|| ChainError::Other(format!("unknown channel status {}", entry.status)))?;
        Ok(OnChainChannel {
            client: entry.client,
            expires_at: entry.expiresAt,
            status,
            payee: entry.payee,
            deposit: U256::from(entry.deposit),
            signer: entry.signer,
        })
    }

    async fn now(&self) -> Result<u64, ChainError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(ChainError::from_transport)?
            .ok_or_else(|| ChainError::Unavailable("the node has no latest block".into()))?;
        Ok(block.header.timestamp)
    }

    async fn send_close(&self, state: &ChannelState) -> Result<TxHash, ChainError> {
        let pending = self
            .registry()
            .close(
                state.channel_id,
                state.server_balance.0,
                state.client_sequence_number,
                Bytes::copy_from_slice(&state.client_signature.0),
            )
            .send()
            .await
            .map_err(ChainError::from_contract)?;
        Ok(*pending.tx_hash())
    }

    async fn receipt(&self, tx: TxHash) -> Result<Option<bool>, ChainError> {
        let receipt = self.provider.get_transaction_receipt(tx).await.map_err(ChainError::from_transport)?;
        Ok(receipt.map(|r| r.status()))
    }
}
