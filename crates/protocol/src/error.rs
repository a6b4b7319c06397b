//! The protocol's error codes and the typed error that carries one.

use crate::encoding::PublicKey;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Every error code of PROTOCOL.md, serialized in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownChannel,
    InvalidSignature,
    StaleSequence,
    WrongAmount,
    BadDeposit,
    ChannelNotOpen,
    ChannelExpiring,
    WrongPayee,
    NotStreaming,
    SessionReplaced,
    PayTimeout,
    PaymentRefused,
    UnknownStream,
    StreamEnded,
    RateLimited,
    ChainUnavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, in the order PROTOCOL.md lists them.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownChannel,
        ErrorCode::InvalidSignature,
        ErrorCode::StaleSequence,
        ErrorCode::WrongAmount,
        ErrorCode::BadDeposit,
        ErrorCode::ChannelNotOpen,
        ErrorCode::ChannelExpiring,
        ErrorCode::WrongPayee,
        ErrorCode::NotStreaming,
        ErrorCode::SessionReplaced,
        ErrorCode::PayTimeout,
        ErrorCode::PaymentRefused,
        ErrorCode::UnknownStream,
        ErrorCode::StreamEnded,
        ErrorCode::RateLimited,
        ErrorCode::ChainUnavailable,
        ErrorCode::Internal,
    ];

    /// The wire form, e.g. `"stale_sequence"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownChannel => "unknown_channel",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::StaleSequence => "stale_sequence",
            ErrorCode::WrongAmount => "wrong_amount",
            ErrorCode::BadDeposit => "bad_deposit",
            ErrorCode::ChannelNotOpen => "channel_not_open",
            ErrorCode::ChannelExpiring => "channel_expiring",
            ErrorCode::WrongPayee => "wrong_payee",
            ErrorCode::NotStreaming => "not_streaming",
            ErrorCode::SessionReplaced => "session_replaced",
            ErrorCode::PayTimeout => "pay_timeout",
            ErrorCode::PaymentRefused => "payment_refused",
            ErrorCode::UnknownStream => "unknown_stream",
            ErrorCode::StreamEnded => "stream_ended",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ChainUnavailable => "chain_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure the peer is told about: a protocol error code and a message
/// written for a person. It is also the wire body of the `error` event and
/// of the `{"error": …}` acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    /// On an `error` event that ends a client's streaming session (1.1),
    /// that client: a connection may have streamed for several keys in
    /// turn, and a client must tell whether the error ended its own
    /// session. `None` on acks and on errors that end no session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_public_key: Option<PublicKey>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError { code, message: message.into(), client_public_key: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// This error as the `error` event that ends `client`'s streaming
    /// session.
    #[must_use]
    pub fn ending_session_of(self, client: PublicKey) -> Self {
        ProtocolError { client_public_key: Some(client), ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().to_owned()));
            let back: ErrorCode = serde_json::from_value(json).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn error_body_matches_the_wire_form() {
        let error = ProtocolError::new(ErrorCode::StaleSequence, "expected 4");
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            serde_json::json!({"code": "stale_sequence", "message": "expected 4"})
        );
    }

    #[test]
    fn an_error_that_ends_a_session_names_its_client() {
        let key: PublicKey =
            format!("0x02{}", "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798").parse().unwrap();
        let error = ProtocolError::new(ErrorCode::SessionReplaced, "replaced").ending_session_of(key);
        let wire = serde_json::json!({"code": "session_replaced", "message": "replaced", "client_public_key": key.to_string()});
        assert_eq!(serde_json::to_value(&error).unwrap(), wire);
        assert_eq!(serde_json::from_value::<ProtocolError>(wire).unwrap(), error);
        // A version-1 error, or one that ends no session, has no key.
        let plain: ProtocolError =
            serde_json::from_value(serde_json::json!({"code": "pay_timeout", "message": "late"})).unwrap();
        assert_eq!(plain.client_public_key, None);
    }
}
