//! The rules that decide whether a state is money the server can collect:
//! the opening state of a channel (and of a gasless `openChannel`), the
//! exact successor of a stored state, and the `Play` authentication.
//!
//! Each check is a pure function returning the protocol's error code, so
//! the server and any client agree on why a state was refused.

use crate::channel_id::channel_id;
use crate::eip712::{ChannelDomain, Play};
use crate::encoding::{Amount, MAX_SEQUENCE, PublicKey, Signature};
use crate::error::{ErrorCode, ProtocolError};
use crate::messages::OpenChannelRequest;
use crate::signing::recover;
use crate::state::ChannelState;
use crate::token::{Authorization, TokenSigningDomain, authorization_nonce};
use alloy_primitives::{Address, B256};

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

/// The authorization terms an `openChannel` request must have been signed
/// for: from the client wallet to the registry, the deposit, with the
/// nonce of the channel's terms (`payee`, the address of
/// `client_public_key` as signer, `expires_at`, `salt`).
pub fn open_channel_authorization(request: &OpenChannelRequest, payee: Address) -> Authorization {
    let state = &request.state;
    Authorization {
        from: state.client_wallet_address,
        to: state.channel_address,
        value: state.client_balance.0,
        valid_after: request.authorization.valid_after,
        valid_before: request.authorization.valid_before,
        nonce: authorization_nonce(payee, state.client_public_key.address(), request.expires_at, request.salt),
    }
}

/// Checks an `openChannel` request as far as it can without the chain or
/// a clock: the state is an opening state ([`check_opening_state`]), its
/// `channel_id` is the one the registry will assign for `payee` and the
/// request's `salt`, and the authorization is the client wallet's for
/// exactly these terms in the token's `token_domain`. Whether it is valid
/// now (`OpenAuthorization::is_usable_at`), unused, funded, and the
/// channel's expiry, are the server's to check against the chain.
///
/// # Errors
/// `unknown_channel` for a `channel_address` other than `domain`'s; those
/// of [`check_opening_state`]; `bad_request` for a wrong `channel_id`; `invalid_signature` for an authorization that is not the
/// client wallet's for these terms.
pub fn check_open_channel(
    request: &OpenChannelRequest,
    payee: Address,
    domain: &ChannelDomain,
    token_domain: &TokenSigningDomain,
) -> Result<(), ProtocolError> {
    let state = &request.state;
    // PROTOCOL.md names this case `unknown_channel` for `openChannel`: no
    // registry there could hold the channel.
    if state.channel_address != domain.contract {
        return Err(ProtocolError::new(
            ErrorCode::UnknownChannel,
            format!("channel_address must be the server's channel contract {}", domain.contract.to_checksum(None)),
        ));
    }
    check_opening_state(state, domain)?;
    let expected = channel_id(state.client_wallet_address, payee, request.salt);
    if state.channel_id != expected {
        return Err(ProtocolError::bad_request(format!(
            "channel_id must be keccak256(abi.encode(client_wallet_address, payee, salt)) = {expected:#x}"
        )));
    }
    open_channel_authorization(request, payee).verify(token_domain, &request.authorization.signature)
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
    use crate::messages::OpenAuthorization;
    use crate::signing::SigningKey;
    use alloy_primitives::U256;

    struct Open {
        domain: ChannelDomain,
        token: TokenSigningDomain,
        payee: Address,
        wallet: SigningKey,
        session: SigningKey,
    }

    impl Open {
        fn new() -> Self {
            Open {
                domain: ChannelDomain::new(31337, Address::repeat_byte(0x5f)),
                token: TokenSigningDomain::new("Tollstream Test Dollar", "1", 31337, Address::repeat_byte(0xe7)),
                payee: Address::repeat_byte(0x70),
                wallet: SigningKey::from_bytes([4; 32]).unwrap(),
                session: SigningKey::from_bytes([5; 32]).unwrap(),
            }
        }

        /// A request signed for exactly its terms, with `edit` applied to
        /// the authorization's terms before the wallet signs them.
        fn request_signing(&self, edit: impl FnOnce(&mut Authorization)) -> OpenChannelRequest {
            let salt = B256::repeat_byte(0x53);
            let mut state = ChannelState {
                channel_id: channel_id(self.wallet.address(), self.payee, salt),
                channel_address: self.domain.contract,
                client_wallet_address: self.wallet.address(),
                client_public_key: self.session.public_key(),
                client_balance: Amount::from(600_000),
                server_balance: Amount::ZERO,
                client_sequence_number: 0,
                client_signature: Signature([0; 65]),
            };
            state.sign(&self.domain, &self.session);
            let mut request = OpenChannelRequest {
                state,
                expires_at: 1_767_225_600,
                salt,
                authorization: OpenAuthorization {
                    valid_after: 0,
                    valid_before: 1_767_225_600,
                    signature: Signature([0; 65]),
                },
            };
            let mut terms = open_channel_authorization(&request, self.payee);
            edit(&mut terms);
            request.authorization.signature = terms.sign(&self.token, &self.wallet);
            request
        }

        fn check(&self, request: &OpenChannelRequest) -> Result<(), ProtocolError> {
            check_open_channel(request, self.payee, &self.domain, &self.token)
        }
    }

    #[test]
    fn an_open_channel_request_for_its_own_terms_passes() {
        let open = Open::new();
        let request = open.request_signing(|_| {});
        open.check(&request).unwrap();
        assert_eq!(open_channel_authorization(&request, open.payee).from, open.wallet.address());
    }

    #[test]
    fn an_open_channel_request_for_another_channel_id_is_a_bad_request() {
        let open = Open::new();
        let mut request = open.request_signing(|_| {});
        request.state.channel_id = channel_id(open.session.address(), open.payee, request.salt);
        request.state.sign(&open.domain, &open.session);
        assert_eq!(open.check(&request).unwrap_err().code, ErrorCode::BadRequest);
        // Another server as payee derives another id too.
        let request = open.request_signing(|_| {});
        let error = check_open_channel(&request, Address::repeat_byte(0x71), &open.domain, &open.token).unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
    }

    #[test]
    fn an_open_channel_request_runs_the_opening_state_checks() {
        let open = Open::new();
        let mut request = open.request_signing(|_| {});
        request.state.client_signature.0[10] ^= 1;
        assert_eq!(open.check(&request).unwrap_err().code, ErrorCode::InvalidSignature);
        let mut request = open.request_signing(|_| {});
        request.state.client_sequence_number = 1;
        request.state.sign(&open.domain, &open.session);
        assert_eq!(open.check(&request).unwrap_err().code, ErrorCode::BadRequest);
        let mut request = open.request_signing(|_| {});
        request.state.client_balance = Amount::ZERO;
        request.state.sign(&open.domain, &open.session);
        assert_eq!(open.check(&request).unwrap_err().code, ErrorCode::BadDeposit);
        // Another registry: PROTOCOL.md's `unknown_channel` for openChannel.
        let other = ChannelDomain::new(31337, Address::repeat_byte(0x5e));
        let mut request = open.request_signing(|_| {});
        request.state.sign(&other, &open.session);
        let error = check_open_channel(&request, open.payee, &other, &open.token).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownChannel);
    }

    #[test]
    fn an_authorization_for_other_terms_is_an_invalid_signature() {
        let open = Open::new();
        type Edit = fn(&mut Authorization);
        let refusals: [(&str, Edit); 6] = [
            ("value", |terms| terms.value += U256::from(1)),
            ("to", |terms| terms.to = Address::repeat_byte(0x99)),
            ("from", |terms| terms.from = Address::repeat_byte(0x98)),
            ("valid_before", |terms| terms.valid_before += 1),
            ("nonce of other terms", |terms| {
                terms.nonce = authorization_nonce(Address::ZERO, Address::ZERO, 1, B256::ZERO)
            }),
            ("nonce of the wallet as signer", |terms| {
                let wallet = SigningKey::from_bytes([4; 32]).unwrap().address();
                terms.nonce =
                    authorization_nonce(Address::repeat_byte(0x70), wallet, 1_767_225_600, B256::repeat_byte(0x53));
            }),
        ];
        for (what, edit) in refusals {
            let request = open.request_signing(edit);
            assert_eq!(open.check(&request).unwrap_err().code, ErrorCode::InvalidSignature, "{what}");
        }
        // The same terms signed by the session key, not the wallet.
        let mut request = open.request_signing(|_| {});
        request.authorization.signature =
            open_channel_authorization(&request, open.payee).sign(&open.token, &open.session);
        assert_eq!(open.check(&request).unwrap_err().code, ErrorCode::InvalidSignature);
        // Signed in another token's domain.
        let request = open.request_signing(|_| {});
        let other = TokenSigningDomain::new("USD Coin", "2", 31337, open.token.token());
        let error = check_open_channel(&request, open.payee, &open.domain, &other).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidSignature);
        // A changed expiry after signing changes the nonce.
        let mut request = open.request_signing(|_| {});
        request.expires_at += 1;
        assert_eq!(open.check(&request).unwrap_err().code, ErrorCode::InvalidSignature);
    }

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
