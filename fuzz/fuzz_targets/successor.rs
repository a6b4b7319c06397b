//! The rules of `tollstream_protocol::successor`: the opening-state rule, the
//! successor rule and `play` authentication.
//!
//! Builds a stored state, an amount and a proposed next state from the input
//! (honest payments, tampered ones, unrelated states, raw signatures), signs
//! with one of a few fixed keys under the right or another domain, and checks
//! that the rule never panics and answers exactly what PROTOCOL.md §4 says,
//! computed here independently: the first failing check's error code, in the
//! documented order, and `Ok` only when the next state is the same channel,
//! the very next sequence number (at most 2^53 − 1), moves exactly `amount`
//! to the server (so the deposit is conserved) and is signed by its own key
//! under the channel's domain.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tollstream_protocol::encoding::MAX_SEQUENCE;
use tollstream_protocol::successor::play_signing_hash;
use tollstream_protocol::{
    Address, Amount, B256, ChannelDomain, ChannelState, ErrorCode, PublicKey, Signature, SigningKey, U256,
    check_opening_state, check_successor, verify_play,
};

/// Signing is what costs here, so the keys are made once.
const KEYS: usize = 4;

fn keys() -> &'static [SigningKey] {
    static KEYS_CELL: OnceLock<Vec<SigningKey>> = OnceLock::new();
    KEYS_CELL
        .get_or_init(|| (1..=KEYS as u8).map(|byte| SigningKey::from_bytes([byte; 32]).expect("a valid key")).collect())
}

fn key(index: u8) -> &'static SigningKey {
    &keys()[usize::from(index) % KEYS]
}

#[derive(Arbitrary, Debug)]
struct Input {
    chain_id: u64,
    contract: [u8; 20],
    /// The key of the channel (the stored state's `client_public_key`).
    key: u8,
    prev: Fields,
    amount: Wei,
    next: Next,
    /// Also check the stored state against the opening-state rule.
    opening: Option<Signer>,
    play: Option<PlayInput>,
}

/// A state's fields other than the key and the signature.
#[derive(Arbitrary, Debug)]
struct Fields {
    channel_id: [u8; 32],
    /// Whether `channel_address` is the domain's contract or this one.
    other_contract: Option<[u8; 20]>,
    wallet: [u8; 20],
    client: Wei,
    server: Wei,
    seq: Seq,
}

/// Amounts, biased towards the ones payments use.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Wei {
    Small(u16),
    /// Whole windows of a 10^14 wei price.
    Windows(u8),
    Any([u64; 4]),
    Max,
}

impl Wei {
    fn amount(self) -> Amount {
        Amount(match self {
            Wei::Small(n) => U256::from(n),
            Wei::Windows(n) => U256::from(n) * U256::from(100_000_000_000_000u64),
            Wei::Any(limbs) => U256::from_limbs(limbs),
            Wei::Max => U256::MAX,
        })
    }
}

/// Sequence numbers, biased towards the edges.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Seq {
    Small(u8),
    NearMax(u8),
    Any(u64),
}

impl Seq {
    fn value(self) -> u64 {
        match self {
            Seq::Small(n) => u64::from(n),
            Seq::NearMax(n) => MAX_SEQUENCE - 2 + u64::from(n % 4),
            Seq::Any(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Signer {
    /// The channel's key, under the channel's domain.
    Channel,
    /// Another of the fixed keys (possibly the channel's), under the channel's domain.
    Key(u8),
    /// The channel's key under another domain (possibly the same one).
    Domain { chain_id: u64, contract: [u8; 20] },
}

#[derive(Arbitrary, Debug)]
enum Next {
    /// `prev.pay(amount)` (or `prev` itself when that is impossible).
    Honest(Signer),
    /// The same with one field changed after the fact.
    Tampered(Change, Signer),
    /// An unrelated state under the channel's key or another one.
    Other { fields: Fields, key: u8, signer: Signer },
    /// Any 65 bytes as the signature.
    Raw { fields: Fields, key: u8, signature: [u8; 65] },
}

#[derive(Arbitrary, Debug)]
enum Change {
    ChannelId([u8; 32]),
    Contract([u8; 20]),
    Wallet([u8; 20]),
    Key(u8),
    Client(Wei),
    Server(Wei),
    Seq(Seq),
}

#[derive(Arbitrary, Debug)]
struct PlayInput {
    session: String,
    signer: Signer,
    /// Sign another channel id or session than the one verified.
    other_channel: Option<[u8; 32]>,
    other_session: Option<String>,
}

/// How a signature was made, to tell independently of the code under test
/// whether it is valid.
enum Made {
    By { key: PublicKey, chain_id: u64, contract: Address },
    Unknown,
}

fn state(fields: &Fields, domain: &ChannelDomain, key: PublicKey) -> ChannelState {
    ChannelState {
        channel_id: B256::from(fields.channel_id),
        channel_address: fields.other_contract.map_or(domain.contract, Address::from),
        client_wallet_address: Address::from(fields.wallet),
        client_public_key: key,
        client_balance: fields.client.amount(),
        server_balance: fields.server.amount(),
        client_sequence_number: fields.seq.value(),
        client_signature: Signature([0; 65]),
    }
}

fn sign(state: &mut ChannelState, signer: Signer, channel_key: u8, domain: &ChannelDomain) -> Made {
    let (key, domain) = match signer {
        Signer::Channel => (key(channel_key), domain.clone()),
        Signer::Key(index) => (key(index), domain.clone()),
        Signer::Domain { chain_id, contract } => (key(channel_key), ChannelDomain::new(chain_id, contract.into())),
    };
    state.sign(&domain, key);
    Made::By { key: key.public_key(), chain_id: domain.chain_id, contract: domain.contract }
}

fn signature_is_valid(made: &Made, state: &ChannelState, domain: &ChannelDomain) -> bool {
    match made {
        Made::By { key, chain_id, contract } => {
            *key == state.client_public_key && *chain_id == domain.chain_id && *contract == domain.contract
        }
        // Nothing independent to compare with: trust recovery, which the
        // other cases check.
        Made::Unknown => tollstream_protocol::verify_state_signature(state, domain).is_ok(),
    }
}

fuzz_target!(|input: Input| {
    let domain = ChannelDomain::new(input.chain_id, Address::from(input.contract));
    let channel_key = key(input.key).public_key();
    let mut prev = state(&input.prev, &domain, channel_key);
    let amount = input.amount.amount();

    if let Some(signer) = input.opening {
        let made = sign(&mut prev, signer, input.key, &domain);
        check_opening(&prev, &domain, &made);
    }

    let (next, made) = match &input.next {
        Next::Honest(signer) => {
            let mut next = prev.pay(amount).unwrap_or_else(|| prev.clone());
            let made = sign(&mut next, *signer, input.key, &domain);
            (next, made)
        }
        Next::Tampered(change, signer) => {
            let mut next = prev.pay(amount).unwrap_or_else(|| prev.clone());
            match change {
                Change::ChannelId(id) => next.channel_id = B256::from(*id),
                Change::Contract(contract) => next.channel_address = Address::from(*contract),
                Change::Wallet(wallet) => next.client_wallet_address = Address::from(*wallet),
                Change::Key(index) => next.client_public_key = key(*index).public_key(),
                Change::Client(wei) => next.client_balance = wei.amount(),
                Change::Server(wei) => next.server_balance = wei.amount(),
                Change::Seq(seq) => next.client_sequence_number = seq.value(),
            }
            let made = sign(&mut next, *signer, input.key, &domain);
            (next, made)
        }
        Next::Other { fields, key: index, signer } => {
            let mut next = state(fields, &domain, key(*index).public_key());
            let made = sign(&mut next, *signer, input.key, &domain);
            (next, made)
        }
        Next::Raw { fields, key: index, signature } => {
            let mut next = state(fields, &domain, key(*index).public_key());
            next.client_signature = Signature(*signature);
            (next, Made::Unknown)
        }
    };
    check_next(&prev, &next, amount, &domain, &made);

    if let Some(play) = &input.play {
        check_play(play, &prev, input.key, &domain);
    }
});

fn check_opening(state: &ChannelState, domain: &ChannelDomain, made: &Made) {
    let expected = if state.channel_address != domain.contract
        || state.client_sequence_number != 0
        || !state.server_balance.is_zero()
    {
        Err(ErrorCode::BadRequest)
    } else if state.client_balance.is_zero() {
        Err(ErrorCode::BadDeposit)
    } else if !signature_is_valid(made, state, domain) {
        Err(ErrorCode::InvalidSignature)
    } else {
        Ok(())
    };
    let got = check_opening_state(state, domain).map_err(|e| e.code);
    assert_eq!(got, expected, "opening state {state:?}");
}

fn check_next(prev: &ChannelState, next: &ChannelState, amount: Amount, domain: &ChannelDomain, made: &Made) {
    let same_channel = next.channel_id == prev.channel_id
        && next.channel_address == prev.channel_address
        && next.client_wallet_address == prev.client_wallet_address
        && next.client_public_key == prev.client_public_key;
    let next_sequence = prev.client_sequence_number.checked_add(1) == Some(next.client_sequence_number)
        && next.client_sequence_number <= MAX_SEQUENCE;
    let moves_amount = prev.server_balance.checked_add(amount) == Some(next.server_balance)
        && prev.client_balance.checked_sub(amount) == Some(next.client_balance);
    let expected = if !same_channel {
        Err(ErrorCode::BadRequest)
    } else if !next_sequence {
        Err(ErrorCode::StaleSequence)
    } else if !moves_amount {
        Err(ErrorCode::WrongAmount)
    } else if !signature_is_valid(made, next, domain) {
        Err(ErrorCode::InvalidSignature)
    } else {
        Ok(())
    };
    let got = check_successor(prev, next, amount, domain).map_err(|e| e.code);
    assert_eq!(got, expected, "prev {prev:?}\nnext {next:?}\namount {amount}");
    if got.is_ok() {
        // What an accepted state means for the money: the deposit is the same.
        assert_eq!(next.deposit(), prev.deposit());
        assert_eq!(next.server_balance.checked_sub(prev.server_balance), Some(amount));
    }
}

fn check_play(play: &PlayInput, channel: &ChannelState, channel_key: u8, domain: &ChannelDomain) {
    let signed_channel = play.other_channel.map_or(channel.channel_id, B256::from);
    let signed_session = play.other_session.as_deref().unwrap_or(&play.session);
    let (key, sign_domain) = match play.signer {
        Signer::Channel => (key(channel_key), domain.clone()),
        Signer::Key(index) => (key(index), domain.clone()),
        Signer::Domain { chain_id, contract } => (key(channel_key), ChannelDomain::new(chain_id, contract.into())),
    };
    let signature = key.sign_digest(&play_signing_hash(&sign_domain, signed_channel, signed_session));
    let valid = key.public_key() == channel.client_public_key
        && signed_channel == channel.channel_id
        && signed_session == play.session
        && sign_domain == *domain;
    let got = verify_play(domain, channel.channel_id, &play.session, &signature, &channel.client_public_key);
    match got {
        Ok(()) => assert!(valid, "a play signature for something else was accepted: {play:?}"),
        Err(error) => {
            assert!(!valid, "a valid play signature was refused: {error:?}");
            assert_eq!(error.code, ErrorCode::InvalidSignature);
        }
    }
}
