//! The client's Engine.IO / Socket.IO packet encoder: packets built from the
//! input (any namespace starting with `/` without `,`, any ack ids, event
//! names and JSON arguments) must encode to a frame that decodes to the same
//! packet, and the borrowed-parts helpers `event_frame` and `ack_frame` must
//! write exactly what `Packet::encode` writes.

#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};

// See socketio_decode.rs for why the codec is included by path.
#[path = "../../crates/client/src/socketio/packet.rs"]
#[allow(dead_code)]
mod packet;

use packet::{DEFAULT_NSP, Open, Packet, SioPacket, ack_frame, event_frame};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(packet) = arbitrary_packet(&mut u) else { return };
    let frame = packet.encode();
    match Packet::decode(&frame) {
        Ok(decoded) => assert_eq!(decoded, packet, "{frame:?}"),
        Err(error) => panic!("{packet:?} encodes to {frame:?}, which does not decode: {error}"),
    }
    match &packet {
        Packet::Message(SioPacket::Event { nsp, ack, event, args }) if nsp == DEFAULT_NSP => {
            assert_eq!(event_frame(event, args, *ack), frame);
        }
        Packet::Message(SioPacket::Ack { nsp, id, args }) if nsp == DEFAULT_NSP => {
            assert_eq!(ack_frame(*id, args), frame);
        }
        _ => {}
    }
});

fn arbitrary_packet(u: &mut Unstructured<'_>) -> Result<Packet> {
    Ok(match u.int_in_range(0..=6)? {
        0 => Packet::Open(Open {
            sid: u.arbitrary()?,
            ping_interval: u.arbitrary()?,
            ping_timeout: u.arbitrary()?,
            max_payload: u.arbitrary()?,
        }),
        1 => Packet::Close,
        2 => Packet::Ping(u.arbitrary()?),
        3 => Packet::Pong(u.arbitrary()?),
        4 => Packet::Message(arbitrary_sio(u)?),
        5 => Packet::Upgrade,
        _ => Packet::Noop,
    })
}

fn arbitrary_sio(u: &mut Unstructured<'_>) -> Result<SioPacket> {
    let nsp = arbitrary_nsp(u)?;
    Ok(match u.int_in_range(0..=4)? {
        0 => {
            let data = if u.arbitrary()? { Some(arbitrary_object(u, 3)?) } else { None };
            SioPacket::Connect { nsp, data }
        }
        1 => SioPacket::Disconnect { nsp },
        2 => SioPacket::Event { nsp, ack: u.arbitrary()?, event: u.arbitrary()?, args: arbitrary_args(u)? },
        3 => SioPacket::Ack { nsp, id: u.arbitrary()?, args: arbitrary_args(u)? },
        _ => SioPacket::ConnectError { nsp, data: arbitrary_value(u, 3)? },
    })
}

/// `/` most of the time; otherwise `/` and any text without a comma.
fn arbitrary_nsp(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(3, 4)? {
        return Ok(DEFAULT_NSP.to_owned());
    }
    let rest: String = u.arbitrary()?;
    Ok(format!("/{}", rest.replace(',', "")))
}

fn arbitrary_args(u: &mut Unstructured<'_>) -> Result<Vec<Value>> {
    let len = u.int_in_range(0..=4)?;
    (0..len).map(|_| arbitrary_value(u, 3)).collect()
}

fn arbitrary_object(u: &mut Unstructured<'_>, depth: u32) -> Result<Map<String, Value>> {
    let len = u.int_in_range(0..=4)?;
    let mut map = Map::new();
    for _ in 0..len {
        map.insert(u.arbitrary()?, arbitrary_value(u, depth.saturating_sub(1))?);
    }
    Ok(map)
}

fn arbitrary_value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let kinds = if depth == 0 { 5 } else { 7 };
    Ok(match u.int_in_range(0..=kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<u64>()?),
        3 => Value::from(u.arbitrary::<i64>()?),
        4 => Value::String(u.arbitrary()?),
        // Finite floats only: JSON has no NaN or infinity.
        5 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        6 => {
            let len = u.int_in_range(0..=4)?;
            Value::Array((0..len).map(|_| arbitrary_value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => Value::Object(arbitrary_object(u, depth)?),
    })
}
