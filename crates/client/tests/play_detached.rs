//! `Client::play_detached`: the `play` ack can be awaited alongside the
//! server's events, so a `pay` that arrives before that ack (PROTOCOL.md
//! D10) is answered at once. The server here acks `play` only after its
//! `pay` was answered, which a client awaiting the ack first would never
//! see.

use serde_json::{Value, json};
use socketioxide::SocketIo as ServerIo;
use socketioxide::extract::{AckSender, SocketRef};
use std::time::Duration;
use tokio::net::TcpListener;
use tollstream_client::{Client, ServerEvent};
use tollstream_protocol::{Address, Amount, B256, ChannelState, PayRequest, PlayRequest, PublicKey, Signature, U256};

const CHANNEL: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

/// Answers `play` with a `pay` first, and acks the `play` only once that
/// `pay` was answered with the state.
async fn server() -> String {
    let (layer, io) = ServerIo::new_layer();
    io.ns("/", |socket: SocketRef| async move {
        socket.on("play", |socket: SocketRef, ack: AckSender| async move {
            let pay = PayRequest {
                channel_id: CHANNEL.parse::<B256>().unwrap(),
                client_sequence_number: 1,
                amount: Amount(U256::from(1000)),
                stream_id: "s".into(),
                first_segment: 0,
                segment_count: 1,
            };
            let answer = match socket.timeout(Duration::from_secs(5)).emit_with_ack::<_, Value>("pay", &pay) {
                Ok(pending) => pending.await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            // `{}` once the pay was answered with the state; a refusal otherwise.
            let reply = if answer["client_sequence_number"] == json!(1) {
                json!({})
            } else {
                json!({"error": {"code": "bad_request", "message": format!("the pay was answered {answer}")}})
            };
            ack.send(&reply).ok();
        });
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().layer(layer)).await.unwrap() });
    url
}

fn state() -> ChannelState {
    ChannelState {
        channel_id: CHANNEL.parse::<B256>().unwrap(),
        channel_address: Address::ZERO,
        client_wallet_address: Address::ZERO,
        client_public_key: PublicKey([2; 33]),
        client_balance: Amount::ZERO,
        server_balance: Amount::ZERO,
        client_sequence_number: 1,
        client_signature: Signature([0; 65]),
    }
}

#[tokio::test]
async fn a_pay_before_the_play_ack_is_answered_while_the_play_waits() {
    let url = server().await;
    let mut client = Client::connect(&url).await.unwrap();
    client.set_timeout(Duration::from_secs(10));
    let request = PlayRequest {
        client_public_key: PublicKey([2; 33]),
        stream_id: "s".into(),
        from_segment: 0,
        signature: Signature([0; 65]),
    };
    let play = client.play_detached(&request);
    tokio::pin!(play);
    let mut answered = false;
    let mut played = None;
    while played.is_none() {
        tokio::select! {
            result = &mut play => played = Some(result),
            event = client.next_event() => match event {
                Some(ServerEvent::Pay(pay, answer)) => {
                    assert_eq!(pay.client_sequence_number, 1);
                    assert!(answer.expects_answer(), "the server asked for an ack");
                    answer.pay(&state()).await.unwrap();
                    answered = true;
                }
                other => panic!("unexpected event {other:?}"),
            },
        }
    }
    assert!(answered, "the pay came before the play ack");
    played.unwrap().expect("the play was acked after its pay was answered");
}
