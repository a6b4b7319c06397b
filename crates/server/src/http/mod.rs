//! Plain HTTP routes beside Socket.IO, each response with the security
//! headers of [`security`].

mod media;
mod player;
pub mod security;

use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

/// The HTTP routes.
pub fn routes() -> Router<AppState> {
    let routes = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/demo.json", get(demo))
        .route("/streams/{stream}/{file}", get(media::serve))
        .merge(player::routes());
    security::with_headers(routes)
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

/// The demo's dev wallets and chain, for the player page; 404 unless the
/// server was started by `tollstream demo`.
async fn demo(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match &state.demo {
        Some(demo) => Json(demo.clone()).into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}
