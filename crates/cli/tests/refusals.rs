//! Everything the server must refuse, and that a refusal changes nothing it
//! stored.

mod common;

use common::{LIFETIME, PRICE, ServerOptions, ServerProcess, TestChain, within};
use serde_json::{Value, json};
use tollstream_chain::{OpenRequest, open_channel};
use tollstream_client::{Client, ServerEvent, Viewer};
use tollstream_protocol::successor::play_signing_hash;
use tollstream_protocol::{
    Address, Amount, B256, ChannelDomain, ChannelState, ErrorCode, PlayRequest, ProtocolError, Signature, SigningKey,
    U256,
};
use tollstream_server::store::Store;

/// Plays, answers the first `pay` with `answer(stored)`, and returns the
/// error the server sends.
async fn answer_first_pay(
    client: &mut Client,
    play: &PlayRequest,
    answer: impl Fn(&tollstream_protocol::PayRequest) -> Value,
) -> ProtocolError {
    client.play(play).await.unwrap();
    within(30, async {
        loop {
            match client.next_event().await.expect("connected") {
                ServerEvent::Pay(request, pay) => pay.raw(answer(&request)).await.unwrap(),
                ServerEvent::Error(error) => break error,
                ServerEvent::Secret(secret) => panic!("no secret may follow a bad payment: {secret:?}"),
                ServerEvent::Unknown { event, .. } => panic!("unexpected {event}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn bad_payments_are_refused_with_their_codes_and_store_nothing() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let mut viewer = Viewer::connect(&server.url, chain.viewer_wallet().await).await.unwrap();
    let stored = viewer.buy(&chain.rpc, 5, LIFETIME).await.unwrap();
    let session = viewer.session_key().clone();
    let domain = ChannelDomain::new(viewer.info().chain_id, viewer.info().channel_address);
    let play = viewer.play_request("demo", 0).unwrap();
    let stranger = SigningKey::from_bytes([0x77; 32]).unwrap();

    let signed = |mut state: ChannelState, key: &SigningKey| {
        state.sign(&domain, key);
        serde_json::to_value(state).unwrap()
    };
    let good = stored.pay(Amount::from(PRICE)).unwrap();
    let cases: Vec<(&str, Value, ErrorCode)> = vec![
        ("signed by another key", signed(good.clone(), &stranger), ErrorCode::InvalidSignature),
        ("the stored state replayed", serde_json::to_value(&stored).unwrap(), ErrorCode::StaleSequence),
        (
            "a skipped sequence number",
            signed(ChannelState { client_sequence_number: 2, ..good.clone() }, &session),
            ErrorCode::StaleSequence,
        ),
        ("twice the amount", signed(stored.pay(Amount::from(2 * PRICE)).unwrap(), &session), ErrorCode::WrongAmount),
        (
            "balances that do not sum to the deposit",
            signed(
                ChannelState { client_balance: Amount(good.client_balance.0 - U256::from(1)), ..good.clone() },
                &session,
            ),
            ErrorCode::WrongAmount,
        ),
        (
            "another channel",
            signed(ChannelState { channel_id: B256::repeat_byte(9), ..good.clone() }, &session),
            ErrorCode::BadRequest,
        ),
        (
            "an amount as a JSON number",
            {
                let mut value = signed(good.clone(), &session);
                value["server_balance"] = json!(PRICE);
                value
            },
            ErrorCode::BadRequest,
        ),
        ("not a state at all", json!({"hello": "world"}), ErrorCode::BadRequest),
        ("a refusal", json!({"error": {"code": "payment_refused", "message": "no thanks"}}), ErrorCode::PaymentRefused),
    ];
    let client = viewer.client_mut();
    for (what, answer, code) in cases {
        let error = answer_first_pay(client, &play, |_| answer.clone()).await;
        assert_eq!(error.code, code, "{what}: {error}");
        assert_eq!(
            client.latest_state(&session.public_key()).await.unwrap(),
            Some(stored.clone()),
            "{what} changed the stored state"
        );
    }

    // And the good one is still accepted afterwards.
    client.play(&play).await.unwrap();
    let secret = within(30, async {
        loop {
            match client.next_event().await.unwrap() {
                ServerEvent::Pay(_, pay) => pay.raw(signed(good.clone(), &session)).await.unwrap(),
                ServerEvent::Secret(secret) => break secret,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(secret.client_sequence_number, 1);
}

#[tokio::test]
async fn play_must_be_signed_by_the_client_for_this_connection() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let mut viewer = Viewer::connect(&server.url, chain.viewer_wallet().await).await.unwrap();
    let stored = viewer.buy(&chain.rpc, 5, LIFETIME).await.unwrap();
    let domain = ChannelDomain::new(viewer.info().chain_id, viewer.info().channel_address);
    let good = viewer.play_request("demo", 0).unwrap();

    let by_stranger = PlayRequest {
        signature: SigningKey::from_bytes([0x55; 32]).unwrap().sign_digest(&play_signing_hash(
            &domain,
            stored.channel_id,
            viewer.client().session_id(),
        )),
        ..good.clone()
    };
    let other_socket = PlayRequest {
        signature: viewer.session_key().sign_digest(&play_signing_hash(&domain, stored.channel_id, "another-socket")),
        ..good.clone()
    };
    let unknown_stream = PlayRequest { stream_id: "nope".into(), ..good.clone() };
    let past_the_end = PlayRequest { from_segment: 1000, ..good.clone() };
    let stranger_key =
        PlayRequest { client_public_key: SigningKey::from_bytes([0x56; 32]).unwrap().public_key(), ..good.clone() };
    for (what, request, code) in [
        ("signed by another key", by_stranger, ErrorCode::InvalidSignature),
        ("signed for another connection", other_socket, ErrorCode::InvalidSignature),
        ("an unknown stream", unknown_stream, ErrorCode::UnknownStream),
        ("past the stream's end", past_the_end, ErrorCode::StreamEnded),
        ("a client without a channel", stranger_key, ErrorCode::UnknownChannel),
    ] {
        let error = viewer.client().play(&request).await.unwrap_err();
        assert_eq!(error.code(), Some(code), "{what}: {error}");
    }
    // Without an ack, the failure arrives as an `error` event.
    let client = viewer.client_mut();
    client
        .emit_raw(
            "play",
            &json!({"client_public_key": good.client_public_key, "stream_id": "nope",
        "from_segment": 0, "signature": good.signature}),
        )
        .await
        .unwrap();
    match within(10, client.next_event()).await.unwrap() {
        ServerEvent::Error(error) => assert_eq!(error.code, ErrorCode::UnknownStream),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(client.latest_state(&good.client_public_key).await.unwrap(), Some(stored));
}

#[tokio::test]
async fn new_channel_is_checked_on_chain() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let wallet = chain.viewer_wallet().await;
    let viewer = Viewer::connect(&server.url, wallet.clone()).await.unwrap();
    let session = viewer.session_key().clone();
    let info = viewer.info().clone();
    let domain = ChannelDomain::new(info.chain_id, info.channel_address);

    // Opens a channel on chain and returns the opening state claiming `claimed`.
    let open = |payee: Address, deposit: u64, claimed: u64, lifetime: u64| {
        let wallet = wallet.clone();
        let session = session.clone();
        let domain = domain.clone();
        let rpc = chain.rpc.clone();
        async move {
            let salt = B256::from(tollstream_client::wallet::random_key().to_bytes());
            let expires_at =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + lifetime;
            let request = OpenRequest {
                contract: domain.contract,
                payee,
                signer: session.address(),
                deposit: U256::from(deposit),
                expires_at,
                salt,
            };
            let opened = open_channel(&rpc, &wallet, &request).await.unwrap();
            opening(opened.channel_id, &domain, &wallet, &session, claimed)
        }
    };

    let not_on_chain = opening(B256::repeat_byte(0xab), &domain, &wallet, &session, 3 * PRICE);
    let someone_else = open(Address::repeat_byte(0x42), 3 * PRICE, 3 * PRICE, LIFETIME).await;
    let other_deposit = open(info.wallet_address, 3 * PRICE, 4 * PRICE, LIFETIME).await;
    let odd_deposit = open(info.wallet_address, 3 * PRICE / 2, 3 * PRICE / 2, LIFETIME).await;
    // The test servers want channels to live an hour at least.
    let short_lived = open(info.wallet_address, 3 * PRICE, 3 * PRICE, 600).await;
    let mut not_the_opener = open(info.wallet_address, 3 * PRICE, 3 * PRICE, LIFETIME).await;
    not_the_opener.client_wallet_address = Address::repeat_byte(0x43);
    not_the_opener.sign(&domain, &session);
    for (what, state, code) in [
        ("a channel that is not on chain", not_on_chain, ErrorCode::UnknownChannel),
        ("a channel paying someone else", someone_else, ErrorCode::WrongPayee),
        ("a channel holding another deposit", other_deposit, ErrorCode::BadDeposit),
        ("a deposit that is not whole windows", odd_deposit, ErrorCode::BadDeposit),
        ("a channel expiring too soon", short_lived, ErrorCode::ChannelExpiring),
        ("a channel opened by another wallet", not_the_opener, ErrorCode::BadRequest),
    ] {
        let error = viewer.client().new_channel(&state).await.unwrap_err();
        assert_eq!(error.code(), Some(code), "{what}: {error}");
    }
    assert_eq!(viewer.client().latest_state(&session.public_key()).await.unwrap(), None);
    assert!(server.store().await.list().await.unwrap().is_empty(), "nothing refused was stored");
}

fn opening(id: B256, domain: &ChannelDomain, wallet: &SigningKey, session: &SigningKey, deposit: u64) -> ChannelState {
    let mut state = ChannelState {
        channel_id: id,
        channel_address: domain.contract,
        client_wallet_address: wallet.address(),
        client_public_key: session.public_key(),
        client_balance: Amount::from(deposit),
        server_balance: Amount::ZERO,
        client_sequence_number: 0,
        client_signature: Signature([0; 65]),
    };
    state.sign(domain, session);
    state
}

#[tokio::test]
async fn malformed_and_oversized_messages_are_refused_and_the_server_stays_up() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let client = Client::connect(&server.url).await.unwrap();
    let bad_requests = [
        ("latestState", json!({"client_public_key": 5})),
        ("latestState", json!({"client_public_key": "0x1234"})),
        ("latestState", json!(null)),
        ("newChannel", json!({"channel_id": "0x00"})),
        ("newChannel", json!("a string")),
        ("play", json!({"client_public_key": "0x02"})),
        ("stop", json!([])),
    ];
    for (event, body) in bad_requests {
        let reply = client.request_raw(event, &body).await.unwrap();
        assert_eq!(reply["error"]["code"], "bad_request", "{event} {body}: {reply}");
        assert!(reply["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // Over 16 KiB: refused at the transport; the connection may be dropped.
    let huge = json!({"client_public_key": "x".repeat(20 * 1024)});
    let oversized = Client::connect(&server.url).await.unwrap();
    let reply = oversized.request_raw("latestState", &huge).await;
    assert!(reply.is_err() || reply.as_ref().unwrap()["error"].is_object(), "{reply:?}");

    // The server is still up for everyone.
    let fresh = Client::connect(&server.url).await.unwrap();
    assert!(fresh.public_key().await.is_ok());
}

#[tokio::test]
async fn new_channel_without_the_chain_is_chain_unavailable_and_stores_nothing() {
    // This test stops its node, so it has one of its own.
    let chain = TestChain::own().await;
    let contract = chain.contract;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let wallet = chain.viewer_wallet().await;
    let mut viewer = Viewer::connect(&server.url, wallet.clone()).await.unwrap();
    let domain = ChannelDomain::new(viewer.info().chain_id, viewer.info().channel_address);
    let request = OpenRequest {
        contract,
        payee: viewer.info().wallet_address,
        signer: viewer.session_key().address(),
        deposit: U256::from(3 * PRICE),
        expires_at: u64::MAX / 2,
        salt: B256::repeat_byte(1),
    };
    let opened = open_channel(&chain.rpc, &wallet, &request).await.unwrap();
    let state = opening(opened.channel_id, &domain, &wallet, viewer.session_key(), 3 * PRICE);

    // The node goes away.
    kill_process(chain.node().pid());
    let error = viewer.client_mut().new_channel(&state).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::ChainUnavailable), "{error}");
    assert!(server.store().await.list().await.unwrap().is_empty());
}

fn kill_process(pid: u32) {
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
}
