//! The client's answer to `pay`, decoded in one pass from its JSON text.
//!
//! The answer is the signed next state, or `{"error": {...}}` when the
//! client refuses to pay (PROTOCOL.md, `pay`). It is the one message a
//! server decodes on every payment, so it skips what the generic path
//! does: no `serde_json::Value` tree in between (the Socket.IO parser
//! hands the ack's text straight to [`PayAnswer`]'s deserializer), no
//! buffering to tell the two shapes apart, and no decompression of the
//! client's public key, which the stored channel's key already passed:
//! the answer's key is compared byte for byte with it instead
//! ([`PaidState::of_channel`]).

use crate::encoding::{Amount, PublicKey, Signature, checksummed, hex_bytes, parse_hex, sequence};
use crate::error::{ErrorCode, ProtocolError};
use crate::state::ChannelState;
use alloy_primitives::{Address, B256};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// A decoded answer to `pay`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a boxed state would cost an allocation per payment; an answer is moved once"
)]
pub enum PayAnswer {
    /// A state, not yet checked against the channel being paid.
    Paid(PaidState),
    /// `{"error": {...}}`: the client will not pay; `message` is its
    /// `error.message`, if it gave one as a string.
    Refused { message: Option<String> },
}

/// A state as the client sent it, whose `client_public_key` is only known
/// to be 33 bytes: [`PaidState::of_channel`] turns it into a
/// [`ChannelState`] once the key is the stored channel's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidState(ChannelState);

impl PaidState {
    /// The state, if its `client_public_key` is `stored`'s (and so a valid
    /// key, since the stored one was checked when the channel was
    /// announced). The successor rule ([`check_successor`]) is still to be
    /// applied.
    ///
    /// # Errors
    /// `bad_request`, as the successor rule words another channel's state.
    ///
    /// [`check_successor`]: crate::check_successor
    pub fn of_channel(self, stored: &ChannelState) -> Result<ChannelState, ProtocolError> {
        if self.0.client_public_key == stored.client_public_key {
            Ok(self.0)
        } else {
            Err(ProtocolError::bad_request("the state is not of the channel being paid (client_public_key differs)"))
        }
    }
}

/// The refusal of a `pay` answer as a `ProtocolError` with code
/// `payment_refused`, quoting the client's reason.
pub fn refusal(message: Option<&str>) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::PaymentRefused,
        format!("the client refused to pay: {}", message.unwrap_or("no reason given")),
    )
}

/// Turns the error of decoding a [`PayAnswer`] from text into `bad_request`:
/// the message names the field, and drops serde_json's position, which
/// means nothing to a client that sent a Socket.IO packet.
pub fn unreadable(error: &impl fmt::Display) -> ProtocolError {
    let message = error.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    ProtocolError::bad_request(format!("unreadable answer to pay: {message}"))
}

impl<'de> Deserialize<'de> for PayAnswer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(AnswerVisitor)
    }
}

/// The fields of a state, in the order of `ChannelState`.
const FIELDS: [&str; 8] = [
    "channel_id",
    "channel_address",
    "client_wallet_address",
    "client_public_key",
    "client_balance",
    "server_balance",
    "client_sequence_number",
    "client_signature",
];

#[derive(Deserialize)]
#[serde(transparent)]
struct Id(#[serde(with = "hex_bytes")] B256);

#[derive(Deserialize)]
#[serde(transparent)]
struct AnyCaseAddress(#[serde(with = "checksummed")] Address);

#[derive(Deserialize)]
#[serde(transparent)]
struct Sequence(#[serde(with = "sequence")] u64);

/// 33 bytes of hex, not yet known to be a point on the curve.
struct KeyBytes([u8; 33]);

impl<'de> Deserialize<'de> for KeyBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)
            .map_err(|_| de::Error::custom("public key must be a hex string"))?;
        parse_hex::<33>(&text, "public key").map(KeyBytes).map_err(de::Error::custom)
    }
}

/// `error.message` when it is a string; anything else in `error` is
/// skipped.
struct Refusal(Option<String>);

impl<'de> Deserialize<'de> for Refusal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Refusal(value.get("message").and_then(|m| m.as_str()).map(str::to_owned)))
    }
}

#[derive(Default)]
struct Fields {
    channel_id: Option<B256>,
    channel_address: Option<Address>,
    client_wallet_address: Option<Address>,
    client_public_key: Option<[u8; 33]>,
    client_balance: Option<Amount>,
    server_balance: Option<Amount>,
    client_sequence_number: Option<u64>,
    client_signature: Option<Signature>,
}

/// Reads the value of `key`, naming the field in any error; `seen` when
/// the field came before.
fn read<'de, A: MapAccess<'de>, T: Deserialize<'de>>(map: &mut A, key: &str, seen: bool) -> Result<T, A::Error> {
    if seen {
        return Err(de::Error::custom(format!("duplicate field `{key}`")));
    }
    map.next_value::<T>().map_err(|error| de::Error::custom(format!("{key}: {error}")))
}

fn required<T, E: de::Error>(value: Option<T>, key: &'static str) -> Result<T, E> {
    value.ok_or_else(|| de::Error::missing_field(key))
}

struct AnswerVisitor;

impl<'de> Visitor<'de> for AnswerVisitor {
    type Value = PayAnswer;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the signed next channel state, or {\"error\": {...}}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PayAnswer, A::Error> {
        let mut fields = Fields::default();
        let mut refusal = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let key = key.as_ref();
            // Once the client has refused, nothing else it sent matters:
            // the rest is skipped unread (and a second `error` with it).
            // A malformed field before `error` is still `bad_request`.
            if refusal.is_some() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            match key {
                "channel_id" => fields.channel_id = Some(read::<_, Id>(&mut map, key, fields.channel_id.is_some())?.0),
                "channel_address" => {
                    let seen = fields.channel_address.is_some();
                    fields.channel_address = Some(read::<_, AnyCaseAddress>(&mut map, key, seen)?.0);
                }
                "client_wallet_address" => {
                    let seen = fields.client_wallet_address.is_some();
                    fields.client_wallet_address = Some(read::<_, AnyCaseAddress>(&mut map, key, seen)?.0);
                }
                "client_public_key" => {
                    let seen = fields.client_public_key.is_some();
                    fields.client_public_key = Some(read::<_, KeyBytes>(&mut map, key, seen)?.0);
                }
                "client_balance" => {
                    fields.client_balance = Some(read(&mut map, key, fields.client_balance.is_some())?);
                }
                "server_balance" => {
                    fields.server_balance = Some(read(&mut map, key, fields.server_balance.is_some())?);
                }
                "client_sequence_number" => {
                    let seen = fields.client_sequence_number.is_some();
                    fields.client_sequence_number = Some(read::<_, Sequence>(&mut map, key, seen)?.0);
                }
                "client_signature" => {
                    fields.client_signature = Some(read(&mut map, key, fields.client_signature.is_some())?);
                }
                "error" => refusal = Some(read::<_, Refusal>(&mut map, key, false)?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // A refusal wins over whatever else the object holds, as a client
        // that refuses owes nothing.
        if let Some(Refusal(message)) = refusal {
            return Ok(PayAnswer::Refused { message });
        }
        let state = ChannelState {
            channel_id: required(fields.channel_id, FIELDS[0])?,
            channel_address: required(fields.channel_address, FIELDS[1])?,
            client_wallet_address: required(fields.client_wallet_address, FIELDS[2])?,
            client_public_key: PublicKey(required(fields.client_public_key, FIELDS[3])?),
            client_balance: required(fields.client_balance, FIELDS[4])?,
            server_balance: required(fields.server_balance, FIELDS[5])?,
            client_sequence_number: required(fields.client_sequence_number, FIELDS[6])?,
            client_signature: required(fields.client_signature, FIELDS[7])?,
        };
        Ok(PayAnswer::Paid(PaidState(state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelDomain, SigningKey};
    use serde_json::json;

    fn signed() -> ChannelState {
        let domain = ChannelDomain::new(31337, Address::repeat_byte(0xc0));
        let key = SigningKey::from_bytes([7; 32]).unwrap();
        let mut state = ChannelState {
            channel_id: B256::repeat_byte(1),
            channel_address: domain.contract,
            client_wallet_address: Address::repeat_byte(0xa1),
            client_public_key: key.public_key(),
            client_balance: Amount::from(900u64),
            server_balance: Amount::from(100u64),
            client_sequence_number: 1,
            client_signature: Signature([0; 65]),
        };
        state.sign(&domain, &key);
        state
    }

    fn answer(text: &str) -> Result<PayAnswer, ProtocolError> {
        serde_json::from_str(text).map_err(|e| unreadable(&e))
    }

    #[test]
    fn a_state_decodes_as_the_generic_decoder_reads_it() {
        let state = signed();
        let text = serde_json::to_string(&state).unwrap();
        let PayAnswer::Paid(paid) = answer(&text).unwrap() else { panic!("not paid") };
        assert_eq!(paid.of_channel(&state).unwrap(), crate::decode_str::<ChannelState>(&text).unwrap());
    }

    #[test]
    fn a_refusal_carries_its_message() {
        let refused = answer(r#"{"error": {"code": "payment_refused", "message": "out of funds"}}"#).unwrap();
        assert_eq!(refused, PayAnswer::Refused { message: Some("out of funds".into()) });
        assert_eq!(answer(r#"{"error": 5}"#).unwrap(), PayAnswer::Refused { message: None });
        // A refusal wins over whatever follows it, malformed or repeated.
        let followed =
            r#"{"error": {"message": "no"}, "client_balance": "0100", "error": 1, "client_sequence_number": 1.5}"#;
        assert_eq!(answer(followed).unwrap(), PayAnswer::Refused { message: Some("no".into()) });
        assert_eq!(refusal(None).code, ErrorCode::PaymentRefused);
    }

    #[test]
    fn errors_name_the_field() {
        let mut value = serde_json::to_value(signed()).unwrap();
        value["client_balance"] = json!("0100");
        let error = answer(&value.to_string()).unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
        assert!(error.message.starts_with("unreadable answer to pay: client_balance: "), "{}", error.message);
        assert!(!error.message.contains(" at line "), "{}", error.message);

        value.as_object_mut().unwrap().remove("client_balance");
        let error = answer(&value.to_string()).unwrap_err();
        assert!(error.message.contains("missing field `client_balance`"), "{}", error.message);

        let error = answer("[1, 2]").unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
        let duplicated =
            format!(r#"{{"client_sequence_number": 1, {}"#, &serde_json::to_string(&signed()).unwrap()[1..]);
        assert!(answer(&duplicated).unwrap_err().message.contains("duplicate field"));
    }

    #[test]
    fn a_key_other_than_the_channels_is_refused_without_being_parsed_as_a_point() {
        let state = signed();
        let mut value = serde_json::to_value(&state).unwrap();
        // Not a point on the curve: the generic decoder refuses it while
        // decoding; here it is simply not the channel's key.
        value["client_public_key"] = json!(format!("0x02{}", "ff".repeat(32)));
        let PayAnswer::Paid(paid) = answer(&value.to_string()).unwrap() else { panic!("not paid") };
        let error = paid.of_channel(&state).unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
    }
}
