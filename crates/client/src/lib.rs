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
//! - [`tls`]: [`Tls`], what https/wss connections to a server trust.
//! - [`viewer`]: [`Viewer`], which finds or buys a channel, plays, and
//!   answers payments after checking them.

pub mod client;
pub mod player;
pub mod socketio;
pub mod tls;
pub mod viewer;
pub mod wallet;

pub use client::{Client, ClientError, PayAnswer, RATE_LIMITED_PAUSE, RATE_LIMITED_RETRIES, ServerEvent};
pub use tls::{Tls, TlsError};
pub use viewer::{Event, Step, Viewer, ViewerError};

/// The innermost cause of an error, said once: a transport error's outer
/// layers repeat the URL ("error sending request for url …"), its root
/// says what went wrong ("connection refused"). The OS error number is
/// left out.
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let text = innermost.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    };
    // "Connection refused" reads as the end of a sentence: "…: connection refused".
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(text[first.len_utf8()..].chars()).collect()
        }
        _ => text,
    }
}
