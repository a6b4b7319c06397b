//! `publicKey`: who the server is and what it sells.

use crate::state::AppState;
use socketioxide::extract::{AckSender, State};

pub async fn handle(ack: AckSender, State(state): State<AppState>) {
    super::reply::ack(ack, Ok(&state.info));
}
