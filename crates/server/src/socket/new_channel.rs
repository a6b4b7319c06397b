//! `newChannel`: a client announces a channel it opened on chain; the
//! server checks it there before storing its opening state.

use super::{refused, reply};
use crate::state::AppState;
use crate::store::OpenState;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use tollstream_chain::{ChainError, ChannelStatus as OnChainStatus, OnChainChannel};
use tollstream_protocol::{Address, ChannelState, ErrorCode, ProtocolError, U256, check_opening_state};

pub async fn handle(
    socket: SocketRef,
    TryData(data): TryData<serde_json::Value>,
    ack: AckSender,
    State(state): State<AppState>,
) {
    let result = match state.limits.admit(&socket) {
        Ok(()) => new_channel(&state, &socket, reply::body(data)).await,
        Err(limited) => Err(limited),
    };
    reply::ack(ack, result);
}

async fn new_channel(
    state: &AppState,
    socket: &SocketRef,
    request: Result<ChannelState, ProtocolError>,
) -> Result<Option<ChannelState>, ProtocolError> {
    let opening = request?;
    check_opening_state(&opening, &state.domain)?;
    // Everything below may read the chain: a bounded number of lookups at
    // once, and ids the chain just said are unknown answered from memory.
    let head = state.clock.last_reading();
    if state.limits.known_unknown(&opening.channel_id, head) {
        return Err(unknown_channel());
    }
    let _lookup = state.limits.chain_lookup(socket).await?;

    // Announcing a channel again is idempotent.
    if let Some(stored) = state.store.channel(&opening.channel_id).await? {
        if stored.state.client_public_key != opening.client_public_key {
            return Err(ProtocolError::bad_request("that channel belongs to another client key"));
        }
        // A reorg removed its open: announced again, it counts once the
        // open is back on chain (PROTOCOL.md 1.1, "Confirmations").
        if state.opens.resolve(&stored) == OpenState::Missing {
            let onchain = state.chain.channel(opening.channel_id).await.map_err(chain_error(&opening))?;
            // Back on the very terms it was accepted on, or not at all.
            if !crate::confirmations::terms_match(&onchain, &stored, state.wallet.address()) {
                return Err(refused(
                    ErrorCode::UnknownChannel,
                    "the channel's open is not on chain as it was announced (a reorg removed it)",
                ));
            }
            let (open, block) =
                state.opens.locate(state.chain.as_ref(), opening.channel_id).await.map_err(chain_error(&opening))?;
            state.store.set_open(&opening.channel_id, open, block).await?;
            state.opens.track(opening.channel_id, open, block);
        }
        return super::latest_view(state, stored).await;
    }

    let onchain = state.chain.channel(opening.channel_id).await.map_err(chain_error(&opening))?;
    match onchain.status {
        OnChainStatus::Open => {}
        OnChainStatus::None => {
            state.limits.remember_unknown(opening.channel_id, head);
            return Err(unknown_channel());
        }
        OnChainStatus::Closed | OnChainStatus::Refunded => {
            return Err(refused(ErrorCode::ChannelNotOpen, "the channel is already closed or refunded"));
        }
    }
    accept(state, &opening, &onchain).await
}

/// Checks the registry's channel against the announced opening state and,
/// when it is the channel announced, stores it: the part of `newChannel`
/// that `openChannel` shares once its open is mined.
pub(super) async fn accept(
    state: &AppState,
    opening: &ChannelState,
    onchain: &OnChainChannel,
) -> Result<Option<ChannelState>, ProtocolError> {
    check_terms(state, opening, onchain).await?;
    // Accepted at once; until its open is deep enough, the streaming loop
    // sells at most `--unconfirmed-windows` windows on it.
    let (open, block) =
        state.opens.locate(state.chain.as_ref(), opening.channel_id).await.map_err(chain_error(opening))?;
    let settle_by = crate::settle::settle_by(onchain.expires_at, state.settle_margin);
    let stored = state.store.insert_channel(opening, onchain.expires_at, settle_by, open, block).await?;
    state.opens.track(opening.channel_id, stored.open_state, stored.open_block);
    tracing::info!(
        channel = %opening.channel_id,
        client = %opening.client_public_key,
        deposit = %opening.client_balance,
        expires_at = onchain.expires_at,
        open = open.as_str(),
        "channel announced"
    );
    super::latest_view(state, stored).await
}

/// The terms of `onchain` that make it a channel this server sells on:
/// its token, payee and signer, deposit, expiry and client.
async fn check_terms(state: &AppState, opening: &ChannelState, onchain: &OnChainChannel) -> Result<(), ProtocolError> {
    let info = &state.info;
    if onchain.token != info.token {
        return Err(refused(
            ErrorCode::BadDeposit,
            format!(
                "the channel holds token {}, but this server sells for {} ({})",
                onchain.token.to_checksum(None),
                info.token_symbol,
                info.token.to_checksum(None)
            ),
        ));
    }
    let payee = state.wallet.address();
    let signer = opening.client_public_key.address();
    if !onchain.is_for(payee, signer) {
        return Err(terms_mismatch(state, opening, payee).await);
    }
    if onchain.deposit != opening.client_balance.0 {
        return Err(refused(
            ErrorCode::BadDeposit,
            format!("the channel holds {} units, not client_balance {}", onchain.deposit, opening.client_balance),
        ));
    }
    let price = state.window_price.0;
    if price.is_zero() || onchain.deposit.is_zero() || onchain.deposit % price != U256::ZERO {
        return Err(refused(
            ErrorCode::BadDeposit,
            format!("the deposit must be a whole positive number of windows of {price} units"),
        ));
    }
    let now = state.clock.now().map_err(ProtocolError::from)?;
    if onchain.expires_at < now.saturating_add(state.min_channel_seconds) {
        return Err(refused(
            ErrorCode::ChannelExpiring,
            format!("the channel must stay open at least {} seconds", state.min_channel_seconds),
        ));
    }
    if onchain.client != opening.client_wallet_address {
        return Err(ProtocolError::bad_request("the channel was not opened by client_wallet_address"));
    }
    Ok(())
}

/// The registry keeps only a commitment to payee and signer; the `Opened`
/// event says which of the two differs. Without the event (older than the
/// log range, or the chain cannot say) the answer is `wrong_payee`, the
/// one a client can act on by asking this server's terms again.
async fn terms_mismatch(state: &AppState, opening: &ChannelState, payee: Address) -> ProtocolError {
    let head = state.chain.head().await.map(|h| h.number).unwrap_or_default();
    let from = head.saturating_add(1).saturating_sub(state.log_range_blocks);
    match state.chain.opened_terms(opening.channel_id, from, head).await {
        Ok(Some((opened_payee, _))) if opened_payee != payee => refused(
            ErrorCode::WrongPayee,
            format!("the channel pays {}, not this server", opened_payee.to_checksum(None)),
        ),
        Ok(Some(_)) => refused(
            ErrorCode::InvalidSignature,
            "the channel's signer on chain is not the address of client_public_key",
        ),
        _ => refused(ErrorCode::WrongPayee, "the channel is not for this server's payee and client_public_key"),
    }
}

fn unknown_channel() -> ProtocolError {
    refused(ErrorCode::UnknownChannel, "no such channel at channel_address")
}

/// Names the channel whose chain read failed; the conversion logs the
/// cause and tells the client only that the chain is unavailable.
fn chain_error(opening: &ChannelState) -> impl Fn(ChainError) -> ProtocolError + '_ {
    move |error| {
        tracing::debug!(channel = %opening.channel_id, "cannot read channel on chain");
        ProtocolError::from(error)
    }
}
