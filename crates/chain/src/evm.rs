//! The chain behind a trait, and its EVM implementation over JSON-RPC.

use crate::channel::{ChannelStatus, OnChainChannel};
use crate::close_tx::Inclusion;
use crate::contract::TollstreamChannels;
use crate::error::ChainError;
use crate::fees::Fees;
use crate::rpc::RpcOptions;
use crate::signed_tx::SignedTx;
use alloy::network::{Ethereum, EthereumWallet, NetworkWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, TxHash, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{BlockNumberOrTag, Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use async_trait::async_trait;
use tollstream_protocol::{ChannelState, SigningKey};

/// What the server needs of the chain: reads at the latest block, the
/// payee's nonces and fees, and sending transactions it signed itself.
/// The EVM implementation is [`EvmChain`]; unit tests use the in-memory
/// [`MemoryChain`](crate::memory::MemoryChain).
///
/// Every method that talks to the node fails with `Unavailable` when no
/// endpoint answers in time.
#[async_trait]
pub trait Chain: Send + Sync + 'static {
    /// The chain id, as signed in every EIP-712 domain.
    fn chain_id(&self) -> u64;

    /// The channel registry contract.
    fn contract(&self) -> Address;

    /// The payee wallet that signs closes, if this chain has one.
    fn payee(&self) -> Option<Address>;

    /// Reads a channel at the latest block; an id never used comes back
    /// with status `None`.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn channel(&self, id: B256) -> Result<OnChainChannel, ChainError>;

    /// The latest block.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn head(&self) -> Result<Head, ChainError>;

    /// The hash of block `number` of the canonical chain, `None` past the
    /// head.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn block_hash(&self, number: u64) -> Result<Option<B256>, ChainError>;

    /// Where the channel's `Opened` event is, searching blocks `from..=to`
    /// (callers keep the range within what providers allow).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn find_open(&self, id: B256, from: u64, to: u64) -> Result<Option<BlockRef>, ChainError>;

    /// The payee and signer a channel's `Opened` event names, searching
    /// blocks `from..=to`: the registry keeps only a commitment to them
    /// ([`crate::terms_of`]), so this is how a mismatch is explained.
    /// `None` when no such event is in the range, or the chain cannot say.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn opened_terms(&self, id: B256, from: u64, to: u64) -> Result<Option<(Address, Address)>, ChainError> {
        let _ = (id, from, to);
        Ok(None)
    }

    /// The gas a payee transaction of `call` takes, simulated at the latest
    /// block, with headroom.
    ///
    /// # Errors
    /// `Reverted` (with the contract's error) when it would fail;
    /// `Unavailable`; `Other` without a wallet or on a chain that cannot
    /// simulate.
    async fn estimate_call(&self, call: &PayeeCall) -> Result<u64, ChainError> {
        let _ = call;
        Err(ChainError::Other("this chain cannot simulate calls".into()))
    }

    /// `owner`'s balance of ERC-20 `token`, in its smallest unit.
    ///
    /// # Errors
    /// `Unavailable`; `Reverted` when `token` is no ERC-20.
    async fn token_balance(&self, token: Address, owner: Address) -> Result<U256, ChainError> {
        let _ = (token, owner);
        Err(ChainError::Other("this chain holds no tokens".into()))
    }

    /// Whether EIP-3009 `nonce` of `authorizer` was used or cancelled at
    /// `token`.
    ///
    /// # Errors
    /// `Unavailable`; `Reverted` when `token` has no EIP-3009.
    async fn authorization_used(&self, token: Address, authorizer: Address, nonce: B256) -> Result<bool, ChainError> {
        let _ = (token, authorizer, nonce);
        Err(ChainError::Other("this chain holds no tokens".into()))
    }

    /// `Closed` and `Refunded` events of the registry in blocks `from..=to`.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn channel_events(&self, from: u64, to: u64) -> Result<Vec<ChannelEvent>, ChainError>;

    /// `account`'s transaction count at the latest block: its nonces below
    /// this are used.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn nonce(&self, account: Address) -> Result<u64, ChainError>;

    /// `account`'s transaction count at block `block`.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn nonce_at(&self, account: Address, block: u64) -> Result<u64, ChainError>;

    /// `account`'s balance in wei at the latest block.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn balance(&self, account: Address) -> Result<U256, ChainError>;

    /// What a transaction sent now should offer, in wei per gas.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn market_fees(&self) -> Result<Fees, ChainError>;

    /// The gas the payee's `close` with `state` takes, simulated at the
    /// latest block.
    ///
    /// # Errors
    /// `Reverted` when the close would fail (already closed, expired, a
    /// bad signature); `Unavailable`; `Other` without a wallet.
    async fn estimate_close(&self, state: &ChannelState) -> Result<u64, ChainError>;

    /// The gas the payee's `closeMany` with `states` takes, simulated at
    /// the latest block, with the same headroom as
    /// [`estimate_close`](Self::estimate_close). An entry that cannot
    /// close is skipped by the registry, not reverted, so this fails only
    /// when the whole call would.
    ///
    /// # Errors
    /// `Reverted`; `Unavailable`; `Other` without a wallet.
    async fn estimate_closes(&self, states: &[ChannelState]) -> Result<u64, ChainError>;

    /// The channels whose `Closed` event the mined transaction `tx`
    /// emitted (empty when it has no receipt): which entries of a
    /// `closeMany` closed and which were skipped.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn closed_in(&self, tx: TxHash) -> Result<Vec<B256>, ChainError>;

    /// Signs (does not send) a transaction of the payee at `nonce`, so it
    /// can be recorded before it is broadcast.
    ///
    /// # Errors
    /// `Other` without a wallet.
    async fn sign(&self, call: &PayeeCall, nonce: u64, gas_limit: u64, fees: Fees) -> Result<SignedTx, ChainError>;

    /// Signs (does not send) the payee's `close` with `state` at `nonce`.
    ///
    /// # Errors
    /// `Other` without a wallet.
    async fn sign_close(
        &self,
        state: &ChannelState,
        nonce: u64,
        gas_limit: u64,
        fees: Fees,
    ) -> Result<SignedTx, ChainError> {
        self.sign(&PayeeCall::Registry(close_calldata(state)), nonce, gas_limit, fees).await
    }

    /// Reads a channel as it stood at block `block`.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn channel_at(&self, id: B256, block: u64) -> Result<OnChainChannel, ChainError>;

    /// Whether the node holds `tx` in its pool, waiting to be mined.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn is_pending(&self, tx: TxHash) -> Result<bool, ChainError>;

    /// Broadcasts a signed transaction; how the node took it.
    ///
    /// # Errors
    /// `Unavailable`; `Rejected` when the node refuses it for a reason
    /// [`Sent`] has no name for.
    async fn send(&self, tx: &SignedTx) -> Result<Sent, ChainError>;

    /// Where a transaction was mined, if it is in the canonical chain.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn receipt(&self, tx: TxHash) -> Result<Option<Inclusion>, ChainError>;

    /// The latest block's timestamp: the clock `expiresAt` is measured by.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn now(&self) -> Result<u64, ChainError> {
        Ok(self.head().await?.timestamp)
    }
}

/// What a payee transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayeeCall {
    /// A call of the channel registry with this calldata (a close).
    Registry(Bytes),
    /// Nothing: a transfer of 0 wei to itself, which only uses up a nonce
    /// (to fill a gap that would hold back every later transaction).
    SelfTransfer,
}

/// Gas of a plain transfer.
pub const TRANSFER_GAS: u64 = 21_000;

/// A block of the canonical chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub number: u64,
    pub hash: B256,
    /// Unix seconds.
    pub timestamp: u64,
}

/// A position in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub number: u64,
    pub hash: B256,
}

/// How a node took a transaction. Each is a fact about the node's pool,
/// not an error of ours; the transaction manager decides what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Taken into the pool.
    Accepted,
    /// The node has it already (sent before, by us or an earlier pass).
    AlreadyKnown,
    /// The nonce is used: by this transaction or by another.
    NonceTooLow,
    /// The pool holds another transaction at this nonce that pays more.
    Underpriced,
    /// `maxFeePerGas` is below the current base fee.
    FeeCapTooLow,
    /// The sender cannot pay gas × fee cap.
    InsufficientFunds,
}

impl Sent {
    /// Classifies a node's refusal by its message (geth, anvil, reth and
    /// erigon word these alike); `None` for anything else.
    pub fn from_refusal(message: &str) -> Option<Sent> {
        let text = message.to_lowercase();
        Some(if text.contains("already known") || text.contains("already imported") {
            Sent::AlreadyKnown
        } else if text.contains("nonce too low") || text.contains("nonce has already been used") {
            Sent::NonceTooLow
        } else if text.contains("underpriced") {
            Sent::Underpriced
        } else if text.contains("less than block base fee") || text.contains("fee cap less than") {
            Sent::FeeCapTooLow
        } else if text.contains("insufficient funds") {
            Sent::InsufficientFunds
        } else {
            return None;
        })
    }
}

/// A settlement event of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    Closed { channel_id: B256, server_balance: U256, client_balance: U256, tx: Option<TxHash> },
    Refunded { channel_id: B256, amount: U256 },
}

/// The chain over one or more EVM JSON-RPC endpoints (failover, a timeout
/// on every call), optionally with a wallet that signs transactions (the
/// payee's, for closes).
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
        Self::connect_with(&RpcOptions::new(vec![rpc_url.to_owned()]), wallet, contract).await
    }

    /// Connects to the endpoints of `options` and reads the chain id.
    ///
    /// # Errors
    /// When a URL is invalid or no endpoint can be reached.
    pub async fn connect_with(
        options: &RpcOptions,
        wallet: Option<&SigningKey>,
        contract: Address,
    ) -> Result<Self, ChainError> {
        // Transactions are signed here, not by a provider filler, so that a
        // close's hash is known (and recorded) before it is broadcast.
        let provider = ProviderBuilder::new().connect_client(options.client()?).erased();
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

    fn wallet(&self) -> Result<&EthereumWallet, ChainError> {
        self.wallet.as_ref().ok_or_else(|| ChainError::Other("closing needs the payee's wallet".into()))
    }

    fn close_request(&self, state: &ChannelState) -> Result<TransactionRequest, ChainError> {
        payee_request(self.wallet()?, self.contract, self.chain_id, &PayeeCall::Registry(close_calldata(state)))
    }
}

/// The unsigned transaction of `call` from `wallet`.
///
/// # Errors
/// Never today; kept fallible for wallets that may refuse.
pub fn payee_request(
    wallet: &EthereumWallet,
    contract: Address,
    chain_id: u64,
    call: &PayeeCall,
) -> Result<TransactionRequest, ChainError> {
    let from = NetworkWallet::<Ethereum>::default_signer_address(wallet);
    let request = TransactionRequest::default().with_from(from).with_chain_id(chain_id);
    Ok(match call {
        PayeeCall::Registry(input) => request.with_to(contract).with_input(input.clone()),
        PayeeCall::SelfTransfer => request.with_to(from).with_value(U256::ZERO),
    })
}

/// Gas the registry forwards with a native-coin payout to a client
/// (`CLIENT_TRANSFER_GAS` in the contract).
pub const CLIENT_PAYOUT_GAS: u64 = 50_000;

/// The gas limit of a close (or a batch) whose simulation used `estimate`:
/// a fifth more for a chain that moved since, plus the whole of what the
/// registry forwards to each client paid a share. A client wallet that is
/// a contract can use little of it while the node simulates (it can tell,
/// e.g. by a zero gas price) and all of it when mined; without this, one
/// such client would make every batch it is in run out of gas and revert,
/// and honest channels in it would never close. Unused gas is not paid.
pub fn close_gas_limit(estimate: u64, states: &[ChannelState]) -> u64 {
    let paying_clients = states.iter().filter(|state| !state.client_balance.0.is_zero()).count() as u64;
    estimate + estimate / 5 + CLIENT_PAYOUT_GAS * paying_clients
}

/// The calldata of the registry's `close` with `state`.
pub fn close_calldata(state: &ChannelState) -> Bytes {
    TollstreamChannels::closeCall {
        channelId: state.channel_id,
        serverBalance: state.server_balance.0,
        sequenceNumber: state.client_sequence_number,
        signature: Bytes::copy_from_slice(&state.client_signature.0),
    }
    .abi_encode()
    .into()
}

/// The calldata of the registry's `closeMany` with `states`, one entry
/// each, in order.
pub fn close_many_calldata(states: &[ChannelState]) -> Bytes {
    let closes = states
        .iter()
        .map(|state| TollstreamChannels::Close {
            channelId: state.channel_id,
            serverBalance: state.server_balance.0,
            sequenceNumber: state.client_sequence_number,
            signature: Bytes::copy_from_slice(&state.client_signature.0),
        })
        .collect();
    TollstreamChannels::closeManyCall { closes }.abi_encode().into()
}

/// Signs an EIP-1559 transaction of `wallet` to `to` with `input`.
///
/// # Errors
/// `Other` when signing fails.
pub async fn sign_transaction(
    wallet: &EthereumWallet,
    request: TransactionRequest,
    nonce: u64,
    gas_limit: u64,
    fees: Fees,
) -> Result<SignedTx, ChainError> {
    use alloy::eips::Encodable2718;
    use alloy::network::NetworkTransactionBuilder;
    let envelope = request
        .with_nonce(nonce)
        .with_gas_limit(gas_limit)
        .with_max_fee_per_gas(fees.max_fee_per_gas)
        .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
        .build(wallet)
        .await
        .map_err(|e| ChainError::Other(format!("cannot sign transaction: {e}")))?;
    Ok(SignedTx { hash: *envelope.tx_hash(), raw: envelope.encoded_2718().into(), nonce, gas_limit, fees })
}

/// A registry entry as the server reads it.
fn on_chain(entry: TollstreamChannels::channelsReturn) -> Result<OnChainChannel, ChainError> {
    let status = ChannelStatus::from_u8(entry.status)
        .ok_or_else(|| ChainError::Other(format!("unknown channel status {}", entry.status)))?;
    Ok(OnChainChannel {
        client: entry.client,
        expires_at: entry.expiresAt,
        status,
        token: entry.token,
        deposit: entry.deposit,
        terms: entry.terms,
    })
}

/// A provider for `rpc_url` that fills gas, nonce and chain id, and signs
/// with `wallet` when one is given.
///
/// # Errors
/// When `rpc_url` is not a URL.
pub fn connect_provider(rpc_url: &str, wallet: Option<&SigningKey>) -> Result<DynProvider, ChainError> {
    let url = rpc_url.parse().map_err(|e| ChainError::Other(format!("invalid RPC URL {rpc_url:?}: {e}")))?;
    let http = crate::rpc::http_client_builder()
        .build()
        .map_err(|e| ChainError::Other(format!("cannot build the HTTP client: {e}")))?;
    Ok(match wallet {
        Some(key) => ProviderBuilder::new().wallet(wallet_of(key)).connect_reqwest(http, url).erased(),
        None => ProviderBuilder::new().connect_reqwest(http, url).erased(),
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

    fn payee(&self) -> Option<Address> {
        self.wallet.as_ref().map(NetworkWallet::<Ethereum>::default_signer_address)
    }

    async fn channel(&self, id: B256) -> Result<OnChainChannel, ChainError> {
        on_chain(self.registry().channels(id).call().await.map_err(ChainError::from_contract)?)
    }

    async fn head(&self) -> Result<Head, ChainError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(ChainError::from_transport)?
            .ok_or_else(|| ChainError::Unavailable("the node has no latest block".into()))?;
        Ok(Head { number: block.header.number, hash: block.header.hash, timestamp: block.header.timestamp })
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, ChainError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(ChainError::from_transport)?;
        Ok(block.map(|b| b.header.hash))
    }

    async fn find_open(&self, id: B256, from: u64, to: u64) -> Result<Option<BlockRef>, ChainError> {
        let filter = Filter::new()
            .address(self.contract)
            .event_signature(TollstreamChannels::Opened::SIGNATURE_HASH)
            .topic1(id)
            .from_block(from)
            .to_block(to);
        let logs = self.provider.get_logs(&filter).await.map_err(ChainError::from_transport)?;
        // A removed log is one a reorg took back.
        Ok(logs
            .iter()
            .filter(|log| !log.removed)
            .find_map(|log| Some(BlockRef { number: log.block_number?, hash: log.block_hash? })))
    }

    async fn estimate_call(&self, call: &PayeeCall) -> Result<u64, ChainError> {
        let request = payee_request(self.wallet()?, self.contract, self.chain_id, call)?;
        let gas = self.provider.estimate_gas(request).await.map_err(ChainError::from_transport)?;
        Ok(gas + gas / 5)
    }

    async fn estimate_closes(&self, states: &[ChannelState]) -> Result<u64, ChainError> {
        let call = PayeeCall::Registry(close_many_calldata(states));
        let request = payee_request(self.wallet()?, self.contract, self.chain_id, &call)?;
        let gas = self.provider.estimate_gas(request).await.map_err(ChainError::from_transport)?;
        Ok(close_gas_limit(gas, states))
    }

    async fn closed_in(&self, tx: TxHash) -> Result<Vec<B256>, ChainError> {
        let receipt = self.provider.get_transaction_receipt(tx).await.map_err(ChainError::from_transport)?;
        let Some(receipt) = receipt else { return Ok(Vec::new()) };
        Ok(receipt
            .inner
            .logs()
            .iter()
            .filter(|log| log.address() == self.contract)
            .filter_map(|log| log.log_decode::<TollstreamChannels::Closed>().ok())
            .map(|closed| closed.inner.data.channelId)
            .collect())
    }

    async fn token_balance(&self, token: Address, owner: Address) -> Result<U256, ChainError> {
        crate::token::token_balance(&self.provider, token, owner).await
    }

    async fn authorization_used(&self, token: Address, authorizer: Address, nonce: B256) -> Result<bool, ChainError> {
        let contract = crate::token::DepositToken::new(token, &self.provider);
        contract.authorizationState(authorizer, nonce).call().await.map_err(ChainError::from_contract)
    }

    async fn opened_terms(&self, id: B256, from: u64, to: u64) -> Result<Option<(Address, Address)>, ChainError> {
        let filter = Filter::new()
            .address(self.contract)
            .event_signature(TollstreamChannels::Opened::SIGNATURE_HASH)
            .topic1(id)
            .from_block(from)
            .to_block(to);
        let logs = self.provider.get_logs(&filter).await.map_err(ChainError::from_transport)?;
        Ok(logs.iter().filter(|log| !log.removed).find_map(|log| {
            let opened = log.log_decode::<TollstreamChannels::Opened>().ok()?;
            Some((opened.inner.data.payee, opened.inner.data.signer))
        }))
    }

    async fn channel_events(&self, from: u64, to: u64) -> Result<Vec<ChannelEvent>, ChainError> {
        if from > to {
            return Ok(Vec::new());
        }
        let filter = Filter::new()
            .address(self.contract)
            .event_signature(vec![
                TollstreamChannels::Closed::SIGNATURE_HASH,
                TollstreamChannels::Refunded::SIGNATURE_HASH,
            ])
            .from_block(from)
            .to_block(to);
        let logs = self.provider.get_logs(&filter).await.map_err(ChainError::from_transport)?;
        let mut events = Vec::new();
        for log in logs.iter().filter(|log| !log.removed) {
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
        Ok(events)
    }

    async fn nonce(&self, account: Address) -> Result<u64, ChainError> {
        self.provider.get_transaction_count(account).latest().await.map_err(ChainError::from_transport)
    }

    async fn nonce_at(&self, account: Address, block: u64) -> Result<u64, ChainError> {
        self.provider.get_transaction_count(account).number(block).await.map_err(ChainError::from_transport)
    }

    async fn balance(&self, account: Address) -> Result<U256, ChainError> {
        self.provider.get_balance(account).latest().await.map_err(ChainError::from_transport)
    }

    async fn market_fees(&self) -> Result<Fees, ChainError> {
        let fees = self.provider.estimate_eip1559_fees().await.map_err(ChainError::from_transport)?;
        Ok(Fees { max_fee_per_gas: fees.max_fee_per_gas, max_priority_fee_per_gas: fees.max_priority_fee_per_gas })
    }

    async fn estimate_close(&self, state: &ChannelState) -> Result<u64, ChainError> {
        let gas = self.provider.estimate_gas(self.close_request(state)?).await.map_err(ChainError::from_transport)?;
        Ok(close_gas_limit(gas, std::slice::from_ref(state)))
    }

    async fn sign(&self, call: &PayeeCall, nonce: u64, gas_limit: u64, fees: Fees) -> Result<SignedTx, ChainError> {
        let wallet = self.wallet()?;
        sign_transaction(wallet, payee_request(wallet, self.contract, self.chain_id, call)?, nonce, gas_limit, fees)
            .await
    }

    async fn channel_at(&self, id: B256, block: u64) -> Result<OnChainChannel, ChainError> {
        let entry = self.registry().channels(id).block(block.into()).call().await;
        on_chain(entry.map_err(ChainError::from_contract)?)
    }

    async fn is_pending(&self, tx: TxHash) -> Result<bool, ChainError> {
        let found = self.provider.get_transaction_by_hash(tx).await.map_err(ChainError::from_transport)?;
        Ok(found.is_some_and(|t| t.block_number.is_none()))
    }

    async fn send(&self, tx: &SignedTx) -> Result<Sent, ChainError> {
        match self.provider.send_raw_transaction(&tx.raw).await {
            Ok(_) => Ok(Sent::Accepted),
            Err(error) => match error.as_error_resp() {
                Some(payload) => Sent::from_refusal(&payload.message)
                    .ok_or_else(|| ChainError::Rejected(payload.message.to_string())),
                None => Err(ChainError::from_transport(error)),
            },
        }
    }

    async fn receipt(&self, tx: TxHash) -> Result<Option<Inclusion>, ChainError> {
        let receipt = self.provider.get_transaction_receipt(tx).await.map_err(ChainError::from_transport)?;
        Ok(receipt.and_then(|r| {
            Some(Inclusion { tx, block: r.block_number?, block_hash: r.block_hash?, success: r.status() })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_budgets_the_whole_client_payout_of_every_paying_entry() {
        use tollstream_protocol::{Amount, Signature};
        let state = |client: u64| ChannelState {
            channel_id: B256::ZERO,
            channel_address: Address::ZERO,
            client_wallet_address: Address::ZERO,
            client_public_key: SigningKey::from_bytes([7; 32]).unwrap().public_key(),
            client_balance: Amount::from(client),
            server_balance: Amount::from(10u64),
            client_sequence_number: 1,
            client_signature: Signature([0; 65]),
        };
        assert_eq!(close_gas_limit(50_000, &[state(0)]), 60_000, "a final state pays no client");
        assert_eq!(close_gas_limit(50_000, &[state(5)]), 60_000 + CLIENT_PAYOUT_GAS);
        assert_eq!(close_gas_limit(100_000, &[state(0), state(1), state(2)]), 120_000 + 2 * CLIENT_PAYOUT_GAS);
    }

    #[test]
    fn node_refusals_are_named_not_called_reverts() {
        let cases = [
            ("already known", Some(Sent::AlreadyKnown)),
            ("nonce too low: next nonce 5, tx nonce 4", Some(Sent::NonceTooLow)),
            ("replacement transaction underpriced", Some(Sent::Underpriced)),
            ("max fee per gas less than block base fee", Some(Sent::FeeCapTooLow)),
            ("insufficient funds for gas * price + value", Some(Sent::InsufficientFunds)),
            ("execution reverted", None),
        ];
        for (message, expected) in cases {
            assert_eq!(Sent::from_refusal(message), expected, "{message}");
        }
    }
}
