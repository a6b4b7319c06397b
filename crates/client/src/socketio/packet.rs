//! Engine.IO v4 / Socket.IO v5 packets: one WebSocket text frame ↔ one typed [`Packet`].
//!
//! Pure: no I/O and no runtime, so the connection code in [`super`] and the fuzz
//! targets share it (like mini-redis's `frame.rs`). [`Packet::decode`] never panics:
//! anything malformed is a [`PacketError`] for the caller to log and skip.
//!
//! # Grammar
//! A frame is `<engine type>[<engine data>]`; the Engine.IO `message` type (`4`)
//! carries one Socket.IO packet, `<type>[<attachments>-][<nsp>,][<ack id>][<json>]`.
//! The namespace is written only when it is not `/`; it runs from the leading `/` to
//! the first `,` (or to the end of the frame). An ack id is read only where one may
//! stand (EVENT and ACK), so a CONNECT_ERROR payload such as `445` is the number 5.
//!
//! # Leniency
//! Data after Engine.IO `close`, `upgrade` and `noop` and after a Socket.IO DISCONNECT
//! is ignored rather than rejected: those packets end or change nothing, and refusing
//! a slightly-off DISCONNECT would leave a dead session open. Binary packets (types
//! `5` and `6`) are rejected: this client never asks for them.

use std::fmt::{self, Write as _};
use std::num::ParseIntError;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The default namespace, the only one Tollstream uses.
pub const DEFAULT_NSP: &str = "/";

/// One Engine.IO packet (one WebSocket text frame).
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// `0<json>`: the session parameters, the server's first frame.
    Open(Open),
    /// `1`: the Engine.IO session is over.
    Close,
    /// `2[<data>]`: the server checks that we are alive; `data` is echoed by some
    /// servers during upgrades (`2probe`) and is usually empty.
    Ping(String),
    /// `3[<data>]`: the answer to a ping.
    Pong(String),
    /// `4<packet>`: a Socket.IO packet.
    Message(SioPacket),
    /// `5`: transport upgrade (meaningless on a direct WebSocket).
    Upgrade,
    /// `6`: no operation.
    Noop,
}

/// The Engine.IO open packet's fields this client uses (`upgrades` is irrelevant on a
/// direct WebSocket and is not kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Open {
    /// Engine.IO session id (not the Socket.IO socket id).
    pub sid: String,
    /// How often the server pings, in milliseconds.
    pub ping_interval: u64,
    /// How long the server waits for the pong, in milliseconds.
    pub ping_timeout: u64,
    /// Largest payload the server accepts; 0 when the server did not say.
    #[serde(default)]
    pub max_payload: u64,
}

/// One Socket.IO packet (what an Engine.IO `4` carries). Every variant names its
/// namespace: packets for another namespace must be recognised to be ignored.
#[derive(Debug, Clone, PartialEq)]
pub enum SioPacket {
    /// `0[<nsp>,][{..}]`: a CONNECT request (client, optional auth object) or the
    /// server's reply (`{"sid":..}`).
    Connect {
        /// Namespace; must start with `/` and hold no `,`.
        nsp: String,
        /// The JSON object after the header, if any.
        data: Option<Map<String, Value>>,
    },
    /// `1[<nsp>,]`: either side leaves the namespace.
    Disconnect {
        /// Namespace; must start with `/` and hold no `,`.
        nsp: String,
    },
    /// `2[<nsp>,][<id>]["event",args..]`: an event, asking for ack `<id>` if present.
    Event {
        /// Namespace; must start with `/` and hold no `,`.
        nsp: String,
        /// The ack id the sender waits on, if it wants an acknowledgement.
        ack: Option<u64>,
        /// Event name (the first element of the array).
        event: String,
        /// The rest of the array.
        args: Vec<Value>,
    },
    /// `3[<nsp>,]<id>[args..]`: the acknowledgement of event `<id>`.
    Ack {
        /// Namespace; must start with `/` and hold no `,`.
        nsp: String,
        /// Which event this answers.
        id: u64,
        /// The acknowledgement's arguments.
        args: Vec<Value>,
    },
    /// `4[<nsp>,]<json>`: the server refused the CONNECT (usually `{"message":..}`).
    ConnectError {
        /// Namespace; must start with `/` and hold no `,`.
        nsp: String,
        /// Why, as the server put it.
        data: Value,
    },
}

impl SioPacket {
    /// The namespace the packet belongs to.
    pub fn nsp(&self) -> &str {
        match self {
            Self::Connect { nsp, .. }
            | Self::Disconnect { nsp }
            | Self::Event { nsp, .. }
            | Self::Ack { nsp, .. }
            | Self::ConnectError { nsp, .. } => nsp,
        }
    }
}

/// Why a frame is not a packet this client understands.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The frame was empty.
    #[error("empty frame")]
    Empty,
    /// The first character is not an Engine.IO packet type.
    #[error("unknown Engine.IO packet type {0:?}")]
    EngineType(char),
    /// The open packet's JSON is malformed or lacks a field.
    #[error("bad Engine.IO open packet: {0}")]
    Open(#[source] serde_json::Error),
    /// An Engine.IO message carried nothing.
    #[error("empty Socket.IO packet")]
    EmptySocketIo,
    /// The Socket.IO packet type is not one of `0`–`6`.
    #[error("unknown Socket.IO packet type {0:?}")]
    SocketIoType(char),
    /// BINARY_EVENT or BINARY_ACK; their attachments would follow as binary frames.
    #[error("binary Socket.IO packets are not supported")]
    Binary,
    /// The ack id does not fit in a `u64`.
    #[error("bad ack id: {0}")]
    AckId(#[source] ParseIntError),
    /// An ACK without the id of the event it answers.
    #[error("ACK without id")]
    AckWithoutId,
    /// The payload is not the JSON its packet type calls for.
    #[error("bad {what} payload: {source}")]
    Json {
        /// Which payload (e.g. "EVENT").
        what: &'static str,
        /// What serde_json found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// An EVENT whose array does not start with a string.
    #[error("event array does not start with a name")]
    EventName,
}

impl Packet {
    /// Parses one WebSocket text frame.
    ///
    /// # Errors
    /// [`PacketError`] for anything that is not a well-formed packet of the
    /// [Grammar](self#grammar) (including binary Socket.IO packets).
    pub fn decode(frame: &str) -> Result<Self, PacketError> {
        let mut chars = frame.chars();
        let engine_type = chars.next().ok_or(PacketError::Empty)?;
        let data = chars.as_str();
        Ok(match engine_type {
            '0' => Packet::Open(serde_json::from_str(data).map_err(PacketError::Open)?),
            '1' => Packet::Close,
            '2' => Packet::Ping(data.to_owned()),
            '3' => Packet::Pong(data.to_owned()),
            '4' => Packet::Message(SioPacket::decode(data)?),
            '5' => Packet::Upgrade,
            '6' => Packet::Noop,
            other => return Err(PacketError::EngineType(other)),
        })
    }

    /// The text frame for this packet; [`Packet::decode`] gives the packet back
    /// (provided every namespace starts with `/` and holds no `,`).
    pub fn encode(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Packet::Open(open) => {
                // `upgrades` is written because a server sends it; readers ignore it.
                write!(
                    f,
                    "0{{\"sid\":{},\"upgrades\":[],\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
                    Value::from(open.sid.as_str()),
                    open.ping_interval,
                    open.ping_timeout,
                    open.max_payload
                )
            }
            Packet::Close => f.write_str("1"),
            Packet::Ping(data) => write!(f, "2{data}"),
            Packet::Pong(data) => write!(f, "3{data}"),
            Packet::Message(packet) => {
                f.write_char('4')?;
                write_sio(f, packet)
            }
            Packet::Upgrade => f.write_str("5"),
            Packet::Noop => f.write_str("6"),
        }
    }
}

fn write_sio(f: &mut impl fmt::Write, packet: &SioPacket) -> fmt::Result {
    match packet {
        SioPacket::Connect { nsp, data } => {
            write_header(f, '0', nsp, None)?;
            match data {
                Some(data) => write_json(f, data),
                None => Ok(()),
            }
        }
        SioPacket::Disconnect { nsp } => write_header(f, '1', nsp, None),
        SioPacket::Event { nsp, ack, event, args } => {
            write_header(f, '2', nsp, *ack)?;
            write_array(f, Some(event), args)
        }
        SioPacket::Ack { nsp, id, args } => {
            write_header(f, '3', nsp, Some(*id))?;
            write_array(f, None, args)
        }
        SioPacket::ConnectError { nsp, data } => {
            write_header(f, '4', nsp, None)?;
            write_json(f, data)
        }
    }
}

/// `<type>[<nsp>,][<ack id>]`.
fn write_header(f: &mut impl fmt::Write, kind: char, nsp: &str, ack: Option<u64>) -> fmt::Result {
    f.write_char(kind)?;
    if nsp != DEFAULT_NSP {
        write!(f, "{nsp},")?;
    }
    match ack {
        Some(id) => write!(f, "{id}"),
        None => Ok(()),
    }
}

/// `[<first>,<rest>..]` without first building a `Vec` of owned values.
fn write_array(f: &mut impl fmt::Write, first: Option<&str>, rest: &[Value]) -> fmt::Result {
    f.write_char('[')?;
    let mut comma = false;
    if let Some(first) = first {
        write_json(f, first)?;
        comma = true;
    }
    for value in rest {
        if comma {
            f.write_char(',')?;
        }
        write_json(f, value)?;
        comma = true;
    }
    f.write_char(']')
}

fn write_json(f: &mut impl fmt::Write, value: &(impl Serialize + ?Sized)) -> fmt::Result {
    // Serialising strings, maps with string keys and `Value`s cannot fail.
    let json = serde_json::to_string(value).map_err(|_| fmt::Error)?;
    f.write_str(&json)
}

/// The frame of an EVENT for the default namespace, `42[<id>]["event",args..]`,
/// built from borrowed parts (what [`Packet::encode`] writes for the same packet).
pub fn event_frame(event: &str, args: &[Value], ack: Option<u64>) -> String {
    let mut frame = String::from("4");
    // Writing to a String only fails if serialisation does, which it cannot here.
    let _ = write_header(&mut frame, '2', DEFAULT_NSP, ack).and_then(|()| write_array(&mut frame, Some(event), args));
    frame
}

/// The frame of an ACK for the default namespace, `43<id>[args..]`.
pub fn ack_frame(id: u64, args: &[Value]) -> String {
    let mut frame = String::from("4");
    let _ = write_header(&mut frame, '3', DEFAULT_NSP, Some(id)).and_then(|()| write_array(&mut frame, None, args));
    frame
}

impl SioPacket {
    /// Parses a Socket.IO packet (the part after the Engine.IO `4`).
    ///
    /// # Errors
    /// [`PacketError`] when the packet does not follow the [Grammar](self#grammar).
    pub fn decode(packet: &str) -> Result<Self, PacketError> {
        let mut chars = packet.chars();
        let kind = chars.next().ok_or(PacketError::EmptySocketIo)?;
        let rest = chars.as_str();
        match kind {
            '0'..='4' => {}
            '5' | '6' => return Err(PacketError::Binary),
            other => return Err(PacketError::SocketIoType(other)),
        }
        let (nsp, rest) = split_nsp(rest);
        let nsp = nsp.to_owned();
        Ok(match kind {
            '0' => {
                let data = if rest.is_empty() { None } else { Some(json("CONNECT", rest)?) };
                SioPacket::Connect { nsp, data }
            }
            '1' => SioPacket::Disconnect { nsp },
            '2' => {
                let (ack, payload) = split_ack(rest)?;
                let mut args: Vec<Value> = json("EVENT", payload)?;
                let event = match args.first_mut() {
                    Some(Value::String(event)) => std::mem::take(event),
                    _ => return Err(PacketError::EventName),
                };
                args.remove(0);
                SioPacket::Event { nsp, ack, event, args }
            }
            '3' => {
                let (id, payload) = split_ack(rest)?;
                let id = id.ok_or(PacketError::AckWithoutId)?;
                SioPacket::Ack { nsp, id, args: json("ACK", payload)? }
            }
            _ => SioPacket::ConnectError { nsp, data: json("CONNECT_ERROR", rest)? },
        })
    }
}

/// Splits off `<nsp>,` when the packet names a namespace.
fn split_nsp(rest: &str) -> (&str, &str) {
    if !rest.starts_with('/') {
        return (DEFAULT_NSP, rest);
    }
    match rest.split_once(',') {
        Some((nsp, rest)) => (nsp, rest),
        None => (rest, ""),
    }
}

/// Splits off a leading ack id.
fn split_ack(rest: &str) -> Result<(Option<u64>, &str), PacketError> {
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Ok((None, rest));
    }
    // ASCII digits, so `digits` is a char boundary.
    let (id, rest) = rest.split_at(digits);
    let id = id.parse().map_err(PacketError::AckId)?;
    Ok((Some(id), rest))
}

fn json<'a, T: Deserialize<'a>>(what: &'static str, payload: &'a str) -> Result<T, PacketError> {
    serde_json::from_str(payload).map_err(|source| PacketError::Json { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(frame: &str) -> Option<Packet> {
        Packet::decode(frame).ok()
    }

    fn message(packet: SioPacket) -> Option<Packet> {
        Some(Packet::Message(packet))
    }

    fn args(values: Value) -> Vec<Value> {
        match values {
            Value::Array(values) => values,
            other => vec![other],
        }
    }

    #[test]
    fn engine_packets() {
        let open = r#"0{"sid":"e1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        let expected = Open { sid: "e1".into(), ping_interval: 25000, ping_timeout: 20000, max_payload: 1_000_000 };
        assert_eq!(decode(open), Some(Packet::Open(expected.clone())));
        assert_eq!(Packet::Open(expected).encode(), open);
        assert_eq!(
            decode(r#"0{"sid":"e1","pingInterval":1,"pingTimeout":2}"#),
            Some(Packet::Open(Open { sid: "e1".into(), ping_interval: 1, ping_timeout: 2, max_payload: 0 }))
        );
        assert_eq!(decode("1"), Some(Packet::Close));
        assert_eq!(decode("2"), Some(Packet::Ping(String::new())));
        assert_eq!(decode("2probe"), Some(Packet::Ping("probe".into())));
        assert_eq!(decode("3"), Some(Packet::Pong(String::new())));
        assert_eq!(decode("5"), Some(Packet::Upgrade));
        assert_eq!(decode("6"), Some(Packet::Noop));
        assert_eq!(Packet::Pong(String::new()).encode(), "3");
    }

    #[test]
    fn socketio_packets() {
        let default = || DEFAULT_NSP.to_owned();
        assert_eq!(decode("40"), message(SioPacket::Connect { nsp: default(), data: None }));
        let reply = SioPacket::Connect { nsp: default(), data: json!({"sid": "s1"}).as_object().cloned() };
        assert_eq!(decode(r#"40{"sid":"s1"}"#), message(reply));
        assert_eq!(decode("41"), message(SioPacket::Disconnect { nsp: default() }));
        assert_eq!(decode("41/admin"), message(SioPacket::Disconnect { nsp: "/admin".into() }));
        assert_eq!(
            decode(r#"42["ev"]"#),
            message(SioPacket::Event { nsp: default(), ack: None, event: "ev".into(), args: vec![] })
        );
        assert_eq!(
            decode(r#"4212["ev",1,{"a":null}]"#),
            message(SioPacket::Event {
                nsp: default(),
                ack: Some(12),
                event: "ev".into(),
                args: args(json!([1, {"a": null}])),
            })
        );
        assert_eq!(decode(r#"43/admin,5[]"#), message(SioPacket::Ack { nsp: "/admin".into(), id: 5, args: vec![] }));
        assert_eq!(
            decode(r#"44{"message":"no"}"#),
            message(SioPacket::ConnectError { nsp: default(), data: json!({"message": "no"}) })
        );
        // No ack id where none may stand: this is the number 5.
        assert_eq!(decode("445"), message(SioPacket::ConnectError { nsp: default(), data: json!(5) }));
        // An explicit default namespace is the default namespace.
        assert_eq!(decode("40/,"), message(SioPacket::Connect { nsp: default(), data: None }));
    }

    #[test]
    fn encodes_what_it_decodes() {
        let frames = [
            "40",
            r#"40{"sid":"s1"}"#,
            "41",
            "41/admin,",
            r#"42["pay",{"a":"q\"é"}]"#,
            r#"427["pay",null]"#,
            r#"42/admin,7["x",[1,2],"y"]"#,
            "433[]",
            r#"435[[1,"a"]]"#,
            r#"44{"message":"no"}"#,
            "445",
            "2probe",
        ];
        for frame in frames {
            let packet = Packet::decode(frame);
            assert_eq!(packet.as_ref().map(Packet::encode).ok().as_deref(), Some(frame), "{packet:?}");
        }
    }

    /// Found by the `socketio_decode` and `socketio_roundtrip` fuzz targets: serde_json
    /// without `float_roundtrip` read `44E0202` one ulp off, so the packet re-encoded to
    /// another number.
    #[test]
    fn floats_decode_exactly_and_round_trip() {
        let Some(Packet::Message(SioPacket::ConnectError { data, .. })) = decode("4444E0202") else {
            panic!("a CONNECT_ERROR carrying a number");
        };
        assert_eq!(data.as_f64(), Some(4.4e203));
        for frame in ["4444E0202", "447.067741987551822e-304", r#"42["x",0.30000000000000004,1e-320]"#] {
            let packet = Packet::decode(frame).ok();
            let again = packet.as_ref().map(Packet::encode).and_then(|frame| Packet::decode(&frame).ok());
            assert_eq!(again, packet, "{frame}");
        }
    }

    #[test]
    fn frames_from_borrowed_parts() {
        let data = json!({"a": "q\"é"});
        assert_eq!(event_frame("pay", std::slice::from_ref(&data), None), r#"42["pay",{"a":"q\"é"}]"#);
        assert_eq!(event_frame("pay", &[Value::Null], Some(7)), r#"427["pay",null]"#);
        assert_eq!(ack_frame(5, &[json!([1, "a"])]), r#"435[[1,"a"]]"#);
        let event = SioPacket::Event { nsp: "/".into(), ack: Some(7), event: "pay".into(), args: vec![Value::Null] };
        assert_eq!(Packet::Message(event).encode(), event_frame("pay", &[Value::Null], Some(7)));
    }

    #[test]
    fn rejects_malformed_frames() {
        type Check = fn(&PacketError) -> bool;
        let cases: [(&str, Check); 17] = [
            ("", |e| matches!(e, PacketError::Empty)),
            ("x", |e| matches!(e, PacketError::EngineType('x'))),
            ("é", |e| matches!(e, PacketError::EngineType('é'))),
            ("0", |e| matches!(e, PacketError::Open(_))),
            (r#"0{"sid":"e"}"#, |e| matches!(e, PacketError::Open(_))),
            ("4", |e| matches!(e, PacketError::EmptySocketIo)),
            ("4é", |e| matches!(e, PacketError::SocketIoType('é'))),
            ("42", |e| matches!(e, PacketError::Json { .. })),
            ("42{}", |e| matches!(e, PacketError::Json { .. })),
            ("42[", |e| matches!(e, PacketError::Json { .. })),
            ("42[1]", |e| matches!(e, PacketError::EventName)),
            ("42[]", |e| matches!(e, PacketError::EventName)),
            ("43[]", |e| matches!(e, PacketError::AckWithoutId)),
            ("4399999999999999999999[]", |e| matches!(e, PacketError::AckId(_))),
            ("405", |e| matches!(e, PacketError::Json { .. })),
            ("44", |e| matches!(e, PacketError::Json { .. })),
            (r#"451-["b",{"_placeholder":true,"num":0}]"#, |e| matches!(e, PacketError::Binary)),
        ];
        for (frame, expected) in cases {
            match Packet::decode(frame) {
                Err(e) => assert!(expected(&e), "{frame:?}: unexpected error {e:?}"),
                Ok(packet) => panic!("{frame:?} should be rejected, got {packet:?}"),
            }
        }
    }
}
