//! Answering requests: one ack shape for every event, and request bodies
//! decoded into `bad_request` errors that name the field.

use serde::Serialize;
use serde::de::DeserializeOwned;
use socketioxide::extract::{AckSender, SocketRef};
use tollstream_protocol::{Ack, ProtocolError, decode, event};

/// Sends `result` as the ack: the data, or `{"error": {code, message}}`.
pub fn ack<T: Serialize>(ack: AckSender, result: Result<T, ProtocolError>) {
    if let Err(error) = &result {
        tracing::debug!(code = %error.code, message = %error.message, "request refused");
    }
    if let Err(error) = ack.send(&Ack::from(result)) {
        tracing::debug!(%error, "could not send ack (connection gone)");
    }
}

/// Emits the `error` event.
pub fn emit_error(socket: &SocketRef, error: &ProtocolError) {
    // A refusal a client can provoke at will is not worth a line at the
    // default level: a flood of them would flood the log.
    if error.code == tollstream_protocol::ErrorCode::RateLimited {
        tracing::debug!(sid = %socket.id, code = %error.code, "error sent to client");
    } else {
        tracing::info!(sid = %socket.id, code = %error.code, message = %error.message, "error sent to client");
    }
    if let Err(failed) = socket.emit(event::ERROR, error) {
        tracing::debug!(%failed, "could not emit error (connection gone)");
    }
}

/// Decodes a request body; a missing body decodes as `null`.
pub fn body<T: DeserializeOwned>(data: Result<serde_json::Value, impl std::fmt::Display>) -> Result<T, ProtocolError> {
    let value = data.map_err(|e| ProtocolError::bad_request(format!("unreadable message: {e}")))?;
    decode(value)
}
