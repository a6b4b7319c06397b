//! `play`: an authenticated request to stream; the streaming loop itself is
//! in `streaming.rs`.

use super::ack_requested::AckRequested;
use super::sessions::Session;
use super::{refused, reply, streaming};
use crate::state::AppState;
use crate::store::{ChannelStatus, OpenState};
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use tollstream_protocol::{Empty, ErrorCode, PlayRequest, ProtocolError, verify_play};

pub async fn handle(
    socket: SocketRef,
    TryData(data): TryData<serde_json::Value>,
    ack: AckSender,
    AckRequested(with_ack): AckRequested,
    State(state): State<AppState>,
) {
    let result = match state.limits.admit(&socket) {
        Ok(()) => play(&state, &socket, reply::body(data)).await,
        Err(limited) => Err(limited),
    };
    match result {
        Ok(()) => reply::ack(ack, Ok(Empty {})),
        Err(error) if with_ack => reply::ack::<Empty>(ack, Err(error)),
        Err(error) => reply::emit_error(&socket, &error),
    }
}

async fn play(
    state: &AppState,
    socket: &SocketRef,
    request: Result<PlayRequest, ProtocolError>,
) -> Result<(), ProtocolError> {
    let request = request?;
    let client = request.client_public_key;
    let channel = state.store.newest_for_client(&client).await?.ok_or_else(|| {
        refused(ErrorCode::UnknownChannel, "this client has no channel; open one and send newChannel")
    })?;
    // The signature binds the request to this key, channel and connection.
    verify_play(&state.domain, channel.state.channel_id, &socket.id.to_string(), &request.signature, &client)?;

    if channel.state.is_final() {
        // The last payment's secret may never have arrived: it is paid for,
        // so it is sent again before the refusal, even once the channel is
        // settled.
        streaming::resend_secret(state, socket, &channel);
        return Err(refused(ErrorCode::ChannelNotOpen, "the channel's balance is spent; open a new channel"));
    }
    if channel.status != ChannelStatus::Open {
        return Err(refused(ErrorCode::ChannelNotOpen, "the channel is closed"));
    }
    // PROTOCOL.md 1.1: nothing is sold on a channel whose open a reorg
    // removed, until it is announced again once back on chain.
    if state.opens.resolve(&channel) == OpenState::Missing {
        return Err(refused(
            ErrorCode::UnknownChannel,
            "the channel's open was removed from the chain by a reorg; announce it again once it is mined",
        ));
    }
    if super::is_expiring(state, &channel).await? {
        return Err(refused(ErrorCode::ChannelExpiring, "the channel is about to expire; open a new channel"));
    }
    let stream = state
        .streams
        .get(&request.stream_id)
        .cloned()
        .ok_or_else(|| refused(ErrorCode::UnknownStream, format!("no stream {:?}", request.stream_id)))?;
    if request.from_segment >= stream.segment_count {
        return Err(refused(ErrorCode::StreamEnded, format!("the stream has {} segments", stream.segment_count)));
    }

    // Registered before the task starts, so a task that ends at once
    // still finds and removes its own session.
    let generation = state.sessions.next_generation();
    let cancel = state.shutdown.child_token();
    let displaced = state
        .sessions
        .insert(client, Session { generation, socket: socket.clone(), cancel: cancel.clone(), task: None });
    // One streaming connection per client, and one streaming client per
    // connection: a displaced session's task finishes any store write
    // before this one reads the channel, and only then is its client told,
    // so that nothing of the old session follows the error.
    for (replaced, previous) in displaced {
        if let Some(task) = previous.task {
            let _ = task.await;
        }
        let why = if replaced != client {
            "another client started streaming on this connection"
        } else if previous.socket.id != socket.id {
            "this client started streaming on another connection"
        } else {
            // The same client again on the same connection: it asked for
            // the restart, nothing to tell.
            continue;
        };
        reply::emit_error(&previous.socket, &refused(ErrorCode::SessionReplaced, why).ending_session_of(replaced));
    }
    if cancel.is_cancelled() {
        // Replaced in turn by a `play` that raced in while this one waited
        // (which told whoever must be told), or the server is stopping.
        return Ok(());
    }
    let task = state.tasks.spawn(streaming::run(
        state.clone(),
        socket.clone(),
        client,
        stream,
        request.from_segment,
        cancel,
        generation,
    ));
    state.sessions.attach(&client, generation, task);
    // Other processes of a fleet end their session of this client.
    state.cluster.announce_session(&client).await;
    tracing::info!(sid = %socket.id, client = %client, stream = %request.stream_id, from = request.from_segment, "streaming");
    Ok(())
}
