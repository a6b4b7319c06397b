//! The Socket.IO side: one handler per event of PROTOCOL.md, registered on
//! every connection, and the streaming loop that asks for payments.

mod ack_requested;
mod latest_state;
pub mod limits;
mod new_channel;
mod play;
mod public_key;
mod reply;
pub mod sessions;
mod stop;
mod streaming;

use crate::state::AppState;
use crate::store::{ChannelStatus, OpenState, StoredChannel};
use socketioxide::extract::{SocketRef, State};
use std::convert::Infallible;
use tollstream_protocol::{ChannelState, ErrorCode, ProtocolError, event};

/// Registers the handlers of every event on a new connection. It runs as a
/// connect *middleware*, which socketioxide awaits before it answers the
/// client's CONNECT: the connect handler proper runs in a task of its own
/// after that answer, so an event a client sends the moment it is
/// connected could otherwise arrive before its handler exists and be lost.
pub async fn register_handlers(socket: SocketRef, State(state): State<AppState>) -> Result<(), Infallible> {
    socket.extensions.insert(state.limits.allowance());
    socket.on(event::PUBLIC_KEY, public_key::handle);
    socket.on(event::LATEST_STATE, latest_state::handle);
    socket.on(event::NEW_CHANNEL, new_channel::handle);
    socket.on(event::PLAY, play::handle);
    socket.on(event::STOP, stop::handle);
    socket.on_disconnect(async move |socket: SocketRef| {
        tracing::debug!(sid = %socket.id, "disconnected");
        state.sessions.disconnected(socket.id);
    });
    Ok(())
}

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
