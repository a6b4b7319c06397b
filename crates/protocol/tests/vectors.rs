//! Checks the Rust EIP-712 code byte for byte against vectors computed by
//! viem (`tests/js/make-vectors.mjs`), an independent implementation.

use serde::Deserialize;
use tollstream_protocol::channel_id::channel_id;
use tollstream_protocol::eip712::ChannelDomain;
use tollstream_protocol::signing::recover;
use tollstream_protocol::successor::play_signing_hash;
use tollstream_protocol::{
    Address, B256, ChannelState, Signature, SigningKey, decode, verify_play, verify_state_signature,
};

#[derive(Deserialize)]
struct Vectors {
    keys: Vec<Key>,
    domains: Vec<Domain>,
    states: Vec<StateVector>,
    plays: Vec<PlayVector>,
    channel_ids: Vec<ChannelIdVector>,
}

#[derive(Deserialize)]
struct Key {
    private_key: String,
    public_key: String,
    address: String,
}

#[derive(Deserialize)]
struct Domain {
    chain_id: u64,
    verifying_contract: Address,
    separator: B256,
}

#[derive(Deserialize)]
struct StateVector {
    key_index: usize,
    domain_index: usize,
    state: serde_json::Value,
    is_final: bool,
    digest: B256,
}

#[derive(Deserialize)]
struct PlayVector {
    key_index: usize,
    domain_index: usize,
    channel_id: B256,
    session: String,
    digest: B256,
    signature: String,
}

#[derive(Deserialize)]
struct ChannelIdVector {
    client: Address,
    payee: Address,
    salt: B256,
    channel_id: B256,
}

fn vectors() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/eip712.json");
    let text = std::fs::read_to_string(path).expect("the committed vectors file");
    serde_json::from_str(&text).expect("vectors parse")
}

fn domain(vectors: &Vectors, index: usize) -> ChannelDomain {
    let d = &vectors.domains[index];
    ChannelDomain::new(d.chain_id, d.verifying_contract)
}

#[test]
fn keys_derive_the_same_public_keys_and_addresses() {
    let vectors = vectors();
    assert!(vectors.keys.len() >= 3);
    for key in &vectors.keys {
        let signing = SigningKey::from_hex(&key.private_key).unwrap();
        assert_eq!(signing.public_key().to_string(), key.public_key);
        assert_eq!(signing.address().to_checksum(None), key.address);
    }
}

#[test]
fn domain_separators_agree() {
    let vectors = vectors();
    for (index, d) in vectors.domains.iter().enumerate() {
        assert_eq!(domain(&vectors, index).separator(), d.separator);
    }
}

#[test]
fn states_hash_and_sign_byte_for_byte() {
    let vectors = vectors();
    assert!(vectors.states.len() >= 8);
    for vector in &vectors.states {
        let domain = domain(&vectors, vector.domain_index);
        let key = SigningKey::from_hex(&vectors.keys[vector.key_index].private_key).unwrap();
        let state: ChannelState = decode(vector.state.clone()).unwrap();
        // Parsing then printing gives viem's exact JSON back.
        assert_eq!(serde_json::to_value(&state).unwrap(), vector.state);
        assert_eq!(state.is_final(), vector.is_final);
        assert_eq!(state.signing_hash(&domain), vector.digest);
        verify_state_signature(&state, &domain).unwrap();
        // RFC 6979 on both sides: the signature itself is identical.
        let mut resigned = state.clone();
        resigned.sign(&domain, &key);
        assert_eq!(resigned.client_signature, state.client_signature);
    }
}

#[test]
fn plays_hash_and_sign_byte_for_byte() {
    let vectors = vectors();
    assert!(vectors.plays.len() >= 4);
    for vector in &vectors.plays {
        let domain = domain(&vectors, vector.domain_index);
        let key = SigningKey::from_hex(&vectors.keys[vector.key_index].private_key).unwrap();
        let signature: Signature = vector.signature.parse().unwrap();
        let digest = play_signing_hash(&domain, vector.channel_id, &vector.session);
        assert_eq!(digest, vector.digest);
        assert_eq!(key.sign_digest(&digest), signature);
        assert_eq!(recover(&digest, &signature).unwrap(), key.public_key());
        verify_play(&domain, vector.channel_id, &vector.session, &signature, &key.public_key()).unwrap();
    }
}

#[test]
fn channel_ids_are_the_contracts() {
    let vectors = vectors();
    for vector in &vectors.channel_ids {
        assert_eq!(channel_id(vector.client, vector.payee, vector.salt), vector.channel_id);
    }
}
