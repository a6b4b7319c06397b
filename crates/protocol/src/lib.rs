//! # tollstream-protocol
//!
//! The Tollstream wire protocol (PROTOCOL.md) as pure code: message types,
//! the EIP-712 channel state and play signatures, and the rules that decide
//! whether a state is money the server can collect. No I/O: no sockets, no
//! database, no chain; the server, the client and the tests all build on it.
//!
//! ## Layout
//! - [`encoding`]: amounts, sequence numbers, hex, addresses, keys and
//!   signatures as JSON, and [`decode`], which turns any malformed message
//!   into `bad_request` naming the field.
//! - [`error`]: the protocol's error codes and [`ProtocolError`].
//! - [`state`]: the signed [`ChannelState`].
//! - [`messages`]: every event's payload and the event names.
//! - [`eip712`]: the domain and the `ChannelState` / `Play` structs.
//! - [`signing`]: local keys and signer recovery on libsecp256k1.
//! - [`successor`]: the opening-state rule (also of a gasless
//!   `openChannel`), the successor rule, `play` authentication.
//! - [`channel_id`]: how the contract derives a channel's id.
//! - [`token`]: token deposits: the token's EIP-712 domain, the EIP-3009
//!   authorization of a gasless open and its nonce, EIP-2612 permits, and
//!   token amounts and hourly prices for people.

pub mod channel_id;
pub mod eip712;
pub mod encoding;
pub mod error;
pub mod messages;
pub mod pay_answer;
pub mod signing;
pub mod state;
pub mod successor;
pub mod token;

pub use alloy_primitives::{Address, B128, B256, U256};
pub use eip712::ChannelDomain;
pub use encoding::{Amount, PublicKey, Signature, decode, decode_str};
pub use error::{ErrorCode, ProtocolError};
pub use messages::*;
pub use pay_answer::{PaidState, PayAnswer};
pub use signing::SigningKey;
pub use state::ChannelState;
pub use successor::{check_open_channel, check_opening_state, check_successor, verify_play, verify_state_signature};
pub use token::{Authorization, TokenSigningDomain, authorization_nonce, format_amount, format_price_per_hour};
