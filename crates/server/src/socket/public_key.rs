//! `publicKey`: who the server is and what it sells.

use crate::state::AppState;
use socketioxide::extract::{AckSender, SocketRef, State};

pub async fn handle(socket: SocketRef, ack: AckSender, State(state): State<AppState>) {
    super::reply::ack(ack, state.limits.admit(&socket).map(|()| &state.info));
}
