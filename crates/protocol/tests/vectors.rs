//! Checks the Rust EIP-712 code byte for byte against vectors computed by
//! viem (`tests/js/make-vectors.mjs`), an independent implementation.

use alloy_sol_types::SolStruct;
use serde::Deserialize;
use tollstream_protocol::channel_id::channel_id;
use tollstream_protocol::eip712::ChannelDomain;
use tollstream_protocol::signing::recover;
use tollstream_protocol::successor::{open_channel_authorization, play_signing_hash};
use tollstream_protocol::token::Permit;
use tollstream_protocol::{
    Address, Amount, B256, ChannelState, OpenChannelRequest, Signature, SigningKey, TokenSigningDomain,
    authorization_nonce, check_open_channel, decode, verify_play, verify_state_signature,
};

#[derive(Deserialize)]
struct Vectors {
    keys: Vec<Key>,
    domains: Vec<Domain>,
    states: Vec<StateVector>,
    plays: Vec<PlayVector>,
    channel_ids: Vec<ChannelIdVector>,
    token_domains: Vec<TokenDomainVector>,
    authorization_nonces: Vec<NonceVector>,
    open_channels: Vec<OpenChannelVector>,
    permits: Vec<PermitVector>,
}

#[derive(Deserialize)]
struct TokenDomainVector {
    name: String,
    version: String,
    chain_id: u64,
    verifying_contract: Address,
    separator: B256,
}

#[derive(Deserialize)]
struct NonceVector {
    payee: Address,
    signer: Address,
    /// A decimal string: uint64 expiries beyond 2^53 - 1 are in the set.
    expires_at: String,
    salt: B256,
    nonce: B256,
}

#[derive(Deserialize)]
struct OpenChannelVector {
    token_domain_index: usize,
    domain_index: usize,
    wallet_key_index: usize,
    session_key_index: usize,
    payee: Address,
    channel_id: B256,
    nonce: B256,
    struct_hash: B256,
    digest: B256,
    request: serde_json::Value,
}

#[derive(Deserialize)]
struct PermitVector {
    key_index: usize,
    token_domain_index: usize,
    owner: Address,
    spender: Address,
    value: Amount,
    nonce: Amount,
    deadline: Amount,
    struct_hash: B256,
    digest: B256,
    signature: Signature,
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

fn token_domain(vectors: &Vectors, index: usize) -> TokenSigningDomain {
    let d = &vectors.token_domains[index];
    TokenSigningDomain::new(d.name.clone(), d.version.clone(), d.chain_id, d.verifying_contract)
}

fn key(vectors: &Vectors, index: usize) -> SigningKey {
    SigningKey::from_hex(&vectors.keys[index].private_key).unwrap()
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

#[test]
fn token_domain_separators_agree() {
    let vectors = vectors();
    assert!(vectors.token_domains.len() >= 2);
    for (index, d) in vectors.token_domains.iter().enumerate() {
        assert_eq!(token_domain(&vectors, index).separator(), d.separator, "{}", d.name);
    }
}

#[test]
fn authorization_nonces_are_the_registrys() {
    let vectors = vectors();
    assert!(vectors.authorization_nonces.len() >= 3);
    for vector in &vectors.authorization_nonces {
        let expires_at: u64 = vector.expires_at.parse().unwrap();
        assert_eq!(authorization_nonce(vector.payee, vector.signer, expires_at, vector.salt), vector.nonce);
    }
}

#[test]
fn open_channel_requests_check_hash_and_sign_byte_for_byte() {
    let vectors = vectors();
    assert!(vectors.open_channels.len() >= 3);
    for vector in &vectors.open_channels {
        let domain = domain(&vectors, vector.domain_index);
        let token = token_domain(&vectors, vector.token_domain_index);
        let wallet = key(&vectors, vector.wallet_key_index);
        let session = key(&vectors, vector.session_key_index);
        let request: OpenChannelRequest = decode(vector.request.clone()).unwrap();
        // Parsing then printing gives viem's exact JSON back.
        assert_eq!(serde_json::to_value(&request).unwrap(), vector.request);

        // A token channel's id is every channel's.
        assert_eq!(channel_id(wallet.address(), vector.payee, request.salt), vector.channel_id);
        assert_eq!(request.state.channel_id, vector.channel_id);
        assert_eq!(
            authorization_nonce(vector.payee, session.address(), request.expires_at, request.salt),
            vector.nonce
        );

        let authorization = open_channel_authorization(&request, vector.payee);
        assert_eq!(authorization.nonce, vector.nonce);
        assert_eq!(authorization.typed().eip712_hash_struct(), vector.struct_hash);
        assert_eq!(authorization.signing_hash(&token), vector.digest);
        // RFC 6979 on both sides: the signature itself is identical.
        assert_eq!(authorization.sign(&token, &wallet), request.authorization.signature);
        assert_eq!(authorization.recover_signer(&token, &request.authorization.signature), Ok(wallet.address()));
        let mut state = request.state.clone();
        state.sign(&domain, &session);
        assert_eq!(state.client_signature, request.state.client_signature);

        check_open_channel(&request, vector.payee, &domain, &token).unwrap();
    }
}

#[test]
fn permits_hash_and_sign_byte_for_byte() {
    let vectors = vectors();
    assert!(vectors.permits.len() >= 3);
    for vector in &vectors.permits {
        let token = token_domain(&vectors, vector.token_domain_index);
        let owner = key(&vectors, vector.key_index);
        assert_eq!(owner.address(), vector.owner);
        let permit = Permit {
            owner: vector.owner,
            spender: vector.spender,
            value: vector.value.0,
            nonce: vector.nonce.0,
            deadline: vector.deadline.0,
        };
        assert_eq!(permit.eip712_hash_struct(), vector.struct_hash);
        assert_eq!(token.signing_hash(&permit), vector.digest);
        assert_eq!(token.sign(&permit, &owner), vector.signature);
        assert_eq!(token.recover_signer(&permit, &vector.signature), Ok(owner.address()));
    }
}
