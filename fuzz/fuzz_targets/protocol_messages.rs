//! Every message decoder of `tollstream-protocol`: `decode_str::<T>` for each
//! type a peer's JSON is decoded into.
//!
//! Input: a message name, a newline, then the JSON text (the seeds in
//! `corpus/protocol_messages/` show each name). Checks that decoding never
//! panics, that every failure is `bad_request`, and that what decodes
//! re-encodes to JSON that decodes to the same value and encodes to the same
//! JSON again (the wire form is canonical).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Debug;
use tollstream_protocol::pay_answer::unreadable;
use tollstream_protocol::{
    Ack, ChannelState, ClientKey, Empty, ErrorCode, LatestStateReply, PayAnswer, PayRequest, PlayRequest,
    ProtocolError, Secret, ServerInfo, decode_str,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some((name, json)) = text.split_once('\n') else { return };
    match name {
        // Requests, as the server decodes them.
        "client_key" => check::<ClientKey>(json),
        "channel_state" => check::<ChannelState>(json),
        "play_request" => check::<PlayRequest>(json),
        "empty" => check::<Empty>(json),
        // Events and replies, as the client decodes them.
        "server_info" => check::<ServerInfo>(json),
        "latest_state" => check::<LatestStateReply>(json),
        "pay_request" => check::<PayRequest>(json),
        "secret" => check::<Secret>(json),
        "error" => check::<ProtocolError>(json),
        // Acknowledgements: the envelope first, as the client reads it, and
        // whole typed acks.
        "ack" => check::<Ack<Value>>(json),
        "ack_state" => check::<Ack<ChannelState>>(json),
        "ack_latest_state" => check::<Ack<LatestStateReply>>(json),
        "ack_empty" => check::<Ack<Empty>>(json),
        // The server's one-pass decoder of the answer to `pay`.
        "pay_answer_direct" => check_pay_answer(json),
        _ => {}
    }
});

fn check<T: DeserializeOwned + Serialize + PartialEq + Debug>(json: &str) {
    let decoded = match decode_str::<T>(json) {
        Ok(decoded) => decoded,
        Err(error) => {
            assert_eq!(error.code, ErrorCode::BadRequest, "{error:?}");
            return;
        }
    };
    let wire = serde_json::to_string(&decoded).expect("a decoded message encodes");
    let again = match decode_str::<T>(&wire) {
        Ok(again) => again,
        Err(error) => panic!("{decoded:?} encodes to {wire}, which does not decode: {error:?}"),
    };
    assert_eq!(again, decoded, "{wire}");
    let rewire = serde_json::to_string(&again).expect("a decoded message encodes");
    assert_eq!(rewire, wire);
}

/// The one-pass `PayAnswer` decoder against the generic one: it never
/// panics, fails only with `bad_request`, and a state both decode is the
/// same state, once checked against its own key.
fn check_pay_answer(json: &str) {
    let direct = serde_json::from_str::<PayAnswer>(json).map_err(|e| unreadable(&e));
    let generic = decode_str::<ChannelState>(json);
    match (direct, generic) {
        (Err(error), _) => assert_eq!(error.code, ErrorCode::BadRequest, "{error:?}"),
        (Ok(PayAnswer::Paid(paid)), Ok(state)) => assert_eq!(paid.of_channel(&state).ok().as_ref(), Some(&state)),
        (Ok(_), _) => {}
    }
}
