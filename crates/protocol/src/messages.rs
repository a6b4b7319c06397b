//! Every message of PROTOCOL.md, with the event names as constants. The
//! server, the client and the tests share these types, so there is one
//! definition of the wire.

use crate::encoding::{Amount, PublicKey, Signature, checksummed, hex_bytes, sequence};
use crate::error::ProtocolError;
use crate::state::ChannelState;
use alloy_primitives::{Address, B128, B256};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Socket.IO event names.
pub mod event {
    pub const PUBLIC_KEY: &str = "publicKey";
    pub const LATEST_STATE: &str = "latestState";
    pub const NEW_CHANNEL: &str = "newChannel";
    pub const PLAY: &str = "play";
    pub const PAY: &str = "pay";
    pub const SECRET: &str = "secret";
    pub const STOP: &str = "stop";
    pub const ERROR: &str = "error";
}

/// The largest message either side accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The reply to `publicKey`: who the server is and what it sells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The server's compressed public key, the key of `wallet_address`.
    pub public_key: PublicKey,
    /// The payee of every channel.
    #[serde(with = "checksummed")]
    pub wallet_address: Address,
    pub chain_id: u64,
    /// The channel registry contract.
    #[serde(with = "checksummed")]
    pub channel_address: Address,
    /// Seconds of stream one payment buys. Whole seconds in production;
    /// fractions are allowed so tests can run fast.
    #[serde(with = "seconds")]
    pub window_seconds: f64,
    /// The price of one window; the server always asks exactly this.
    pub window_price: Amount,
    /// How long a new channel must stay open at least.
    pub min_channel_seconds: u64,
    pub streams: Vec<StreamInfo>,
}

/// One stream the server sells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub id: String,
    pub title: String,
    /// Path of the HLS media playlist on the server.
    pub playlist: String,
}

/// `latestState` and `stop` requests: which client is asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientKey {
    pub client_public_key: PublicKey,
}

/// The `play` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayRequest {
    pub client_public_key: PublicKey,
    pub stream_id: String,
    /// The first segment the client wants keys for.
    pub from_segment: u64,
    /// EIP-712 `Play(channelId, session)` by `client_public_key`.
    pub signature: Signature,
}

/// The server's `pay` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayRequest {
    #[serde(with = "hex_bytes")]
    pub channel_id: B256,
    /// The sequence number the answer must carry.
    #[serde(with = "sequence")]
    pub client_sequence_number: u64,
    pub amount: Amount,
    pub stream_id: String,
    /// The window this payment buys: `segment_count` segments from here.
    pub first_segment: u64,
    pub segment_count: u64,
}

/// The server's `secret`: the keys of the window the payment bought.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub stream_id: String,
    /// The payment that bought these keys.
    #[serde(with = "sequence")]
    pub client_sequence_number: u64,
    pub keys: Vec<SegmentKey>,
}

/// The AES-128 key and IV of one segment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentKey {
    pub segment: u64,
    #[serde(with = "hex_bytes")]
    pub key: B128,
    #[serde(with = "hex_bytes")]
    pub iv: B128,
}

impl std::fmt::Debug for SegmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are what viewers pay for: keep them out of logs.
        f.debug_struct("SegmentKey").field("segment", &self.segment).finish_non_exhaustive()
    }
}

/// An acknowledgement: the data on success, `{"error": {code, message}}` on
/// failure. Serialized untagged, so success is the bare data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ack<T> {
    Error { error: ProtocolError },
    Ok(T),
}

impl<T> From<Result<T, ProtocolError>> for Ack<T> {
    fn from(result: Result<T, ProtocolError>) -> Self {
        match result {
            Ok(data) => Ack::Ok(data),
            Err(error) => Ack::Error { error },
        }
    }
}

impl<T> From<Ack<T>> for Result<T, ProtocolError> {
    fn from(ack: Ack<T>) -> Self {
        match ack {
            Ack::Ok(data) => Ok(data),
            Ack::Error { error } => Err(error),
        }
    }
}

/// The reply to `latestState` and `newChannel`: a state or JSON `null`.
pub type LatestStateReply = Option<ChannelState>;

/// An empty object, `{}`: the success ack of `play` and `stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Empty {}

/// Serde for `window_seconds`: a JSON integer when whole (as PROTOCOL.md
/// shows it), a float otherwise; positive and finite in.
pub mod seconds {
    use super::*;

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.fract() == 0.0 && *value >= 0.0 && *value < 9.0e15 {
            serializer.serialize_u64(*value as u64)
        } else {
            serializer.serialize_f64(*value)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if !(value.is_finite() && value > 0.0) {
            return Err(D::Error::custom("seconds must be a positive number"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    #[test]
    fn acks_are_bare_data_or_an_error_object() {
        let ok: Ack<Empty> = Ok(Empty {}).into();
        assert_eq!(serde_json::to_value(&ok).unwrap(), json!({}));
        let failed: Ack<Empty> = Err(ProtocolError::new(ErrorCode::NotStreaming, "idle")).into();
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            json!({"error": {"code": "not_streaming", "message": "idle"}})
        );
        let back: Ack<Option<ChannelState>> =
            serde_json::from_value(json!({"error": {"code": "internal", "message": "x"}})).unwrap();
        assert!(matches!(back, Ack::Error { .. }));
        let none: Ack<Option<ChannelState>> = serde_json::from_value(json!(null)).unwrap();
        assert_eq!(none, Ack::Ok(None));
    }

    #[test]
    fn whole_window_seconds_are_integers_on_the_wire() {
        #[derive(Serialize)]
        struct W(#[serde(with = "seconds")] f64);
        assert_eq!(serde_json::to_string(&W(10.0)).unwrap(), "10");
        assert_eq!(serde_json::to_string(&W(0.25)).unwrap(), "0.25");
    }

    #[test]
    fn pay_request_matches_the_wire_form() {
        let text = json!({"channel_id": format!("0x{}", "11".repeat(32)), "client_sequence_number": 4,
            "amount": "100000000000000", "stream_id": "demo", "first_segment": 3, "segment_count": 1});
        let pay: PayRequest = crate::encoding::decode(text.clone()).unwrap();
        assert_eq!(pay.client_sequence_number, 4);
        assert_eq!(serde_json::to_value(&pay).unwrap(), text);
    }
}
