//! The rules that decide whether a state is money the server can collect:
//! the opening state of a channel, the exact successor of a stored state,
//! and the `Play` authentication.
//!
//! Each check is a pure function returning the protocol's error code, so
//! the server and any client agree on why a state was refused.

use crate::eip712::{ChannelDomain, Play};
use crate::encoding::{Amount, MAX_SEQUENCE, PublicKey, Signature};
use crate::error::{ErrorCode, ProtocolError};
use crate::signing::recover;
use crate::state::ChannelState;
use alloy_primitives::B256;

/// Checks that `state` is signed by its own `client_public_key` under
/// `domain`.
///
/// # Errors
/// `invalid_signature` when it is not, or the signature is malformed.
pub fn verify_state_signature(state: &ChannelState, domain: &ChannelDomain) -> Result<(), ProtocolError> {
    verify(&state.signing_hash(domain), &state.client_signature, &state.client_public_key)
}

fn verify(digest: &B256, signature: &Signature, signer: &PublicKey) -> Result<(), ProtocolError> {
    match recover(digest, signature) {
        Ok(recovered) if recovered == *signer => Ok(()),
        Ok(_) => Err(ProtocolError::new(ErrorCode::InvalidSignature, "the signature is not by client_public_key")),
        Err(why) => Err(ProtocolError::new(ErrorCode::InvalidSignature, why)),
    }
}

/// Checks the first state of a channel as `newChannel` carries it: sequence
/// 0, nothing paid yet, a positive deposit, signed by its own key. The
/// on-chain checks (deposit, signer, payee, expiry) are the server's.
///
/// # Errors
/// `bad_request` for a state that is not an opening state (or whose
/// `channel_address` is not `domain`'s contract); `invalid_signature`.
pub fn check_opening_state(state: &ChannelState, domain: &ChannelDomain) -> Result<(), ProtocolError> {
    if state.channel_address != domain.contract {
        return Err(ProtocolError::bad_request(format!(
            "channel_address must be the server's channel contract {}",
            domain.contract.to_checksum(None)
        )));
    }
    if state.client_sequence_number != 0 {
        return Err(ProtocolError::bad_request("an opening state has client_sequence_number 0"));
    }
    if !state.server_balance.is_zero() {
        return Err(ProtocolError::bad_request("an opening state has server_balance \"0\""));
    }
    if state.client_balance.is_zero() {
        return Err(ProtocolError::new(ErrorCode::BadDeposit, "the channel holds no deposit"));
    }
    verify_state_signature(state, domain)
}

/// The successor rule: `next` is accepted as the payment of `amount` after
/// `prev` when it is the same channel, the very next sequence number, moves
/// exactly `amount` from the client to the server, and is signed by the
/// channel's key. Since `prev`'s balances sum to the deposit, so do
/// `next`'s.
///
/// # Errors
/// `bad_request` (another channel), `stale_sequence`, `wrong_amount`,
/// `invalid_signature`, in that order of checking.
pub fn check_successor(
    prev: &ChannelState,
    next: &ChannelState,
    amount: Amount,
    domain: &ChannelDomain,
) -> Result<(), ProtocolError> {
    if !next.same_channel(prev) {
        return Err(ProtocolError::bad_request(
            "the state is not of the channel being paid (channel_id, channel_address, client_wallet_address or client_public_key differ)",
        ));
    }
    // Saturating: a stored state at u64::MAX (never decoded, but the type allows it) is
    // refused below rather than overflowing.
    let expected_sequence = prev.client_sequence_number.saturating_add(1);
    if next.client_sequence_number != expected_sequence || expected_sequence > MAX_SEQUENCE {
        return Err(ProtocolError::new(
            ErrorCode::StaleSequence,
            format!("expected client_sequence_number {expected_sequence}, got {}", next.client_sequence_number),
        ));
    }
    let expected_server = prev.server_balance.checked_add(amount);
    let expected_client = prev.client_balance.checked_sub(amount);
    if expected_server != Some(next.server_balance) || expected_client != Some(next.client_balance) {
        return Err(ProtocolError::new(
            ErrorCode::WrongAmount,
            match (expected_client, expected_server) {
                (Some(client), Some(server)) => {
                    format!("a payment of {amount} leaves client_balance {client} and server_balance {server}")
                }
                _ => format!("the client balance cannot pay {amount}"),
            },
        ));
    }
    verify_state_signature(next, domain)
}

/// Checks a `play` request's signature: `Play(channelId, session)` signed by
/// `signer` under `domain`, where `session` is the connection's socket id.
///
/// # Errors
/// `invalid_signature` when the signature is not `signer`'s for exactly
/// this channel and session.
pub fn verify_play(
    domain: &ChannelDomain,
    channel_id: B256,
    session: &str,
    signature: &Signature,
    signer: &PublicKey,
) -> Result<(), ProtocolError> {
    verify(&play_signing_hash(domain, channel_id, session), signature, signer)
}

/// The digest a `play` request signs.
pub fn play_signing_hash(domain: &ChannelDomain, channel_id: B256, session: &str) -> B256 {
    domain.signing_hash(&Play { channelId: channel_id, session: session.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;
    use alloy_primitives::Address;

    /// Found by the `successor` fuzz target: `prev` at `u64::MAX` overflowed
    /// the expected sequence number instead of being refused.
    #[test]
    fn a_stored_state_at_the_largest_u64_is_refused_without_overflow() {
        let domain = ChannelDomain::new(31337, Address::repeat_byte(1));
        let key = SigningKey::from_bytes([1; 32]).unwrap();
        let prev = ChannelState {
            channel_id: B256::repeat_byte(2),
            channel_address: domain.contract,
            client_wallet_address: Address::repeat_byte(3),
            client_public_key: key.public_key(),
            client_balance: Amount::from(100),
            server_balance: Amount::ZERO,
            client_sequence_number: u64::MAX,
            client_signature: Signature([0; 65]),
        };
        for sequence in [0, MAX_SEQUENCE, u64::MAX] {
            let mut next = ChannelState {
                client_balance: Amount::from(90),
                server_balance: Amount::from(10),
                client_sequence_number: sequence,
                ..prev.clone()
            };
            next.sign(&domain, &key);
            let error = check_successor(&prev, &next, Amount::from(10), &domain).unwrap_err();
            assert_eq!(error.code, ErrorCode::StaleSequence, "{sequence}");
        }
    }
}
