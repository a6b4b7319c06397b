//! # tollstream-client
//!
//! The viewer's side of Tollstream: a typed client of PROTOCOL.md, the
//! wallet and session keys, and the seed's idle/streaming loop.
//!
//! ## Layout
//! - [`socketio`]: a thin Engine.IO v4 / Socket.IO v5 client (why it is
//!   hand-written is in its doc).
//! - [`client`]: [`Client`], one method per event.
//! - [`wallet`]: wallet key files and the derived session key.
//! - [`player`]: fetching ciphertext and decrypting it with bought keys.
//! - [`viewer`]: [`Viewer`], which finds or buys a channel, plays, and
//!   answers payments after checking them.

pub mod client;
pub mod player;
pub mod socketio;
pub mod viewer;
pub mod wallet;

pub use client::{Client, ClientError, PayAnswer, ServerEvent};
pub use viewer::{Event, Step, Viewer, ViewerError};
