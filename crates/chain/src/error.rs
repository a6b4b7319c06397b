//! The chain layer's error.

use tollstream_protocol::{ErrorCode, ProtocolError};

/// The cause of an outage, kept as the error it was (a transport error, a
/// timeout), not as its text.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong talking to the chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node could not be reached or answered with a transport error:
    /// worth retrying.
    #[error("chain RPC unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The contract reverted (a call or a gas estimate); the text names the
    /// custom error when known.
    #[error("contract call reverted: {0}")]
    Reverted(String),
    /// The node answered with an error that is not a revert: a refused
    /// transaction, a log range it will not serve.
    #[error("the node refused the request: {0}")]
    Rejected(String),
    /// A transaction was mined but failed.
    #[error("transaction {0} failed on chain")]
    TransactionFailed(alloy::primitives::TxHash),
    /// The local anvil node could not be started.
    #[error("anvil: {0}")]
    Anvil(String),
    #[error("chain: {0}")]
    Other(String),
}

impl ChainError {
    pub(crate) fn from_contract(error: alloy::contract::Error) -> Self {
        use alloy::contract::Error;
        match error {
            Error::TransportError(transport) => Self::from_transport(transport),
            Error::PendingTransactionError(pending) => Self::Unavailable(Box::new(pending)),
            other => Self::Other(other.to_string()),
        }
    }

    pub(crate) fn from_transport(error: alloy::transports::TransportError) -> Self {
        match error.as_error_resp() {
            // The node answered: not an outage. JSON-RPC code 3 is geth's
            // "execution reverted"; others word it in the message.
            Some(payload) if payload.code == 3 || payload.message.to_lowercase().contains("revert") => {
                Self::Reverted(payload.to_string())
            }
            Some(payload) => Self::Rejected(payload.to_string()),
            None => Self::Unavailable(Box::new(error)),
        }
    }

    /// Whether the node said the sender cannot pay for gas (the payee's
    /// wallet needs funding; nothing else is wrong).
    pub fn is_insufficient_funds(&self) -> bool {
        matches!(self, ChainError::Rejected(text) | ChainError::Reverted(text)
            if text.to_lowercase().contains("insufficient funds"))
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ChainError::Unavailable(_))
    }
}

impl From<ChainError> for ProtocolError {
    /// A client hears only that the chain is unavailable or the request is
    /// internal trouble; the node's text, with its causes, goes to the
    /// server's log here.
    fn from(error: ChainError) -> Self {
        match error {
            ChainError::Unavailable(_) => {
                tracing::warn!(error = %causes(&error), "chain unavailable; answered as chain_unavailable");
                ProtocolError::new(ErrorCode::ChainUnavailable, "the chain cannot be reached; try again later")
            }
            _ => {
                tracing::error!(error = %causes(&error), "chain failure answered as internal");
                ProtocolError::new(ErrorCode::Internal, "the chain request failed")
            }
        }
    }
}

/// An error and every cause under it, `outer: inner: innermost`, for logs.
/// Causes whose text the outer message already contains are left out.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Refused(#[source] std::io::Error);

    #[test]
    fn an_outage_keeps_every_cause_for_the_log_and_tells_the_client_only_the_code() {
        let error = ChainError::Unavailable(Box::new(Refused(std::io::Error::other("os error 111"))));
        assert_eq!(causes(&error), "chain RPC unavailable: connection refused: os error 111");
        let told = ProtocolError::from(error);
        assert_eq!(told.code, ErrorCode::ChainUnavailable);
        assert!(!told.message.contains("111"));
    }
}
