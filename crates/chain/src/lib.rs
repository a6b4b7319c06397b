//! # tollstream-chain
//!
//! Everything Tollstream does on the chain: the channel registry's bindings
//! and deployment, reading channels and sending closes behind the [`Chain`]
//! trait, and [`anvil`], which runs a real local node for the demo and the
//! tests.
//!
//! ## Layout
//! - [`contract`]: `sol!` bindings from the committed artifact, `deploy`.
//! - [`channel`]: a channel as the contract stores it.
//! - [`evm`]: the [`Chain`] trait and [`EvmChain`] over JSON-RPC.
//! - [`viewer`]: a viewer's transactions: open, find its channels, refund.
//! - [`anvil`]: start and stop an anvil node on a free loopback port.
//! - [`error`]: the chain layer's error, [`ChainError`].

pub mod anvil;
pub mod channel;
pub mod contract;
pub mod error;
pub mod evm;
pub mod viewer;

pub use channel::{ChannelStatus, OnChainChannel};
pub use contract::{TollstreamChannels, deploy};
pub use error::ChainError;
pub use evm::{Chain, ChannelEvent, EvmChain, SignedTx, connect_provider, wallet_of};
pub use viewer::{OpenRequest, Opened, channels_opened_by, open_channel, refund_channel};
