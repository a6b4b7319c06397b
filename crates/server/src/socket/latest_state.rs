//! `latestState`: the client's active channel state, or `null`.

use super::reply;
use crate::state::AppState;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use tollstream_protocol::{ChannelState, ClientKey, ProtocolError};

pub async fn handle(
    socket: SocketRef,
    TryData(data): TryData<serde_json::Value>,
    ack: AckSender,
    State(state): State<AppState>,
) {
    if let Err(limited) = state.limits.admit(&socket) {
        return reply::ack::<()>(ack, Err(limited));
    }
    reply::ack(ack, latest_state(&state, reply::body(data)).await);
}

async fn latest_state(
    state: &AppState,
    request: Result<ClientKey, ProtocolError>,
) -> Result<Option<ChannelState>, ProtocolError> {
    let ClientKey { client_public_key } = request?;
    match state.store.newest_for_client(&client_public_key).await? {
        Some(channel) => super::latest_view(state, channel).await,
        None => Ok(None),
    }
}
