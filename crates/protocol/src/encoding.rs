//! The JSON encodings of PROTOCOL.md: amounts as canonical decimal strings,
//! sequence numbers as JavaScript-safe integers, `0x` hex of fixed length,
//! checksummed addresses out and any case in.
//!
//! Parsing is strict on purpose: a value that a second implementation could
//! read differently (a leading zero, a missing `0x`, a float) is refused as
//! `bad_request` rather than guessed at.

use crate::error::ProtocolError;
use alloy_primitives::{Address, FixedBytes, U256};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The largest sequence number JavaScript represents exactly: 2^53 − 1.
pub const MAX_SEQUENCE: u64 = (1 << 53) - 1;

/// An amount of wei, carried on the wire as a canonical decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub U256);

impl Amount {
    pub const ZERO: Amount = Amount(U256::ZERO);

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

impl From<u64> for Amount {
    fn from(value: u64) -> Self {
        Amount(U256::from(value))
    }
}

impl From<U256> for Amount {
    fn from(value: U256) -> Self {
        Amount(value)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for Amount {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("amount must be a decimal string of digits, got {text:?}"));
        }
        if text.len() > 1 && text.starts_with('0') {
            return Err(format!("amount must not have leading zeros, got {text:?}"));
        }
        U256::from_str_radix(text, 10).map(Amount).map_err(|_| format!("amount {text:?} does not fit in uint256"))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A JSON number would lose precision in JavaScript clients, so only a
        // string is an amount.
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)
            .map_err(|_| D::Error::custom("amount must be a decimal string, not a number"))?;
        text.parse().map_err(D::Error::custom)
    }
}

/// Serde for sequence numbers: a JSON integer in `0..=MAX_SEQUENCE`.
pub mod sequence {
    use super::*;

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(*value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let value = u64::deserialize(deserializer)
            .map_err(|_| D::Error::custom("sequence number must be a non-negative JSON integer"))?;
        if value > MAX_SEQUENCE {
            return Err(D::Error::custom(format!("sequence number {value} exceeds 2^53 - 1")));
        }
        Ok(value)
    }
}

/// Parses `0x` followed by exactly `2 * N` hex digits, in any case.
pub fn parse_hex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let digits = text.strip_prefix("0x").ok_or_else(|| format!("{what} must start with 0x"))?;
    if digits.len() != 2 * N {
        return Err(format!("{what} must be 0x followed by {} hex digits, got {}", 2 * N, digits.len()));
    }
    let mut out = [0u8; N];
    alloy_primitives::hex::decode_to_slice(digits, &mut out).map_err(|_| format!("{what} is not valid hex"))?;
    Ok(out)
}

fn deserialize_hex<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
    what: &str,
) -> Result<[u8; N], D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)
        .map_err(|_| D::Error::custom(format!("{what} must be a hex string")))?;
    parse_hex::<N>(&text, what).map_err(D::Error::custom)
}

/// Serde for fixed-size byte strings (channel ids, AES keys and IVs):
/// lowercase `0x` hex out, strict length in.
pub mod hex_bytes {
    use super::*;

    pub fn serialize<S: Serializer, const N: usize>(value: &FixedBytes<N>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{value:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(deserializer: D) -> Result<FixedBytes<N>, D::Error> {
        deserialize_hex::<D, N>(deserializer, &format!("{N}-byte value")).map(FixedBytes)
    }
}

/// Serde for addresses: EIP-55 checksummed out, any case in. A mixed-case
/// input is not checked against its checksum, as PROTOCOL.md accepts any
/// case; the bytes are what is signed and compared.
pub mod checksummed {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Address, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_checksum(None))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
        deserialize_hex::<D, 20>(deserializer, "address").map(Address::from)
    }
}

/// A compressed secp256k1 public key (33 bytes), checked to be on the curve
/// when parsed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 33]);

impl PublicKey {
    /// Checks that `bytes` is a valid compressed point.
    pub fn from_compressed(bytes: [u8; 33]) -> Result<Self, String> {
        secp256k1::PublicKey::from_byte_array_compressed(bytes)
            .map(|_| PublicKey(bytes))
            .map_err(|_| "public key is not a valid compressed secp256k1 point".to_owned())
    }

    /// The Ethereum address of this key.
    pub fn address(&self) -> Address {
        let key = secp256k1::PublicKey::from_byte_array_compressed(self.0)
            .expect("a PublicKey is validated when constructed");
        crate::signing::address_of(&key)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", alloy_primitives::hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PublicKey::from_compressed(parse_hex::<33>(text, "public key")?)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserialize_hex::<D, 33>(deserializer, "public key")?;
        PublicKey::from_compressed(bytes).map_err(D::Error::custom)
    }
}

/// A 65-byte `r ‖ s ‖ v` signature. Only its length is checked when parsed;
/// `v` and low-`s` are checked when it is verified, so that a bad one is
/// reported as `invalid_signature`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 65]);

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", alloy_primitives::hex::encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Signature {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_hex::<65>(text, "signature").map(Signature)
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_hex::<D, 65>(deserializer, "signature").map(Signature)
    }
}

/// Decodes a message body, turning any failure into `bad_request` with a
/// message that names the offending field, e.g.
/// `client_balance: amount must not have leading zeros, got "0100"`.
///
/// # Errors
/// `bad_request` when a required field is missing or malformed.
pub fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ProtocolError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // serde_json appends a position; for a Value it is meaningless.
        let message = inner.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
        if path == "." {
            ProtocolError::bad_request(message)
        } else {
            ProtocolError::bad_request(format!("{path}: {message}"))
        }
    })
}

/// Like [`decode`], from JSON text.
///
/// # Errors
/// `bad_request` when the text is not JSON or does not decode as `T`.
pub fn decode_str<T: DeserializeOwned>(text: &str) -> Result<T, ProtocolError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| ProtocolError::bad_request(format!("not valid JSON: {error}")))?;
    decode(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Sample {
        amount: Amount,
        #[serde(with = "sequence")]
        seq: u64,
        #[serde(with = "checksummed")]
        address: Address,
        #[serde(with = "hex_bytes")]
        id: FixedBytes<32>,
    }

    fn sample() -> serde_json::Value {
        json!({
            "amount": "250000000000000",
            "seq": 7,
            "address": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            "id": format!("0x{}", "ab".repeat(32)),
        })
    }

    #[test]
    fn addresses_are_accepted_in_any_case_and_emitted_checksummed() {
        let parsed: Sample = decode(sample()).unwrap();
        let out = serde_json::to_value(&parsed).unwrap();
        assert_eq!(out["address"], "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        let mut upper = sample();
        upper["address"] = json!("0xF39FD6E51AAD88F6F4CE6AB8827279CFFFB92266");
        assert_eq!(decode::<Sample>(upper).unwrap(), parsed);
    }

    #[test]
    fn amounts_round_trip_as_decimal_strings() {
        let parsed: Sample = decode(sample()).unwrap();
        assert_eq!(parsed.amount, Amount::from(250_000_000_000_000u64));
        assert_eq!(serde_json::to_value(parsed).unwrap()["amount"], "250000000000000");
        let max = U256::MAX.to_string();
        assert_eq!(max.parse::<Amount>().unwrap(), Amount(U256::MAX));
    }

    fn rejection(field: &str, value: serde_json::Value) -> String {
        let mut body = sample();
        body[field] = value;
        let error = decode::<Sample>(body).unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
        assert!(error.message.starts_with(field), "{}", error.message);
        error.message
    }

    #[test]
    fn malformed_values_are_bad_requests_that_name_the_field() {
        rejection("amount", json!(100));
        rejection("amount", json!("0100"));
        rejection("amount", json!("-1"));
        rejection("amount", json!("1e3"));
        rejection("amount", json!(""));
        rejection("amount", json!(format!("{}0", U256::MAX)));
        rejection("seq", json!(-1));
        rejection("seq", json!(1.5));
        rejection("seq", json!("3"));
        rejection("seq", json!(MAX_SEQUENCE + 1));
        rejection("address", json!("f39fd6e51aad88f6f4ce6ab8827279cfffb92266"));
        rejection("address", json!("0x1234"));
        rejection("address", json!("0xzz9fd6e51aad88f6f4ce6ab8827279cfffb92266"));
        rejection("id", json!("0xab"));
        let missing = decode::<Sample>(json!({"amount": "1"})).unwrap_err();
        assert!(missing.message.contains("missing field"), "{}", missing.message);
    }

    #[test]
    fn the_largest_safe_sequence_number_is_accepted() {
        let mut body = sample();
        body["seq"] = json!(MAX_SEQUENCE);
        assert_eq!(decode::<Sample>(body).unwrap().seq, MAX_SEQUENCE);
    }

    #[test]
    fn public_keys_must_be_compressed_curve_points() {
        let generator = "0x0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        let key: PublicKey = generator.parse().unwrap();
        assert_eq!(key.to_string(), generator);
        assert_eq!(key.address().to_checksum(None), "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf");
        assert!("0x05".parse::<PublicKey>().is_err());
        assert!(format!("0x05{}", "11".repeat(32)).parse::<PublicKey>().is_err());
        let off_curve = format!("0x02{}", "ff".repeat(32));
        assert!(off_curve.parse::<PublicKey>().is_err());
    }
}
