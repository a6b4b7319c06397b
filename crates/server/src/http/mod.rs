//! Plain HTTP routes beside Socket.IO.

use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

/// The HTTP routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health)).route("/metrics", get(metrics))
}

/// Liveness: the process answers, and how many clients are streaming.
async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "chain_id": state.domain.chain_id,
        "channel_address": state.domain.contract.to_checksum(None),
        "streaming": state.sessions.len(),
    }))
}

/// Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
