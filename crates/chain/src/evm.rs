//! The chain behind a trait, and its EVM implementation over JSON-RPC.

use crate::channel::{ChannelStatus, OnChainChannel};
use crate::contract::TollstreamChannels;
use crate::error::ChainError;
use alloy::eips::Encodable2718;
use alloy::network::{Ethereum, EthereumWallet, NetworkTransactionBuilder, NetworkWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, TxHash, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::BlockNumberOrTag;
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
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

    /// The latest block's number.
    ///
    /// # Errors
    /// `Unavailable` when the node cannot be reached.
    async fn latest_block(&self) -> Result<u64, ChainError>;

    /// The latest block's timestamp: the clock `expiresAt` is measured by.
    ///
    /// # Errors
    /// `Unavailable` when the node cannot be reached.
    async fn now(&self) -> Result<u64, ChainError>;

    /// Builds and signs (but does not send) the payee's `close` with
    /// `state`, so its hash can be recorded before it is broadcast.
    ///
    /// # Errors
    /// `Reverted` when the node's gas estimate shows the close would fail
    /// (already closed, expired, bad signature); `Unavailable` on RPC
    /// failure; `Other` without a wallet.
    async fn prepare_close(&self, state: &ChannelState) -> Result<SignedTx, ChainError>;

    /// Broadcasts a signed transaction. Broadcasting one the node already
    /// has, or already mined, is not an error.
    ///
    /// # Errors
    /// `Unavailable` on RPC failure; `Reverted` when the node rejects it.
    async fn broadcast(&self, tx: &SignedTx) -> Result<(), ChainError>;

    /// `Closed` and `Refunded` events of the registry from block `from`
    /// to the latest block, and that block's number.
    ///
    /// # Errors
    /// `Unavailable` on RPC failure.
    async fn channel_events(&self, from: u64) -> Result<(Vec<ChannelEvent>, u64), ChainError>;

    /// Whether a transaction was mined, and if so whether it succeeded.
    ///
    /// # Errors
    /// `Unavailable` when the node cannot be reached.
    async fn receipt(&self, tx: TxHash) -> Result<Option<bool>, ChainError>;
}

/// A signed transaction, ready to broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    pub hash: TxHash,
    /// The EIP-2718 encoding, as `eth_sendRawTransaction` takes it.
    pub raw: Bytes,
}

/// A settlement event of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    Closed { channel_id: B256, server_balance: U256, client_balance: U256, tx: Option<TxHash> },
    Refunded { channel_id: B256, amount: U256 },
}

/// The chain over an EVM JSON-RPC endpoint, optionally with a wallet that
/// signs transactions (the payee's, for closes).
#[derive(Clone)]
pub struct EvmChain {
    provider: DynProvider,
    wallet: Option<EthereumWallet>,
    chain_id: u64,
    contract: Address,
}

impl EvmChain {
    /// Connects to `rpc_url` and reads the chain id.
    ///
    /// # Errors
    /// When the URL is invalid or the node cannot be reached.
    pub async fn connect(rpc_url: &str, wallet: Option<&SigningKey>, contract: Address) -> Result<Self, ChainError> {
        // Transactions are signed here, not by a provider filler, so that a
        // close's hash is known (and recorded) before it is broadcast.
        let provider = connect_provider(rpc_url, None)?;
        let chain_id = provider.get_chain_id().await.map_err(ChainError::from_transport)?;
        Ok(EvmChain { provider, wallet: wallet.map(wallet_of), chain_id, contract })
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

    async fn latest_block(&self) -> Result<u64, ChainError> {
        self.provider.get_block_number().await.map_err(ChainError::from_transport)
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

    async fn prepare_close(&self, state: &ChannelState) -> Result<SignedTx, ChainError> {
        let wallet =
            self.wallet.as_ref().ok_or_else(|| ChainError::Other("closing needs the payee's wallet".into()))?;
        let from = NetworkWallet::<Ethereum>::default_signer_address(wallet);
        let request = self
            .registry()
            .close(
                state.channel_id,
                state.server_balance.0,
                state.client_sequence_number,
                Bytes::copy_from_slice(&state.client_signature.0),
            )
            .into_transaction_request()
            .with_from(from)
            .with_chain_id(self.chain_id);
        let rpc = ChainError::from_transport;
        let nonce = self.provider.get_transaction_count(from).pending().await.map_err(rpc)?;
        let gas = self.provider.estimate_gas(request.clone()).await.map_err(rpc)?;
        let fees = self.provider.estimate_eip1559_fees().await.map_err(rpc)?;
        let request = request
            .with_nonce(nonce)
            // Headroom: the estimate is for the state of the chain now.
            .with_gas_limit(gas + gas / 5)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let envelope = request.build(wallet).await.map_err(|e| ChainError::Other(format!("cannot sign close: {e}")))?;
        Ok(SignedTx { hash: *envelope.tx_hash(), raw: envelope.encoded_2718().into() })
    }

    async fn broadcast(&self, tx: &SignedTx) -> Result<(), ChainError> {
        match self.provider.send_raw_transaction(&tx.raw).await {
            Ok(_) => Ok(()),
            Err(error) => {
                let text = error.to_string().to_lowercase();
                // Sent before a crash, or by an earlier tick: the node
                // already has it, or it is mined and its nonce used.
                if text.contains("already known") || text.contains("nonce too low") || text.contains("already imported")
                {
                    Ok(())
                } else {
                    Err(ChainError::from_transport(error))
                }
            }
        }
    }

    async fn channel_events(&self, from: u64) -> Result<(Vec<ChannelEvent>, u64), ChainError> {
        let latest = self.provider.get_block_number().await.map_err(ChainError::from_transport)?;
        if from > latest {
            return Ok((Vec::new(), latest));
        }
        let filter = Filter::new()
            .address(self.contract)
            .event_signature(vec![
                TollstreamChannels::Closed::SIGNATURE_HASH,
                TollstreamChannels::Refunded::SIGNATURE_HASH,
            ])
            .from_block(from)
            .to_block(latest);
        let logs = self.provider.get_logs(&filter).await.map_err(ChainError::from_transport)?;
        let mut events = Vec::new();
        for log in logs {
            if let Ok(closed) = log.log_decode::<TollstreamChannels::Closed>() {
                let data = &closed.inner.data;
                events.push(ChannelEvent::Closed {
                    channel_id: data.channelId,
                    server_balance: data.serverBalance,
                    client_balance: data.clientBalance,
                    tx: log.transaction_hash,
                });
            } else if let Ok(refunded) = log.log_decode::<TollstreamChannels::Refunded>() {
                let data = &refunded.inner.data;
                events.push(ChannelEvent::Refunded { channel_id: data.channelId, amount: data.amount });
            }
        }
        Ok((events, latest))
    }

    async fn receipt(&self, tx: TxHash) -> Result<Option<bool>, ChainError> {
        let receipt = self.provider.get_transaction_receipt(tx).await.map_err(ChainError::from_transport)?;
        Ok(receipt.map(|r| r.status()))
    }
}
