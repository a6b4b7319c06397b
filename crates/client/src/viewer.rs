//! The viewer's side of the seed's algorithm: idle (find or buy a channel,
//! then play) and streaming (answer every `pay` after checking it, collect
//! every `secret`).

use crate::client::{Client, ClientError, PayAnswer, ServerEvent};
use crate::tls::Tls;
use crate::wallet::{random_key, session_key};
use std::time::Duration;
use tollstream_chain::{Chain, ChainError, EvmChain, OpenRequest, open_channel, open_token_channel};
use tollstream_protocol::channel_id::channel_id;
use tollstream_protocol::successor::open_channel_authorization;
use tollstream_protocol::successor::play_signing_hash;
use tollstream_protocol::token::TokenSigningDomain;
use tollstream_protocol::{
    Address, Amount, B256, ChannelDomain, ChannelState, ErrorCode, NATIVE_TOKEN, OpenAuthorization, OpenChannelRequest,
    PayRequest, PlayRequest, ProtocolError, Secret, ServerInfo, Signature, SigningKey, U256, verify_state_signature,
};

/// How many times `newChannel` is sent for a just-opened channel the
/// server does not see yet (one second apart).
const ANNOUNCE_ATTEMPTS: u32 = 5;
/// How long a gasless open's authorization stays valid: the server must
/// mine the open within it (the protocol asks at least 60 s of it).
const AUTHORIZATION_SECONDS: u64 = 3_600;

/// How a channel is opened.
enum OpenMethod {
    /// `openChannel` with an authorization in the token's own domain.
    Gasless(TokenSigningDomain),
    /// A transaction of the viewer's wallet.
    OnChain,
}

/// Why the viewer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    // Transparent: a `{0}` here would repeat the error's text as its
    // source when the whole chain of causes is printed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The chain's JSON-RPC endpoint did not answer (refused, timed out,
    /// unknown host, untrusted certificate): `reason` is the innermost
    /// cause, said once.
    #[error("cannot reach the chain RPC at {url}: {reason}")]
    ChainUnreachable { url: String, reason: String },
    /// The endpoint answers for another chain than the server's.
    #[error("the chain RPC at {url} is chain {actual}, but the server's channels are on chain {expected}")]
    WrongChain { url: String, actual: u64, expected: u64 },
    #[error("{0}")]
    Invalid(String),
}

impl ViewerError {
    /// A chain error of the endpoint `rpc_url`: an outage becomes
    /// [`ChainUnreachable`](Self::ChainUnreachable).
    pub fn from_chain(rpc_url: &str, error: ChainError) -> Self {
        if error.is_transient() {
            ViewerError::ChainUnreachable { url: rpc_url.to_owned(), reason: crate::root_cause(&error) }
        } else {
            ViewerError::Chain(error)
        }
    }
}

/// The chain at `rpc_url`, for reads about `contract`.
///
/// # Errors
/// [`ViewerError::ChainUnreachable`] when the endpoint does not answer;
/// `Chain` when it answers nonsense.
pub async fn connect_chain(rpc_url: &str, contract: Address) -> Result<EvmChain, ViewerError> {
    EvmChain::connect(rpc_url, None, contract).await.map_err(|e| ViewerError::from_chain(rpc_url, e))
}

impl ViewerError {
    /// The protocol error code, when the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ViewerError::Client(error) => error.code(),
            _ => None,
        }
    }
}

/// What happened while streaming.
// Steps are handled one at a time, never stored in bulk, so the size of the
// largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    /// We answered the `pay` `request` with the signed `state`.
    Paid { request: PayRequest, state: ChannelState },
    /// Keys arrived.
    Keys(Secret),
    /// The keys of the channel's final payment arrived: the channel is
    /// spent and forgotten; the viewer is idle.
    Final(Secret),
    /// We refused a `pay` that broke the rules; the server will stop us.
    Refused { request: PayRequest, reason: ProtocolError },
    /// The server stopped streaming with this error; the viewer is idle.
    /// `session_replaced` means another connection of this client (another
    /// player with the same wallet) took the stream over; the channel is
    /// kept, and playing again takes it back.
    Stopped(ProtocolError),
    /// The connection closed.
    Disconnected,
}

/// A server event as [`Viewer::next_event`] hands it over.
// Handled one at a time, like `Step`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Event {
    /// A payment request, for the caller to answer.
    Pay(PayRequest, PayAnswer),
    Step(Step),
}

/// A viewer connected to one server.
pub struct Viewer {
    client: Client,
    wallet: SigningKey,
    session: SigningKey,
    info: ServerInfo,
    domain: ChannelDomain,
    /// The latest state the server confirmed (by its `secret`, or by
    /// `latestState` / `newChannel`); `None` when idle without a channel.
    channel: Option<ChannelState>,
    /// A state we signed whose `secret` has not arrived yet.
    pending: Option<ChannelState>,
    /// The sequence number of the last secret received.
    last_secret: Option<u64>,
}

impl Viewer {
    /// Connects and asks the server who it is (`publicKey`).
    ///
    /// # Errors
    /// When the server cannot be reached or answers nonsense.
    pub async fn connect(url: &str, wallet: SigningKey) -> Result<Viewer, ViewerError> {
        Self::connect_with(url, Tls::system(), wallet).await
    }

    /// [`connect`](Self::connect), trusting what `tls` trusts when the URL
    /// is `https://`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(url: &str, tls: &Tls, wallet: SigningKey) -> Result<Viewer, ViewerError> {
        let client = Client::connect_with(url, tls).await?;
        let info = client.public_key().await?;
        let domain = ChannelDomain::new(info.chain_id, info.channel_address);
        let session = session_key(&wallet);
        Ok(Viewer { client, wallet, session, info, domain, channel: None, pending: None, last_secret: None })
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The connection, for callers that drive events themselves.
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    pub fn session_key(&self) -> &SigningKey {
        &self.session
    }

    /// The channel's latest confirmed state.
    pub fn channel(&self) -> Option<&ChannelState> {
        self.channel.as_ref()
    }

    /// Asks `latestState` and keeps the answer if it is really ours: signed
    /// by our session key, for our wallet, on the server's contract.
    ///
    /// # Errors
    /// Transport failures and refusals.
    pub async fn resume(&mut self) -> Result<Option<ChannelState>, ViewerError> {
        let latest = self.client.latest_state(&self.session.public_key()).await?;
        self.channel = latest.filter(|state| self.is_ours(state));
        self.pending = None;
        Ok(self.channel.clone())
    }

    fn is_ours(&self, state: &ChannelState) -> bool {
        state.client_public_key == self.session.public_key()
            && state.client_wallet_address == self.wallet.address()
            && state.channel_address == self.info.channel_address
            && state.deposit().is_some()
            && verify_state_signature(state, &self.domain).is_ok()
    }

    /// Opens a channel of `windows` windows, living `lifetime` seconds, in
    /// the server's token: gasless (`openChannel`, one signature of the
    /// wallet, no transaction) when the server offers it, else on chain
    /// from the wallet (a permit, or approve and open, for a token) and
    /// announced with `newChannel`.
    ///
    /// # Errors
    /// `ChainUnreachable` when the endpoint does not answer, `WrongChain`
    /// when it is another chain than the server's; when the open fails, or
    /// the server refuses the channel.
    pub async fn buy(&mut self, rpc_url: &str, windows: u64, lifetime: u64) -> Result<ChannelState, ViewerError> {
        if windows == 0 {
            return Err(ViewerError::Invalid("buy at least one window".into()));
        }
        let unreachable = |error: ChainError| ViewerError::from_chain(rpc_url, error);
        let chain = connect_chain(rpc_url, self.info.channel_address).await?;
        if chain.chain_id() != self.info.chain_id {
            return Err(ViewerError::WrongChain {
                url: rpc_url.to_owned(),
                actual: chain.chain_id(),
                expected: self.info.chain_id,
            });
        }
        let deposit = self
            .info
            .window_price
            .0
            .checked_mul(U256::from(windows))
            .ok_or_else(|| ViewerError::Invalid("deposit overflows".into()))?;
        let expires_at = chain.now().await.map_err(unreachable)? + lifetime;
        let salt = B256::from(random_key().to_bytes());
        let request = OpenRequest {
            contract: self.info.channel_address,
            payee: self.info.wallet_address,
            signer: self.session.address(),
            deposit,
            expires_at,
            salt,
        };
        let mut opening = ChannelState {
            channel_id: channel_id(self.wallet.address(), self.info.wallet_address, salt),
            channel_address: self.info.channel_address,
            client_wallet_address: self.wallet.address(),
            client_public_key: self.session.public_key(),
            client_balance: Amount(deposit),
            server_balance: Amount::ZERO,
            client_sequence_number: 0,
            client_signature: Signature([0; 65]),
        };
        opening.sign(&self.domain, &self.session);
        let stored = match self.open_method() {
            OpenMethod::Gasless(token_domain) => {
                // One signature of the wallet; the server sends the open.
                let now = chain.now().await.map_err(unreachable)?;
                let authorization = OpenChannelRequest {
                    state: opening.clone(),
                    expires_at,
                    salt,
                    authorization: OpenAuthorization {
                        valid_after: 0,
                        valid_before: now + AUTHORIZATION_SECONDS,
                        signature: Signature([0; 65]),
                    },
                };
                let signature = open_channel_authorization(&authorization, self.info.wallet_address)
                    .sign(&token_domain, &self.wallet);
                let request = OpenChannelRequest {
                    authorization: OpenAuthorization { signature, ..authorization.authorization },
                    ..authorization
                };
                tracing::info!(channel = %opening.channel_id, %deposit, "asking the server for a gasless open");
                self.client.open_channel(&request).await?
            }
            OpenMethod::OnChain => {
                let opened = if self.info.token == NATIVE_TOKEN {
                    open_channel(rpc_url, &self.wallet, &request).await
                } else {
                    open_token_channel(rpc_url, &self.wallet, self.info.token, &request).await
                }
                .map_err(unreachable)?;
                tracing::info!(channel = %opened.channel_id, tx = %opened.tx, %deposit, "channel opened on chain");
                self.announce(&opening).await?
            }
        };
        match stored {
            Some(stored) if stored == opening => {
                self.channel = Some(stored.clone());
                self.pending = None;
                self.last_secret = None;
                Ok(stored)
            }
            other => {
                Err(ViewerError::Invalid(format!("the server stored another state for the new channel: {other:?}")))
            }
        }
    }

    /// How this viewer opens a channel with this server: gasless when the
    /// server offers it for its token, else a transaction of the wallet.
    fn open_method(&self) -> OpenMethod {
        match (&self.info.token_domain, self.info.gasless_open && self.info.token != NATIVE_TOKEN) {
            (Some(domain), true) => {
                OpenMethod::Gasless(TokenSigningDomain::from_token_domain(domain, self.info.chain_id, self.info.token))
            }
            _ => OpenMethod::OnChain,
        }
    }

    /// `newChannel` for a channel whose `open` was just mined. The server's
    /// node may not have that block yet (or answered for the block before
    /// it), so `unknown_channel` is asked again, a second apart, for a few
    /// seconds before it counts: the deposit is on chain, and giving up
    /// would leave it unannounced until the channel expires.
    async fn announce(&self, opening: &ChannelState) -> Result<Option<ChannelState>, ViewerError> {
        let mut attempts = 1;
        loop {
            match self.client.new_channel(opening).await {
                Err(ClientError::Refused(error))
                    if error.code == ErrorCode::UnknownChannel && attempts < ANNOUNCE_ATTEMPTS =>
                {
                    attempts += 1;
                    tracing::debug!(channel = %opening.channel_id, "the server does not see the open yet; asking again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                result => return Ok(result?),
            }
        }
    }

    /// The `play` request for this connection, signed by the session key.
    ///
    /// # Errors
    /// When there is no channel to play with.
    pub fn play_request(&self, stream_id: &str, from_segment: u64) -> Result<PlayRequest, ViewerError> {
        self.play_request_on(self.client.session_id(), stream_id, from_segment)
    }

    /// The `play` request for the connection whose Socket.IO id is
    /// `session`, which need not be this viewer's: one connection may
    /// stream for several clients in turn (one at a time), each `play`
    /// signed by its own key for that connection.
    ///
    /// # Errors
    /// When there is no channel to play with.
    pub fn play_request_on(
        &self,
        session: &str,
        stream_id: &str,
        from_segment: u64,
    ) -> Result<PlayRequest, ViewerError> {
        let channel = self.channel.as_ref().ok_or_else(|| ViewerError::Invalid("no channel: buy one first".into()))?;
        let digest = play_signing_hash(&self.domain, channel.channel_id, session);
        Ok(PlayRequest {
            client_public_key: self.session.public_key(),
            stream_id: stream_id.to_owned(),
            from_segment,
            signature: self.session.sign_digest(&digest),
        })
    }

    /// Enters the streaming state.
    ///
    /// # Errors
    /// No channel, or the server refused.
    pub async fn play(&mut self, stream_id: &str, from_segment: u64) -> Result<(), ViewerError> {
        let request = self.play_request(stream_id, from_segment)?;
        self.client.play(&request).await?;
        Ok(())
    }

    /// Leaves the streaming state, keeping the channel for next time.
    ///
    /// # Errors
    /// `not_streaming`, transport failures.
    pub async fn stop(&mut self) -> Result<(), ViewerError> {
        self.client.stop(&self.session.public_key()).await?;
        Ok(())
    }

    /// Waits for the next thing the server does and reacts: a `pay` is
    /// checked and answered (or refused), a `secret` confirms the payment
    /// it answers.
    pub async fn next_step(&mut self) -> Step {
        match self.next_event().await {
            Event::Pay(request, answer) => self.answer_pay(request, answer).await,
            Event::Step(step) => step,
        }
    }

    /// Like [`next_step`](Self::next_step), but hands a `pay` to the caller,
    /// who answers it with [`answer_pay`](Self::answer_pay) or
    /// [`refuse_pay`](Self::refuse_pay): a player checks first that it can
    /// fetch the window's segments.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let Some(event) = self.client.next_event().await else { return Event::Step(Step::Disconnected) };
            match event {
                ServerEvent::Pay(request, answer) => return Event::Pay(request, answer),
                ServerEvent::Secret(secret) => {
                    if let Some(step) = self.take_secret(secret) {
                        return Event::Step(step);
                    }
                }
                ServerEvent::Error(error) => {
                    // An error that ended another client's session on this
                    // connection (1.1 names the client) is not about us.
                    if error.client_public_key.is_some_and(|key| key != self.session.public_key()) {
                        tracing::debug!(code = %error.code, "ignoring an error about another client's session");
                        continue;
                    }
                    // Back to idle; an unconfirmed payment may or may not
                    // be stored: `resume` asks the server.
                    self.pending = None;
                    return Event::Step(Step::Stopped(error));
                }
                ServerEvent::Unknown { event, .. } => tracing::debug!(%event, "ignoring unknown event"),
            }
        }
    }

    /// Checks a `pay` against the agreed price and the channel, and answers
    /// it with the signed successor, or refuses it.
    pub async fn answer_pay(&mut self, request: PayRequest, answer: PayAnswer) -> Step {
        match self.check_pay(&request) {
            Ok(next) => match answer.pay(&next).await {
                Ok(()) => {
                    self.pending = Some(next.clone());
                    Step::Paid { request, state: next }
                }
                Err(_) => Step::Disconnected,
            },
            Err(reason) => self.refuse_pay(request, answer, reason).await,
        }
    }

    /// Refuses a `pay`; the server answers by stopping the stream.
    pub async fn refuse_pay(&mut self, request: PayRequest, answer: PayAnswer, reason: ProtocolError) -> Step {
        let _ = answer.refuse(reason.clone()).await;
        Step::Refused { request, reason }
    }

    /// The signed successor that `request` asks for, if it is one we agree to.
    fn check_pay(&self, request: &PayRequest) -> Result<ChannelState, ProtocolError> {
        let refuse = |message: String| ProtocolError::new(ErrorCode::PaymentRefused, message);
        let channel = self.channel.as_ref().ok_or_else(|| refuse("no channel".into()))?;
        if self.pending.is_some() {
            return Err(refuse("the secret of the previous payment has not arrived".into()));
        }
        if channel.client_sequence_number > 0 && self.last_secret != Some(channel.client_sequence_number) {
            return Err(refuse("the secret of the previous payment has not arrived".into()));
        }
        if request.channel_id != channel.channel_id {
            return Err(refuse("that is not our channel".into()));
        }
        if request.client_sequence_number != channel.client_sequence_number + 1 {
            return Err(refuse(format!(
                "expected to pay sequence {}, asked for {}",
                channel.client_sequence_number + 1,
                request.client_sequence_number
            )));
        }
        if request.amount > self.info.window_price {
            return Err(refuse(format!("asked {} but the agreed price is {}", request.amount, self.info.window_price)));
        }
        let mut next = channel.pay(request.amount).ok_or_else(|| refuse("the balance cannot cover it".into()))?;
        next.sign(&self.domain, &self.session);
        Ok(next)
    }

    fn take_secret(&mut self, secret: Secret) -> Option<Step> {
        let sequence = secret.client_sequence_number;
        // A 1.1 server names the channel that paid: another channel's
        // secret (an older channel's re-sent final one, or another
        // client's on this connection) confirms nothing of ours, even if
        // its sequence number matches.
        let ours = self.pending.as_ref().or(self.channel.as_ref()).map(|state| state.channel_id);
        if let Some(channel_id) = secret.channel_id
            && Some(channel_id) != ours
        {
            tracing::debug!(%channel_id, sequence, "ignoring a secret of another channel");
            return None;
        }
        if let Some(pending) = self.pending.take_if(|p| p.client_sequence_number == sequence) {
            self.channel = Some(pending);
        }
        let confirmed = self.channel.as_ref().is_some_and(|c| c.client_sequence_number == sequence);
        if !confirmed {
            tracing::debug!(sequence, "ignoring a secret for a payment we do not know");
            return None;
        }
        self.last_secret = Some(sequence);
        if self.channel.as_ref().is_some_and(ChannelState::is_final) {
            // The last secret of the channel: forget it, back to idle.
            self.channel = None;
            return Some(Step::Final(secret));
        }
        Some(Step::Keys(secret))
    }
}
