//! `openChannel` (PROTOCOL.md 1.1): a gasless open. The viewer signs an
//! EIP-3009 authorization of its deposit for exactly the channel's terms;
//! the server checks everything it can, simulates the open, sends it from
//! its own wallet (paying the gas), waits until it is mined and then
//! answers as `newChannel` would.
//!
//! What bounds the gas a stranger can make the server spend:
//! - requests that pass every check count against a bucket of two a
//!   minute per connection and ten a minute per client address (refused
//!   requests cost the server no gas and draw on the request bucket only);
//! - `--gasless-opens` opens are sent and waited for at once in all;
//! - a simulation must succeed before anything is sent, and the deposit is
//!   the wallet's own money locked in the channel, so a stranger's open
//!   costs the stranger a deposit as well.

use super::new_channel::accept;
use super::{refused, reply};
use crate::state::AppState;
use alloy_primitives::Bytes;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::socket::Sid;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;
use tollstream_chain::{AuthorizedOpen, ChainError, ChannelStatus as OnChainStatus, PayeeCall, Sent};
use tollstream_protocol::token::TokenSigningDomain;
use tollstream_protocol::{
    Address, B256, ChannelState, ErrorCode, OPEN_AUTHORIZATION_MIN_VALIDITY_SECONDS, OpenChannelRequest, ProtocolError,
    U256, check_open_channel,
};

/// Gasless opens that pass the checks, per connection per minute (the
/// protocol's floor is two).
const OPENS_PER_MINUTE_PER_CONNECTION: u32 = 2;
/// The same per client address (an IPv4 address or an IPv6 /64).
const OPENS_PER_MINUTE_PER_ADDRESS: u32 = 10;
/// How long the server waits for its open to be mined; clients wait at
/// least 120 s for the reply and then send the request again.
const MINED_WITHIN: Duration = Duration::from_secs(90);
/// How often the receipt is looked for meanwhile.
const RECEIPT_POLL: Duration = Duration::from_millis(250);

/// The server's gasless opens: their rate limits, their cap, and the
/// requests for one channel that arrive together.
pub struct GaslessOpens {
    per_connection: moka::sync::Cache<Sid, Arc<DefaultDirectRateLimiter>>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    in_flight: Arc<Semaphore>,
    /// Client wallet → the lock its opens are checked and sent under, one
    /// at a time: identical requests arriving together wait for the first
    /// and then find the channel, and opens of one wallet on different
    /// channels cannot all pass the balance check and simulation against
    /// the same balance, leaving the server to pay for the ones that
    /// revert.
    opening: Mutex<HashMap<Address, Arc<tokio::sync::Mutex<()>>>>,
}

impl GaslessOpens {
    /// At most `in_flight` opens sent and waited for at once.
    pub fn new(in_flight: u32) -> GaslessOpens {
        let per_address = Quota::per_minute(NonZeroU32::new(OPENS_PER_MINUTE_PER_ADDRESS).expect("non-zero"));
        GaslessOpens {
            per_connection: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            per_address: RateLimiter::keyed(per_address),
            in_flight: Arc::new(Semaphore::new(in_flight.max(1) as usize)),
            opening: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one gasless open from the connection's and the address's
    /// allowance; `rate_limited` when either is spent.
    fn admit(&self, sid: Sid, address: Option<IpAddr>) -> Result<(), ProtocolError> {
        let connection = self.per_connection.get_with(sid, || {
            let quota = Quota::per_minute(NonZeroU32::new(OPENS_PER_MINUTE_PER_CONNECTION).expect("non-zero"));
            Arc::new(RateLimiter::direct(quota))
        });
        let limited =
            || refused(ErrorCode::RateLimited, "too many gasless opens; wait a minute or open the channel yourself");
        if connection.check().is_err() {
            return Err(limited());
        }
        if let Some(address) = address
            && self.per_address.check_key(&crate::listener::client_key(address)).is_err()
        {
            return Err(limited());
        }
        Ok(())
    }

    fn lock_for(&self, wallet: Address) -> Arc<tokio::sync::Mutex<()>> {
        let mut opening = self.opening.lock().unwrap_or_else(PoisonError::into_inner);
        opening.entry(wallet).or_default().clone()
    }

    fn forget(&self, wallet: &Address, lock: &Arc<tokio::sync::Mutex<()>>) {
        let mut opening = self.opening.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the last holder removes it; a waiter still holds a clone.
        if Arc::strong_count(lock) <= 2 {
            opening.remove(wallet);
        }
    }
}

pub async fn handle(
    socket: SocketRef,
    TryData(data): TryData<serde_json::Value>,
    ack: AckSender,
    State(state): State<AppState>,
) {
    let result = match state.limits.admit(&socket) {
        Ok(()) => open_channel(&state, &socket, reply::body(data)).await,
        Err(limited) => Err(limited),
    };
    reply::ack(ack, result);
}

async fn open_channel(
    state: &AppState,
    socket: &SocketRef,
    request: Result<OpenChannelRequest, ProtocolError>,
) -> Result<Option<ChannelState>, ProtocolError> {
    let request = request?;
    let info = &state.info;
    let Some(token_domain) = info.token_domain.as_ref().filter(|_| info.gasless_open) else {
        return Err(ProtocolError::bad_request("this server does not offer gasless opens (gasless_open is false)"));
    };
    let token_domain = TokenSigningDomain::from_token_domain(token_domain, info.chain_id, info.token);
    let payee = state.wallet.address();
    check_open_channel(&request, payee, &state.domain, &token_domain)?;
    let wallet = request.state.client_wallet_address;

    // One open per wallet at a time: identical requests arriving together
    // share one transaction (the second waits here, then finds the
    // channel stored or on chain).
    let lock = state.gasless.lock_for(wallet);
    let result = async {
        let _turn = lock.lock().await;
        open_once(state, socket, &request).await
    }
    .await;
    state.gasless.forget(&wallet, &lock);
    result
}

async fn open_once(
    state: &AppState,
    socket: &SocketRef,
    request: &OpenChannelRequest,
) -> Result<Option<ChannelState>, ProtocolError> {
    let opening = &request.state;
    let id = opening.channel_id;
    // Already held: answered as newChannel would.
    if let Some(stored) = state.store.channel(&id).await? {
        if stored.state.client_public_key != opening.client_public_key {
            return Err(ProtocolError::bad_request("that channel belongs to another client key"));
        }
        return super::latest_view(state, stored).await;
    }
    // Already on chain (a third party sent the same authorization, or this
    // server did before a restart): continue as newChannel.
    let onchain = {
        let _lookup = state.limits.chain_lookup(socket).await?;
        state.chain.channel(id).await.map_err(ProtocolError::from)?
    };
    match onchain.status {
        OnChainStatus::None => {}
        OnChainStatus::Open => return accept_gasless(state, opening, &onchain).await,
        OnChainStatus::Closed | OnChainStatus::Refunded => {
            return Err(refused(ErrorCode::ChannelNotOpen, "the channel is already closed or refunded"));
        }
    }

    check_terms_off_chain(state, request)?;
    check_funds(state, request).await?;
    let call = PayeeCall::Registry(open_calldata(state, request));
    let gas_limit = state.chain.estimate_call(&call).await.map_err(simulation_refused)?;
    state.gasless.admit(socket.id, peer_address(socket))?;
    let Ok(_sending) = state.gasless.in_flight.clone().try_acquire_owned() else {
        return Err(refused(ErrorCode::RateLimited, "the server is sending as many gasless opens as it allows; retry"));
    };

    let (tx, sent) = state.tx_manager.start_call(&call, gas_limit).await.map_err(ProtocolError::from)?;
    tracing::info!(channel = %id, tx = %tx.hash, nonce = tx.nonce, "gasless open sent");
    if let Err(error) = sent.and_then(refusal) {
        state.tx_manager.release(tx.nonce).await;
        tracing::warn!(channel = %id, tx = %tx.hash, %error, "the node refused the gasless open");
        return Err(refused(ErrorCode::ChainUnavailable, "the chain did not take the open; retry"));
    }
    let Some(success) = wait_mined(state, tx.hash).await else {
        tracing::warn!(channel = %id, tx = %tx.hash, "gasless open not mined in time");
        // Still in the pool, maybe: its nonce stays taken until the chain
        // uses it, so no close is signed over it meanwhile.
        release_when_used(state, tx.nonce);
        return Err(refused(ErrorCode::ChainUnavailable, "the open is not mined yet; send the request again"));
    };
    state.tx_manager.release(tx.nonce).await;
    // Mined, or reverted because someone opened it first: the chain says.
    let onchain = state.chain.channel(id).await.map_err(ProtocolError::from)?;
    if !success {
        tracing::warn!(channel = %id, tx = %tx.hash, "gasless open reverted");
        if onchain.status == OnChainStatus::Open && onchain.token != state.info.token {
            // Someone copied the authorization into an open with another
            // token first: the id is taken, the viewer's funds are not.
            return Err(ProtocolError::bad_request(
                "another open took this channel id first; sign again with a new salt",
            ));
        }
    }
    if onchain.status != OnChainStatus::Open {
        return Err(ProtocolError::bad_request("the open failed on chain; the authorization may be used or expired"));
    }
    if success {
        state.metrics.gasless_opens.inc();
    }
    accept_gasless(state, opening, &onchain).await
}

/// Stores the channel as `newChannel` would, marked as opened without the
/// client's gas (so the server also returns its deposit when it holds none
/// of the server's money).
async fn accept_gasless(
    state: &AppState,
    opening: &ChannelState,
    onchain: &tollstream_chain::OnChainChannel,
) -> Result<Option<ChannelState>, ProtocolError> {
    let reply = accept(state, opening, onchain).await?;
    state.store.mark_gasless(&opening.channel_id).await?;
    Ok(reply)
}

/// The checks `newChannel` makes of the chain's terms that need no chain:
/// the deposit, the expiry, and the authorization's window, all against
/// the chain clock.
fn check_terms_off_chain(state: &AppState, request: &OpenChannelRequest) -> Result<(), ProtocolError> {
    let price = state.window_price.0;
    let deposit = request.state.client_balance.0;
    if price.is_zero() || deposit.is_zero() || deposit % price != U256::ZERO {
        return Err(refused(
            ErrorCode::BadDeposit,
            format!("the deposit must be a whole positive number of windows of {price} units"),
        ));
    }
    let now = state.clock.now().map_err(ProtocolError::from)?;
    if request.expires_at < now.saturating_add(state.min_channel_seconds) {
        return Err(refused(
            ErrorCode::ChannelExpiring,
            format!("the channel must stay open at least {} seconds", state.min_channel_seconds),
        ));
    }
    if !request.authorization.is_usable_at(now) {
        return Err(ProtocolError::bad_request(format!(
            "the authorization must be valid now (send valid_after 0) and for at least \
             {OPEN_AUTHORIZATION_MIN_VALIDITY_SECONDS} more seconds"
        )));
    }
    Ok(())
}

/// The wallet holds the deposit and has not used this authorization.
async fn check_funds(state: &AppState, request: &OpenChannelRequest) -> Result<(), ProtocolError> {
    let opening = &request.state;
    let token = state.info.token;
    let wallet = opening.client_wallet_address;
    let balance = state.chain.token_balance(token, wallet).await.map_err(ProtocolError::from)?;
    if balance < opening.client_balance.0 {
        return Err(refused(
            ErrorCode::BadDeposit,
            format!("the wallet holds {balance} units of {}, less than the deposit", state.info.token_symbol),
        ));
    }
    let nonce = tollstream_protocol::token::authorization_nonce(
        state.wallet.address(),
        opening.client_public_key.address(),
        request.expires_at,
        request.salt,
    );
    if state.chain.authorization_used(token, wallet, nonce).await.map_err(ProtocolError::from)? {
        return Err(ProtocolError::bad_request("the authorization was already used or cancelled"));
    }
    Ok(())
}

/// `openWithAuthorization` with the request's terms.
fn open_calldata(state: &AppState, request: &OpenChannelRequest) -> Bytes {
    let opening = &request.state;
    let authorization = &request.authorization;
    AuthorizedOpen {
        token: state.info.token,
        client: opening.client_wallet_address,
        amount: opening.client_balance.0,
        payee: state.wallet.address(),
        signer: opening.client_public_key.address(),
        expires_at: request.expires_at,
        salt: request.salt,
        valid_after: authorization.valid_after,
        valid_before: authorization.valid_before,
        signature: Bytes::copy_from_slice(&authorization.signature.0),
    }
    .calldata()
}

/// A simulation that fails is the request's fault unless the chain could
/// not be asked.
fn simulation_refused(error: ChainError) -> ProtocolError {
    if error.is_transient() {
        return ProtocolError::from(error);
    }
    tracing::debug!(%error, "gasless open would fail");
    ProtocolError::bad_request(format!("the open would fail on chain: {error}"))
}

/// How the node took the open: only a refusal that leaves nothing in the
/// pool is an error.
fn refusal(sent: Sent) -> Result<(), ChainError> {
    match sent {
        Sent::Accepted | Sent::AlreadyKnown => Ok(()),
        other => Err(ChainError::Rejected(format!("{other:?}"))),
    }
}

/// Whether `tx` was mined successfully, polling for its receipt for at
/// most [`MINED_WITHIN`]; `None` when it is not mined by then.
async fn wait_mined(state: &AppState, tx: B256) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + MINED_WITHIN;
    while tokio::time::Instant::now() < deadline {
        match state.chain.receipt(tx).await {
            Ok(Some(inclusion)) => return Some(inclusion.success),
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, %tx, "cannot read the gasless open's receipt yet"),
        }
        tokio::time::sleep(RECEIPT_POLL).await;
    }
    None
}

/// How long a gasless open's nonce stays taken after the server stopped
/// waiting for it, at most: then the transaction manager may fill it.
const NONCE_HELD_FOR: Duration = Duration::from_secs(600);

/// Releases `nonce` once the payee's transaction count passes it (the open
/// or anything else was mined there), or after [`NONCE_HELD_FOR`].
fn release_when_used(state: &AppState, nonce: u64) {
    let (chain, manager) = (state.chain.clone(), state.tx_manager.clone());
    tokio::spawn(async move {
        let payee = manager.payee();
        let deadline = tokio::time::Instant::now() + NONCE_HELD_FOR;
        while tokio::time::Instant::now() < deadline {
            if chain.nonce(payee).await.is_ok_and(|used| used > nonce) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        manager.release(nonce).await;
    });
}

fn peer_address(socket: &SocketRef) -> Option<IpAddr> {
    use crate::listener::PeerAddr;
    use axum::extract::ConnectInfo;
    socket.req_parts().extensions.get::<ConnectInfo<PeerAddr>>().map(|ConnectInfo(PeerAddr(peer))| peer.ip())
}
