//! The seed's cycle end to end: a real anvil, a real `tollstream serve`
//! process, and the Rust client on loopback.

mod common;

use common::{LIFETIME, PRICE, ServerOptions, ServerProcess, TestChain, within};
use serde_json::{Value, json};
use tollstream_client::{Client, ServerEvent, Step, Viewer};
use tollstream_protocol::{Amount, ErrorCode, NATIVE_TOKEN, event};
use tollstream_server::store::ChannelStatus;

/// After `play` on a resumed channel: the re-sent secret of the last paid
/// window, then the next payment request.
async fn resent_then_paid(viewer: &mut Viewer) -> (tollstream_protocol::Secret, tollstream_protocol::PayRequest) {
    within(30, async {
        let resent = match viewer.next_step().await {
            Step::Keys(secret) => secret,
            other => panic!("expected the re-sent secret, got {other:?}"),
        };
        match viewer.next_step().await {
            Step::Paid { request, .. } => (resent, request),
            other => panic!("expected a payment, got {other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn no_channel_buy_play_pay_until_final_then_idle() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let mut viewer = Viewer::connect(&server.url, chain.viewer_wallet().await).await.unwrap();

    assert_eq!(viewer.resume().await.unwrap(), None, "a new viewer has no channel");
    let opening = viewer.buy(&chain.rpc, 3, LIFETIME).await.unwrap();
    assert_eq!(opening.client_balance, Amount::from(3 * PRICE));
    assert_eq!(viewer.client().latest_state(&opening.client_public_key).await.unwrap(), Some(opening.clone()));

    viewer.play("demo", 0).await.unwrap();
    let mut paid = Vec::new();
    let mut secrets = Vec::new();
    let last = within(30, async {
        loop {
            match viewer.next_step().await {
                Step::Paid { request, state } => paid.push((request, state)),
                Step::Keys(secret) => secrets.push(secret),
                Step::Final(secret) => break secret,
                other => panic!("unexpected {other:?}\n{}", server.log()),
            }
        }
    })
    .await;
    secrets.push(last);

    assert_eq!(paid.len(), 3);
    for (index, (request, state)) in paid.iter().enumerate() {
        let sequence = index as u64 + 1;
        assert_eq!(request.client_sequence_number, sequence);
        assert_eq!(request.amount, Amount::from(PRICE));
        assert_eq!(request.first_segment, index as u64, "windows follow each other");
        assert_eq!(state.server_balance, Amount::from(sequence * PRICE));
        let secret = &secrets[index];
        assert_eq!(secret.client_sequence_number, sequence);
        assert_eq!(secret.channel_id, Some(opening.channel_id), "a secret names the channel that paid");
        let segments: Vec<u64> = secret.keys.iter().map(|k| k.segment).collect();
        assert_eq!(segments, vec![index as u64]);
    }
    assert!(paid[2].1.is_final());
    // Every window has its own key.
    assert_ne!(secrets[0].keys[0].key, secrets[1].keys[0].key);

    // Idle: nothing to resume.
    assert_eq!(viewer.channel(), None);
    assert_eq!(viewer.resume().await.unwrap(), None);
    let stored = server.stored(&viewer).await.unwrap();
    // Spent: final, or already being closed by the settlement worker.
    assert!(
        matches!(stored.status, ChannelStatus::Final | ChannelStatus::Closing | ChannelStatus::Closed),
        "{:?}",
        stored.status
    );
    assert_eq!(stored.state, paid[2].1);
}

#[tokio::test]
async fn a_viewer_that_disconnects_resumes_at_the_next_sequence_number() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let wallet = chain.viewer_wallet().await;

    let mut first = Viewer::connect(&server.url, wallet.clone()).await.unwrap();
    first.buy(&chain.rpc, 10, LIFETIME).await.unwrap();
    first.play("demo", 0).await.unwrap();
    let mut keys_seen = 0;
    within(30, async {
        while keys_seen < 2 {
            match first.next_step().await {
                Step::Keys(_) => keys_seen += 1,
                Step::Paid { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    first.client().close().await;
    drop(first);

    let mut again = Viewer::connect(&server.url, wallet).await.unwrap();
    let resumed = again.resume().await.unwrap().expect("the channel is still there");
    assert_eq!(resumed.client_sequence_number, 2);
    assert_eq!(resumed.server_balance, Amount::from(2 * PRICE));

    // Asking from the segment of the last paid window: its secret comes
    // again, and the next payment buys the window after it.
    again.play("demo", 1).await.unwrap();
    let (resent, request) = resent_then_paid(&mut again).await;
    assert_eq!(resent.client_sequence_number, 2);
    assert_eq!(resent.channel_id, Some(resumed.channel_id));
    assert_eq!(resent.keys[0].segment, 1);
    assert_eq!(request.client_sequence_number, 3);
    assert_eq!(request.first_segment, 2);
}

#[tokio::test]
async fn a_killed_server_loses_no_acknowledged_payment_and_charges_no_window_twice() {
    let chain = TestChain::new().await;
    let mut server = ServerProcess::start(&chain, &ServerOptions::default());
    let wallet = chain.viewer_wallet().await;

    let mut viewer = Viewer::connect(&server.url, wallet.clone()).await.unwrap();
    viewer.buy(&chain.rpc, 20, LIFETIME).await.unwrap();
    viewer.play("demo", 0).await.unwrap();
    let mut windows_paid = Vec::new();
    let mut acknowledged = 0;
    let mut next_segment = 0;
    within(30, async {
        loop {
            match viewer.next_step().await {
                Step::Paid { request, .. } => {
                    windows_paid.push(request.first_segment);
                    if acknowledged >= 3 {
                        // Killed right after answering: the payment may or
                        // may not be stored, and its secret may or may not
                        // have left.
                        break;
                    }
                }
                Step::Keys(secret) => {
                    acknowledged = secret.client_sequence_number;
                    next_segment = secret.keys.last().unwrap().segment + 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    server.kill9();
    server.restart();

    let stored = server.stored(&viewer).await.unwrap();
    assert!(
        stored.state.client_sequence_number >= acknowledged,
        "acknowledged {acknowledged}, stored {}",
        stored.state.client_sequence_number
    );

    let mut viewer = Viewer::connect(&server.url, wallet).await.unwrap();
    let resumed = viewer.resume().await.unwrap().unwrap();
    assert_eq!(resumed, stored.state);
    viewer.play("demo", next_segment.saturating_sub(1)).await.unwrap();
    let (resent, request) = resent_then_paid(&mut viewer).await;
    assert_eq!(resent.client_sequence_number, stored.state.client_sequence_number);
    assert_eq!(request.client_sequence_number, stored.state.client_sequence_number + 1);
    // The window after the last stored one: never a window already paid
    // (and stored) again.
    let stored_window = stored.window.unwrap();
    assert_eq!(request.first_segment, stored_window.first_segment + stored_window.segment_count);
    let stored_windows = &windows_paid[..stored.state.client_sequence_number as usize];
    assert!(!stored_windows.contains(&request.first_segment));
}

#[tokio::test]
async fn an_unanswered_pay_times_out_to_idle_and_changes_nothing() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions { pay_timeout: 0.5, ..Default::default() });
    let mut viewer = Viewer::connect(&server.url, chain.viewer_wallet().await).await.unwrap();
    let opening = viewer.buy(&chain.rpc, 5, LIFETIME).await.unwrap();
    let request = viewer.play_request("demo", 0).unwrap();
    let client = viewer.client_mut();
    client.play(&request).await.unwrap();
    let error = within(30, async {
        loop {
            match client.next_event().await.unwrap() {
                // Hold the answer: never reply.
                tollstream_client::ServerEvent::Pay(_, answer) => std::mem::forget(answer),
                tollstream_client::ServerEvent::Error(error) => break error,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(error.code, ErrorCode::PayTimeout);
    assert_eq!(client.latest_state(&opening.client_public_key).await.unwrap(), Some(opening));
    // Idle now: stop says so.
    let stop = client.stop(&request.client_public_key).await.unwrap_err();
    assert_eq!(stop.code(), Some(ErrorCode::NotStreaming));
}

#[tokio::test]
async fn a_second_connection_of_the_same_client_replaces_the_first() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let wallet = chain.viewer_wallet().await;
    let mut first = Viewer::connect(&server.url, wallet.clone()).await.unwrap();
    first.buy(&chain.rpc, 50, LIFETIME).await.unwrap();
    first.play("demo", 0).await.unwrap();
    within(30, async {
        loop {
            if let Step::Keys(_) = first.next_step().await {
                break;
            }
        }
    })
    .await;

    let mut second = Viewer::connect(&server.url, wallet).await.unwrap();
    let channel = second.resume().await.unwrap().unwrap();
    second.play("demo", 5).await.unwrap();

    let replaced = within(30, async {
        loop {
            match first.next_step().await {
                Step::Stopped(error) => break error,
                Step::Paid { .. } | Step::Keys(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(replaced.code, ErrorCode::SessionReplaced);
    assert_eq!(replaced.client_public_key, Some(channel.client_public_key), "the error names whose session ended");
    // The new connection streams.
    within(30, async {
        loop {
            match second.next_step().await {
                Step::Paid { .. } => break,
                Step::Keys(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn another_clients_play_on_a_streaming_connection_replaces_the_first_client() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let mut first = Viewer::connect(&server.url, chain.viewer_wallet().await).await.unwrap();
    let mut second = Viewer::connect(&server.url, chain.viewer_wallet().await).await.unwrap();
    let first_channel = first.buy(&chain.rpc, 50, LIFETIME).await.unwrap();
    let second_channel = second.buy(&chain.rpc, 50, LIFETIME).await.unwrap();
    first.play("demo", 0).await.unwrap();
    within(30, async {
        loop {
            match first.next_step().await {
                Step::Keys(_) => break,
                Step::Paid { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;

    // The second client plays on the first one's connection, signed for it.
    let play = second.play_request_on(first.client().session_id(), "demo", 0).unwrap();
    first.client().play(&play).await.unwrap();

    // On that connection: what was in flight of the first session, then
    // `session_replaced` naming the first client, then only the second
    // client's session, which streams (answered with its key).
    let mut replaced = None;
    let secret = within(30, async {
        loop {
            let event = first.client_mut().next_event().await.expect("connected");
            match event {
                ServerEvent::Error(error) => {
                    assert!(replaced.is_none(), "a second error: {error:?}\n{}", server.log());
                    replaced = Some(error);
                }
                ServerEvent::Pay(request, answer) if request.channel_id == second_channel.channel_id => {
                    assert!(replaced.is_some(), "the first client is told before the second one pays");
                    match second.answer_pay(request, answer).await {
                        Step::Paid { .. } => {}
                        other => panic!("the second client cannot pay: {other:?}"),
                    }
                }
                ServerEvent::Secret(secret) if secret.channel_id == Some(second_channel.channel_id) => break secret,
                // A window of the first session that was in flight.
                ServerEvent::Pay(request, _) => {
                    assert!(replaced.is_none(), "the first session asked {request:?} after it was replaced")
                }
                ServerEvent::Secret(secret) => {
                    assert!(replaced.is_none(), "the first session sent {secret:?} after it was replaced")
                }
                ServerEvent::Unknown { event, data } => panic!("unexpected {event} {data}"),
            }
        }
    })
    .await;
    let replaced = replaced.expect("the first client was told");
    assert_eq!(replaced.code, ErrorCode::SessionReplaced);
    assert_eq!(replaced.client_public_key, Some(first_channel.client_public_key));
    assert_eq!(secret.client_sequence_number, 1);
    assert_eq!(secret.keys[0].segment, 0);

    // The connection now streams for the second client only.
    let not_streaming = first.client().stop(&first_channel.client_public_key).await.unwrap_err();
    assert_eq!(not_streaming.code(), Some(ErrorCode::NotStreaming));
    first.client().stop(&second_channel.client_public_key).await.unwrap();
    // The first client's channel is intact, ready to resume.
    let resumed = first.resume().await.unwrap().expect("the first channel is still active");
    assert_eq!(resumed.channel_id, first_channel.channel_id);
}

#[tokio::test]
async fn public_key_states_the_servers_terms() {
    let chain = TestChain::new().await;
    let options = ServerOptions {
        pay_timeout: 2.5,
        extra_args: ["--confirmations", "4", "--unconfirmed-windows", "2"].map(String::from).to_vec(),
        ..Default::default()
    };
    let server = ServerProcess::start(&chain, &options);
    let client = Client::connect(&server.url).await.unwrap();

    let wire = client.request_raw(event::PUBLIC_KEY, &json!({})).await.unwrap();
    let expected = json!({
        "confirmations": 4, "unconfirmed_windows": 2,
        // The test servers' `--settle-margin`.
        "settle_margin_seconds": 60,
        "pay_timeout_seconds": 2.5,
        "token": "0x0000000000000000000000000000000000000000", "token_symbol": "ETH",
        "token_decimals": 18, "gasless_open": false, "token_domain": null,
    });
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(wire.get(field), Some(value), "{field} in {wire}");
    }
    assert!(wire["min_channel_seconds"].as_u64().unwrap() > wire["settle_margin_seconds"].as_u64().unwrap());

    let info = client.public_key().await.unwrap();
    assert_eq!((info.confirmations, info.unconfirmed_windows), (4, 2));
    assert_eq!((info.settle_margin_seconds, info.pay_timeout_seconds), (Some(60), Some(2.5)));
    assert_eq!(info.token, NATIVE_TOKEN);

    // A whole timeout is a JSON integer, as `window_seconds` is.
    let server = ServerProcess::start(&chain, &ServerOptions { pay_timeout: 3.0, ..Default::default() });
    let client = Client::connect(&server.url).await.unwrap();
    let wire = client.request_raw(event::PUBLIC_KEY, &json!({})).await.unwrap();
    assert_eq!(wire["pay_timeout_seconds"], Value::from(3));
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly_and_keeps_every_acknowledged_payment() {
    let chain = TestChain::new().await;
    let mut server = ServerProcess::start(&chain, &ServerOptions::default());
    let mut viewer = Viewer::connect(&server.url, chain.viewer_wallet().await).await.unwrap();
    viewer.buy(&chain.rpc, 50, LIFETIME).await.unwrap();
    viewer.play("demo", 0).await.unwrap();
    let mut acknowledged = 0;
    within(30, async {
        while acknowledged < 3 {
            match viewer.next_step().await {
                Step::Keys(secret) => acknowledged = secret.client_sequence_number,
                Step::Paid { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;

    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (status, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
    assert!(server.log().contains("stopped"), "{}", server.log());
    let stored = server.stored(&viewer).await.unwrap();
    assert!(stored.state.client_sequence_number >= acknowledged);
    assert_eq!(stored.status, ChannelStatus::Open);
}
