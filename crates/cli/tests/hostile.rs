//! Hostile clients end to end: a real anvil and a real `tollstream serve`,
//! attacked over raw TCP, raw WebSocket and HTTP long-polling with what no
//! well-behaved client sends. Each test has a server of its own, so a
//! failure names the attack; each ends with a normal viewer buying and
//! playing, and with a server log free of panics and error-level lines.
//!
//! - [`garbage_and_malformed_packets_change_nothing`]: bytes that are not
//!   HTTP, WebSocket frames that are not Engine.IO, Engine.IO and
//!   Socket.IO packets that are broken, binary attachments, wrong
//!   namespaces, deep and wide JSON, the 16 KiB boundary, polling garbage.
//! - [`request_floods_meet_rate_limits_and_payments_never_do`]: a burst of
//!   `publicKey`, a client that paces itself, a streaming viewer whose
//!   connection also floods requests, a connection that floods thousands.
//! - [`connection_caps_and_slow_readers_leave_memory_near_its_start`]:
//!   thousands of TCP connections from one address, a burst of new
//!   connections from many, WebSockets that never read, and the server's
//!   resident memory before and after.
//! - [`new_channel_lookups_are_bounded_and_unknown_ids_remembered`]:
//!   `newChannel`s that make the server read a slow chain, one connection
//!   at a time and many at once.

mod common;

use common::{LIFETIME, PRICE, ServerOptions, ServerProcess, TestChain, within};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tollstream_client::{Step, Viewer};
use tollstream_protocol::{
    Amount, B256, ChannelDomain, ChannelState, MAX_MESSAGE_BYTES, ServerInfo, Signature, SigningKey, event,
};

/// The Engine.IO v4 WebSocket endpoint.
const WEBSOCKET_PATH: &str = "/socket.io/?EIO=4&transport=websocket";
/// The Engine.IO v4 long-polling endpoint.
const POLLING_PATH: &str = "/socket.io/?EIO=4&transport=polling";
/// The address every attacker uses unless it says otherwise.
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Another loopback address: a bystander the per-address cap on
/// 127.0.0.1 must not touch.
const BYSTANDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The serve defaults the tests rely on (PROTOCOL.md, "Rate limits").
const REQUESTS_PER_SECOND: f64 = 10.0;
const REQUEST_BURST: usize = 20;
const FLOOD_LIMIT: usize = 200;
const CONNECTIONS_PER_ADDRESS: usize = 64;
const NEW_CONNECTIONS_PER_SECOND: f64 = 200.0;

/// What came back on a raw WebSocket.
#[derive(Debug)]
enum Next {
    Text(String),
    Binary(usize),
    /// The server closed the connection (close frame, EOF or reset).
    Closed,
    /// Nothing within the wait.
    Silent,
}

/// An Engine.IO / Socket.IO connection spoken frame by frame, so the test
/// can send what the typed client never would.
struct Raw {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Acks read while waiting for another one: handlers run concurrently,
    /// so acks need not come back in request order.
    acks: HashMap<u64, Value>,
}

impl Raw {
    /// Opens the WebSocket and reads the Engine.IO open packet.
    async fn open(server: SocketAddr) -> Result<Raw, String> {
        Self::open_from(server, LOOPBACK, None).await
    }

    /// Opens the WebSocket from `source`, optionally with a small receive
    /// buffer (for a reader that never reads, so the server's writes back
    /// up sooner).
    async fn open_from(server: SocketAddr, source: IpAddr, receive_buffer: Option<u32>) -> Result<Raw, String> {
        let tcp = connect_from(server, source, receive_buffer).await.map_err(|e| e.to_string())?;
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{server}{WEBSOCKET_PATH}"), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Raw { ws, next_id: 0, acks: HashMap::new() };
        match raw.next(Duration::from_secs(10)).await {
            Next::Text(open) if open.starts_with("0{") => Ok(raw),
            other => Err(format!("no Engine.IO open packet: {other:?}")),
        }
    }

    /// Opens the WebSocket and joins the default namespace.
    async fn connected(server: SocketAddr) -> Raw {
        Self::connected_from(server, LOOPBACK, None).await
    }

    async fn connected_from(server: SocketAddr, source: IpAddr, receive_buffer: Option<u32>) -> Raw {
        let mut raw = Self::open_from(server, source, receive_buffer).await.expect("the WebSocket opens");
        assert!(raw.join().await, "the server accepts the CONNECT");
        raw
    }

    /// Sends CONNECT for the default namespace and waits for its reply:
    /// an event sent before it may close the connection, as the server
    /// has no socket for it yet. False when the server refuses or closes.
    async fn join(&mut self) -> bool {
        if !self.send("40").await {
            return false;
        }
        loop {
            match self.next(Duration::from_secs(10)).await {
                Next::Text(reply) if reply.starts_with("40{") => return true,
                Next::Text(reply) if reply.starts_with("44") || reply == "1" => return false,
                Next::Text(_) | Next::Binary(_) => {}
                Next::Closed | Next::Silent => return false,
            }
        }
    }

    /// Sends a text frame; false once the connection is gone.
    async fn send(&mut self, text: impl Into<String>) -> bool {
        self.ws.send(Message::text(text.into())).await.is_ok()
    }

    async fn send_binary(&mut self, bytes: Vec<u8>) -> bool {
        self.ws.send(Message::binary(bytes)).await.is_ok()
    }

    /// The next text or binary frame, answering Engine.IO pings on the way.
    async fn next(&mut self, wait: Duration) -> Next {
        let deadline = Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Next::Silent,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Next::Closed,
                Ok(Some(Ok(Message::Text(text)))) => {
                    if text.as_str() == "2" {
                        let _ = self.ws.send(Message::text("3")).await;
                        continue;
                    }
                    return Next::Text(text.as_str().to_owned());
                }
                Ok(Some(Ok(Message::Binary(bytes)))) => return Next::Binary(bytes.len()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Sends `42<id>[event(, data)]`; its id, `None` once the connection
    /// is gone.
    async fn send_request(&mut self, name: &str, data: Option<&Value>) -> Option<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let arguments = match data {
            Some(data) => json!([name, data]),
            None => json!([name]),
        };
        self.send(format!("42{id}{arguments}")).await.then_some(id)
    }

    /// The first argument of ack `id`; `None` when the connection closed
    /// or stayed silent for `wait` first.
    async fn ack(&mut self, id: u64, wait: Duration) -> Option<Value> {
        loop {
            if let Some(value) = self.acks.remove(&id) {
                return Some(value);
            }
            match self.next(wait).await {
                Next::Text(text) => {
                    if let Some((ack_id, value)) = parse_ack(&text) {
                        self.acks.insert(ack_id, value);
                    }
                }
                Next::Binary(_) => {}
                Next::Closed | Next::Silent => return None,
            }
        }
    }

    /// One request and its answer.
    async fn request(&mut self, name: &str, data: Option<&Value>) -> Option<Value> {
        let id = self.send_request(name, data).await?;
        self.ack(id, Duration::from_secs(10)).await
    }

    /// Reads until the server closes the connection; false if it is still
    /// open (or keeps talking) after `wait`.
    async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now())).await {
                Next::Closed => return true,
                Next::Silent => return false,
                Next::Text(_) | Next::Binary(_) => {}
            }
        }
    }
}

/// `43<id>[value, ...]` → (id, value).
fn parse_ack(text: &str) -> Option<(u64, Value)> {
    let rest = text.strip_prefix("43")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let id = rest[..digits].parse().ok()?;
    let arguments: Value = serde_json::from_str(&rest[digits..]).ok()?;
    Some((id, arguments.get(0).cloned().unwrap_or(Value::Null)))
}

/// The error code of an ack, if it is a refusal.
fn error_code(ack: &Value) -> Option<&str> {
    ack.get("error")?.get("code")?.as_str()
}

fn is_server_info(ack: &Value) -> bool {
    ack.get("public_key").is_some() && ack.get("error").is_none()
}

/// A TCP connection from `source` (any loopback address reaches the
/// server on 127.0.0.1).
async fn connect_from(server: SocketAddr, source: IpAddr, receive_buffer: Option<u32>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.connect(server).await
}

fn address(server: &ServerProcess) -> SocketAddr {
    server.url.trim_start_matches("http://").parse().expect("the server listens on an IP address")
}

/// Whether a fresh connection from `source` gets its `publicKey` answered.
async fn serves(server: SocketAddr, source: IpAddr) -> bool {
    let Ok(mut raw) = Raw::open_from(server, source, None).await else { return false };
    if !raw.join().await {
        return false;
    }
    raw.request(event::PUBLIC_KEY, None).await.is_some_and(|ack| is_server_info(&ack))
}

/// Deterministic noise (xorshift), so a failure can be replayed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A `publicKey` request with ack id 0, padded to exactly `len` bytes on
/// the wire (its data, which `publicKey` ignores, carries the padding).
fn padded_request(len: usize) -> String {
    let frame = |pad: usize| format!("420[\"publicKey\",{{\"pad\":\"{}\"}}]", "x".repeat(pad));
    let pad = len - frame(0).len();
    let text = frame(pad);
    assert_eq!(text.len(), len);
    text
}

/// JSON nested `depth` arrays deep.
fn deep_json(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// A JSON object of `keys` keys.
fn wide_object(keys: usize) -> String {
    let fields: Vec<String> = (0..keys).map(|k| format!("\"k{k}\":{k}")).collect();
    format!("{{{}}}", fields.join(","))
}

/// A normal viewer buys three windows and plays them to the end.
async fn a_viewer_buys_and_plays(chain: &TestChain, server: &ServerProcess) {
    let wallet = chain.viewer_wallet().await;
    let mut viewer = within(30, Viewer::connect(&server.url, wallet)).await.expect("a viewer connects");
    // Straight to the node: the server's own way to it may be slowed.
    within(60, viewer.buy(&chain.node_rpc(), 3, LIFETIME)).await.expect("a viewer buys");
    viewer.play("demo", 0).await.expect("a viewer plays");
    let mut paid = 0;
    within(30, async {
        loop {
            match viewer.next_step().await {
                Step::Paid { .. } => paid += 1,
                Step::Keys(_) => {}
                Step::Final(_) => break,
                other => panic!("the viewer stopped: {other:?}\n{}", server.log()),
            }
        }
    })
    .await;
    assert_eq!(paid, 3, "every window was paid");
}

/// No panic and no error-level line in the server's log (the default
/// `tracing` format: `<timestamp> <LEVEL> <target>: ...`).
fn assert_log_clean(server: &ServerProcess) {
    let log = server.log();
    let level = |line: &str| line.split_whitespace().nth(1).map(str::to_owned);
    let bad: Vec<&str> =
        log.lines().filter(|line| line.contains("panicked") || level(line).as_deref() == Some("ERROR")).collect();
    let warnings = log.lines().filter(|line| level(line).as_deref() == Some("WARN")).count();
    println!("server log: {} lines, {warnings} warnings", log.lines().count());
    assert!(bad.is_empty(), "the server logged {} panic or error line(s):\n{}", bad.len(), bad.join("\n"));
}

/// One attack over a raw WebSocket.
struct Case {
    name: &'static str,
    /// Join the default namespace (`40`) before sending `frames`.
    connect: bool,
    frames: Vec<Frame>,
    /// What must happen, when PROTOCOL.md says; `None` when only "the
    /// server survives" is specified.
    expect: Option<Outcome>,
}

enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

fn text(frame: impl Into<String>) -> Frame {
    Frame::Text(frame.into())
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The server closed the connection.
    Closed,
    /// The connection still answers a `publicKey`.
    Answers,
    /// The connection stays open, but requests get no answer.
    Deaf,
    /// Ack 0 was this refusal code (the connection answers afterwards).
    Refused(&'static str),
}

/// Sends a case's frames on a fresh connection and sees what became of it.
async fn attack(server: SocketAddr, case: &Case) -> (Outcome, Vec<String>) {
    let mut raw = if case.connect { Raw::connected(server).await } else { Raw::open(server).await.unwrap() };
    let mut heard = Vec::new();
    for frame in &case.frames {
        let sent = match frame {
            Frame::Text(text) => raw.send(text.clone()).await,
            Frame::Binary(bytes) => raw.send_binary(bytes.clone()).await,
        };
        if !sent {
            return (Outcome::Closed, heard);
        }
    }
    // What the server says to it, or whether it hangs up.
    loop {
        match raw.next(Duration::from_millis(700)).await {
            Next::Closed => return (Outcome::Closed, heard),
            Next::Silent => break,
            Next::Binary(len) => heard.push(format!("<{len} binary bytes>")),
            Next::Text(text) => {
                if let Some((id, value)) = parse_ack(&text) {
                    raw.acks.insert(id, value);
                }
                heard.push(text.chars().take(100).collect());
            }
        }
    }
    let refusal = raw.acks.get(&0).and_then(error_code).map(str::to_owned);
    // Still usable? (On a connection that never joined, join first.)
    if !case.connect && !raw.join().await {
        return (Outcome::Closed, heard);
    }
    // An id the case did not use.
    raw.next_id = 1_000_000;
    let probe = raw.send_request(event::PUBLIC_KEY, None).await;
    let answer = match probe {
        Some(id) => raw.ack(id, Duration::from_secs(3)).await,
        None => return (Outcome::Closed, heard),
    };
    let outcome = match (answer, refusal) {
        (Some(ack), Some(code)) if is_server_info(&ack) => Outcome::Refused(match code.as_str() {
            "bad_request" => "bad_request",
            "rate_limited" => "rate_limited",
            _ => "another code",
        }),
        (Some(ack), None) if is_server_info(&ack) => Outcome::Answers,
        (Some(_), _) => Outcome::Deaf,
        (None, _) => {
            if raw.closed_within(Duration::from_millis(200)).await {
                Outcome::Closed
            } else {
                Outcome::Deaf
            }
        }
    };
    (outcome, heard)
}

/// The WebSocket attacks of [`garbage_and_malformed_packets_change_nothing`].
fn websocket_cases() -> Vec<Case> {
    let attachment = r#"451-["publicKey",{"_placeholder":true,"num":0}]"#;
    vec![
        // Below Engine.IO.
        Case {
            name: "binary noise before CONNECT",
            connect: false,
            frames: vec![Frame::Binary(noise(1, 4096))],
            expect: None,
        },
        Case { name: "text noise before CONNECT", connect: false, frames: vec![text("hello, server")], expect: None },
        Case { name: "an empty text frame", connect: true, frames: vec![text("")], expect: None },
        Case {
            name: "binary noise after CONNECT",
            connect: true,
            frames: vec![Frame::Binary(noise(2, 8192))],
            expect: None,
        },
        Case {
            name: "invalid UTF-8 noise as 42 payload",
            connect: true,
            frames: vec![text(format!("42{}", String::from_utf8_lossy(&noise(3, 2000))))],
            expect: None,
        },
        // Engine.IO packets out of place.
        Case { name: "Engine.IO type 9", connect: true, frames: vec![text("9")], expect: None },
        Case {
            name: "Engine.IO open from the client",
            connect: true,
            frames: vec![text("0{\"sid\":\"x\"}")],
            expect: None,
        },
        Case { name: "Engine.IO close", connect: true, frames: vec![text("1")], expect: Some(Outcome::Closed) },
        Case {
            name: "unsolicited pongs",
            connect: true,
            frames: vec![text("3"), text("3"), text("3probe")],
            expect: None,
        },
        Case { name: "a ping from the client", connect: true, frames: vec![text("2"), text("2probe")], expect: None },
        Case { name: "upgrade on a WebSocket", connect: true, frames: vec![text("5")], expect: None },
        Case { name: "noop", connect: true, frames: vec![text("6")], expect: None },
        // Socket.IO packets out of place or broken.
        Case {
            name: "an event before CONNECT",
            connect: false,
            frames: vec![text(r#"420["publicKey"]"#)],
            expect: None,
        },
        Case { name: "DISCONNECT before CONNECT", connect: false, frames: vec![text("41")], expect: None },
        Case { name: "a bare message type", connect: true, frames: vec![text("4")], expect: None },
        Case { name: "Socket.IO type 9", connect: true, frames: vec![text("49[]")], expect: None },
        Case { name: "CONNECT twice", connect: true, frames: vec![text("40")], expect: None },
        Case {
            name: "CONNECT with a broken payload",
            connect: false,
            frames: vec![text("40{\"token\":")],
            expect: None,
        },
        Case {
            name: "CONNECT_ERROR from the client",
            connect: true,
            frames: vec![text("44{\"message\":\"no\"}")],
            expect: None,
        },
        Case { name: "an event without arguments", connect: true, frames: vec![text("420")], expect: None },
        Case { name: "an event with an empty array", connect: true, frames: vec![text("420[]")], expect: None },
        Case { name: "an event name that is a number", connect: true, frames: vec![text("420[7,{}]")], expect: None },
        Case {
            name: "an event name that is an object",
            connect: true,
            frames: vec![text(r#"420[{"a":1}]"#)],
            expect: None,
        },
        Case {
            name: "an object instead of an array",
            connect: true,
            frames: vec![text(r#"420{"publicKey":1}"#)],
            expect: None,
        },
        Case { name: "broken JSON", connect: true, frames: vec![text(r#"420["publicKey""#)], expect: None },
        Case {
            name: "trailing garbage after JSON",
            connect: true,
            frames: vec![text(r#"420["publicKey"]]]xyz"#)],
            expect: None,
        },
        Case {
            name: "an ack id beyond u64",
            connect: true,
            frames: vec![text(r#"4299999999999999999999999999["publicKey"]"#)],
            expect: None,
        },
        Case { name: "a negative ack id", connect: true, frames: vec![text(r#"42-1["publicKey"]"#)], expect: None },
        Case {
            name: "an unknown event",
            connect: true,
            frames: vec![text(r#"420["mine",{"all":"of it"}]"#)],
            expect: None,
        },
        Case {
            name: "the server's own events",
            connect: true,
            frames: vec![text(r#"420["pay",{}]"#), text(r#"421["secret",{}]"#), text(r#"422["error",{}]"#)],
            expect: None,
        },
        Case {
            name: "an ack nobody asked for",
            connect: true,
            frames: vec![text(r#"4377[{"error":null}]"#)],
            expect: None,
        },
        Case { name: "an ack with a broken id", connect: true, frames: vec![text(r#"43abc[1]"#)], expect: None },
        Case {
            name: "latestState with a malformed key",
            connect: true,
            frames: vec![text(r#"420["latestState",{"client_public_key":"0x02zz"}]"#)],
            expect: Some(Outcome::Refused("bad_request")),
        },
        Case {
            name: "newChannel with a string",
            connect: true,
            frames: vec![text(r#"420["newChannel","a state"]"#)],
            expect: Some(Outcome::Refused("bad_request")),
        },
        Case {
            name: "play with numbers for strings",
            connect: true,
            frames: vec![text(r#"420["play",{"client_public_key":1,"stream_id":2,"from_segment":"3","signature":4}]"#)],
            expect: Some(Outcome::Refused("bad_request")),
        },
        Case {
            name: "stop with nothing",
            connect: true,
            frames: vec![text(r#"420["stop"]"#)],
            expect: Some(Outcome::Refused("bad_request")),
        },
        // Binary events and acks.
        Case {
            name: "a binary event with its attachment",
            connect: true,
            frames: vec![text(attachment), Frame::Binary(noise(4, 512))],
            expect: None,
        },
        Case {
            name: "a binary event whose attachment never comes",
            connect: true,
            frames: vec![text(attachment)],
            expect: None,
        },
        Case {
            name: "a binary event claiming a million attachments",
            connect: true,
            frames: vec![
                text(r#"451000000-["publicKey",{"_placeholder":true,"num":999}]"#),
                Frame::Binary(vec![0; 100]),
            ],
            expect: None,
        },
        Case {
            name: "a binary event with an absurd attachment count",
            connect: true,
            frames: vec![text(r#"4599999999999999999999999-["publicKey"]"#)],
            expect: None,
        },
        Case {
            name: "a binary event without a count",
            connect: true,
            frames: vec![text(r#"450["publicKey"]"#)],
            expect: None,
        },
        Case {
            name: "a placeholder past the attachments",
            connect: true,
            frames: vec![text(r#"451-0["latestState",{"_placeholder":true,"num":5}]"#), Frame::Binary(vec![1, 2, 3])],
            expect: None,
        },
        Case {
            name: "a binary ack nobody asked for",
            connect: true,
            frames: vec![text(r#"461-3[{"_placeholder":true,"num":0}]"#), Frame::Binary(vec![9; 64])],
            expect: None,
        },
        Case {
            name: "attachments with no event",
            connect: true,
            frames: vec![Frame::Binary(vec![0; 64]), Frame::Binary(vec![1; 64])],
            expect: None,
        },
        // Namespaces.
        Case {
            name: "CONNECT to another namespace",
            connect: false,
            frames: vec![text("40/other,")],
            expect: Some(Outcome::Answers),
        },
        Case {
            name: "an event on another namespace",
            connect: true,
            frames: vec![text(r#"42/other,0["publicKey"]"#)],
            expect: None,
        },
        Case {
            name: "CONNECT to a namespace with a broken name",
            connect: false,
            frames: vec![text("40/\u{0}\u{ffff},{}")],
            expect: None,
        },
        Case {
            name: "DISCONNECT from another namespace",
            connect: true,
            frames: vec![text("41/admin,")],
            expect: None,
        },
        // Deep and wide JSON, all under 16 KiB.
        Case {
            name: "latestState with JSON 5000 arrays deep",
            connect: true,
            frames: vec![text(format!(r#"420["latestState",{}]"#, deep_json(5000)))],
            expect: None,
        },
        Case {
            name: "publicKey with JSON 7000 arrays deep",
            connect: true,
            frames: vec![text(format!(r#"420["publicKey",{}]"#, deep_json(7000)))],
            expect: None,
        },
        Case {
            name: "newChannel with an object of 1000 keys",
            connect: true,
            frames: vec![text(format!(r#"420["newChannel",{}]"#, wide_object(1000)))],
            expect: Some(Outcome::Refused("bad_request")),
        },
        Case {
            name: "play with 7000 arguments",
            connect: true,
            frames: vec![text(format!(r#"420["play"{}]"#, ",0".repeat(7000)))],
            expect: None,
        },
        Case {
            name: "latestState with 700 duplicate keys",
            connect: true,
            frames: vec![text(format!(
                r#"420["latestState",{{{}}}]"#,
                vec![r#""client_public_key":1"#; 700].join(",")
            ))],
            expect: None,
        },
        Case {
            name: "a string of 16000 escapes",
            connect: true,
            frames: vec![text(format!(r#"420["latestState",{{"client_public_key":"{}"}}]"#, "\\u0000".repeat(2600)))],
            expect: Some(Outcome::Refused("bad_request")),
        },
    ]
}

#[tokio::test]
async fn garbage_and_malformed_packets_change_nothing() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let addr = address(&server);
    let started = Instant::now();

    // Bytes that are not HTTP, and HTTP that is not Engine.IO.
    let long_header = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(200_000));
    let raw_tcp: Vec<(&str, Vec<u8>)> = vec![
        ("64 KiB of noise", noise(5, 64 * 1024)),
        ("a NUL flood", vec![0; 32 * 1024]),
        ("TLS to a plain port", vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
        ("a header of 200 KB", long_header.into_bytes()),
        ("an upgrade without a key", b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec()),
        ("Engine.IO version 3", b"GET /socket.io/?EIO=3&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec()),
        ("an unknown transport", b"GET /socket.io/?EIO=4&transport=flashsocket HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a request line of noise", b"\x01\x02 /\xff HTTP/9.9\r\n\r\n".to_vec()),
        ("a half-sent request", b"POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc".to_vec()),
    ];
    for (name, bytes) in raw_tcp {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let _ = tcp.write_all(&bytes).await;
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut reply)).await;
        let first_line = String::from_utf8_lossy(&reply).lines().next().unwrap_or("").to_owned();
        println!("raw TCP, {name}: {:?}{}", first_line, if read.is_err() { " (still open after 2 s)" } else { "" });
        assert!(!first_line.contains(" 5"), "{name}: a server error: {first_line}");
        assert!(serves(addr, LOOPBACK).await, "the server stopped serving after {name}\n{}", server.log());
    }

    // Engine.IO and Socket.IO over WebSocket.
    let mut mismatches = Vec::new();
    for case in websocket_cases() {
        let (outcome, heard) = within(30, attack(addr, &case)).await;
        println!("WebSocket, {}: {outcome:?}, heard {heard:?}", case.name);
        if let Some(expected) = &case.expect
            && *expected != outcome
        {
            mismatches.push(format!("{}: expected {expected:?}, got {outcome:?} (heard {heard:?})", case.name));
        }
        assert!(serves(addr, LOOPBACK).await, "the server stopped serving after {}\n{}", case.name, server.log());
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // The 16 KiB boundary (D25): the encoded packet counts, framing
    // included. 16384 bytes are answered; 16385 close the connection and
    // get no answer.
    let mut fits = Raw::connected(addr).await;
    assert!(fits.send(padded_request(MAX_MESSAGE_BYTES)).await);
    let ack = fits.ack(0, Duration::from_secs(5)).await;
    assert!(ack.as_ref().is_some_and(is_server_info), "a message of exactly 16 KiB is answered: {ack:?}");
    let mut over = Raw::connected(addr).await;
    assert!(over.send(padded_request(MAX_MESSAGE_BYTES + 1)).await);
    match over.next(Duration::from_secs(5)).await {
        Next::Closed => {}
        other => panic!("a message of 16 KiB + 1 byte must close the connection, got {other:?}"),
    }
    // The same over long-polling: the limit is the Engine.IO payload.
    let polling = polling_boundary(&server).await;
    println!("long-polling, 16 KiB: {:?}; 16 KiB + 1: {:?}", polling.0, polling.1);

    // Long-polling garbage.
    polling_garbage(&server).await;
    assert!(serves(addr, LOOPBACK).await, "the server stopped serving after the polling garbage");

    a_viewer_buys_and_plays(&chain, &server).await;
    assert_log_clean(&server);
    println!("garbage test: {:.1} s", started.elapsed().as_secs_f64());
}

/// An Engine.IO session over HTTP long-polling.
struct Polling {
    http: reqwest::Client,
    url: String,
}

impl Polling {
    /// The handshake: `GET` → `0{"sid":..}`.
    async fn open(server: &ServerProcess) -> Polling {
        Self::open_with(server, reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()).await
    }

    /// The handshake on `http`'s connections (one keep-alive connection
    /// carries every session opened on the same client).
    async fn open_with(server: &ServerProcess, http: reqwest::Client) -> Polling {
        let base = format!("{}{POLLING_PATH}", server.url);
        let open = http.get(&base).send().await.unwrap().text().await.unwrap();
        let open = open.strip_prefix('0').unwrap_or_else(|| panic!("no Engine.IO open packet: {open:?}"));
        let open: Value = serde_json::from_str(open).expect("an open packet is JSON");
        let sid = open["sid"].as_str().expect("a session id").to_owned();
        Polling { http, url: format!("{base}&sid={sid}") }
    }

    /// POSTs `body`; the status.
    async fn post(&self, body: impl Into<reqwest::Body>) -> u16 {
        match self.http.post(&self.url).body(body).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// GETs until a packet starting with `prefix` comes (answering pings);
    /// `None` when the session ends or a few polls bring nothing.
    async fn receive(&self, prefix: &str) -> Option<String> {
        for _ in 0..5 {
            let (status, body) = self.get().await;
            if status != 200 {
                return None;
            }
            for packet in body.split('\u{1e}') {
                if packet.starts_with(prefix) {
                    return Some(packet.to_owned());
                }
                if packet == "2" {
                    self.post("3").await;
                }
                if packet == "1" {
                    return None;
                }
            }
        }
        None
    }

    /// GETs what the server has for the client; the status and the body.
    async fn get(&self) -> (u16, String) {
        match self.http.get(&self.url).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }
}

/// Posts a `publicKey` of exactly 16 KiB, then of 16 KiB + 1, each on a
/// session of its own; for each, the POST's status and whether the ack
/// came.
async fn polling_boundary(server: &ServerProcess) -> ((u16, bool), (u16, bool)) {
    let mut results = Vec::new();
    for len in [MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1] {
        let session = Polling::open(server).await;
        assert_eq!(session.post("40").await, 200, "CONNECT over polling");
        let connected = session.receive("40").await;
        assert!(connected.is_some(), "no CONNECT reply over polling");
        let status = session.post(padded_request(len)).await;
        let answered = status == 200 && session.receive("430[").await.is_some();
        results.push((status, answered));
    }
    assert_eq!(results[0], (200, true), "16 KiB over polling is answered");
    assert!(!results[1].1, "16 KiB + 1 over polling must get no answer: {:?}", results[1]);
    assert!(results[1].0 < 500, "16 KiB + 1 over polling: a server error {}", results[1].0);
    (results[0], results[1])
}

/// Posts garbage to polling sessions; every answer must be a client error
/// or success, never a server error.
async fn polling_garbage(server: &ServerProcess) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let base = format!("{}{POLLING_PATH}", server.url);
    let checks: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("a POST without a session", http.post(&base).body("40")),
        ("a POST to an unknown session", http.post(format!("{base}&sid=AAAAAAAAAAAAAAAAAAAA")).body("40")),
        ("a GET with a session id of noise", http.get(format!("{base}&sid=%00%ff%fe"))),
        ("Engine.IO version 3", http.get(format!("{}/socket.io/?EIO=3&transport=polling", server.url))),
        (
            "Engine.IO version 99999999999999999999",
            http.get(format!("{}/socket.io/?EIO=99999999999999999999&transport=polling", server.url)),
        ),
        ("no version", http.get(format!("{}/socket.io/?transport=polling", server.url))),
        ("a PUT", http.put(&base).body("40")),
    ];
    for (name, request) in checks {
        let status = request.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        println!("long-polling, {name}: {status}");
        assert!(status < 500, "{name}: a server error {status}");
    }
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("noise", noise(6, 4000)),
        ("record separators only", vec![0x1e; 1000]),
        (
            "packets of noise between separators",
            [b"4".as_slice(), &[0x1e], b"42[", &[0x1e], b"b", &[0x1e], b"bAAAA====", &[0x1e], b"9"].concat(),
        ),
        ("a base64 binary packet of noise", b"b!!!not base64!!!".to_vec()),
        ("an event before CONNECT", br#"420["publicKey"]"#.to_vec()),
        ("deep JSON", format!(r#"40{}420["latestState",{}]"#, '\u{1e}', deep_json(5000)).into_bytes()),
        ("an empty body", Vec::new()),
    ];
    for (name, body) in bodies {
        let session = Polling::open(server).await;
        let status = session.post(body).await;
        let (after, reply) = session.get().await;
        println!(
            "long-polling body, {name}: POST {status}, then GET {after} {:?}",
            reply.chars().take(60).collect::<String>()
        );
        assert!(status < 500 && after < 500, "{name}: a server error {status} / {after}");
    }
}

#[tokio::test]
async fn request_floods_meet_rate_limits_and_payments_never_do() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let addr = address(&server);
    let started = Instant::now();

    // A burst of 150 `publicKey` on one connection: beyond the burst
    // allowance they are refused, every one is answered, and the
    // connection (refused fewer than the flood limit) stays.
    let mut burst = Raw::connected(addr).await;
    let mut ids = Vec::new();
    for _ in 0..150 {
        ids.push(burst.send_request(event::PUBLIC_KEY, None).await.expect("the burst is sent"));
    }
    let mut limited = 0;
    for id in ids {
        let ack = burst.ack(id, Duration::from_secs(10)).await.unwrap_or_else(|| panic!("request {id} unanswered"));
        match error_code(&ack) {
            Some("rate_limited") => limited += 1,
            None => assert!(is_server_info(&ack), "{ack}"),
            Some(other) => panic!("publicKey refused with {other}"),
        }
    }
    println!("a burst of 150 publicKey: {limited} rate_limited, {} answered", 150 - limited);
    assert!(limited >= 1, "a burst of 150 must meet rate_limited");
    assert!(150 - limited >= REQUEST_BURST, "the burst allowance is served");
    assert!(150 - limited <= REQUEST_BURST + 20, "at most the burst and what refilled meanwhile are served");
    tokio::time::sleep(Duration::from_secs_f64(2.0 / REQUESTS_PER_SECOND)).await;
    let after = burst.request(event::PUBLIC_KEY, None).await.expect("the connection stays after a burst");
    assert!(is_server_info(&after), "answered again once the allowance refilled: {after}");
    drop(burst);

    // A client that keeps to the rate never meets the limit.
    let mut paced = Raw::connected(addr).await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / REQUESTS_PER_SECOND));
    for n in 0..50 {
        tick.tick().await;
        let name = if n % 2 == 0 { event::PUBLIC_KEY } else { event::LATEST_STATE };
        let data = json!({"client_public_key": format!("0x02{}", "11".repeat(32))});
        let ack = paced.request(name, Some(&data)).await.expect("a paced request is answered");
        assert_ne!(error_code(&ack), Some("rate_limited"), "paced request {n} ({name}) was limited");
    }
    drop(paced);

    // Payments are never limited: a viewer whose connection empties its
    // request allowance right before answering each `pay`.
    let windows = 10;
    let wallet = chain.viewer_wallet().await;
    let mut viewer = Viewer::connect(&server.url, wallet).await.unwrap();
    viewer.buy(&chain.rpc, windows, LIFETIME).await.unwrap();
    viewer.play("demo", 0).await.unwrap();
    let (mut paid, mut limited_meanwhile, mut first) = (0, 0, true);
    within(60, async {
        loop {
            match viewer.next_event().await {
                tollstream_client::Event::Pay(request, answer) => {
                    // The first burst empties the allowance; later ones take
                    // what refilled during the window, and a few more.
                    let burst = if first { REQUEST_BURST + 5 } else { 6 };
                    first = false;
                    let client = viewer.client();
                    let answers = futures_util::future::join_all(
                        (0..burst).map(|_| client.request_raw(event::PUBLIC_KEY, &Value::Null)),
                    )
                    .await;
                    for answer in answers {
                        let answer = answer.expect("every request is answered");
                        if error_code(&answer) == Some("rate_limited") {
                            limited_meanwhile += 1;
                        }
                    }
                    match viewer.answer_pay(request, answer).await {
                        Step::Paid { .. } => paid += 1,
                        other => panic!("the viewer could not pay: {other:?}"),
                    }
                }
                tollstream_client::Event::Step(Step::Keys(_)) => {}
                tollstream_client::Event::Step(Step::Final(_)) => break,
                tollstream_client::Event::Step(other) => panic!("streaming stopped: {other:?}\n{}", server.log()),
            }
        }
    })
    .await;
    println!("a streaming viewer flooding requests: {paid} payments accepted, {limited_meanwhile} requests limited");
    assert_eq!(paid, windows, "every payment went through");
    assert!(limited_meanwhile >= 1, "the viewer's requests were limited, so its allowance was empty when it paid");
    drop(viewer);

    // Thousands of requests on one connection: closed, and counted.
    let closed_before = server.metric("tollstream_connections_closed_flooding_total").await.unwrap_or(0.0);
    let mut flood = Raw::connected(addr).await;
    let mut sent = 0;
    while sent < 5000 && flood.send_request(event::PUBLIC_KEY, None).await.is_some() {
        sent += 1;
    }
    assert!(
        flood.closed_within(Duration::from_secs(10)).await,
        "a connection flooding {sent} requests is closed\n{}",
        server.log()
    );
    println!("a flood: closed after {sent} requests sent");
    let rate_limited = server.metric("tollstream_requests_rate_limited_total").await.unwrap_or(0.0);
    let closed = server.metric("tollstream_connections_closed_flooding_total").await.unwrap_or(0.0);
    println!("metrics: {rate_limited} requests rate limited, {closed} connections closed for flooding");
    assert!(rate_limited >= (limited + limited_meanwhile + FLOOD_LIMIT) as f64, "every refusal is counted");
    // One connection closed: counted once, however many of its requests
    // were still on their way when the server decided to close it.
    assert_eq!(closed - closed_before, 1.0, "one flooding connection is counted once");

    assert!(serves(addr, LOOPBACK).await);
    a_viewer_buys_and_plays(&chain, &server).await;
    assert_log_clean(&server);
    println!("flood test: {:.1} s", started.elapsed().as_secs_f64());
}

/// The server's resident memory, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server is running");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
}

/// Lets this test process hold a few thousand sockets.
fn raise_open_files_limit(wanted: u64) {
    // SAFETY: getrlimit/setrlimit with a pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// One metric read from `source` over plain HTTP (the test's usual
/// client would come from 127.0.0.1, which the attack has capped).
async fn metric_from(server: SocketAddr, source: IpAddr, name: &str) -> Option<f64> {
    let mut tcp = connect_from(server, source, None).await.ok()?;
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut body)).await.ok()?.ok()?;
    body.lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
}

/// Opens `count` TCP connections, at most 256 at a time, spreading them
/// over `sources`; those the kernel refused are left out.
async fn open_many(server: SocketAddr, sources: &[IpAddr], count: usize) -> Vec<TcpStream> {
    futures_util::stream::iter((0..count).map(|n| connect_from(server, sources[n % sources.len()], None)))
        .buffer_unordered(256)
        .filter_map(|result| async move { result.ok() })
        .collect()
        .await
}

/// What became of a batch of TCP connections once each asked for
/// `/health`.
#[derive(Debug, Default)]
struct Tally {
    /// Answered: the server holds them.
    served: usize,
    /// Closed by the server (EOF or reset), unanswered.
    closed: usize,
    /// Neither within the wait.
    silent: usize,
}

/// Asks `/health` on each of `streams` (keeping them open): a connection
/// the kernel completed but the server never took shows up only once it
/// sends something.
async fn probe(streams: &mut [TcpStream], wait: Duration) -> Tally {
    let checks = streams.iter_mut().map(|stream| async move {
        if stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.is_err() {
            return Some(false);
        }
        let mut reply = [0u8; 64];
        match tokio::time::timeout(wait, stream.read(&mut reply)).await {
            Ok(Ok(0) | Err(_)) => Some(false),
            Ok(Ok(_)) => Some(true),
            Err(_) => None,
        }
    });
    let mut tally = Tally::default();
    for answered in futures_util::future::join_all(checks).await {
        match answered {
            Some(true) => tally.served += 1,
            Some(false) => tally.closed += 1,
            None => tally.silent += 1,
        }
    }
    tally
}

/// Waits until the server holds no more than `open` connections.
async fn wait_for_open_connections(server: &ServerProcess, open: f64) {
    if server.metric("tollstream_connections_open").await.is_none() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        return;
    }
    server
        .wait_for(30, "the attackers' connections to close", async || {
            let now = server.metric("tollstream_connections_open").await?;
            (now <= open).then_some(())
        })
        .await;
}

/// A WebSocket from `source` that asks for things and never reads the
/// answers; what it sends: `burst` requests at once, then `per_second` for
/// `seconds`.
async fn slow_reader(server: SocketAddr, source: IpAddr, burst: usize, per_second: f64, seconds: f64) -> Raw {
    // A small receive buffer, so the server's writes back up early.
    let mut raw = Raw::connected_from(server, source, Some(4096)).await;
    for _ in 0..burst {
        if raw.send_request(event::PUBLIC_KEY, None).await.is_none() {
            return raw;
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        tick.tick().await;
        if raw.send_request(event::PUBLIC_KEY, None).await.is_none() {
            break;
        }
    }
    raw
}

/// The server's refusals at accept so far: (by the per-address cap or the
/// per-address rate of new connections, by the rate over all addresses).
async fn refused_at_accept(server: &ServerProcess) -> (f64, f64) {
    let per_address = server.metric(r#"tollstream_connections_refused_total{reason="per_address"}"#).await;
    let address_rate = server.metric(r#"tollstream_connections_refused_total{reason="address_rate"}"#).await;
    let by_rate = server.metric(r#"tollstream_connections_refused_total{reason="rate"}"#).await;
    (per_address.unwrap_or(0.0) + address_rate.unwrap_or(0.0), by_rate.unwrap_or(0.0))
}

/// Samples the server's resident memory into `peak` for `seconds`.
async fn sample_peak(pid: u32, seconds: f64, peak: &mut u64) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        *peak = (*peak).max(resident_kib(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One round of every connection attack, each checked; the server's
/// resident memory at its highest is kept in `peak`.
async fn connection_attacks(chain: &TestChain, server: &ServerProcess, peak: &mut u64) {
    let addr = address(server);
    let pid = server.pid();

    // 2,000 TCP connections from 127.0.0.1: beyond the cap they are
    // closed at accept, and the bystander on 127.0.0.2 is served meanwhile.
    let (per_address_before, rate_before) = refused_at_accept(server).await;
    let attempts = 2000;
    let flood_started = Instant::now();
    let mut held = open_many(addr, &[LOOPBACK], attempts).await;
    let took = flood_started.elapsed().as_secs_f64();
    let tally = probe(&mut held, Duration::from_secs(5)).await;
    *peak = (*peak).max(resident_kib(pid));
    let open_gauge = metric_from(addr, BYSTANDER, "tollstream_connections_open").await;
    println!(
        "{attempts} connections from one address in {took:.2} s: {} completed, {tally:?} (open gauge {open_gauge:?})",
        held.len()
    );
    assert!(tally.served <= CONNECTIONS_PER_ADDRESS, "at most {CONNECTIONS_PER_ADDRESS} served from one address");
    assert!(tally.served >= CONNECTIONS_PER_ADDRESS / 2, "the first ones are served");
    // Once the connection rate has refilled (the burst used it up), another
    // address is served, and 127.0.0.1 is still at its cap.
    tokio::time::sleep(Duration::from_secs_f64(1.2)).await;
    assert!(serves(addr, BYSTANDER).await, "another address is served while 127.0.0.1 is at its cap");
    // On a loaded machine a few of the flood's connections may fail on the
    // client side and leave room under the cap; only a full address must
    // refuse the next one.
    if tally.served == CONNECTIONS_PER_ADDRESS {
        assert!(!serves(addr, LOOPBACK).await, "127.0.0.1 is at its cap while it holds {} connections", tally.served);
    }
    drop(held);
    wait_for_open_connections(server, 1.0).await;
    let (per_address, by_rate) = refused_at_accept(server).await;
    let (per_address, by_rate) = (per_address - per_address_before, by_rate - rate_before);
    println!("refused: {per_address} per address, {by_rate} by rate; resident {} MiB", resident_kib(pid) / 1024);
    assert!(per_address + by_rate >= tally.closed as f64, "every closed connection is counted");
    assert!(per_address > 0.0, "the per-address cap refused some");
    // One address alone meets its own limits before the rate over all
    // addresses: it cannot use up everyone's share of new connections.
    assert_eq!(by_rate, 0.0, "one address's flood drew on the rate over all addresses");

    // New connections from 200 addresses at once, two each: past the rate
    // (a burst of as many), closed at accept.
    tokio::time::sleep(Duration::from_secs_f64(1.2)).await;
    let sources: Vec<IpAddr> = (10..210).map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 1, n))).collect();
    let (_, rate_before) = refused_at_accept(server).await;
    let burst_started = Instant::now();
    let mut many = open_many(addr, &sources, 400).await;
    let took = burst_started.elapsed().as_secs_f64();
    let tally = probe(&mut many, Duration::from_secs(5)).await;
    let window = burst_started.elapsed().as_secs_f64();
    *peak = (*peak).max(resident_kib(pid));
    drop(many);
    wait_for_open_connections(server, 1.0).await;
    let (_, by_rate) = refused_at_accept(server).await;
    println!(
        "400 connections from 200 addresses in {took:.2} s: {tally:?}, {} refused by rate; resident {} MiB",
        by_rate - rate_before,
        resident_kib(pid) / 1024
    );
    // The server took them within `window`: at most the burst, and what
    // refilled meanwhile, got in; every other one was refused by rate.
    assert!(
        tally.served as f64 <= NEW_CONNECTIONS_PER_SECOND * (1.0 + window) + 20.0,
        "{} connections served in {window:.2} s",
        tally.served
    );
    assert!(by_rate - rate_before >= tally.closed as f64, "the connection rate refused {}", by_rate - rate_before);

    // Slow readers: WebSockets that ask and never read. Half keep to the
    // request rate; half burst past it. Meanwhile the bystander is
    // answered promptly and a viewer buys and plays.
    tokio::time::sleep(Duration::from_secs_f64(1.2)).await;
    let readers = 40;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..readers {
        let burst = if n % 2 == 0 { 0 } else { 150 };
        // Each from an address of its own: 127.0.0.1 spent its connection
        // rate on the flood above, and how much of it has come back by now
        // depends on how busy the machine is.
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 3, n as u8 + 1));
        tasks.spawn(slow_reader(addr, source, burst, 9.0, 8.0));
    }
    let mut slowest = Duration::ZERO;
    let bystander = async {
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            let asked = Instant::now();
            assert!(serves(addr, BYSTANDER).await, "the bystander is served while slow readers hang on");
            slowest = slowest.max(asked.elapsed());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    tokio::join!(bystander, sample_peak(pid, 9.0, peak), a_viewer_buys_and_plays(chain, server));
    let slow = tasks.join_all().await;
    drop(slow);
    wait_for_open_connections(server, 1.0).await;
    println!(
        "{readers} slow readers; the bystander's slowest answer took {slowest:?}; resident {} MiB",
        resident_kib(pid) / 1024
    );
    assert!(slowest < Duration::from_secs(2), "the bystander waited {slowest:?}");
}

#[tokio::test]
async fn connection_caps_and_slow_readers_leave_memory_near_its_start() {
    raise_open_files_limit(8192);
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let started = Instant::now();

    // Warm up (the first viewer allocates the caches a server keeps).
    a_viewer_buys_and_plays(&chain, &server).await;
    wait_for_open_connections(&server, 1.0).await;
    let before = resident_kib(server.pid());
    let mut peak = before;

    let mut after = Vec::new();
    for round in 1..=2 {
        connection_attacks(&chain, &server, &mut peak).await;
        // Memory returns near its start once the attackers are gone.
        wait_for_open_connections(&server, 1.0).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        after.push(resident_kib(server.pid()));
        println!("round {round}: resident {} MiB after", after[round - 1] / 1024);
    }
    let tolerance = (16 * 1024).max(before / 4);
    println!(
        "resident memory: {} MiB before, {} MiB at peak, {} MiB after one round, {} MiB after two (tolerance {} MiB)",
        before / 1024,
        peak / 1024,
        after[0] / 1024,
        after[1] / 1024,
        tolerance / 1024
    );
    assert!(after[1] <= before + tolerance, "memory did not return: {before} KiB → {after:?} KiB");

    a_viewer_buys_and_plays(&chain, &server).await;
    assert_log_clean(&server);
    println!("connection test: {:.1} s", started.elapsed().as_secs_f64());
}

/// How long the slow chain takes over each read.
const LOOKUP_DELAY: Duration = Duration::from_millis(300);
/// The serve default of `--chain-lookups`.
const CHAIN_LOOKUPS: f64 = 16.0;

/// A TCP proxy to the node that holds every chunk sent to the node for a
/// while: a chain whose every call is slow.
struct SlowChain {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl SlowChain {
    async fn start(node: &str, delay: Duration) -> SlowChain {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = node.trim_start_matches("http://").to_owned();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else { return };
                    let (mut from_server, mut to_server) = inbound.into_split();
                    let (mut from_node, mut to_node) = outbound.into_split();
                    let up = async {
                        let mut buffer = vec![0; 64 * 1024];
                        while let Ok(read @ 1..) = from_server.read(&mut buffer).await {
                            tokio::time::sleep(delay).await;
                            if to_node.write_all(&buffer[..read]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = tokio::io::copy(&mut from_node, &mut to_server);
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        SlowChain { url, task }
    }
}

impl Drop for SlowChain {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A well-formed, well-signed opening state of a channel the chain has
/// never seen (`n` > 0 picks the key and the id).
fn unknown_opening(domain: &ChannelDomain, n: u8) -> Value {
    let key = SigningKey::from_bytes([n; 32]).unwrap();
    let mut state = ChannelState {
        channel_id: B256::repeat_byte(n),
        channel_address: domain.contract,
        client_wallet_address: key.address(),
        client_public_key: key.public_key(),
        client_balance: Amount::from(PRICE),
        server_balance: Amount::ZERO,
        client_sequence_number: 0,
        client_signature: Signature([0; 65]),
    };
    state.sign(domain, &key);
    serde_json::to_value(state).unwrap()
}

// Two threads: the slow chain's proxy runs on the test's runtime and must
// keep serving while `ServerProcess::start` blocks one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_channel_lookups_are_bounded_and_unknown_ids_remembered() {
    // A node of its own: an unknown id is answered from memory only until
    // the chain's next block, and on the shared node other tests make
    // blocks at any time.
    let mut chain = TestChain::own().await;
    let slow = SlowChain::start(&chain.node_rpc(), LOOKUP_DELAY).await;
    chain.rpc = slow.url.clone();
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let addr = address(&server);
    let started = Instant::now();

    let mut raw = Raw::connected(addr).await;
    let info = raw.request(event::PUBLIC_KEY, None).await.expect("publicKey is answered");
    let info: ServerInfo = serde_json::from_value(info).expect("a publicKey reply");
    let domain = ChannelDomain::new(info.chain_id, info.channel_address);

    // Two at once on one connection: one reads the chain, the other is
    // refused at once.
    let first = raw.send_request(event::NEW_CHANNEL, Some(&unknown_opening(&domain, 1))).await.unwrap();
    let second = raw.send_request(event::NEW_CHANNEL, Some(&unknown_opening(&domain, 2))).await.unwrap();
    let wait = Duration::from_secs(15);
    let answers = [raw.ack(first, wait).await.expect("answered"), raw.ack(second, wait).await.expect("answered")];
    let mut codes: Vec<&str> = answers.iter().filter_map(error_code).collect();
    codes.sort_unstable();
    assert_eq!(codes, ["rate_limited", "unknown_channel"], "two newChannel at once on one connection: {answers:?}");
    let unknown = if error_code(&answers[0]) == Some("unknown_channel") { 1 } else { 2 };

    // Asked again: answered from memory, without the slow chain.
    let hits_before = server.metric("tollstream_negative_cache_hits_total").await.unwrap_or(0.0);
    let asked = Instant::now();
    let again = raw.request(event::NEW_CHANNEL, Some(&unknown_opening(&domain, unknown))).await.expect("answered");
    let took = asked.elapsed();
    println!("an unknown channel asked again: {again} in {took:?}");
    assert_eq!(error_code(&again), Some("unknown_channel"));
    assert!(took < LOOKUP_DELAY, "answered from memory, not from the chain ({took:?})");
    let hits = server.metric("tollstream_negative_cache_hits_total").await.unwrap_or(0.0);
    assert_eq!(hits, hits_before + 1.0, "the hit is counted");

    // Many connections at once: at most --chain-lookups read the chain at
    // a time, the rest wait their turn, and other requests are not held up.
    let mut askers = Vec::new();
    for n in 0..24u8 {
        let mut asker = Raw::connected(addr).await;
        let id = asker.send_request(event::NEW_CHANNEL, Some(&unknown_opening(&domain, 10 + n))).await.unwrap();
        askers.push((asker, id));
    }
    let (mut most, mut slowest) = (0.0f64, Duration::ZERO);
    for _ in 0..10 {
        most = most.max(server.metric("tollstream_chain_lookups_in_flight").await.unwrap_or(0.0));
        let asked = Instant::now();
        let ack = raw.request(event::PUBLIC_KEY, None).await.expect("publicKey is answered");
        assert!(is_server_info(&ack));
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let mut codes = HashMap::<String, usize>::new();
    for (asker, id) in &mut askers {
        let ack = asker.ack(*id, wait).await.expect("every newChannel is answered");
        *codes.entry(error_code(&ack).unwrap_or("none").to_owned()).or_default() += 1;
    }
    println!(
        "24 newChannel at once: {codes:?}; at most {most} lookups in flight; publicKey meanwhile at most {slowest:?}"
    );
    assert!(most <= CHAIN_LOOKUPS, "at most {CHAIN_LOOKUPS} lookups at once, saw {most}");
    assert!(most >= 2.0, "lookups of different connections run at once");
    assert_eq!(codes.get("unknown_channel"), Some(&24), "each waits its turn: {codes:?}");
    assert!(slowest < Duration::from_secs(1), "publicKey waited {slowest:?} behind the lookups");
    assert_eq!(server.metric("tollstream_chain_lookups_in_flight").await, Some(0.0));

    a_viewer_buys_and_plays(&chain, &server).await;
    assert_log_clean(&server);
    println!("chain lookup test: {:.1} s", started.elapsed().as_secs_f64());
}

/// What a client might try to get round the per-connection limits: leave
/// the namespace and join it again on the same transport (`41`, `40`) for a
/// fresh bucket, or open many long-polling sessions over one keep-alive
/// connection, which the cap on TCP connections never sees.
#[tokio::test]
async fn joining_again_or_polling_does_not_escape_the_limits() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let addr = address(&server);

    // Empty the bucket, leave, join again: the bucket stays empty.
    let mut raw = Raw::connected(addr).await;
    let mut ids = Vec::new();
    for _ in 0..REQUEST_BURST + 5 {
        ids.push(raw.send_request(event::PUBLIC_KEY, None).await.expect("sent"));
    }
    for id in ids {
        raw.ack(id, Duration::from_secs(10)).await.expect("answered");
    }
    assert!(raw.send("41").await);
    assert!(raw.join().await, "a session that did not flood may join again");
    let mut ids = Vec::new();
    for _ in 0..REQUEST_BURST {
        ids.push(raw.send_request(event::PUBLIC_KEY, None).await.expect("sent"));
    }
    let mut admitted = 0;
    for id in ids {
        let ack = raw.ack(id, Duration::from_secs(10)).await.expect("answered");
        if error_code(&ack).is_none() {
            admitted += 1;
        }
    }
    println!("after leaving and joining again: {admitted} of {REQUEST_BURST} admitted");
    // A fresh bucket would admit all of them; the kept one only what
    // refilled meanwhile (10 a second).
    assert!(admitted <= 5, "joining again refilled the bucket: {admitted} admitted");
    drop(raw);

    // A flooding session is closed, and cannot come back on its transport.
    let mut flood = Raw::connected(addr).await;
    let mut sent = 0;
    while sent < 3000 && flood.send_request(event::PUBLIC_KEY, None).await.is_some() {
        sent += 1;
    }
    assert!(flood.closed_within(Duration::from_secs(10)).await, "the flooding connection is closed");

    // Long-polling sessions from one address over one keep-alive
    // connection: capped like connections.
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .local_address(source)
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let (mut joined, mut refused) = (0, 0);
    let mut sessions = Vec::new();
    for _ in 0..CONNECTIONS_PER_ADDRESS + 16 {
        let session = Polling::open_with(&server, http.clone()).await;
        session.post("40").await;
        match session.receive("4").await.as_deref() {
            Some(reply) if reply.starts_with("40{") => joined += 1,
            Some(reply) if reply.starts_with("44") => refused += 1,
            other => panic!("no answer to CONNECT: {other:?}"),
        }
        sessions.push(session);
    }
    let refused_metric =
        server.metric(r#"tollstream_connections_refused_total{reason="sessions_per_address"}"#).await.unwrap_or(0.0);
    println!("long-polling sessions from one address: {joined} joined, {refused} refused ({refused_metric} counted)");
    assert!(joined <= CONNECTIONS_PER_ADDRESS, "{joined} sessions joined from one address");
    assert!(refused >= 16, "sessions past the cap are refused at CONNECT");
    assert!(refused_metric >= refused as f64, "and counted");
    drop(sessions);

    a_viewer_buys_and_plays(&chain, &server).await;
    assert_log_clean(&server);
}
