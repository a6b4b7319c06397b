//! The streaming state of one client on one connection: re-send the secret
//! of the last paid window, then ask for a payment every window, verify it,
//! store it durably, and only then release the window's keys.

use super::{refused, reply};
use crate::state::AppState;
use crate::store::{OpenState, StoreError, StoredChannel, Window};
use crate::streams::Stream;
use socketioxide::AckError;
use socketioxide::extract::SocketRef;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tollstream_protocol::pay_answer::{refusal, unreadable};
use tollstream_protocol::{
    ChannelState, ErrorCode, PayAnswer, PayRequest, ProtocolError, PublicKey, Secret, check_successor, event,
};

/// Runs one streaming session until it ends: final payment, error, stop,
/// disconnect, replacement or shutdown.
pub async fn run(
    state: AppState,
    socket: SocketRef,
    client: PublicKey,
    stream: Stream,
    from_segment: u64,
    cancel: CancellationToken,
    generation: u64,
) {
    state.metrics.active_streams.inc();
    if let Err(error) = stream_payments(&state, &socket, &client, &stream, from_segment, &cancel).await {
        // A cancelled session was replaced or stopped: nobody to tell.
        if !cancel.is_cancelled() {
            reply::emit_error(&socket, &error.ending_session_of(client));
        }
    }
    state.metrics.active_streams.dec();
    state.sessions.finish(&client, generation);
}

/// Emits the `secret` of the channel's latest paid window, if it has one.
pub fn resend_secret(state: &AppState, socket: &SocketRef, channel: &StoredChannel) {
    let Some(window) = &channel.window else { return };
    let Some(stream) = state.streams.get(&window.stream_id) else {
        tracing::warn!(stream = %window.stream_id, "paid window of a stream no longer served");
        return;
    };
    emit_secret(socket, stream, &channel.state, window);
}

/// Emits the keys of `window`, which the accepted `state` paid for.
fn emit_secret(socket: &SocketRef, stream: &Stream, state: &ChannelState, window: &Window) {
    let sequence = state.client_sequence_number;
    let secret = Secret {
        // Names the channel, so that a client can tell a re-sent final
        // secret of an older channel from one of its current channel.
        channel_id: Some(state.channel_id),
        stream_id: stream.id.clone(),
        client_sequence_number: sequence,
        keys: stream.keys(window.first_segment, window.segment_count),
    };
    if let Err(error) = socket.emit(event::SECRET, &secret) {
        // The payment is stored: the client gets this secret again on its
        // next `play`.
        tracing::info!(%error, sequence, "could not emit secret; it is re-sent on the next play");
    }
}

async fn stream_payments(
    state: &AppState,
    socket: &SocketRef,
    client: &PublicKey,
    stream: &Stream,
    from_segment: u64,
    cancel: &CancellationToken,
) -> Result<(), ProtocolError> {
    // Read after any previous session of this client has finished writing.
    let mut channel = state
        .store
        .newest_for_client(client)
        .await?
        .ok_or_else(|| refused(ErrorCode::UnknownChannel, "the channel disappeared"))?;
    resend_secret(state, socket, &channel);
    // Another process may have accepted the channel: follow its open here.
    state.opens.resolve(&channel);

    // The window whose secret was just re-sent: it is never sold again.
    let resent = channel.window.clone();
    let mut next_segment = from_segment;

    let mut ticker = tokio::time::interval(state.window);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let Some(window) = next_window(stream, next_segment, resent.as_ref()) else {
            return Err(refused(ErrorCode::StreamEnded, "the stream has no more segments"));
        };
        // Past `settle_by` the channel is being closed: no more payments.
        if super::is_expiring(state, &channel).await? {
            return Err(refused(ErrorCode::ChannelExpiring, "the channel is about to expire; open a new channel"));
        }
        if !sellable(state, &channel.state, cancel).await? {
            return Ok(());
        }
        let request = PayRequest {
            channel_id: channel.state.channel_id,
            client_sequence_number: channel.state.client_sequence_number + 1,
            amount: state.window_price,
            stream_id: stream.id.clone(),
            first_segment: window.first_segment,
            segment_count: window.segment_count,
        };
        let Some(answer) =
            ask(socket, &request, state.pay_timeout, cancel).await.inspect_err(|e| state.metrics.refused(e.code))?
        else {
            return Ok(());
        };
        let next = accept(state, &channel.state, answer).inspect_err(|error| state.metrics.refused(error.code))?;

        // A reorg may have removed the open while the answer was coming.
        if state.opens.state(&next.channel_id) == OpenState::Missing {
            return Err(open_removed());
        }
        // Durable before the keys leave: a crash after this line costs the
        // viewer nothing, since `play` re-sends this window's secret.
        match state.store.record_payment(&next, &window).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                state.metrics.refused(ErrorCode::StaleSequence);
                return Err(refused(ErrorCode::StaleSequence, "the channel advanced elsewhere; send play again"));
            }
            Err(error) => {
                tracing::error!(%error, channel = %next.channel_id, "cannot store payment");
                return Err(error.into());
            }
        }
        state.metrics.payments_accepted.inc();
        crate::metrics::Metrics::add_wei(&state.metrics.wei_earned, state.window_price);
        tracing::debug!(
            channel = %next.channel_id,
            seq = next.client_sequence_number,
            server_balance = %next.server_balance,
            "payment accepted"
        );
        emit_secret(socket, stream, &next, &window);
        let is_final = next.is_final();
        channel.state = next;
        channel.window = Some(window.clone());
        if is_final {
            tracing::info!(channel = %channel.state.channel_id, "final payment; channel spent");
            return Ok(());
        }
        next_segment = window.end();
    }
}

/// Emits `pay` and waits for the answer, decoded straight from the ack's
/// text. `Ok(None)` when the session ended meanwhile (cancelled or
/// disconnected).
async fn ask(
    socket: &SocketRef,
    request: &PayRequest,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Option<PayAnswer>, ProtocolError> {
    let pending = match socket.timeout(timeout).emit_with_ack::<_, PayAnswer>(event::PAY, request) {
        Ok(pending) => pending,
        Err(error) => {
            tracing::debug!(%error, "cannot emit pay; connection gone");
            return Ok(None);
        }
    };
    let answer = tokio::select! {
        _ = cancel.cancelled() => return Ok(None),
        answer = pending => answer,
    };
    match answer {
        Ok(value) => Ok(Some(value)),
        Err(AckError::Timeout) => Err(refused(ErrorCode::PayTimeout, "no answer to pay in time; send play again")),
        Err(AckError::Decode(error)) => Err(unreadable(&error)),
        Err(AckError::Socket(_)) => Ok(None),
    }
}

/// Checks the client's answer to `pay`: a refusal, or the exact successor.
fn accept(state: &AppState, stored: &ChannelState, answer: PayAnswer) -> Result<ChannelState, ProtocolError> {
    let next = match answer {
        PayAnswer::Paid(paid) => paid.of_channel(stored)?,
        PayAnswer::Refused { message } => return Err(refusal(message.as_deref())),
    };
    check_successor(stored, &next, state.window_price, &state.domain)?;
    Ok(next)
}

/// The window to sell from segment `next` of `stream`: `segments_per_window`
/// segments, fewer at the stream's end, and never a segment of `resent`,
/// the channel's latest paid window, whose keys the client already has
/// (PROTOCOL.md, `play`): a window starting inside it starts after it, and
/// one running into it stops where it begins. `None` past the end.
fn next_window(stream: &Stream, next: u64, resent: Option<&Window>) -> Option<Window> {
    let resent = resent.filter(|w| w.stream_id == stream.id);
    let first = match resent {
        Some(w) if (w.first_segment..w.end()).contains(&next) => w.end(),
        _ => next,
    };
    if first >= stream.segment_count {
        return None;
    }
    let mut count = stream.segments_per_window.min(stream.segment_count - first);
    if let Some(w) = resent
        && first < w.first_segment
    {
        count = count.min(w.first_segment - first);
    }
    Some(Window { stream_id: stream.id.clone(), first_segment: first, segment_count: count })
}

fn open_removed() -> ProtocolError {
    refused(ErrorCode::UnknownChannel, "the channel's open was removed from the chain by a reorg")
}

/// Waits until the next window may be sold on `channel` (PROTOCOL.md 1.1,
/// "Confirmations"): at once on a confirmed open; on a pending one only
/// while fewer than `--unconfirmed-windows` windows were sold (its sequence
/// number counts them), checked against the chain first so that a reorg
/// the watcher has not seen yet cannot sell a window; otherwise until the
/// open is confirmed. `false` when the session ended meanwhile.
///
/// # Errors
/// `unknown_channel` when the open is gone.
async fn sellable(state: &AppState, channel: &ChannelState, cancel: &CancellationToken) -> Result<bool, ProtocolError> {
    let id = channel.channel_id;
    // The common case, a confirmed open, costs one map lookup.
    if state.opens.state(&id) == OpenState::Confirmed {
        return Ok(true);
    }
    let mut changes = state.opens.subscribe();
    loop {
        match state.opens.state(&id) {
            OpenState::Confirmed => return Ok(true),
            OpenState::Missing => return Err(open_removed()),
            OpenState::Pending if channel.client_sequence_number < state.unconfirmed_windows => {
                match state.chain.channel(id).await {
                    Ok(onchain) if onchain.status == tollstream_chain::ChannelStatus::None => {
                        if let Err(error) = state.opens.mark_missing(state.store.as_ref(), &state.metrics, id).await {
                            tracing::error!(%error, channel = %id, "cannot record a removed open");
                        }
                        return Err(open_removed());
                    }
                    Ok(_) => return Ok(true),
                    // Cannot tell: sell nothing on trust, look again soon.
                    Err(error) => tracing::debug!(%error, channel = %id, "cannot check an unconfirmed open"),
                }
            }
            OpenState::Pending => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(segments: u64, per_window: u64) -> Stream {
        Stream::keys_only("demo", segments, per_window)
    }

    fn window(first: u64, count: u64) -> Window {
        Window { stream_id: "demo".into(), first_segment: first, segment_count: count }
    }

    #[test]
    fn windows_follow_from_segment_and_stop_at_the_end() {
        let s = stream(10, 3);
        assert_eq!(next_window(&s, 0, None), Some(window(0, 3)));
        assert_eq!(next_window(&s, 8, None), Some(window(8, 2)));
        assert_eq!(next_window(&s, 10, None), None);
    }

    #[test]
    fn the_latest_paid_window_is_never_sold_again() {
        let s = stream(20, 3);
        let paid = window(6, 3);
        // Resuming inside it continues after it.
        assert_eq!(next_window(&s, 7, Some(&paid)), Some(window(9, 3)));
        // Running into it stops where it begins; the next one skips it.
        assert_eq!(next_window(&s, 4, Some(&paid)), Some(window(4, 2)));
        assert_eq!(next_window(&s, 6, Some(&paid)), Some(window(9, 3)));
        // Before it, clear of it, it is sold again in full.
        assert_eq!(next_window(&s, 0, Some(&paid)), Some(window(0, 3)));
        // Another stream's window changes nothing.
        let other = Window { stream_id: "other".into(), ..paid };
        assert_eq!(next_window(&s, 7, Some(&other)), Some(window(7, 3)));
        // A paid last window: nothing after it.
        assert_eq!(next_window(&s, 18, Some(&window(18, 2))), None);
    }
}
