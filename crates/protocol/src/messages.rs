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
    /// 1.1: a gasless open, with the server sending the transaction.
    pub const OPEN_CHANNEL: &str = "openChannel";
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

    // The 1.1 terms. A version-1 server sends none of them, so each decodes
    // to what a version-1 server does: trust the latest block, sell native
    // coin, no gasless open; the two it cannot imply are `None`.
    /// How deep a channel's `open` (and the server's own `close`) must be
    /// before the server treats it as final; 0 and 1 trust the latest block.
    #[serde(default)]
    pub confirmations: u64,
    /// How many windows the server sells on a channel whose `open` is not
    /// yet `confirmations` deep: what a reorg can cost the server at most.
    #[serde(default)]
    pub unconfirmed_windows: u64,
    /// How long before its expiry a channel stops being active (no longer
    /// returned by `latestState` nor accepted by `play` and `pay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_margin_seconds: Option<u64>,
    /// How long the server waits for the answer to a `pay`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "optional_seconds")]
    pub pay_timeout_seconds: Option<f64>,
    /// The deposit token: an ERC-20 contract, or the zero address for the
    /// chain's native coin. Amounts are in its smallest unit.
    #[serde(default, with = "checksummed")]
    pub token: Address,
    /// The token's symbol, for display.
    #[serde(default = "native_symbol")]
    pub token_symbol: String,
    /// The token's decimals, for display.
    #[serde(default = "native_decimals")]
    pub token_decimals: u8,
    /// Whether the server accepts `openChannel` (it pays the open's gas).
    #[serde(default)]
    pub gasless_open: bool,
    /// With `gasless_open`, the token's own EIP-712 domain name and version
    /// for signing the authorization; `null` otherwise.
    #[serde(default)]
    pub token_domain: Option<TokenDomain>,
}

/// The symbol of a version-1 server's deposits, which are always the
/// native coin.
fn native_symbol() -> String {
    NATIVE_SYMBOL.to_owned()
}

fn native_decimals() -> u8 {
    NATIVE_DECIMALS
}

/// `token` of a server whose deposits are the chain's native coin.
pub const NATIVE_TOKEN: Address = Address::ZERO;
/// `token_symbol` of a native-coin server (every chain this project
/// targets calls its coin ETH).
pub const NATIVE_SYMBOL: &str = "ETH";
/// `token_decimals` of a native-coin server: amounts are in wei.
pub const NATIVE_DECIMALS: u8 = 18;

/// A token's own EIP-712 domain name and version (`token_domain`); its
/// chain id is the server's and its verifying contract the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenDomain {
    pub name: String,
    pub version: String,
}

/// The `openChannel` request (1.1): a channel the server opens on chain
/// for the client with the client's EIP-3009 authorization, paying the gas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenChannelRequest {
    /// The first state of the channel, exactly as `newChannel` sends it.
    pub state: ChannelState,
    /// The channel's expiry (unix seconds), an argument of the open and
    /// part of the authorization's nonce.
    #[serde(with = "unix_time")]
    pub expires_at: u64,
    /// The salt of the channel id and of the authorization's nonce.
    #[serde(with = "hex_bytes")]
    pub salt: B256,
    pub authorization: OpenAuthorization,
}

/// The client wallet's EIP-3009 `ReceiveWithAuthorization` of an
/// `openChannel`; its other terms follow from the request (see
/// `successor::check_open_channel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAuthorization {
    /// Valid strictly after this time (unix seconds); clients send 0.
    #[serde(with = "unix_time")]
    pub valid_after: u64,
    /// Valid strictly before this time (unix seconds).
    #[serde(with = "unix_time")]
    pub valid_before: u64,
    /// `r ‖ s ‖ v` by `client_wallet_address` in the token's domain.
    pub signature: Signature,
}

/// How long an `openChannel` authorization must stay valid after the
/// server checks it, so its transaction has time to be mined.
pub const OPEN_AUTHORIZATION_MIN_VALIDITY_SECONDS: u64 = 60;

impl OpenAuthorization {
    /// Whether the server may use the authorization at chain time `now`:
    /// valid already and for [`OPEN_AUTHORIZATION_MIN_VALIDITY_SECONDS`]
    /// more (PROTOCOL.md: `valid_after` < now, `valid_before` ≥ now + 60).
    pub fn is_usable_at(&self, now: u64) -> bool {
        self.valid_after < now && now.saturating_add(OPEN_AUTHORIZATION_MIN_VALIDITY_SECONDS) <= self.valid_before
    }
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
    /// The channel that paid (1.1), so that a re-sent final secret of an
    /// older channel is recognisable. `None` from a version-1 server.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "optional_hex_bytes")]
    pub channel_id: Option<B256>,
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

/// Serde for times (unix seconds): a JSON integer in `0..=2^53 − 1`, safe
/// in JavaScript.
pub mod unix_time {
    use super::*;
    use crate::encoding::MAX_SEQUENCE;

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(*value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let value =
            u64::deserialize(deserializer).map_err(|_| D::Error::custom("time must be a non-negative JSON integer"))?;
        if value > MAX_SEQUENCE {
            return Err(D::Error::custom(format!("time {value} exceeds 2^53 - 1")));
        }
        Ok(value)
    }
}

/// Serde for an optional [`seconds`] value: absent or a positive number.
pub mod optional_seconds {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => seconds::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct Seconds(#[serde(with = "seconds")] f64);
        Ok(Option::<Seconds>::deserialize(deserializer)?.map(|Seconds(value)| value))
    }
}

/// Serde for an optional 32-byte value in [`hex_bytes`] form.
mod optional_hex_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<B256>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => hex_bytes::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<B256>, D::Error> {
        #[derive(Deserialize)]
        struct Hex(#[serde(with = "hex_bytes")] B256);
        Ok(Option::<Hex>::deserialize(deserializer)?.map(|Hex(value)| value))
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

    fn server_info() -> ServerInfo {
        ServerInfo {
            public_key: format!("0x02{}", "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
                .parse()
                .unwrap(),
            wallet_address: Address::repeat_byte(0xab),
            chain_id: 31337,
            channel_address: Address::repeat_byte(0xcd),
            window_seconds: 10.0,
            window_price: Amount::from(100_000_000_000_000u64),
            min_channel_seconds: 86_400,
            streams: vec![StreamInfo {
                id: "demo".into(),
                title: "Demo".into(),
                playlist: "/streams/demo/index.m3u8".into(),
            }],
            confirmations: 10,
            unconfirmed_windows: 3,
            settle_margin_seconds: Some(3_600),
            pay_timeout_seconds: Some(10.0),
            token: NATIVE_TOKEN,
            token_symbol: NATIVE_SYMBOL.into(),
            token_decimals: NATIVE_DECIMALS,
            gasless_open: false,
            token_domain: None,
        }
    }

    #[test]
    fn server_info_carries_the_1_1_terms() {
        let info = server_info();
        let wire = serde_json::to_value(&info).unwrap();
        let terms = json!({
            "confirmations": 10, "unconfirmed_windows": 3, "settle_margin_seconds": 3600,
            "pay_timeout_seconds": 10,
            "token": "0x0000000000000000000000000000000000000000", "token_symbol": "ETH",
            "token_decimals": 18, "gasless_open": false, "token_domain": null,
        });
        for (field, value) in terms.as_object().unwrap() {
            assert_eq!(&wire[field], value, "{field}");
        }
        assert_eq!(crate::encoding::decode::<ServerInfo>(wire).unwrap(), info);

        // A fractional timeout stays a decimal, like `window_seconds`.
        let info = ServerInfo { pay_timeout_seconds: Some(2.5), ..server_info() };
        assert_eq!(serde_json::to_value(&info).unwrap()["pay_timeout_seconds"], json!(2.5));
        // A gasless server's token domain is an object.
        let domain = TokenDomain { name: "USD Coin".into(), version: "2".into() };
        let info = ServerInfo { gasless_open: true, token_domain: Some(domain), ..server_info() };
        let wire = serde_json::to_value(&info).unwrap();
        assert_eq!(wire["token_domain"], json!({"name": "USD Coin", "version": "2"}));
        assert_eq!(crate::encoding::decode::<ServerInfo>(wire).unwrap(), info);
    }

    /// Found by the Socket.IO codec's fuzz targets, and failing the same way
    /// in the `protocol_messages` target's round trip: serde_json without
    /// `float_roundtrip` read `44E0202` one ulp off, so the decoded
    /// `window_seconds` re-encoded to another number.
    #[test]
    fn window_seconds_decode_exactly_and_round_trip() {
        let mut wire = serde_json::to_value(server_info()).unwrap();
        wire["window_seconds"] = serde_json::from_str("44E0202").unwrap();
        let info: ServerInfo = crate::encoding::decode(wire).unwrap();
        assert_eq!(info.window_seconds, 4.4e203);
        let again: ServerInfo = crate::encoding::decode_str(&serde_json::to_string(&info).unwrap()).unwrap();
        assert_eq!(again, info);
    }

    #[test]
    fn a_version_1_server_info_decodes_as_a_native_coin_server() {
        let mut wire = serde_json::to_value(server_info()).unwrap();
        let fields = wire.as_object_mut().unwrap();
        for field in [
            "confirmations",
            "unconfirmed_windows",
            "settle_margin_seconds",
            "pay_timeout_seconds",
            "token",
            "token_symbol",
            "token_decimals",
            "gasless_open",
            "token_domain",
        ] {
            fields.remove(field).unwrap();
        }
        let info: ServerInfo = crate::encoding::decode(wire).unwrap();
        assert_eq!((info.confirmations, info.unconfirmed_windows), (0, 0));
        assert_eq!((info.settle_margin_seconds, info.pay_timeout_seconds), (None, None));
        assert_eq!(info.token, NATIVE_TOKEN);
        assert_eq!((info.token_symbol.as_str(), info.token_decimals), ("ETH", 18));
        assert!(!info.gasless_open);
        assert_eq!(info.token_domain, None);
    }

    #[test]
    fn malformed_1_1_terms_are_bad_requests() {
        for (field, value) in
            [("pay_timeout_seconds", json!(0)), ("confirmations", json!(-1)), ("token", json!("0x12"))]
        {
            let mut wire = serde_json::to_value(server_info()).unwrap();
            wire[field] = value;
            let error = crate::encoding::decode::<ServerInfo>(wire).unwrap_err();
            assert_eq!(error.code, crate::error::ErrorCode::BadRequest);
            assert!(error.message.starts_with(field), "{error}");
        }
    }

    #[test]
    fn secret_names_its_channel() {
        let channel_id = B256::repeat_byte(0x11);
        let key = SegmentKey { segment: 3, key: B128::repeat_byte(0x22), iv: B128::repeat_byte(0x33) };
        let secret = Secret {
            channel_id: Some(channel_id),
            stream_id: "demo".into(),
            client_sequence_number: 4,
            keys: vec![key],
        };
        let wire = json!({"channel_id": format!("0x{}", "11".repeat(32)), "stream_id": "demo",
            "client_sequence_number": 4,
            "keys": [{"segment": 3, "key": format!("0x{}", "22".repeat(16)), "iv": format!("0x{}", "33".repeat(16))}]});
        assert_eq!(serde_json::to_value(&secret).unwrap(), wire);
        assert_eq!(crate::encoding::decode::<Secret>(wire.clone()).unwrap(), secret);
        // Any letter case in, as for every hex value.
        let mut upper = wire.clone();
        upper["channel_id"] = json!(format!("0x{}", "AB".repeat(32)));
        let decoded: Secret = crate::encoding::decode(upper).unwrap();
        assert_eq!(decoded.channel_id, Some(B256::repeat_byte(0xab)));

        // A version-1 server's secret has no channel id.
        let mut old = wire;
        old.as_object_mut().unwrap().remove("channel_id");
        let decoded: Secret = crate::encoding::decode(old.clone()).unwrap();
        assert_eq!(decoded.channel_id, None);
        assert_eq!(serde_json::to_value(&decoded).unwrap(), old);
    }

    fn open_channel_wire() -> serde_json::Value {
        let state = json!({
            "channel_id": format!("0x{}", "11".repeat(32)),
            "channel_address": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "client_wallet_address": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
            "client_public_key": "0x0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
            "client_balance": "600000", "server_balance": "0", "client_sequence_number": 0,
            "client_signature": format!("0x{}1b", "22".repeat(64)),
        });
        json!({"state": state, "expires_at": 1_767_225_600u64, "salt": format!("0x{}", "33".repeat(32)),
            "authorization": {"valid_after": 0, "valid_before": 1_767_225_600u64,
                "signature": format!("0x{}1c", "44".repeat(64))}})
    }

    #[test]
    fn open_channel_request_matches_the_wire_form() {
        let wire = open_channel_wire();
        let request: OpenChannelRequest = crate::encoding::decode(wire.clone()).unwrap();
        assert_eq!(request.expires_at, 1_767_225_600);
        assert_eq!(request.salt, B256::repeat_byte(0x33));
        assert_eq!(request.authorization.valid_before, 1_767_225_600);
        assert_eq!(request.authorization.signature.0[64], 28);
        assert_eq!(serde_json::to_value(&request).unwrap(), wire);
        // Unknown fields are ignored, as everywhere.
        let mut extra = wire;
        extra["note"] = json!("hi");
        extra["authorization"]["extra"] = json!(1);
        assert_eq!(crate::encoding::decode::<OpenChannelRequest>(extra).unwrap(), request);
    }

    #[test]
    fn malformed_open_channel_requests_are_bad_requests_naming_the_field() {
        let cases: [(&[&str], serde_json::Value); 8] = [
            (&["expires_at"], json!(9_007_199_254_740_992u64)),
            (&["expires_at"], json!("1767225600")),
            (&["salt"], json!("0x1234")),
            (&["authorization", "valid_after"], json!(-1)),
            (&["authorization", "valid_before"], json!(1.5)),
            (&["authorization", "signature"], json!(format!("0x{}", "44".repeat(64)))),
            (&["state", "client_balance"], json!(600_000)),
            (&["authorization"], json!(null)),
        ];
        for (path, value) in cases {
            let mut wire = open_channel_wire();
            let (last, parents) = path.split_last().unwrap();
            let mut target = &mut wire;
            for parent in parents {
                target = &mut target[*parent];
            }
            target[*last] = value;
            let error = crate::encoding::decode::<OpenChannelRequest>(wire).unwrap_err();
            assert_eq!(error.code, ErrorCode::BadRequest);
            assert!(error.message.starts_with(&path.join(".")), "{path:?}: {error}");
        }
        let mut wire = open_channel_wire();
        wire.as_object_mut().unwrap().remove("salt");
        assert!(crate::encoding::decode::<OpenChannelRequest>(wire).unwrap_err().message.contains("salt"));
        // The largest safe time is accepted.
        let mut wire = open_channel_wire();
        wire["expires_at"] = json!(crate::encoding::MAX_SEQUENCE);
        assert_eq!(crate::encoding::decode::<OpenChannelRequest>(wire).unwrap().expires_at, (1 << 53) - 1);
    }

    #[test]
    fn an_authorization_is_usable_while_valid_for_another_minute() {
        let authorization = OpenAuthorization { valid_after: 100, valid_before: 1_000, signature: Signature([0; 65]) };
        assert!(!authorization.is_usable_at(100));
        assert!(authorization.is_usable_at(101));
        assert!(authorization.is_usable_at(940));
        assert!(!authorization.is_usable_at(941));
        let forever = OpenAuthorization { valid_after: 0, valid_before: u64::MAX, ..authorization };
        assert!(forever.is_usable_at(u64::MAX - 60));
        assert!(!forever.is_usable_at(0));
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
