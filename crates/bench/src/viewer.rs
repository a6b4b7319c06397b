//! One simulated viewer: its keys and pre-signed states, and the task that
//! announces its channel, plays, and answers every `pay` over its own
//! connection, a typed [`Client`], recording when each `pay` and `secret`
//! arrived.
//!
//! Only PROTOCOL.md is spoken: `newChannel`, `play` (with ack), answers to
//! `pay` acks, and the `secret` and `error` events. What the typed client
//! cannot decode is read leniently (an `error` with an unknown code is still
//! counted by its code), so any server of the protocol can be driven.

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tollstream_client::socketio::SocketIoError;
use tollstream_client::{Client, ClientError, ServerEvent, Tls};
use tollstream_protocol::successor::play_signing_hash;
use tollstream_protocol::{
    Address, Amount, B256, ChannelDomain, ChannelState, ClientKey, ErrorCode, PayRequest, PlayRequest, ProtocolError,
    Signature, SigningKey, event,
};

/// A viewer ready to run: its session key and every state it will sign,
/// signed in advance so that signing is not part of the measurement.
pub struct Prepared {
    pub key: SigningKey,
    pub opening: ChannelState,
    /// `states[k - 1]` answers the `pay` for sequence `k`.
    pub states: Vec<ChannelState>,
}

impl Prepared {
    pub fn channel_id(&self) -> B256 {
        self.opening.channel_id
    }
}

/// Signs, for one viewer, its opening state and the successors 1..=`payments`.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    key: SigningKey,
    channel_id: B256,
    wallet: Address,
    domain: &ChannelDomain,
    deposit: Amount,
    price: Amount,
    payments: u64,
) -> Prepared {
    let mut opening = ChannelState {
        channel_id,
        channel_address: domain.contract,
        client_wallet_address: wallet,
        client_public_key: key.public_key(),
        client_balance: deposit,
        server_balance: Amount::ZERO,
        client_sequence_number: 0,
        client_signature: Signature([0; 65]),
    };
    opening.sign(domain, &key);
    let mut states = Vec::with_capacity(payments as usize);
    let mut previous = opening.clone();
    for _ in 0..payments {
        let mut next = previous.pay(price).expect("the deposit covers every planned payment");
        next.sign(domain, &key);
        states.push(next.clone());
        previous = next;
    }
    Prepared { key, opening, states }
}

/// What every viewer task shares.
pub struct Shared {
    pub url: String,
    /// What an https server's certificate is checked against.
    pub tls: Tls,
    pub stream_id: String,
    pub domain: ChannelDomain,
    pub price: Amount,
    /// Payments each viewer makes (`--windows`).
    pub payments: u64,
    /// Whether the last payment is final (the deposit is exactly
    /// `payments` windows). Otherwise the viewer sends `stop` after it.
    pub last_is_final: bool,
    /// Limits viewers between connecting and their `newChannel` reply.
    pub connecting: Semaphore,
    pub request_timeout: Duration,
    /// Time zero of every timestamp.
    pub t0: Instant,
    pub counters: Counters,
}

/// Live totals, for the progress bar.
#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub playing: AtomicU64,
    pub answered: AtomicU64,
    pub acknowledged: AtomicU64,
    pub finished: AtomicU64,
    pub failed: AtomicU64,
}

/// One payment as the viewer saw it, in microseconds since `t0`.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub pay_at: u64,
    pub secret_at: u64,
}

/// How far a viewer got.
#[derive(Debug, Default)]
pub struct Outcome {
    pub channel_id: B256,
    pub connected: bool,
    pub announced: bool,
    pub playing: bool,
    pub completed: bool,
    /// `pay` requests answered with a signed state.
    pub answered: u64,
    /// `secrets[k - 1]`: how many `secret`s arrived for sequence `k`.
    pub secrets: Vec<u32>,
    /// Secrets for a sequence this session never paid (re-sent ones).
    pub unsolicited_secrets: u64,
    /// One per payment acknowledged by its first secret.
    pub samples: Vec<Sample>,
    /// Error codes the server sent (acks of `newChannel`/`play`, `error` events).
    pub server_errors: Vec<String>,
    /// What went wrong on the bench's side, by kind.
    pub failure: Option<(&'static str, String)>,
}

impl Outcome {
    /// The highest sequence acknowledged by a secret.
    pub fn highest_acknowledged(&self) -> u64 {
        self.secrets.iter().rposition(|&n| n > 0).map_or(0, |i| i as u64 + 1)
    }

    fn fail(&mut self, kind: &'static str, detail: impl Into<String>) {
        if self.failure.is_none() {
            self.failure = Some((kind, detail.into()));
        }
    }
}

fn micros_since(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Runs one viewer from its start time until it made all its payments,
/// failed, or `stop` turned true.
pub async fn run(
    shared: Arc<Shared>,
    prepared: Prepared,
    start_at: Instant,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut outcome =
        Outcome { channel_id: prepared.channel_id(), secrets: vec![0; shared.payments as usize], ..Default::default() };
    let stopped = async {
        // An error means the sender is gone: the run is over either way.
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    tokio::select! {
        biased;
        () = &mut stopped => {
            outcome.fail("not_started", "the run ended before this viewer started");
            return finish(&shared, outcome);
        }
        () = tokio::time::sleep_until(start_at.into()) => {}
    }

    let setup = async {
        let _permit = shared.connecting.acquire().await.expect("the semaphore is never closed");
        let mut client = match Client::connect_with(&shared.url, &shared.tls).await {
            Ok(client) => client,
            Err(error) => return Err((false, ("connect_failed", error.to_string()), None)),
        };
        client.set_timeout(shared.request_timeout);
        // A refusal is counted as it comes, as any other: the bench does not
        // wait out `rate_limited` (a load generator's server lifts its caps).
        client.set_rate_limited_retries(0);
        shared.counters.connected.fetch_add(1, Ordering::Relaxed);
        match client.new_channel(&prepared.opening).await {
            Ok(reply) => Ok((client, reply)),
            Err(error) => Err((true, request_failure("newChannel", &error), error.code())),
        }
    };
    let (mut client, reply) = tokio::select! {
        biased;
        () = &mut stopped => {
            outcome.fail("not_started", "the run ended while this viewer was connecting");
            return finish(&shared, outcome);
        }
        result = setup => match result {
            Ok(connection) => connection,
            Err((connected, (kind, detail), code)) => {
                outcome.connected = connected;
                outcome.server_errors.extend(code.map(|code| code.as_str().to_owned()));
                outcome.fail(kind, detail);
                return finish(&shared, outcome);
            }
        },
    };
    outcome.connected = true;
    if reply.as_ref() == Some(&prepared.opening) {
        outcome.announced = true;
    } else {
        outcome.fail("bad_reply", format!("newChannel replied {reply:?}, not the opening state"));
        client.close().await;
        return finish(&shared, outcome);
    }

    // The Play signature binds this connection's socket id, so it cannot be
    // made in advance; it is one signature per viewer, outside the payments.
    let digest = play_signing_hash(&shared.domain, prepared.channel_id(), client.session_id());
    let play = PlayRequest {
        client_public_key: prepared.key.public_key(),
        stream_id: shared.stream_id.clone(),
        from_segment: 0,
        signature: prepared.key.sign_digest(&digest),
    };
    // The `play` ack is awaited alongside the events: a `pay` may arrive
    // before it (PROTOCOL.md D10) and must be answered at once.
    let play_ack = client.play_detached(&play);
    tokio::pin!(play_ack);
    let mut play_pending = true;
    let mut pay_at: Vec<Option<u64>> = vec![None; shared.payments as usize];
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => {
                outcome.fail("unfinished", "the run ended before this viewer made all its payments");
                break;
            }
            reply = &mut play_ack, if play_pending => {
                play_pending = false;
                match reply {
                    Ok(()) => {
                        outcome.playing = true;
                        shared.counters.playing.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        if let Some(code) = error.code() {
                            outcome.server_errors.push(code.as_str().to_owned());
                        }
                        let (kind, detail) = request_failure("play", &error);
                        outcome.fail(kind, detail);
                        break;
                    }
                }
            }
            incoming = client.next_event() => {
                let Some(incoming) = incoming else {
                    outcome.fail("disconnected", "the server closed the connection");
                    break;
                };
                let now = micros_since(shared.t0);
                match incoming {
                    ServerEvent::Pay(request, answer) => {
                        if !answer.expects_answer() {
                            outcome.fail("bad_pay", "a pay without an ack id");
                            break;
                        }
                        match check_pay(&shared, &prepared, &outcome, &request) {
                            Check::Answer(sequence) => {
                                let index = (sequence - 1) as usize;
                                pay_at[index].get_or_insert(now);
                                if let Err(error) = answer.pay(&prepared.states[index]).await {
                                    outcome.fail("disconnected", format!("answering pay {sequence}: {error}"));
                                    break;
                                }
                                outcome.answered += 1;
                                shared.counters.answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Check::Done => break,
                            Check::Refuse(reason) => {
                                let refusal = ProtocolError::new(ErrorCode::PaymentRefused, reason.clone());
                                let _ = answer.refuse(refusal).await;
                                outcome.fail("refused_pay", reason);
                                // The server answers with an `error` event; read on to count it.
                            }
                        }
                    }
                    ServerEvent::Secret(secret) => {
                        let sequence = secret.client_sequence_number;
                        let index = sequence.wrapping_sub(1) as usize;
                        let Some(count) = outcome.secrets.get_mut(index) else {
                            outcome.unsolicited_secrets += 1;
                            continue;
                        };
                        *count += 1;
                        match pay_at[index] {
                            Some(pay_at) if *count == 1 => {
                                outcome.samples.push(Sample { pay_at, secret_at: now });
                                shared.counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(_) => {}
                            None => outcome.unsolicited_secrets += 1,
                        }
                        if sequence == shared.payments {
                            outcome.completed = true;
                            if !shared.last_is_final {
                                // The channel keeps money: leave the streaming state.
                                let stop = ClientKey { client_public_key: prepared.key.public_key() };
                                let stop = serde_json::to_value(&stop).expect("requests serialize");
                                let _ = client.emit_raw(event::STOP, &stop).await;
                            }
                            break;
                        }
                    }
                    ServerEvent::Error(error) => {
                        outcome.server_errors.push(error.code.as_str().to_owned());
                        outcome.fail("server_error", format!("error event {}: {}", error.code, error.message));
                        // The client is idle after an `error` (PROTOCOL.md §6.8).
                        break;
                    }
                    // What the typed client could not decode, read leniently:
                    // an `error` with a code this build does not know is
                    // still counted by its code.
                    ServerEvent::Unknown { event, data } => match event.as_str() {
                        event::ERROR => {
                            let code = data.get("code").and_then(Value::as_str).unwrap_or("malformed_error");
                            outcome.server_errors.push(code.to_owned());
                            outcome.fail("server_error", format!("error event {data}"));
                            break;
                        }
                        event::SECRET => {
                            outcome.fail("bad_secret", format!("a malformed secret: {data}"));
                            break;
                        }
                        event::PAY => {
                            // Its ack went with it: leave rather than let the
                            // server wait for an answer.
                            outcome.fail("refused_pay", format!("malformed pay: {data}"));
                            break;
                        }
                        _ => {}
                    },
                }
            }
        }
    }
    client.close().await;
    finish(&shared, outcome)
}

enum Check {
    Answer(u64),
    /// A `pay` past the planned payments (the channel keeps money): leave.
    Done,
    Refuse(String),
}

/// The client's checks before it pays (PROTOCOL.md §6.5 and §11). The typed
/// client's [`Viewer`](tollstream_client::Viewer) makes the same checks but
/// signs the successor as it answers; here every answer was signed in
/// advance, so signing stays out of the measurement.
fn check_pay(shared: &Shared, prepared: &Prepared, outcome: &Outcome, request: &PayRequest) -> Check {
    let sequence = request.client_sequence_number;
    if request.channel_id != prepared.channel_id() {
        return Check::Refuse(format!("pay names channel {}, not ours", request.channel_id));
    }
    if sequence > shared.payments && !shared.last_is_final {
        return Check::Done;
    }
    if sequence == 0 || sequence > shared.payments {
        return Check::Refuse(format!("pay asks sequence {sequence}, outside 1..={}", shared.payments));
    }
    if request.amount != shared.price {
        return Check::Refuse(format!("pay asks {} wei, the price is {}", request.amount, shared.price));
    }
    if sequence > 1 && outcome.secrets[(sequence - 2) as usize] == 0 {
        return Check::Refuse(format!("pay {sequence} before the secret of payment {}", sequence - 1));
    }
    Check::Answer(sequence)
}

/// A failed request, by kind: refused by the server, timed out, malformed,
/// or the connection gone.
fn request_failure(what: &str, error: &ClientError) -> (&'static str, String) {
    match error {
        ClientError::Refused(_) => ("refused", format!("{what} was refused")),
        ClientError::Transport(SocketIoError::Timeout) => ("timeout", format!("no reply to {what} in time")),
        ClientError::Malformed(detail) => ("bad_reply", format!("malformed {what} reply: {detail}")),
        ClientError::Transport(other) => ("disconnected", format!("{what}: {other}")),
    }
}

fn finish(shared: &Shared, outcome: Outcome) -> Outcome {
    shared.counters.finished.fetch_add(1, Ordering::Relaxed);
    if !outcome.completed {
        shared.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    outcome
}

/// Error codes and failure kinds of all viewers, counted.
pub fn tally(outcomes: &[Outcome]) -> (BTreeMap<String, u64>, BTreeMap<String, u64>, Vec<String>) {
    let mut server = BTreeMap::new();
    let mut client = BTreeMap::new();
    let mut examples: BTreeMap<&'static str, String> = BTreeMap::new();
    for outcome in outcomes {
        for code in &outcome.server_errors {
            *server.entry(code.clone()).or_insert(0) += 1;
        }
        if let Some((kind, detail)) = &outcome.failure {
            *client.entry((*kind).to_owned()).or_insert(0) += 1;
            examples.entry(kind).or_insert_with(|| detail.clone());
        }
    }
    let examples = examples.into_iter().map(|(kind, detail)| format!("{kind}: {detail}")).collect();
    (server, client, examples)
}
