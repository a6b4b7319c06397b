//! `stop`: leave the streaming state.

use super::{refused, reply};
use crate::state::AppState;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use tollstream_protocol::{ClientKey, Empty, ErrorCode};

pub async fn handle(
    socket: SocketRef,
    TryData(data): TryData<serde_json::Value>,
    ack: AckSender,
    State(state): State<AppState>,
) {
    if let Err(limited) = state.limits.admit(&socket) {
        return reply::ack::<Empty>(ack, Err(limited));
    }
    let result = reply::body::<ClientKey>(data).and_then(|ClientKey { client_public_key }| {
        if state.sessions.stop(&client_public_key, socket.id) {
            tracing::info!(sid = %socket.id, client = %client_public_key, "stopped streaming");
            Ok(Empty {})
        } else {
            Err(refused(ErrorCode::NotStreaming, "that client is not streaming on this connection"))
        }
    });
    reply::ack(ack, result);
}
