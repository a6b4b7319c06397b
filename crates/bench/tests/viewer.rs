//! One simulated viewer against a scripted Socket.IO server: it announces
//! its channel, plays, answers every `pay` with its pre-signed state through
//! the typed client, and records one sample per secret. The server sends the
//! first `pay` before it acks `play` (PROTOCOL.md D10), which the viewer
//! must answer at once; a server that is refused gets the refusal counted.

use serde_json::Value;
use socketioxide::SocketIo as ServerIo;
use socketioxide::extract::{AckSender, Data, SocketRef};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tollstream_bench::viewer::{self, Counters, Outcome, Shared};
use tollstream_client::Tls;
use tollstream_client::wallet::random_key;
use tollstream_protocol::{Address, Amount, B256, ChannelDomain, ChannelState, PayRequest, Secret, U256, event};

const PAYMENTS: u64 = 4;
/// The one channel of every test's viewer.
const CHANNEL: B256 = B256::repeat_byte(0x42);

fn price() -> Amount {
    Amount(U256::from(1_000u64))
}

/// What the scripted server does on `play`.
#[derive(Clone, Copy)]
enum Script {
    /// Asks for every payment in turn and sends its secret.
    Honest,
    /// Refuses the `newChannel` with `unknown_channel`.
    RefuseNewChannel,
}

async fn server(script: Script) -> String {
    let (layer, io) = ServerIo::new_layer();
    io.ns("/", move |socket: SocketRef| async move {
        socket.on(event::NEW_CHANNEL, move |Data(opening): Data<Value>, ack: AckSender| async move {
            let reply = match script {
                Script::Honest => opening,
                Script::RefuseNewChannel => {
                    serde_json::json!({"error": {"code": "unknown_channel", "message": "not on chain"}})
                }
            };
            ack.send(&reply).ok();
        });
        socket.on(event::PLAY, |socket: SocketRef, ack: AckSender| async move {
            tokio::spawn(pay_all(socket, ack));
        });
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().layer(layer)).await.unwrap() });
    url
}

/// Sends `pay` 1 before acking `play`, then each later `pay` after the
/// previous secret.
async fn pay_all(socket: SocketRef, play_ack: AckSender) {
    let mut play_ack = Some(play_ack);
    for sequence in 1..=PAYMENTS {
        let request = PayRequest {
            channel_id: CHANNEL,
            client_sequence_number: sequence,
            amount: price(),
            stream_id: "s".into(),
            first_segment: sequence - 1,
            segment_count: 1,
        };
        let answer = socket
            .timeout(Duration::from_secs(5))
            .emit_with_ack::<_, Value>(event::PAY, &request)
            .unwrap()
            .await
            .unwrap();
        let state: ChannelState = serde_json::from_value(answer).unwrap();
        assert_eq!((state.channel_id, state.client_sequence_number), (CHANNEL, sequence));
        if let Some(ack) = play_ack.take() {
            ack.send(&serde_json::json!({})).ok();
        }
        let secret =
            Secret { channel_id: Some(CHANNEL), stream_id: "s".into(), client_sequence_number: sequence, keys: vec![] };
        socket.emit(event::SECRET, &secret).unwrap();
    }
}

fn shared(url: String, domain: ChannelDomain) -> Arc<Shared> {
    Arc::new(Shared {
        url,
        tls: Tls::new(None).unwrap(),
        stream_id: "s".into(),
        domain,
        price: price(),
        payments: PAYMENTS,
        last_is_final: true,
        connecting: Semaphore::new(1),
        request_timeout: Duration::from_secs(5),
        t0: Instant::now(),
        counters: Counters::default(),
    })
}

async fn run_viewer(script: Script) -> Outcome {
    let url = server(script).await;
    let domain = ChannelDomain::new(31337, Address::repeat_byte(1));
    let deposit = Amount(price().0 * U256::from(PAYMENTS));
    let prepared = viewer::prepare(random_key(), CHANNEL, Address::repeat_byte(2), &domain, deposit, price(), PAYMENTS);
    let shared = shared(url, domain);
    let (_stop_tx, stop_rx) = watch::channel(false);
    tokio::time::timeout(Duration::from_secs(20), viewer::run(shared, prepared, Instant::now(), stop_rx))
        .await
        .expect("the viewer finishes")
}

#[tokio::test]
async fn a_viewer_pays_every_window_exactly_once_and_answers_a_pay_before_the_play_ack() {
    let outcome = run_viewer(Script::Honest).await;
    assert_eq!(outcome.failure, None);
    assert!(outcome.connected && outcome.announced && outcome.playing && outcome.completed);
    assert_eq!(outcome.answered, PAYMENTS);
    assert_eq!(outcome.secrets, vec![1; PAYMENTS as usize]);
    assert_eq!(outcome.samples.len() as u64, PAYMENTS);
    assert!(outcome.samples.iter().all(|s| s.secret_at >= s.pay_at));
    assert_eq!(outcome.highest_acknowledged(), PAYMENTS);
}

#[tokio::test]
async fn a_refused_new_channel_is_counted_by_its_code() {
    let outcome = run_viewer(Script::RefuseNewChannel).await;
    assert!(outcome.connected && !outcome.announced);
    assert_eq!(outcome.server_errors, vec!["unknown_channel".to_owned()]);
    assert_eq!(outcome.failure.map(|(kind, _)| kind), Some("refused"));
}
