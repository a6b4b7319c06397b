//! Settlement on a real chain: every payment is collected, none is lost,
//! through RPC outages and server crashes.

mod common;

use alloy::primitives::{B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use common::{LIFETIME, PRICE, Proxy, ServerOptions, ServerProcess, TestChain, within};
use std::process::Command;
use std::time::Duration;
use tollstream_chain::{TollstreamChannels, connect_provider};
use tollstream_client::{Step, Viewer};
use tollstream_server::store::{ChannelStatus, StoredChannel};

/// Plays until `payments` secrets arrived (or the channel is spent), then stops.
async fn pay(viewer: &mut Viewer, payments: u64) {
    viewer.play("demo", 0).await.unwrap();
    within(60, async {
        loop {
            match viewer.next_step().await {
                Step::Keys(secret) if secret.client_sequence_number >= payments => break,
                Step::Final(_) => return,
                Step::Keys(_) | Step::Paid { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        viewer.stop().await.unwrap();
    })
    .await;
}

/// Waits until the stored channel satisfies `done`.
async fn until(server: &ServerProcess, viewer: &Viewer, done: impl Fn(&StoredChannel) -> bool) -> StoredChannel {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(channel) = server.stored(viewer).await
            && done(&channel)
        {
            return channel;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn reader(chain: &TestChain) -> DynProvider {
    connect_provider(&chain.node_rpc(), None).unwrap()
}

async fn gas_cost(chain: &TestChain, tx: B256) -> U256 {
    let receipt = reader(chain).get_transaction_receipt(tx).await.unwrap().unwrap();
    U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price)
}

/// How many `Closed` events the registry emitted for `channel`.
async fn closes_of(chain: &TestChain, channel: B256) -> usize {
    let filter = Filter::new()
        .address(chain.contract)
        .event_signature(TollstreamChannels::Closed::SIGNATURE_HASH)
        .topic1(channel)
        .from_block(0u64);
    reader(chain).get_logs(&filter).await.unwrap().len()
}

async fn rpc(chain: &TestChain, method: &'static str, params: serde_json::Value) {
    let _: serde_json::Value = reader(chain).raw_request(method.into(), params).await.unwrap();
}

#[tokio::test]
async fn a_spent_channel_is_closed_at_once_and_the_payee_gets_exactly_its_balance() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let wallet = chain.viewer_wallet().await;
    let mut viewer = Viewer::connect(&server.url, wallet.clone()).await.unwrap();
    let payee_before = reader(&chain).get_balance(chain.server_wallet.address()).await.unwrap();
    viewer.buy(&chain.rpc, 3, LIFETIME).await.unwrap();
    let client_before = reader(&chain).get_balance(wallet.address()).await.unwrap();
    pay(&mut viewer, 3).await;

    let closed = until(&server, &viewer, |c| c.status == ChannelStatus::Closed).await;
    let tx = closed.close_tx.expect("the close transaction is recorded");
    let payee_after = reader(&chain).get_balance(chain.server_wallet.address()).await.unwrap();
    assert_eq!(payee_after + gas_cost(&chain, tx).await - payee_before, U256::from(3 * PRICE));
    // A spent channel returns nothing to the client.
    assert_eq!(reader(&chain).get_balance(wallet.address()).await.unwrap(), client_before);
    assert_eq!(closes_of(&chain, closed.state.channel_id).await, 1);

    // The metrics say what happened.
    let metrics = server.metrics().await;
    assert_eq!(metrics["tollstream_payments_accepted_total"], 3.0);
    assert_eq!(metrics["tollstream_wei_earned_total"], (3 * PRICE) as f64);
    assert_eq!(metrics["tollstream_wei_settled_total"], (3 * PRICE) as f64);
    assert_eq!(metrics["tollstream_active_streams"], 0.0);
    assert_eq!(metrics["tollstream_settlement_failures_total"], 0.0);
    assert!(!metrics.keys().any(|k| k.starts_with("tollstream_payments_refused_total{")));

    // A viewer that missed the final secret still gets it after the close.
    let mut client = tollstream_client::Client::connect(&server.url).await.unwrap();
    let domain = tollstream_protocol::ChannelDomain::new(viewer.info().chain_id, chain.contract);
    let digest =
        tollstream_protocol::successor::play_signing_hash(&domain, closed.state.channel_id, client.session_id());
    let play = tollstream_protocol::PlayRequest {
        client_public_key: viewer.session_key().public_key(),
        stream_id: "demo".into(),
        from_segment: 0,
        signature: viewer.session_key().sign_digest(&digest),
    };
    let refused = client.play(&play).await.unwrap_err();
    assert_eq!(refused.code(), Some(tollstream_protocol::ErrorCode::ChannelNotOpen));
    match within(10, client.next_event()).await {
        Some(tollstream_client::ServerEvent::Secret(secret)) => assert_eq!(secret.client_sequence_number, 3),
        other => panic!("expected the final secret again, got {other:?}"),
    }
}

#[tokio::test]
async fn a_channel_left_midway_is_closed_before_it_expires() {
    let chain = TestChain::own().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let wallet = chain.viewer_wallet().await;
    let mut viewer = Viewer::connect(&server.url, wallet.clone()).await.unwrap();
    viewer.buy(&chain.rpc, 10, LIFETIME).await.unwrap();
    pay(&mut viewer, 3).await;
    let stored = until(&server, &viewer, |c| c.state.client_sequence_number == 3).await;
    assert_eq!(stored.status, ChannelStatus::Open, "nothing is due yet");

    let payee_before = reader(&chain).get_balance(chain.server_wallet.address()).await.unwrap();
    let client_before = reader(&chain).get_balance(wallet.address()).await.unwrap();
    // Into the settlement margin, still before expiry.
    let now = reader(&chain).get_block_by_number(Default::default()).await.unwrap().unwrap().header.timestamp;
    chain.node().increase_time(stored.settle_by - now + 1).await.unwrap();
    assert!(stored.settle_by < stored.expires_at);

    let closed = until(&server, &viewer, |c| c.status == ChannelStatus::Closed).await;
    let fee = gas_cost(&chain, closed.close_tx.unwrap()).await;
    let payee_after = reader(&chain).get_balance(chain.server_wallet.address()).await.unwrap();
    assert_eq!(payee_after + fee - payee_before, U256::from(3 * PRICE));
    assert_eq!(reader(&chain).get_balance(wallet.address()).await.unwrap() - client_before, U256::from(7 * PRICE));
    // And the channel is no longer offered for streaming.
    assert_eq!(viewer.resume().await.unwrap(), None);
}

// The proxy runs on this runtime while the test blocks on the server's
// start-up line: it needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_retries_while_the_rpc_is_gone_and_succeeds_when_it_returns() {
    let mut chain = TestChain::own().await;
    let mut proxy = Proxy::start(&chain.node_rpc()).await;
    chain.rpc = proxy.url();
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let mut viewer = Viewer::connect(&server.url, chain.viewer_wallet().await).await.unwrap();
    viewer.buy(&chain.node_rpc(), 3, LIFETIME).await.unwrap();
    pay(&mut viewer, 2).await;

    proxy.down().await;
    pay(&mut viewer, 3).await;
    let spent = until(&server, &viewer, |c| c.status == ChannelStatus::Final).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.stored(&viewer).await.unwrap().status, ChannelStatus::Final, "no close without the chain");
    assert!(server.metrics().await["tollstream_settlement_failures_total"] >= 1.0);

    proxy.up().await;
    let closed = until(&server, &viewer, |c| c.status == ChannelStatus::Closed).await;
    assert_eq!(closes_of(&chain, spent.state.channel_id).await, 1);
    assert!(closed.close_tx.is_some());
}

#[tokio::test]
async fn a_server_killed_while_its_close_is_pending_closes_exactly_once_after_restart() {
    let chain = TestChain::own().await;
    let mut server = ServerProcess::start(&chain, &ServerOptions::default());
    let mut viewer = Viewer::connect(&server.url, chain.viewer_wallet().await).await.unwrap();
    viewer.buy(&chain.rpc, 2, LIFETIME).await.unwrap();
    pay(&mut viewer, 1).await;

    // Blocks are mined only on request from here: the close stays pending.
    rpc(&chain, "evm_setAutomine", serde_json::json!([false])).await;
    pay(&mut viewer, 2).await;
    let closing = until(&server, &viewer, |c| c.status == ChannelStatus::Closing).await;
    let recorded = closing.close_tx.unwrap();
    server.kill9();

    // The restarted server finds the recorded close, broadcasts the same
    // bytes again, and sees it through once it is mined.
    server.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    rpc(&chain, "evm_mine", serde_json::json!([])).await;
    rpc(&chain, "evm_setAutomine", serde_json::json!([true])).await;
    let closed = until(&server, &viewer, |c| c.status == ChannelStatus::Closed).await;
    assert_eq!(closed.close_tx, Some(recorded));
    assert_eq!(closes_of(&chain, closed.state.channel_id).await, 1);
    let receipt = reader(&chain).get_transaction_receipt(recorded).await.unwrap().unwrap();
    assert!(receipt.status());
}

#[tokio::test]
async fn refunds_after_expiry_are_recorded_and_a_lost_balance_is_reported() {
    let chain = TestChain::own().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    // One viewer never paid; the other paid once and vanished.
    let idle_wallet = chain.viewer_wallet().await;
    let mut idle = Viewer::connect(&server.url, idle_wallet.clone()).await.unwrap();
    idle.buy(&chain.rpc, 2, LIFETIME).await.unwrap();
    let gone_wallet = chain.viewer_wallet().await;
    let mut gone = Viewer::connect(&server.url, gone_wallet.clone()).await.unwrap();
    gone.buy(&chain.rpc, 2, LIFETIME).await.unwrap();
    pay(&mut gone, 1).await;
    until(&server, &gone, |c| c.state.client_sequence_number == 1).await;

    // Straight past expiry: too late for the server to close.
    chain.node().increase_time(LIFETIME + 60).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for wallet in [&idle_wallet, &gone_wallet] {
        let key_file = dir.path().join(format!("{}.key", wallet.address()));
        std::fs::write(&key_file, common::hex(&wallet.to_bytes())).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_tollstream"))
            .args(["channel", "refund", "--rpc-url", &chain.node_rpc(), "--server", &server.url])
            .arg("--wallet-key-file")
            .arg(&key_file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("refunded"), "{stdout}");
    }

    let idle_channel = until(&server, &idle, |c| c.status == ChannelStatus::Refunded).await;
    let gone_channel = until(&server, &gone, |c| c.status == ChannelStatus::Refunded).await;
    for channel in [&idle_channel, &gone_channel] {
        assert_eq!(channel.close_tx, None, "the server never tried to close");
        assert_eq!(closes_of(&chain, channel.state.channel_id).await, 0);
    }
    let metrics = server.metrics().await;
    assert_eq!(metrics["tollstream_wei_lost_to_refunds_total"], PRICE as f64);
    assert!(server.log().contains("LOSS"), "the loss is logged");
}

#[tokio::test]
async fn channels_due_together_are_closed_by_one_close_many_and_the_payee_gets_their_sum() {
    let chain = TestChain::own().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    // Three viewers pay 1, 2 and 3 windows of 10 and leave: nothing is due.
    let mut viewers = Vec::new();
    let mut stored = Vec::new();
    for paid in 1..=3u64 {
        let mut viewer = Viewer::connect(&server.url, chain.viewer_wallet().await).await.unwrap();
        viewer.buy(&chain.rpc, 10, LIFETIME).await.unwrap();
        pay(&mut viewer, paid).await;
        stored.push(until(&server, &viewer, |c| c.state.client_sequence_number == paid).await);
        viewers.push(viewer);
    }
    assert!(stored.iter().all(|c| c.status == ChannelStatus::Open), "nothing is due yet");

    // Into every channel's settlement margin at once, before any expires.
    let payee_before = reader(&chain).get_balance(chain.server_wallet.address()).await.unwrap();
    let now = reader(&chain).get_block_by_number(Default::default()).await.unwrap().unwrap().header.timestamp;
    let latest = stored.iter().map(|c| c.settle_by).max().unwrap();
    assert!(stored.iter().all(|c| latest < c.expires_at));
    chain.node().increase_time(latest - now + 1).await.unwrap();
    rpc(&chain, "evm_mine", serde_json::json!([])).await;

    let mut closed = Vec::new();
    for viewer in &viewers {
        closed.push(until(&server, viewer, |c| c.status == ChannelStatus::Closed).await);
    }
    // One transaction closed all three ...
    let tx = closed[0].close_tx.expect("the close transaction is recorded");
    assert!(closed.iter().all(|c| c.close_tx == Some(tx)), "one transaction: {closed:?}");
    let receipt = reader(&chain).get_transaction_receipt(tx).await.unwrap().unwrap();
    assert!(receipt.status());
    let events: Vec<_> = receipt
        .inner
        .logs()
        .iter()
        .filter_map(|log| log.log_decode::<TollstreamChannels::Closed>().ok())
        .map(|closed| closed.inner.data)
        .collect();
    assert_eq!(events.len(), 3, "a Closed event per channel");
    for channel in &closed {
        let event = events.iter().find(|e| e.channelId == channel.state.channel_id).expect("its Closed event");
        assert_eq!(event.serverBalance, channel.state.server_balance.0);
        assert_eq!(closes_of(&chain, channel.state.channel_id).await, 1);
    }
    // ... and the payee got exactly the sum of their balances, less its gas.
    let payee_after = reader(&chain).get_balance(chain.server_wallet.address()).await.unwrap();
    assert_eq!(payee_after + gas_cost(&chain, tx).await - payee_before, U256::from(6 * PRICE));
    let metrics = server.metrics().await;
    assert_eq!(metrics["tollstream_wei_settled_total"], (6 * PRICE) as f64);
    assert_eq!(metrics["tollstream_close_batch_size_count"], 1.0);
    assert_eq!(metrics["tollstream_close_batch_size_sum"], 3.0);
    assert_eq!(metrics["tollstream_close_entries_skipped_total"], 0.0);
}
