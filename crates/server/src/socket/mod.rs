//! The Socket.IO side: one handler per event of PROTOCOL.md, registered on
//! every connection, and the streaming loop that asks for payments.

mod ack_requested;
mod latest_state;
pub mod limits;
mod new_channel;
pub mod open_channel;
mod play;
mod public_key;
mod reply;
pub mod sessions;
mod stop;
mod streaming;

use crate::listener::{PeerAddr, Slot};
use crate::state::AppState;
use crate::store::{ChannelStatus, OpenState, StoredChannel};
use axum::extract::ConnectInfo;
use socketioxide::extract::{SocketRef, State};
use socketioxide::socket::DisconnectReason;
use std::sync::Arc;
use tollstream_protocol::{ChannelState, ErrorCode, ProtocolError, event};

/// Registers the handlers of every event on a new connection. It runs as a
/// connect *middleware*, which socketioxide awaits before it answers the
/// client's CONNECT: the connect handler proper runs in a task of its own
/// after that answer, so an event a client sends the moment it is
/// connected could otherwise arrive before its handler exists and be lost.
///
/// It also admits the connection: a session found flooding may not join
/// again, and a client address holds at most `--max-connections-per-address`
/// sessions, whatever carries them (one keep-alive connection can carry
/// any number of long-polling sessions).
pub async fn register_handlers(socket: SocketRef, State(state): State<AppState>) -> Result<(), ConnectRefused> {
    let allowance = state.limits.allowance_for(socket.id);
    if allowance.is_flooding() {
        return Err(ConnectRefused("this connection flooded the server with requests; open a new one later"));
    }
    socket.extensions.insert(allowance);
    if let Some(ConnectInfo(PeerAddr(peer))) = socket.req_parts().extensions.get::<ConnectInfo<PeerAddr>>() {
        let Some(slot) = state.sessions_per_address.take(peer.ip()) else {
            state.metrics.connections_refused.with_label_values(&["sessions_per_address"]).inc();
            tracing::debug!(sid = %socket.id, %peer, "session refused: too many sessions from this address");
            return Err(ConnectRefused("too many connections from this address"));
        };
        // Dropped with the socket, which gives the slot back.
        socket.extensions.insert(Arc::new(slot));
    }
    socket.on(event::PUBLIC_KEY, public_key::handle);
    socket.on(event::LATEST_STATE, latest_state::handle);
    socket.on(event::NEW_CHANNEL, new_channel::handle);
    socket.on(event::OPEN_CHANNEL, open_channel::handle);
    socket.on(event::PLAY, play::handle);
    socket.on(event::STOP, stop::handle);
    // An event no handler takes still costs a request.
    socket.on_fallback(async |socket: SocketRef, State(state): State<AppState>| {
        let _ = state.limits.admit(&socket);
    });
    socket.on_disconnect(async move |socket: SocketRef, reason: DisconnectReason| {
        tracing::debug!(sid = %socket.id, %reason, "disconnected");
        state.sessions.disconnected(socket.id);
        socket.extensions.remove::<Arc<Slot>>();
        // Leaving the namespace keeps the transport, which may join again
        // with the allowance it had; any other end closes the transport.
        if !matches!(reason, DisconnectReason::ClientNSDisconnect | DisconnectReason::ServerNSDisconnect) {
            state.limits.forget(socket.id);
        }
    });
    Ok(())
}

/// Why a CONNECT to the namespace was refused: sent to the client as the
/// CONNECT_ERROR's message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectRefused(&'static str);

/// The connect handler: the handlers are already registered.
pub async fn on_connect(socket: SocketRef) {
    tracing::debug!(sid = %socket.id, "connected");
}

/// Whether `channel` can take payments now: open, not final, its `open`
/// not removed by a reorg, and not within the settlement margin of its
/// expiry.
///
/// # Errors
/// `chain_unavailable` when the chain's time cannot be read.
async fn is_active(state: &AppState, channel: &StoredChannel) -> Result<bool, ProtocolError> {
    if channel.status != ChannelStatus::Open
        || channel.state.is_final()
        || state.opens.resolve(channel) == OpenState::Missing
    {
        return Ok(false);
    }
    Ok(!is_expiring(state, channel).await?)
}

/// Whether the channel has reached its `settle_by`: from then on it is
/// being settled, not streamed.
async fn is_expiring(state: &AppState, channel: &StoredChannel) -> Result<bool, ProtocolError> {
    let now = state.clock.now().map_err(ProtocolError::from)?;
    Ok(now >= channel.settle_by)
}

/// What `latestState` returns for a stored channel: its state if active.
async fn latest_view(state: &AppState, channel: StoredChannel) -> Result<Option<ChannelState>, ProtocolError> {
    Ok(if is_active(state, &channel).await? { Some(channel.state) } else { None })
}

/// Ends this process's streaming session of `client`, if any, because the
/// client started streaming on another process of the fleet: its task
/// finishes any store write first, then the client hears
/// `session_replaced`.
pub async fn replaced_elsewhere(state: &AppState, client: tollstream_protocol::PublicKey) {
    let Some(previous) = state.sessions.take(&client) else { return };
    previous.cancel.cancel();
    if let Some(task) = previous.task {
        let _ = task.await;
    }
    tracing::info!(sid = %previous.socket.id, %client, "client started streaming on another server");
    reply::emit_error(
        &previous.socket,
        &refused(ErrorCode::SessionReplaced, "this client started streaming on another server")
            .ending_session_of(client),
    );
}

fn refused(code: ErrorCode, message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(code, message)
}
