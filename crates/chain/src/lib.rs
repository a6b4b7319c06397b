//! # tollstream-chain
//!
//! Everything Tollstream does on the chain: the channel registry's bindings
//! and deployment, reading channels and sending transactions behind the
//! [`Chain`] trait, the payee's transaction manager (nonces, fee bumps,
//! replacements, confirmations), and [`anvil`], which runs a real local
//! node for the demo and the tests.
//!
//! ## Layout
//! - [`contract`]: `sol!` bindings from the committed artifact, `deploy`.
//! - [`channel`]: a channel as the contract stores it.
//! - [`evm`]: the [`Chain`] trait and [`EvmChain`] over JSON-RPC.
//! - [`rpc`]: endpoints with failover and a timeout on every call.
//! - [`fees`]: EIP-1559 fees and the 12.5 % bump rule.
//! - [`signed_tx`]: a signed transaction as recorded before broadcast.
//! - [`token`]: an ERC-20 deposit token: its terms and what it supports.
//! - [`close_tx`]: a close's life as a pure state machine.
//! - [`tx_manager`]: the I/O around it: nonces, signing, sending, reading.
//! - [`memory`]: an in-memory [`Chain`] for unit tests (feature
//!   `test-double`).
//! - [`viewer`]: a viewer's transactions: open, find its channels, refund.
//! - [`anvil`]: start and stop an anvil node on a free loopback port.
//! - [`error`]: the chain layer's error, [`ChainError`].

pub mod anvil;
pub mod channel;
pub mod close_tx;
pub mod contract;
pub mod error;
pub mod evm;
pub mod fees;
#[cfg(any(test, feature = "test-double"))]
pub mod memory;
pub mod rpc;
pub mod signed_tx;
pub mod token;
pub mod tx_manager;
pub mod viewer;

pub use channel::{ChannelStatus, OnChainChannel, terms_of};
pub use close_tx::{Attempt, CloseTx, Decision, Inclusion, Observation, Policy};
pub use contract::{TestStablecoin, TollstreamChannels, deploy, deploy_test_stablecoin};
pub use error::ChainError;
pub use evm::{
    BlockRef, Chain, ChannelEvent, EvmChain, Head, PayeeCall, Sent, close_many_calldata, connect_provider, wallet_of,
};
pub use fees::Fees;
pub use rpc::RpcOptions;
pub use signed_tx::SignedTx;
pub use token::{AuthorizedOpen, TokenInfo, token_balance, token_info};
pub use tx_manager::{RecordCloses, StartError, Started, TxManager};
pub use viewer::{OpenRequest, Opened, channels_opened_by, open_channel, open_token_channel, refund_channel};
