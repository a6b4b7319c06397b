//! A minimal Engine.IO v4 / Socket.IO v5 client over a single WebSocket.
//!
//! # Why hand-written
//! The maintained Rust Socket.IO client (`rust_socketio`) cannot acknowledge an event
//! that the server emitted with an ack (its open issues #461 and #491), and the
//! Tollstream `pay` event is answered by exactly such an ack. The load generator also
//! holds tens of thousands of connections at once, so each connection must stay lean:
//! one reader task and one writer task, small socket buffers, no polling transport.
//!
//! # Scope
//! WebSocket transport only (no HTTP long-polling, no upgrade), the default namespace
//! `/` only, JSON payloads only (binary packets are logged and dropped).
//!
//! # Layout
//! - [`packet`]: the pure codec, one text frame ↔ one typed [`Packet`] (no I/O, fuzzed).
//! - this module: the connection — handshake, one reader task and one writer task.
//!
//! # Wire format (one Engine.IO packet per WebSocket text frame)
//! | frame | meaning |
//! |---|---|
//! | `0{"sid":..,"pingInterval":..}` | Engine.IO open (server → client, first frame) |
//! | `2` / `3` | Engine.IO ping (server → client) / pong (client → server) |
//! | `40` / `40{"sid":".."}` | Socket.IO CONNECT request / reply |
//! | `41` | Socket.IO DISCONNECT (either side) |
//! | `42["event",data]`, `42<id>["event",data]` | Socket.IO EVENT, optionally asking for ack `<id>` |
//! | `43<id>[args..]` | Socket.IO ACK for `<id>` |
//! | `44{"message":".."}` | Socket.IO CONNECT_ERROR |
//!
//! # Back-pressure
//! Server events are delivered through a bounded channel ([`INCOMING_CAPACITY`]). If the
//! application stops draining it, the reader stops reading the socket, which also means
//! Engine.IO pings go unanswered: keep the [`Incoming`] receiver drained, and do not
//! await an [`SocketIo::emit_with_ack`] in the only task that drains it while the
//! server may push many events.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, trace, warn};

use crate::tls::Tls;

pub mod packet;

use packet::{DEFAULT_NSP, Open};
pub use packet::{Packet, PacketError, SioPacket};

/// Capacity of the channel of server events handed to the application.
pub const INCOMING_CAPACITY: usize = 64;
/// Capacity of the queue of frames waiting for the writer task.
const OUTGOING_CAPACITY: usize = 64;
/// Upper bound for the whole connect sequence (TCP, WebSocket, Engine.IO open, Socket.IO CONNECT).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a closing connection waits for the peer to finish the close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Per-connection socket read buffer. tungstenite's default (128 KiB, allocated up
/// front) would cost gigabytes at load-generator scale; our frames are small.
const READ_BUFFER_SIZE: usize = 4 * 1024;
/// Largest frame accepted from the server (tungstenite's default is 64 MiB).
const MAX_MESSAGE_SIZE: usize = 16 << 20;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Errors of the Socket.IO client.
#[derive(Debug, thiserror::Error)]
pub enum SocketIoError {
    /// The base URL could not be turned into a Socket.IO WebSocket URL.
    #[error("invalid Socket.IO URL: {0}")]
    Url(String),
    /// The connection could not be established (TCP, WebSocket or handshake).
    #[error("Socket.IO connect failed: {0}")]
    Connect(String),
    /// The server answered the namespace CONNECT with a CONNECT_ERROR.
    #[error("Socket.IO server rejected the connection: {0}")]
    Rejected(String),
    /// The peer sent something this client cannot understand.
    #[error("Socket.IO protocol error: {0}")]
    Protocol(String),
    /// No acknowledgement arrived in time.
    #[error("timed out waiting for the Socket.IO acknowledgement")]
    Timeout,
    /// The connection has ended (closed by either side, or found dead).
    #[error("Socket.IO connection is closed")]
    Disconnected,
    /// WebSocket transport error.
    #[error("WebSocket error: {0}")]
    WebSocket(#[source] Box<tungstenite::Error>),
}

/// One event the server emitted.
#[derive(Debug)]
pub struct Incoming {
    /// Event name (first element of the event array).
    pub event: String,
    /// First argument, [`Value::Null`] if the event had none. Further arguments are dropped.
    pub data: Value,
    /// Present when the server asked for an acknowledgement.
    pub ack: Option<Acker>,
}

/// Answers a server event that asked for an acknowledgement, exactly once (consumes self).
#[derive(Debug)]
pub struct Acker {
    id: u64,
    out: mpsc::Sender<String>,
    shared: Arc<Shared>,
}

impl Acker {
    /// Sends `43<id>[data]`.
    pub async fn send(self, data: &Value) -> Result<(), SocketIoError> {
        if !self.shared.is_connected() {
            return Err(SocketIoError::Disconnected);
        }
        let frame = packet::ack_frame(self.id, std::slice::from_ref(data));
        self.out.send(frame).await.map_err(|_| SocketIoError::Disconnected)
    }

    /// The ack id the server chose.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Handle to one Socket.IO connection; cheap to clone.
///
/// Dropping the last clone closes the connection (as [`SocketIo::close`] would).
#[derive(Clone)]
pub struct SocketIo {
    inner: Arc<Handle>,
}

impl fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketIo").field("sid", &self.inner.sid).field("connected", &self.is_connected()).finish()
    }
}

/// Owned by the `SocketIo` clones only (not by the tasks), so that its `Drop` tells
/// when the application has let go of the connection.
struct Handle {
    sid: String,
    out: mpsc::Sender<String>,
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown(Cause::Client);
    }
}

/// Who ended the connection; decides whether the writer still says goodbye (`41`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Client,
    Remote,
}

/// State shared by the handles, the ackers and both tasks.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    connected: AtomicBool,
    next_ack: AtomicU64,
    /// `Some(cause)` once the connection is ending; watched by both tasks.
    shutdown: watch::Sender<Option<Cause>>,
    /// Set by the writer once the WebSocket is closed (or given up on).
    writer_done: watch::Sender<bool>,
    /// Reader → writer: a ping arrived. A notification rather than a queued frame so
    /// that a pong never waits behind (or blocks on) a full outgoing queue.
    pong: Notify,
}

/// Pending acks; `open == false` means no new ones may be registered. Both live under
/// one lock so that no ack can be registered after the shutdown drained the map.
#[derive(Debug, Default)]
struct Pending {
    open: bool,
    waiters: HashMap<u64, oneshot::Sender<Value>>,
}

impl Shared {
    fn new() -> Self {
        Self {
            pending: Mutex::new(Pending { open: true, waiters: HashMap::new() }),
            connected: AtomicBool::new(true),
            next_ack: AtomicU64::new(0),
            shutdown: watch::Sender::new(None),
            writer_done: watch::Sender::new(false),
            pong: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic elsewhere cannot leave the map inconsistent, so poisoning is ignored.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Ends the connection once: fails every pending ack (their senders are dropped,
    /// so waiters see `Disconnected`) and wakes both tasks.
    fn shutdown(&self, cause: Cause) {
        let waiters = {
            let mut pending = self.lock();
            if !pending.open {
                return;
            }
            pending.open = false;
            self.connected.store(false, Ordering::Release);
            std::mem::take(&mut pending.waiters)
        };
        drop(waiters);
        self.shutdown.send_replace(Some(cause));
    }

    fn register(&self, id: u64) -> Option<oneshot::Receiver<Value>> {
        let mut pending = self.lock();
        if !pending.open {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        pending.waiters.insert(id, tx);
        Some(rx)
    }

    fn take_waiter(&self, id: u64) -> Option<oneshot::Sender<Value>> {
        self.lock().waiters.remove(&id)
    }
}

/// Removes an ack waiter when `emit_with_ack` returns or is cancelled, so timed-out
/// ids do not pile up in the map.
struct WaiterGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.shared.take_waiter(self.id);
    }
}

impl SocketIo {
    /// `base_url` like "http://127.0.0.1:1234" (http→ws, https→wss); connects to
    /// `{base}/socket.io/?EIO=4&transport=websocket`, reads the Engine.IO open packet,
    /// sends Socket.IO CONNECT for namespace "/" (`40`), waits for the CONNECT reply
    /// `40{"sid":"..."}` (a CONNECT_ERROR `44{...}` → [`SocketIoError::Rejected`]).
    /// Returns the handle and the receiver of server-sent events.
    ///
    /// The whole sequence is bounded by [`CONNECT_TIMEOUT`]. An `https://` or `wss://`
    /// server must have a certificate the system's roots trust; see
    /// [`connect_with`](Self::connect_with) for a private CA.
    pub async fn connect(base_url: &str) -> Result<(SocketIo, mpsc::Receiver<Incoming>), SocketIoError> {
        Self::connect_with(base_url, Tls::system()).await
    }

    /// [`connect`](Self::connect), trusting what `tls` trusts for `wss://`.
    pub async fn connect_with(
        base_url: &str,
        tls: &Tls,
    ) -> Result<(SocketIo, mpsc::Receiver<Incoming>), SocketIoError> {
        let url = engine_url(base_url)?;
        let (ws, open, sid) = tokio::time::timeout(CONNECT_TIMEOUT, handshake(url.as_str(), tls))
            .await
            .map_err(|_| SocketIoError::Connect(format!("no Socket.IO session within {CONNECT_TIMEOUT:?}")))??;
        debug!(%sid, ping_interval = open.ping_interval, ping_timeout = open.ping_timeout,
            max_payload = open.max_payload, "Socket.IO connected");

        // The server pings every pingInterval and waits pingTimeout for the pong, so
        // silence for longer than both together means the connection is gone.
        let dead_after = Duration::from_millis(open.ping_interval.saturating_add(open.ping_timeout));
        let shared = Arc::new(Shared::new());
        let (out_tx, out_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let (events_tx, events_rx) = mpsc::channel(INCOMING_CAPACITY);
        let (sink, stream) = ws.split();
        tokio::spawn(writer_task(sink, out_rx, shared.clone(), dead_after));
        tokio::spawn(reader_task(
            stream,
            ReaderCtx { shared: shared.clone(), out: out_tx.clone(), sid: sid.clone() },
            events_tx,
            dead_after,
        ));
        let handle = Handle { sid, out: out_tx, shared };
        Ok((SocketIo { inner: Arc::new(handle) }, events_rx))
    }

    /// The Socket.IO socket id from the CONNECT reply (what the server sees as `socket.id`).
    pub fn sid(&self) -> &str {
        &self.inner.sid
    }

    /// Emits `42["event",data]` (no ack). Returns once the frame is queued for the writer.
    pub async fn emit(&self, event: &str, data: &Value) -> Result<(), SocketIoError> {
        if !self.is_connected() {
            return Err(SocketIoError::Disconnected);
        }
        let frame = packet::event_frame(event, std::slice::from_ref(data), None);
        self.inner.out.send(frame).await.map_err(|_| SocketIoError::Disconnected)
    }

    /// Emits `42<id>["event",data]` and waits for the ack `43<id>[...]`; returns the
    /// ack's first argument ([`Value::Null`] if the ack had no arguments).
    ///
    /// `timeout` covers queueing and the round trip. Errors: [`SocketIoError::Timeout`],
    /// [`SocketIoError::Disconnected`] (also when the connection ends while waiting).
    pub async fn emit_with_ack(&self, event: &str, data: &Value, timeout: Duration) -> Result<Value, SocketIoError> {
        let shared = &*self.inner.shared;
        let id = shared.next_ack.fetch_add(1, Ordering::Relaxed);
        let frame = packet::event_frame(event, std::slice::from_ref(data), Some(id));
        // Registered before sending, so even an instant ack finds its waiter.
        let rx = shared.register(id).ok_or(SocketIoError::Disconnected)?;
        let _guard = WaiterGuard { shared, id };
        let round_trip = async {
            self.inner.out.send(frame).await.map_err(|_| SocketIoError::Disconnected)?;
            rx.await.map_err(|_| SocketIoError::Disconnected)
        };
        tokio::time::timeout(timeout, round_trip).await.map_err(|_| SocketIoError::Timeout)?
    }

    /// Sends Socket.IO DISCONNECT (`41`) and closes the WebSocket. Frames emitted
    /// before are sent first. Returns once the close is written (bounded by a short
    /// grace period); afterwards every emit fails with `Disconnected`.
    pub async fn close(&self) {
        let shared = &self.inner.shared;
        shared.shutdown(Cause::Client);
        let mut done = shared.writer_done.subscribe();
        let wait = async { done.wait_for(|done| *done).await.is_ok() };
        // The writer may itself spend up to two grace periods (flush, then close).
        if tokio::time::timeout(CLOSE_GRACE * 3, wait).await.is_err() {
            debug!(sid = %self.inner.sid, "writer did not finish closing in time");
        }
    }

    /// True until the connection ended (either side).
    pub fn is_connected(&self) -> bool {
        self.inner.shared.is_connected()
    }
}

/// Builds `ws[s]://host[:port][/prefix]/socket.io/?EIO=4&transport=websocket`.
fn engine_url(base: &str) -> Result<url::Url, SocketIoError> {
    let mut url = url::Url::parse(base).map_err(|e| SocketIoError::Url(format!("{base:?}: {e}")))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(SocketIoError::Url(format!(
                "{base:?}: unsupported scheme {other:?} (want http, https, ws or wss)"
            )));
        }
    };
    url.set_scheme(scheme).map_err(|()| SocketIoError::Url(format!("{base:?}: cannot switch scheme to {scheme}")))?;
    let path = format!("{}/socket.io/", url.path().trim_end_matches('/'));
    url.set_path(&path);
    // Keep caller-supplied query parameters (e.g. an auth token) after ours.
    let query = match url.query() {
        Some(q) if !q.is_empty() => format!("EIO=4&transport=websocket&{q}"),
        _ => "EIO=4&transport=websocket".to_owned(),
    };
    url.set_query(Some(&query));
    url.set_fragment(None);
    Ok(url)
}

fn ws_error(e: tungstenite::Error) -> SocketIoError {
    SocketIoError::WebSocket(Box::new(e))
}

/// Opens the WebSocket and runs the Engine.IO + Socket.IO handshake on it, before the
/// stream is split, so that no task exists for a connection that never came up.
async fn handshake(url: &str, tls: &Tls) -> Result<(Ws, Open, String), SocketIoError> {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        // Every send is flushed anyway; a write buffer would only hold memory.
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE));
    // Plain ws:// takes no connector; wss:// goes through ours, never the crate's own.
    let connector = url.starts_with("wss:").then(|| Connector::Rustls(tls.rustls()));
    // Nagle off: pongs and acks are tiny and latency-sensitive.
    let (mut ws, _response) = tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, connector)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Io(e) if untrusted_certificate(&e) => SocketIoError::Connect(format!(
                "{url}: the server's certificate is not trusted ({e}); if a private CA signed it, \
                 pass that CA's certificate with --ca-cert FILE"
            )),
            e => SocketIoError::Connect(format!("{url}: {e}")),
        })?;

    let first = next_text(&mut ws).await?;
    let open = match Packet::decode(&first) {
        Ok(Packet::Open(open)) => open,
        Ok(_) => return Err(SocketIoError::Protocol(format!("expected the Engine.IO open packet, got {first:?}"))),
        Err(e) => return Err(SocketIoError::Protocol(format!("bad first frame {first:?}: {e}"))),
    };
    trace!(engine_sid = %open.sid, "Engine.IO open");

    ws.send(Message::text("40")).await.map_err(ws_error)?;
    loop {
        let text = next_text(&mut ws).await?;
        let packet = Packet::decode(&text)
            .map_err(|e| SocketIoError::Protocol(format!("bad frame {text:?} during connect: {e}")))?;
        match packet {
            // Servers may ping right after the open packet, before answering CONNECT.
            Packet::Ping(_) => ws.send(Message::text("3")).await.map_err(ws_error)?,
            Packet::Message(packet) if packet.nsp() != DEFAULT_NSP => {
                debug!(frame = %text, "ignoring packet for another namespace");
            }
            Packet::Message(SioPacket::Connect { data, .. }) => {
                let sid = data.as_ref().and_then(|data| data.get("sid")).and_then(Value::as_str);
                let Some(sid) = sid else {
                    return Err(SocketIoError::Protocol(format!("CONNECT reply {text:?} without a sid")));
                };
                return Ok((ws, open, sid.to_owned()));
            }
            Packet::Message(SioPacket::ConnectError { data, .. }) => {
                let message = match data.get("message").and_then(Value::as_str) {
                    Some(message) => message.to_owned(),
                    None => data.to_string(),
                };
                return Err(SocketIoError::Rejected(message));
            }
            Packet::Message(SioPacket::Disconnect { .. }) => {
                return Err(SocketIoError::Rejected("server sent DISCONNECT during connect".to_owned()));
            }
            Packet::Close => {
                return Err(SocketIoError::Connect("server closed the Engine.IO session during connect".to_owned()));
            }
            _ => debug!(frame = %text, "ignoring packet before CONNECT reply"),
        }
    }
}

/// Whether a connection failed because rustls does not trust the server's certificate.
fn untrusted_certificate(error: &std::io::Error) -> bool {
    let rustls = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    matches!(rustls, Some(rustls::Error::InvalidCertificate(_)))
}

/// Next text frame during the handshake; binary/control frames are skipped.
async fn next_text(ws: &mut Ws) -> Result<String, SocketIoError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                return Err(SocketIoError::Connect(format!("server closed the WebSocket during connect ({frame:?})")));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ws_error(e)),
            None => {
                return Err(SocketIoError::Connect("WebSocket ended during connect".to_owned()));
            }
        }
    }
}

/// What the reader does with one frame.
#[derive(Debug)]
enum Action {
    Nothing,
    Pong,
    Event {
        event: String,
        data: Value,
        ack: Option<u64>,
    },
    Ack {
        id: u64,
        data: Value,
    },
    /// The server ended the session (`41` or Engine.IO close `1`).
    Closed,
}

/// Classifies one text frame. Malformed input is an `Err` for the caller to log and skip.
fn classify(frame: &str) -> Result<Action, String> {
    let packet = Packet::decode(frame).map_err(|e| e.to_string())?;
    let first = |args: Vec<Value>| args.into_iter().next().unwrap_or(Value::Null);
    Ok(match packet {
        // A ping may carry a payload (e.g. "2probe" during upgrades); the pong need not.
        Packet::Ping(_) => Action::Pong,
        Packet::Close => Action::Closed,
        Packet::Pong(_) | Packet::Upgrade | Packet::Noop => Action::Nothing,
        Packet::Open(_) => return Err("Engine.IO open packet on an established connection".to_owned()),
        Packet::Message(packet) if packet.nsp() != DEFAULT_NSP => Action::Nothing,
        Packet::Message(SioPacket::Event { ack, event, args, .. }) => Action::Event { event, data: first(args), ack },
        Packet::Message(SioPacket::Ack { id, args, .. }) => Action::Ack { id, data: first(args) },
        Packet::Message(SioPacket::Disconnect { .. }) => Action::Closed,
        Packet::Message(SioPacket::Connect { .. }) => Action::Nothing,
        Packet::Message(SioPacket::ConnectError { data, .. }) => {
            return Err(format!("CONNECT_ERROR on an established connection: {data}"));
        }
    })
}

struct ReaderCtx {
    shared: Arc<Shared>,
    /// For the [`Acker`]s handed out with events.
    out: mpsc::Sender<String>,
    sid: String,
}

/// Owns the read half: answers pings (via the writer), resolves acks, forwards events,
/// and watches for a silent connection.
async fn reader_task(
    mut stream: SplitStream<Ws>,
    ctx: ReaderCtx,
    events: mpsc::Sender<Incoming>,
    dead_after: Duration,
) {
    let sid = ctx.sid.as_str();
    let mut shutdown = ctx.shared.shutdown.subscribe();
    // `None` once the connection is ending: the application's receiver then ends.
    let mut events = Some(events);
    let mut deadline = Instant::now() + dead_after;
    loop {
        let closing = events.is_none();
        let next = tokio::select! {
            biased;
            _ = shutdown.wait_for(Option::is_some), if !closing => {
                // Keep reading briefly so the peer's close frame completes the handshake.
                events = None;
                deadline = deadline.min(Instant::now() + CLOSE_GRACE);
                continue;
            }
            next = tokio::time::timeout_at(deadline, stream.next()) => next,
        };
        let message = match next {
            Err(_elapsed) => {
                if !closing {
                    warn!(%sid, ?dead_after, "no ping or message from the server; connection is dead");
                }
                break;
            }
            Ok(None) => {
                debug!(%sid, "WebSocket ended");
                break;
            }
            Ok(Some(Err(e))) => {
                debug!(%sid, error = %e, "WebSocket read failed");
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        if closing {
            continue;
        }
        deadline = Instant::now() + dead_after;
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                debug!(%sid, ?frame, "server closed the WebSocket");
                ctx.shared.shutdown(Cause::Remote);
                continue;
            }
            Message::Binary(bytes) => {
                debug!(%sid, len = bytes.len(), "dropping binary frame");
                continue;
            }
            // tungstenite answers WebSocket-level pings itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        let action = match classify(text.as_str()) {
            Ok(action) => action,
            Err(problem) => {
                warn!(%sid, frame = %truncate(text.as_str()), %problem, "ignoring malformed frame");
                continue;
            }
        };
        trace!(%sid, ?action, "frame");
        match action {
            Action::Nothing => {}
            Action::Pong => ctx.shared.pong.notify_one(),
            Action::Ack { id, data } => match ctx.shared.take_waiter(id) {
                Some(waiter) => {
                    // The caller may have given up (timeout) in the meantime; fine.
                    let _ = waiter.send(data);
                }
                None => debug!(%sid, id, "ack for an unknown or expired id"),
            },
            Action::Event { event, data, ack } => {
                let incoming = Incoming {
                    event,
                    data,
                    ack: ack.map(|id| Acker { id, out: ctx.out.clone(), shared: ctx.shared.clone() }),
                };
                let Some(tx) = &events else { continue };
                tokio::select! {
                    sent = tx.send(incoming) => {
                        if let Err(mpsc::error::SendError(lost)) = sent {
                            debug!(%sid, event = %lost.event, "Incoming receiver dropped; event discarded");
                        }
                    }
                    // Don't stay blocked on a full channel once the connection is ending.
                    _ = shutdown.wait_for(Option::is_some) => {}
                }
            }
            Action::Closed => {
                debug!(%sid, "server ended the session");
                ctx.shared.shutdown(Cause::Remote);
            }
        }
    }
    ctx.shared.shutdown(Cause::Remote);
}

/// Owns the write half: sends queued frames and pongs, then closes the WebSocket.
async fn writer_task(
    mut sink: SplitSink<Ws, Message>,
    mut frames: mpsc::Receiver<String>,
    shared: Arc<Shared>,
    write_timeout: Duration,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let cause = loop {
        let frame = tokio::select! {
            biased;
            _ = shared.pong.notified() => "3".to_owned(),
            cause = shutdown.wait_for(Option::is_some) => {
                break cause.ok().and_then(|cause| *cause).unwrap_or(Cause::Remote);
            }
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                // Unreachable while the reader lives (it holds a sender); be safe anyway.
                None => break Cause::Client,
            },
        };
        if let Err(problem) = send_frame(&mut sink, frame, write_timeout).await {
            debug!(%problem, "WebSocket write failed");
            shared.shutdown(Cause::Remote);
            break Cause::Remote;
        }
    };
    if cause == Cause::Client {
        // Emits that were queued before close() still go out, then the goodbye.
        let mut goodbye = Vec::new();
        while let Ok(frame) = frames.try_recv() {
            goodbye.push(frame);
        }
        goodbye.push("41".to_owned());
        let flush = async {
            for frame in goodbye {
                send_frame(&mut sink, frame, CLOSE_GRACE).await?;
            }
            Ok::<(), String>(())
        };
        if let Err(problem) =
            tokio::time::timeout(CLOSE_GRACE, flush).await.unwrap_or_else(|_| Err("timed out".to_owned()))
        {
            debug!(%problem, "could not send DISCONNECT");
        }
    }
    // Also after a server DISCONNECT: socketioxide keeps the Engine.IO session open
    // until the client closes the transport.
    match tokio::time::timeout(CLOSE_GRACE, sink.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => trace!(error = %e, "WebSocket close"),
        Err(_) => debug!("WebSocket close timed out"),
    }
    shared.writer_done.send_replace(true);
}

async fn send_frame(sink: &mut SplitSink<Ws, Message>, frame: String, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, sink.send(Message::text(frame))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no progress within {timeout:?}")),
    }
}

/// Keeps logs readable when a peer sends a huge malformed frame.
fn truncate(s: &str) -> &str {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn url_mapping() {
        let url = |s| engine_url(s).map(|u| u.to_string());
        assert_eq!(
            url("http://127.0.0.1:1234").ok().as_deref(),
            Some("ws://127.0.0.1:1234/socket.io/?EIO=4&transport=websocket")
        );
        assert_eq!(
            url("https://example.invalid/prefix/?token=a").ok().as_deref(),
            Some("wss://example.invalid/prefix/socket.io/?EIO=4&transport=websocket&token=a")
        );
        assert!(matches!(url("ftp://x"), Err(SocketIoError::Url(_))));
        assert!(matches!(url("not a url"), Err(SocketIoError::Url(_))));
    }

    #[test]
    fn classify_frames() {
        assert!(matches!(classify("2"), Ok(Action::Pong)));
        assert!(matches!(classify("41"), Ok(Action::Closed)));
        assert!(matches!(classify("1"), Ok(Action::Closed)));
        assert!(matches!(classify("42/other,[\"x\"]"), Ok(Action::Nothing)));
        match classify(r#"42["ev"]"#) {
            Ok(Action::Event { event, data, ack }) => {
                assert_eq!((event.as_str(), data, ack), ("ev", Value::Null, None));
            }
            other => panic!("unexpected {other:?}"),
        }
        match classify(r#"433[{"x":1},2]"#) {
            Ok(Action::Ack { id, data }) => assert_eq!((id, data), (3, json!({"x": 1}))),
            other => panic!("unexpected {other:?}"),
        }
        match classify("434[]") {
            Ok(Action::Ack { id, data }) => assert_eq!((id, data), (4, Value::Null)),
            other => panic!("unexpected {other:?}"),
        }
        for bad in ["", "x", "4", "42", "42{}", "42[1]", "42[", "43[]", "44{}", "451-[]", "4é", "42é"] {
            assert!(classify(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let s = "é".repeat(150);
        assert!(truncate(&s).len() <= 200);
        assert_eq!(truncate("short"), "short");
    }
}
