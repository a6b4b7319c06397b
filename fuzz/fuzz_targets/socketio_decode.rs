//! The client's Engine.IO / Socket.IO packet decoder
//! (`tollstream_client::socketio::packet`) fed any text frame.
//!
//! Checks that decoding never panics and that whatever decodes encodes to a
//! frame that decodes to the same packet, and is then stable: encoding is
//! canonical. `socketio_roundtrip` checks the other direction.

#![no_main]

use libfuzzer_sys::fuzz_target;

// Included by path rather than by depending on `tollstream-client`: the codec is
// pure (serde, serde_json, thiserror), and the client crate would make CI build
// the whole chain, TLS and WebSocket stack for it.
#[path = "../../crates/client/src/socketio/packet.rs"]
#[allow(dead_code)]
mod packet;

use packet::Packet;

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by definition.
    let Ok(frame) = std::str::from_utf8(data) else { return };
    let Ok(packet) = Packet::decode(frame) else { return };
    if let Packet::Message(message) = &packet {
        let nsp = message.nsp();
        assert!(nsp.starts_with('/') && !nsp.contains(','), "namespace {nsp:?} from {frame:?}");
    }
    let encoded = packet.encode();
    match Packet::decode(&encoded) {
        Ok(again) => assert_eq!(again, packet, "{frame:?} → {encoded:?}"),
        Err(error) => panic!("{frame:?} decodes to {packet:?}, which encodes to {encoded:?}: {error}"),
    }
    assert_eq!(Packet::decode(&encoded).map(|p| p.encode()).ok().as_deref(), Some(encoded.as_str()));
});
