//! Property tests of the successor rule and the wire encodings.

use proptest::prelude::*;
use tollstream_protocol::{
    Address, Amount, B256, ChannelDomain, ChannelState, ErrorCode, Signature, SigningKey, U256, check_opening_state,
    check_successor, decode,
};

fn domain() -> ChannelDomain {
    ChannelDomain::new(31337, Address::repeat_byte(0xc0))
}

/// A distinct valid key per seed: a leading 1 keeps every key far below the
/// curve order (a key of 32 bytes of 0xff would not be one).
fn session_key(seed: u8) -> SigningKey {
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    bytes[31] = seed;
    SigningKey::from_bytes(bytes).unwrap()
}

/// A signed opening state holding `windows` windows of `price`.
fn opening(key: &SigningKey, channel: B256, price: U256, windows: u64) -> ChannelState {
    let mut state = ChannelState {
        channel_id: channel,
        channel_address: domain().contract,
        client_wallet_address: Address::repeat_byte(0xa1),
        client_public_key: key.public_key(),
        client_balance: Amount(price * U256::from(windows)),
        server_balance: Amount::ZERO,
        client_sequence_number: 0,
        client_signature: Signature([0; 65]),
    };
    state.sign(&domain(), key);
    state
}

fn signed_successor(prev: &ChannelState, price: U256, key: &SigningKey) -> ChannelState {
    let mut next = prev.pay(Amount(price)).unwrap();
    next.sign(&domain(), key);
    next
}

fn price_strategy() -> impl Strategy<Value = U256> {
    prop_oneof![(1u64..1_000).prop_map(U256::from), (1u128..u128::MAX).prop_map(U256::from),]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_chain_of_payments_keeps_the_deposit_and_ends_final_at_zero(
        seed in 1u8..255, channel in any::<[u8; 32]>(), price in price_strategy(), windows in 1u64..40,
    ) {
        let key = session_key(seed);
        let first = opening(&key, B256::from(channel), price, windows);
        let deposit = first.deposit().unwrap();
        prop_assert!(check_opening_state(&first, &domain()).is_ok());
        let mut stored = first;
        for paid in 1..=windows {
            prop_assert!(!stored.is_final());
            let next = signed_successor(&stored, price, &key);
            check_successor(&stored, &next, Amount(price), &domain()).unwrap();
            prop_assert_eq!(next.deposit(), Some(deposit));
            prop_assert_eq!(next.server_balance, Amount(price * U256::from(paid)));
            prop_assert_eq!(next.is_final(), paid == windows);
            stored = next;
        }
        prop_assert!(stored.client_balance.is_zero());
        // Nothing is left to pay with.
        prop_assert!(stored.pay(Amount(price)).is_none());
    }

    #[test]
    fn every_single_field_mutation_is_refused_with_its_code(
        seed in 1u8..255, price in price_strategy(), windows in 2u64..10, paid in 0u64..1,
        delta in 1u64..1000, byte in 0usize..65, flip in 1u8..=255, channel_byte in 0usize..32,
    ) {
        let key = session_key(seed);
        let mut stored = opening(&key, B256::repeat_byte(0x42), price, windows);
        for _ in 0..paid {
            stored = signed_successor(&stored, price, &key);
        }
        let valid = signed_successor(&stored, price, &key);
        let check = |next: &ChannelState| check_successor(&stored, next, Amount(price), &domain());
        prop_assert!(check(&valid).is_ok());

        let code = |next: ChannelState| check(&next).unwrap_err().code;
        let resigned = |mut next: ChannelState| { next.sign(&domain(), &key); next };

        // Sequence numbers other than prev + 1, even when properly signed.
        let mut skipped = valid.clone();
        skipped.client_sequence_number += delta;
        prop_assert_eq!(code(resigned(skipped)), ErrorCode::StaleSequence);
        let replayed = stored.clone();
        prop_assert_eq!(code(replayed), ErrorCode::StaleSequence);

        // Either balance moved by another amount.
        let mut client = valid.clone();
        client.client_balance = Amount(client.client_balance.0.wrapping_add(U256::from(delta)));
        prop_assert_eq!(code(resigned(client)), ErrorCode::WrongAmount);
        let mut server = valid.clone();
        server.server_balance = Amount(server.server_balance.0.wrapping_sub(U256::from(delta)));
        prop_assert_eq!(code(resigned(server)), ErrorCode::WrongAmount);

        // Another channel.
        let mut other = valid.clone();
        other.channel_id.0[channel_byte] ^= flip;
        prop_assert_eq!(code(resigned(other)), ErrorCode::BadRequest);

        // A corrupted signature.
        let mut corrupted = valid.clone();
        corrupted.client_signature.0[byte] ^= flip;
        prop_assert_eq!(code(corrupted), ErrorCode::InvalidSignature);

        // Signed by another key.
        let mut forged = valid.clone();
        forged.sign(&domain(), &session_key(seed.wrapping_add(1)));
        prop_assert_eq!(code(forged), ErrorCode::InvalidSignature);
    }

    #[test]
    fn states_round_trip_through_json(
        seed in 1u8..255, channel in any::<[u8; 32]>(), client in any::<[u8; 32]>(),
        server in any::<[u8; 32]>(), sequence in 0u64..(1 << 53), wallet in any::<[u8; 20]>(),
    ) {
        let key = session_key(seed);
        let mut state = ChannelState {
            channel_id: B256::from(channel),
            channel_address: domain().contract,
            client_wallet_address: Address::from(wallet),
            client_public_key: key.public_key(),
            client_balance: Amount(U256::from_be_bytes(client)),
            server_balance: Amount(U256::from_be_bytes(server)),
            client_sequence_number: sequence,
            client_signature: Signature([0; 65]),
        };
        state.sign(&domain(), &key);
        let json = serde_json::to_value(&state).unwrap();
        let back: ChannelState = decode(json.clone()).unwrap();
        prop_assert_eq!(&back, &state);
        // Emitted addresses are checksummed, amounts decimal strings.
        prop_assert_eq!(json["client_wallet_address"].as_str().unwrap(), state.client_wallet_address.to_checksum(None));
        prop_assert_eq!(json["client_balance"].as_str().unwrap(), state.client_balance.to_string());
    }
}

#[test]
fn an_opening_state_must_be_sequence_zero_with_nothing_paid() {
    let key = session_key(9);
    let valid = opening(&key, B256::repeat_byte(1), U256::from(100), 3);
    check_opening_state(&valid, &domain()).unwrap();

    let paid = signed_successor(&valid, U256::from(100), &key);
    assert_eq!(check_opening_state(&paid, &domain()).unwrap_err().code, ErrorCode::BadRequest);

    let mut elsewhere = valid.clone();
    elsewhere.channel_address = Address::repeat_byte(0xee);
    assert_eq!(check_opening_state(&elsewhere, &domain()).unwrap_err().code, ErrorCode::BadRequest);

    let empty = opening(&key, B256::repeat_byte(1), U256::from(100), 0);
    assert_eq!(check_opening_state(&empty, &domain()).unwrap_err().code, ErrorCode::BadDeposit);

    let mut forged = valid.clone();
    forged.sign(&domain(), &session_key(10));
    assert_eq!(check_opening_state(&forged, &domain()).unwrap_err().code, ErrorCode::InvalidSignature);
}

#[test]
fn a_payment_larger_than_the_balance_is_a_wrong_amount() {
    let key = session_key(4);
    let stored = opening(&key, B256::repeat_byte(2), U256::from(100), 1);
    let mut next = stored.clone();
    next.client_sequence_number = 1;
    next.sign(&domain(), &key);
    let error = check_successor(&stored, &next, Amount::from(200), &domain()).unwrap_err();
    assert_eq!(error.code, ErrorCode::WrongAmount);
}
