//! The server's per-payment work in the protocol crate: the successor rule
//! (one EIP-712 digest and one libsecp256k1 recovery) and its parts.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tollstream_protocol::signing::recover;
use tollstream_protocol::{
    Address, Amount, B256, ChannelDomain, ChannelState, Signature, SigningKey, U256, check_successor, decode,
};

fn setup() -> (ChannelDomain, ChannelState, ChannelState) {
    let domain = ChannelDomain::new(31337, Address::repeat_byte(0xc0));
    let key = SigningKey::from_bytes([7; 32]).unwrap();
    let mut stored = ChannelState {
        channel_id: B256::repeat_byte(1),
        channel_address: domain.contract,
        client_wallet_address: Address::repeat_byte(0xa1),
        client_public_key: key.public_key(),
        client_balance: Amount(U256::from(1_000_000_000_000_000u64)),
        server_balance: Amount::ZERO,
        client_sequence_number: 0,
        client_signature: Signature([0; 65]),
    };
    stored.sign(&domain, &key);
    let mut next = stored.pay(Amount::from(100_000_000_000_000u64)).unwrap();
    next.sign(&domain, &key);
    (domain, stored, next)
}

fn successor(c: &mut Criterion) {
    let (domain, stored, next) = setup();
    let price = Amount::from(100_000_000_000_000u64);
    c.bench_function("check_successor", |b| {
        b.iter(|| check_successor(black_box(&stored), black_box(&next), price, &domain).unwrap())
    });
    c.bench_function("eip712_digest", |b| b.iter(|| black_box(&next).signing_hash(&domain)));
    let digest = next.signing_hash(&domain);
    c.bench_function("recover_signer_libsecp256k1", |b| {
        b.iter(|| recover(black_box(&digest), black_box(&next.client_signature)).unwrap())
    });
    // The alternative to recovery when the signer is known: a plain ECDSA
    // verification against the channel's key, parsed once. It cannot tell
    // which `v` the contract's `ecrecover` needs, so it is measured, not used.
    let known = secp256k1::PublicKey::from_byte_array_compressed(next.client_public_key.0).unwrap();
    let compact = secp256k1::ecdsa::Signature::from_compact(&next.client_signature.0[..64]).unwrap();
    c.bench_function("verify_known_signer_libsecp256k1", |b| {
        b.iter(|| {
            secp256k1::SECP256K1
                .verify_ecdsa(secp256k1::Message::from_digest(black_box(digest).0), black_box(&compact), &known)
                .unwrap()
        })
    });
    c.bench_function("decompress_public_key", |b| {
        b.iter(|| secp256k1::PublicKey::from_byte_array_compressed(black_box(next.client_public_key.0)).unwrap())
    });
    let json = serde_json::to_value(&next).unwrap();
    c.bench_function("decode_state_json", |b| b.iter(|| decode::<ChannelState>(black_box(json.clone())).unwrap()));
}

criterion_group!(benches, successor);
criterion_main!(benches);
