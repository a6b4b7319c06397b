//! A typed async client of PROTOCOL.md: one method per client→server event,
//! and the server's events as [`ServerEvent`]s.

use crate::socketio::{Acker, Incoming, SocketIo, SocketIoError};
use crate::tls::Tls;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;
use tollstream_protocol::{
    Ack, ChannelState, ClientKey, Empty, ErrorCode, OpenChannelRequest, PayRequest, PlayRequest, ProtocolError,
    PublicKey, Secret, ServerInfo, decode, event,
};

/// How long a request answered `rate_limited` waits before it is sent again
/// (PROTOCOL.md 1.1: "a client that meets `rate_limited` waits a second").
pub const RATE_LIMITED_PAUSE: Duration = Duration::from_secs(1);
/// How many times a request answered `rate_limited` is sent again before the
/// refusal is returned.
pub const RATE_LIMITED_RETRIES: u32 = 5;
/// How long an `openChannel` waits for its reply before it is sent again
/// (PROTOCOL.md 1.1: "clients wait at least 120 seconds for the reply").
pub const OPEN_CHANNEL_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed or timed out.
    #[error(transparent)]
    Transport(#[from] SocketIoError),
    /// The server refused with a protocol error.
    #[error("server refused: {0}")]
    Refused(ProtocolError),
    /// The server's answer does not follow PROTOCOL.md.
    #[error("malformed reply from the server: {0}")]
    Malformed(String),
}

impl ClientError {
    /// The protocol error code, when the server refused.
    pub fn code(&self) -> Option<tollstream_protocol::ErrorCode> {
        match self {
            ClientError::Refused(error) => Some(error.code),
            _ => None,
        }
    }
}

/// One event the server pushed.
#[derive(Debug)]
pub enum ServerEvent {
    /// A payment request; answer it through the [`PayAnswer`].
    Pay(PayRequest, PayAnswer),
    Secret(Secret),
    Error(ProtocolError),
    /// An event PROTOCOL.md does not define, or a malformed one.
    Unknown {
        event: String,
        data: Value,
    },
}

/// The answer to one `pay`, sent at most once.
#[derive(Debug)]
pub struct PayAnswer(Option<Acker>);

impl PayAnswer {
    /// Answers with the signed successor state.
    ///
    /// # Errors
    /// When the connection is gone.
    pub async fn pay(self, state: &ChannelState) -> Result<(), ClientError> {
        self.raw(serde_json::to_value(state).expect("states serialize")).await
    }

    /// Refuses to pay, with a reason.
    ///
    /// # Errors
    /// When the connection is gone.
    pub async fn refuse(self, error: ProtocolError) -> Result<(), ClientError> {
        self.raw(serde_json::to_value(Ack::<Empty>::Error { error }).expect("errors serialize")).await
    }

    /// Whether the server asked for an answer: a `pay` sent without an ack
    /// id cannot be answered, and [`pay`](Self::pay) would then send nothing.
    pub fn expects_answer(&self) -> bool {
        self.0.is_some()
    }

    /// Answers with any JSON (tests use it to send malformed answers).
    ///
    /// # Errors
    /// When the connection is gone.
    pub async fn raw(self, value: Value) -> Result<(), ClientError> {
        match self.0 {
            Some(acker) => Ok(acker.send(&value).await?),
            // The server did not ask for an ack: nothing can be answered.
            None => Ok(()),
        }
    }
}

/// A connection to a Tollstream server.
pub struct Client {
    io: SocketIo,
    events: mpsc::Receiver<Incoming>,
    timeout: Duration,
    /// How many times a request answered `rate_limited` is sent again.
    rate_limited_retries: u32,
}

impl Client {
    /// Connects to the server at `url` (e.g. `http://127.0.0.1:8080`, or
    /// `https://` with a certificate the system's roots trust).
    ///
    /// # Errors
    /// When the Socket.IO connection cannot be established.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Self::connect_with(url, Tls::system()).await
    }

    /// Connects to the server at `url`, trusting what `tls` trusts when the
    /// URL is `https://` (e.g. a private CA's certificates).
    ///
    /// # Errors
    /// When the Socket.IO connection cannot be established.
    pub async fn connect_with(url: &str, tls: &Tls) -> Result<Client, ClientError> {
        let (io, events) = SocketIo::connect_with(url, tls).await?;
        Ok(Client { io, events, timeout: Duration::from_secs(30), rate_limited_retries: RATE_LIMITED_RETRIES })
    }

    /// How long requests wait for their reply (default 30 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// How many times a request answered `rate_limited` is sent again
    /// (default [`RATE_LIMITED_RETRIES`]). A load generator sets 0, so that
    /// a refusal is counted as it happens rather than waited out.
    pub fn set_rate_limited_retries(&mut self, retries: u32) {
        self.rate_limited_retries = retries;
    }

    /// This connection's Socket.IO id: the `session` a `Play` signs.
    pub fn session_id(&self) -> &str {
        self.io.sid()
    }

    /// `publicKey`: the server's identity, chain, contract and prices.
    ///
    /// # Errors
    /// Transport failures, refusals, malformed replies.
    pub async fn public_key(&self) -> Result<ServerInfo, ClientError> {
        self.request(event::PUBLIC_KEY, &Empty {}).await
    }

    /// `latestState`: the client's active state, or `None`. The caller must
    /// verify the signature is its own before trusting it.
    ///
    /// # Errors
    /// Transport failures, refusals, malformed replies.
    pub async fn latest_state(&self, client: &PublicKey) -> Result<Option<ChannelState>, ClientError> {
        self.request(event::LATEST_STATE, &ClientKey { client_public_key: *client }).await
    }

    /// `newChannel`: announces a channel opened on chain with its first state.
    ///
    /// # Errors
    /// Transport failures, refusals (`unknown_channel`, `wrong_payee`, …).
    pub async fn new_channel(&self, opening: &ChannelState) -> Result<Option<ChannelState>, ClientError> {
        self.request(event::NEW_CHANNEL, opening).await
    }

    /// `openChannel` (PROTOCOL.md 1.1): the server opens the channel with the
    /// wallet's EIP-3009 authorization and pays the gas. The reply can take
    /// as long as mining does, so this waits [`OPEN_CHANNEL_TIMEOUT`] (the
    /// protocol's 120 s) and sends the request once more before giving up;
    /// the server answers a repeat idempotently.
    ///
    /// # Errors
    /// Transport failures (a timeout twice over), refusals
    /// (`invalid_signature`, `bad_deposit`, `rate_limited`, …).
    pub async fn open_channel(&self, request: &OpenChannelRequest) -> Result<Option<ChannelState>, ClientError> {
        let data = serde_json::to_value(request).expect("requests serialize");
        let mut sent = 0;
        loop {
            sent += 1;
            let reply = match self.io.emit_with_ack(event::OPEN_CHANNEL, &data, OPEN_CHANNEL_TIMEOUT).await {
                Err(SocketIoError::Timeout) if sent < 2 => {
                    tracing::info!("no answer to openChannel yet; sending it again");
                    continue;
                }
                reply => reply?,
            };
            let ack: Ack<Value> = serde_json::from_value(reply).map_err(|e| ClientError::Malformed(e.to_string()))?;
            return match ack {
                Ack::Error { error } if error.code == ErrorCode::RateLimited && sent < 1 + RATE_LIMITED_RETRIES => {
                    tokio::time::sleep(RATE_LIMITED_PAUSE).await;
                    continue;
                }
                Ack::Error { error } => Err(ClientError::Refused(error)),
                Ack::Ok(value) => decode(value).map_err(|e| ClientError::Malformed(e.message)),
            };
        }
    }

    /// `play`, with an ack: `Ok` once the server entered the streaming state.
    ///
    /// # Errors
    /// Transport failures, refusals (`invalid_signature`, `unknown_stream`, …).
    pub async fn play(&self, request: &PlayRequest) -> Result<(), ClientError> {
        self.request::<Empty>(event::PLAY, request).await.map(|_| ())
    }

    /// [`play`](Self::play) as a future that does not borrow the client, so
    /// that it can be awaited alongside [`next_event`](Self::next_event): a
    /// `pay` may arrive before the `play` ack (PROTOCOL.md D10) and should
    /// be answered at once. The future holds a handle of the connection:
    /// dropping the client alone does not disconnect while it lives
    /// ([`close`](Self::close) does).
    ///
    /// # Errors
    /// As [`play`](Self::play).
    pub fn play_detached(
        &self,
        request: &PlayRequest,
    ) -> impl Future<Output = Result<(), ClientError>> + Send + 'static {
        let io = self.io.clone();
        let data = serde_json::to_value(request).expect("requests serialize");
        let (timeout, retries) = (self.timeout, self.rate_limited_retries);
        async move { request_over::<Empty>(&io, timeout, retries, event::PLAY, data).await.map(|_| ()) }
    }

    /// `stop`: leaves the streaming state.
    ///
    /// # Errors
    /// `not_streaming`, transport failures.
    pub async fn stop(&self, client: &PublicKey) -> Result<(), ClientError> {
        self.request::<Empty>(event::STOP, &ClientKey { client_public_key: *client }).await.map(|_| ())
    }

    /// Sends any event with any JSON and returns the raw ack (tests use it
    /// to send what a well-behaved client never would).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn request_raw(&self, event: &str, data: &Value) -> Result<Value, ClientError> {
        Ok(self.io.emit_with_ack(event, data, self.timeout).await?)
    }

    /// Sends an event without asking for an ack.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn emit_raw(&self, event: &str, data: &Value) -> Result<(), ClientError> {
        Ok(self.io.emit(event, data).await?)
    }

    /// Sends a request and decodes its reply. A request answered
    /// `rate_limited` had no effect on the server, so it is sent again after
    /// [`RATE_LIMITED_PAUSE`] (PROTOCOL.md 1.1, "Rate limits"), up to
    /// [`RATE_LIMITED_RETRIES`] times (or what
    /// [`set_rate_limited_retries`](Self::set_rate_limited_retries) set).
    async fn request<T: DeserializeOwned>(&self, event: &str, data: &impl Serialize) -> Result<T, ClientError> {
        let data = serde_json::to_value(data).expect("requests serialize");
        request_over(&self.io, self.timeout, self.rate_limited_retries, event, data).await
    }

    /// The next event the server pushed; `None` once the connection closed.
    pub async fn next_event(&mut self) -> Option<ServerEvent> {
        let Incoming { event, data, ack } = self.events.recv().await?;
        Some(match event.as_str() {
            event::PAY => match decode::<PayRequest>(data.clone()) {
                Ok(request) => ServerEvent::Pay(request, PayAnswer(ack)),
                Err(_) => ServerEvent::Unknown { event, data },
            },
            event::SECRET => match decode::<Secret>(data.clone()) {
                Ok(secret) => ServerEvent::Secret(secret),
                Err(_) => ServerEvent::Unknown { event, data },
            },
            event::ERROR => match decode::<ProtocolError>(data.clone()) {
                Ok(error) => ServerEvent::Error(error),
                Err(_) => ServerEvent::Unknown { event, data },
            },
            _ => ServerEvent::Unknown { event, data },
        })
    }

    /// Whether the connection is still up.
    pub fn is_connected(&self) -> bool {
        self.io.is_connected()
    }

    /// Disconnects.
    pub async fn close(&self) {
        self.io.close().await;
    }
}

/// [`Client::request`] over any handle of the connection.
async fn request_over<T: DeserializeOwned>(
    io: &SocketIo,
    timeout: Duration,
    max_retries: u32,
    event: &str,
    data: Value,
) -> Result<T, ClientError> {
    let mut retries = 0;
    loop {
        let reply = io.emit_with_ack(event, &data, timeout).await?;
        let ack: Ack<Value> = serde_json::from_value(reply).map_err(|e| ClientError::Malformed(e.to_string()))?;
        match ack {
            Ack::Error { error } if error.code == ErrorCode::RateLimited && retries < max_retries => {
                retries += 1;
                tracing::debug!(event, retries, "rate limited; retrying in a second");
                tokio::time::sleep(RATE_LIMITED_PAUSE).await;
            }
            Ack::Error { error } => return Err(ClientError::Refused(error)),
            Ack::Ok(value) => return decode(value).map_err(|e| ClientError::Malformed(e.message)),
        }
    }
}
