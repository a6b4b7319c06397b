//! The typed client against a server that answers `rate_limited`: the
//! request is sent again after a second (PROTOCOL.md 1.1, "Rate limits"),
//! and a server that never relents gets the refusal back after the retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use socketioxide::SocketIo as ServerIo;
use socketioxide::extract::{AckSender, SocketRef};
use tokio::net::TcpListener;
use tollstream_client::{Client, ClientError, RATE_LIMITED_PAUSE, RATE_LIMITED_RETRIES};
use tollstream_protocol::ErrorCode;

/// Serves `publicKey`, refusing the first `refusals` requests with
/// `rate_limited`; returns the URL and the count of requests received.
async fn server(refusals: u32) -> (String, Arc<AtomicU32>) {
    let received = Arc::new(AtomicU32::new(0));
    let (layer, io) = ServerIo::new_layer();
    let counter = received.clone();
    io.ns("/", move |socket: SocketRef| {
        let counter = counter.clone();
        async move {
            socket.on("publicKey", move |ack: AckSender| {
                let seen = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    let reply = if seen < refusals {
                        json!({"error": {"code": "rate_limited", "message": "slow down"}})
                    } else {
                        json!({"nonsense": true})
                    };
                    ack.send(&reply).ok();
                }
            });
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().layer(layer)).await.unwrap() });
    (url, received)
}

#[tokio::test]
async fn a_rate_limited_request_is_sent_again_a_second_later() {
    let (url, received) = server(1).await;
    let client = Client::connect(&url).await.unwrap();
    let started = Instant::now();
    // The reply after the refusal is not a ServerInfo: what matters is that
    // the retry reached the server and its answer, not the refusal, came back.
    let result = client.public_key().await;
    assert!(matches!(result, Err(ClientError::Malformed(_))), "{result:?}");
    assert_eq!(received.load(Ordering::SeqCst), 2, "one refusal, one retry");
    assert!(started.elapsed() >= RATE_LIMITED_PAUSE, "the retry waited a second");
}

#[tokio::test]
async fn a_server_that_keeps_limiting_gets_the_refusal_back() {
    let (url, received) = server(u32::MAX).await;
    let mut client = Client::connect(&url).await.unwrap();
    client.set_timeout(Duration::from_secs(5));
    match client.public_key().await {
        Err(ClientError::Refused(error)) => assert_eq!(error.code, ErrorCode::RateLimited),
        other => panic!("expected rate_limited, got {other:?}"),
    }
    assert_eq!(received.load(Ordering::SeqCst), RATE_LIMITED_RETRIES + 1);
}

#[tokio::test]
async fn with_no_retries_the_first_refusal_comes_back_at_once() {
    let (url, received) = server(u32::MAX).await;
    let mut client = Client::connect(&url).await.unwrap();
    client.set_rate_limited_retries(0);
    let started = Instant::now();
    match client.public_key().await {
        Err(ClientError::Refused(error)) => assert_eq!(error.code, ErrorCode::RateLimited),
        other => panic!("expected rate_limited, got {other:?}"),
    }
    assert_eq!(received.load(Ordering::SeqCst), 1, "sent once");
    assert!(started.elapsed() < RATE_LIMITED_PAUSE, "no pause");
}
