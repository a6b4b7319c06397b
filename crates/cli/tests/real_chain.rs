//! Money safety on a chain that behaves like a public one: blocks come when
//! the test mines them, the base fee spikes, blocks are reorganised away,
//! another transaction takes the payee's nonce, the payee runs out of gas
//! money, and RPC endpoints fail or hang. Each test runs its own node,
//! contract and `tollstream serve`, with real viewers.
//!
//! What is asserted is what the chain shows (the registry's `Closed`
//! events, balances, the pool), what the viewers receive, and the metrics
//! and log lines an operator would watch.
//!
//! The tests run on two threads: `ServerProcess::start` blocks its thread
//! until the server prints its address, while the server's first RPC calls
//! may need a proxy or miner task of the test to make progress.

mod common;

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use common::{LIFETIME, Miner, PRICE, Proxy, ServerOptions, ServerProcess, TestChain, args, within};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tollstream_client::{Event, Step, Viewer};
use tollstream_protocol::{Address, ChannelState, ErrorCode, PayRequest, SigningKey};

const GWEI: u128 = 1_000_000_000;

/// A server selling half-second windows, settling every 0.2 s, with these
/// extra `serve` flags.
fn options(extra: &[&str]) -> ServerOptions {
    ServerOptions { window_seconds: 0.5, settle_interval: 0.2, extra_args: args(extra), ..ServerOptions::default() }
}

/// A funded viewer connected to `server`, and its wallet.
async fn viewer(chain: &TestChain, server: &ServerProcess) -> (Viewer, SigningKey) {
    let wallet = chain.viewer_wallet().await;
    (Viewer::connect(&server.url, wallet.clone()).await.unwrap(), wallet)
}

/// Buys a channel of `windows` windows while mining is paused: its `open`
/// is mined alone in one new block, the latest when the server is told.
async fn buy_in_one_block(chain: &TestChain, viewer: &mut Viewer, wallet: Address, windows: u64) -> ChannelState {
    let node = chain.node_rpc();
    let (bought, ()) = tokio::join!(viewer.buy(&node, windows, LIFETIME), chain.mine_when_sent(wallet));
    bought.unwrap()
}

/// Plays until the secret of payment `payments` arrives (or the channel is
/// spent), then stops, leaving no `pay` of the old session unread.
async fn stream_until(viewer: &mut Viewer, payments: u64) {
    viewer.play("demo", 0).await.unwrap();
    let spent = within(60, async {
        loop {
            match viewer.next_step().await {
                Step::Keys(secret) if secret.client_sequence_number >= payments => break false,
                Step::Final(_) => break true,
                Step::Keys(_) | Step::Paid { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    if spent {
        return;
    }
    viewer.stop().await.unwrap();
    // A `pay` sent before the stop is already queued: read it unanswered,
    // so the next session does not mistake it for its own.
    while let Ok(event) = tokio::time::timeout(Duration::ZERO, viewer.next_event()).await {
        assert!(matches!(event, Event::Pay(..)), "unexpected {event:?} after stop");
    }
}

/// Waits (streaming) for the server's `pay` for payment `sequence` and
/// returns it unanswered.
async fn next_pay(server: &ServerProcess, viewer: &mut Viewer, sequence: u64, seconds: u64) -> Event {
    match tokio::time::timeout(Duration::from_secs(seconds), viewer.next_event()).await {
        Ok(Event::Pay(request, answer)) => {
            assert_eq!(request.client_sequence_number, sequence, "{request:?}");
            Event::Pay(request, answer)
        }
        Ok(other) => panic!("expected the pay for {sequence}, got {other:?}\n{}", server.log()),
        Err(_) => panic!("no pay for {sequence} within {seconds} s\n{}", server.log()),
    }
}

/// Answers a `pay` and waits for the secret it buys.
async fn answer_and_get_keys(server: &ServerProcess, viewer: &mut Viewer, pay: Event) {
    let Event::Pay(request, answer) = pay else { panic!("not a pay: {pay:?}") };
    let sequence = request.client_sequence_number;
    match viewer.answer_pay(request, answer).await {
        Step::Paid { .. } => {}
        other => panic!("could not pay {sequence}: {other:?}"),
    }
    match tokio::time::timeout(Duration::from_secs(10), viewer.next_step()).await {
        Ok(Step::Keys(secret) | Step::Final(secret)) => assert_eq!(secret.client_sequence_number, sequence),
        other => panic!("expected the secret of {sequence}, got {other:?}\n{}", server.log()),
    }
}

/// Checks that the server asks nothing of a streaming viewer for `seconds`.
async fn no_pay_for(server: &ServerProcess, viewer: &mut Viewer, seconds: f64, why: &str) {
    if let Ok(event) = tokio::time::timeout(Duration::from_secs_f64(seconds), viewer.next_event()).await {
        panic!("{why}, but the server sent {event:?}\n{}", server.log());
    }
}

/// Waits until the channel's close is in the canonical chain, and returns
/// that one `Closed` event.
async fn closed_once(server: &ServerProcess, chain: &TestChain, channel: B256, seconds: u64) -> common::ClosedEvent {
    let mut closes = server
        .wait_for(seconds, "the channel's Closed event", async || non_empty(chain.closed_events(channel).await))
        .await;
    assert_eq!(closes.len(), 1, "one channel, one close: {closes:?}");
    closes.remove(0)
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

/// What the payee gained since block `at`, when its balance was `before`,
/// with the gas it paid since added back: exactly what the closes paid it,
/// when nothing else pays it.
async fn payee_income(chain: &TestChain, before: U256, at: u64) -> U256 {
    let payee = chain.server_wallet.address();
    chain.balance(payee).await + chain.gas_paid_by(payee, at + 1).await - before
}

fn wei(windows: u64) -> U256 {
    U256::from(windows * PRICE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_whose_nonce_another_transaction_took_is_sent_again_and_pays_once() {
    let chain = TestChain::own().await;
    let server = ServerProcess::start(&chain, &options(&["--confirmations", "1"]));
    let payee = chain.server_wallet.address();
    let (mut viewer, _) = viewer(&chain, &server).await;
    let channel = viewer.buy(&chain.rpc, 2, LIFETIME).await.unwrap().channel_id;
    let start = chain.block_number().await;
    let before = chain.balance(payee).await;
    stream_until(&mut viewer, 1).await;

    // The last payment makes the channel due; its close waits in the pool.
    chain.set_automine(false).await;
    stream_until(&mut viewer, 2).await;
    let close = chain.wait_for_pool_tx(payee, 30).await;

    // Another transaction of the payee's wallet (a transfer an operator
    // sent by hand, say) takes that nonce with higher fees and is mined.
    let foreign = chain
        .send_self_transfer(
            &chain.server_wallet,
            close.nonce,
            close.max_fee_per_gas * 2,
            close.max_priority_fee_per_gas * 2 + 1,
        )
        .await;
    assert_eq!(chain.pool_tx(payee).await.map(|tx| tx.hash), Some(foreign), "the pool took the replacement");
    chain.mine(1).await;
    assert_eq!(chain.receipt(foreign).await, Some(true));
    assert_eq!(chain.receipt(close.hash).await, None, "the first close can never be mined now");

    // The server notices, re-reads the channel and closes it at a fresh nonce.
    chain.set_automine(true).await;
    let closed = closed_once(&server, &chain, channel, 30).await;
    assert_ne!(closed.tx, close.hash);
    assert_eq!(closed.server_balance, wei(2), "the Closed event pays what was paid");
    assert_eq!(closed.client_balance, U256::ZERO);
    assert_eq!(payee_income(&chain, before, start).await, wei(2), "the payee gets exactly the channel's balance");
    server
        .wait_for(10, "tollstream_closes_nonce_taken_total ≥ 1", async || {
            server.metric("tollstream_closes_nonce_taken_total").await.filter(|n| *n >= 1.0)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_priced_under_a_base_fee_spike_is_bumped_and_lands_during_it() {
    let chain = TestChain::own().await;
    let server = ServerProcess::start(&chain, &options(&["--confirmations", "1", "--resubmit-blocks", "3"]));
    let payee = chain.server_wallet.address();
    let (mut viewer, _) = viewer(&chain, &server).await;
    let channel = viewer.buy(&chain.rpc, 2, LIFETIME).await.unwrap().channel_id;
    stream_until(&mut viewer, 1).await;
    chain.set_automine(false).await;
    stream_until(&mut viewer, 2).await;
    let close = chain.wait_for_pool_tx(payee, 30).await;

    // From the next block on the base fee is ten times what the close
    // offers: the node drops it from the pool and refuses it as it is.
    let spike = close.max_fee_per_gas * 10;
    assert!(spike < 200 * GWEI, "the spike stays under the default fee cap");
    let miner = Miner::start_with_base_fee(&chain, Duration::from_millis(100), spike);

    let closed = closed_once(&server, &chain, channel, 45).await;
    drop(miner);
    assert_eq!(closed.server_balance, wei(2));
    assert!(chain.base_fee_of(closed.block).await >= spike, "the close landed while the base fee was high");
    let bumps = server.metric("tollstream_close_fee_bumps_total").await;
    assert!(bumps.is_some_and(|n| n > 0.0), "the close was re-priced: {bumps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_at_the_fee_cap_waits_says_so_and_lands_when_the_base_fee_falls() {
    let chain = TestChain::own().await;
    let cap = 5 * GWEI;
    let server =
        ServerProcess::start(&chain, &options(&["--confirmations", "1", "--max-fee-per-gas", &cap.to_string()]));
    let payee = chain.server_wallet.address();
    let (mut viewer, _) = viewer(&chain, &server).await;
    let channel = viewer.buy(&chain.rpc, 2, LIFETIME).await.unwrap().channel_id;
    stream_until(&mut viewer, 1).await;
    chain.set_automine(false).await;
    stream_until(&mut viewer, 2).await;
    let close = chain.wait_for_pool_tx(payee, 30).await;
    assert!(close.max_fee_per_gas <= cap, "the first close is under the cap: {close:?}");

    // The market goes to ten times the cap: the server bumps up to the cap,
    // then waits, and tells the operator.
    let miner = Miner::start_with_base_fee(&chain, Duration::from_millis(100), cap * 10);
    server
        .wait_for(45, "the fee-cap gauge and log line", async || {
            let at_cap = server.metric("tollstream_closes_at_fee_cap").await.is_some_and(|n| n >= 1.0);
            (at_cap && server.log().contains("fee cap")).then_some(())
        })
        .await;
    assert!(chain.closed_events(channel).await.is_empty(), "nothing can land above the cap");
    if let Some(pooled) = chain.pool_tx(payee).await {
        assert!(pooled.max_fee_per_gas <= cap, "never offers more than the cap: {pooled:?}");
    }

    // The base fee falls back under the cap: the close lands.
    miner.set_base_fee(GWEI / 2);
    let closed = closed_once(&server, &chain, channel, 30).await;
    drop(miner);
    assert_eq!(closed.server_balance, wei(2));
    let receipt = chain.provider().get_transaction_receipt(closed.tx).await.unwrap().unwrap();
    assert!(receipt.effective_gas_price <= cap, "paid at most the cap per gas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_removed_by_a_reorg_is_sent_again_and_pays_the_payee_once() {
    let chain = TestChain::own().await;
    let server = ServerProcess::start(&chain, &options(&["--confirmations", "3"]));
    let payee = chain.server_wallet.address();
    let (mut viewer, _) = viewer(&chain, &server).await;
    let channel = viewer.buy(&chain.rpc, 2, LIFETIME).await.unwrap().channel_id;
    chain.mine(3).await; // the open is confirmed
    let start = chain.block_number().await;
    let before = chain.balance(payee).await;
    stream_until(&mut viewer, 1).await;
    chain.set_automine(false).await;
    stream_until(&mut viewer, 2).await;

    // The close is mined, and once the server has seen it mined, a reorg
    // takes its block away: it had one confirmation of the three the
    // server waits for.
    let close = chain.wait_for_pool_tx(payee, 30).await;
    chain.mine(1).await;
    assert_eq!(chain.receipt(close.hash).await, Some(true));
    let hash = close.hash.to_string();
    server
        .wait_for(10, "the server to log its close as mined", async || {
            server.log().lines().any(|line| line.contains(&hash) && line.contains("mined")).then_some(())
        })
        .await;
    chain.reorg(1).await;
    assert_eq!(chain.receipt(close.hash).await, None, "the reorg removed the close");
    assert!(chain.pool_tx(payee).await.is_none(), "and the node forgot it");

    // Blocks keep coming; the server must send its close again.
    let miner = Miner::start(&chain, Duration::from_millis(200));
    let closed = closed_once(&server, &chain, channel, 30).await;
    server
        .wait_for(30, "the close counted at three confirmations", async || {
            let deep = chain.block_number().await + 1 >= closed.block + 3;
            let settled = server.metric("tollstream_wei_settled_total").await.is_some_and(|w| w >= (2 * PRICE) as f64);
            (deep && settled).then_some(())
        })
        .await;
    drop(miner);
    assert_eq!(chain.closed_events(channel).await.len(), 1, "exactly one close in the canonical chain");
    assert_eq!(closed.server_balance, wei(2));
    assert_eq!(payee_income(&chain, before, start).await, wei(2), "the payee is paid once");
    let metrics = server.metrics().await;
    assert_eq!(metrics["tollstream_wei_settled_total"], (2 * PRICE) as f64, "counted once");
    assert!(metrics.get("tollstream_closes_reorged_total").is_some_and(|n| *n >= 1.0), "{metrics:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_removed_by_a_reorg_ends_the_session_and_nothing_is_settled_for_it() {
    let chain = TestChain::own().await;
    let server = ServerProcess::start(
        &chain,
        &ServerOptions { pay_timeout: 20.0, ..options(&["--confirmations", "3", "--unconfirmed-windows", "3"]) },
    );
    let payee = chain.server_wallet.address();
    chain.set_automine(false).await;
    let (mut viewer, wallet) = viewer(&chain, &server).await;
    let channel = buy_in_one_block(&chain, &mut viewer, wallet.address(), 10).await.channel_id;
    viewer.play("demo", 0).await.unwrap();
    let pay = next_pay(&server, &mut viewer, 1, 10).await;
    answer_and_get_keys(&server, &mut viewer, pay).await;

    // The open's block is reorganised away (one confirmation of three).
    chain.reorg(1).await;
    assert_eq!(chain.channel_status(channel).await, 0, "the channel is gone from the chain");
    assert!(chain.pool_tx(wallet.address()).await.is_none(), "and its open with it");

    // The session ends with `unknown_channel`. A `pay` asked meanwhile is
    // held, and answered only afterwards: it must buy nothing.
    let mut held: Option<(PayRequest, tollstream_client::PayAnswer)> = None;
    let error = within(15, async {
        loop {
            match viewer.next_event().await {
                Event::Pay(request, answer) => held = Some((request, answer)),
                Event::Step(Step::Stopped(error)) => break error,
                other => panic!("expected unknown_channel, got {other:?}\n{}", server.log()),
            }
        }
    })
    .await;
    assert_eq!(error.code, ErrorCode::UnknownChannel, "{error}\n{}", server.log());
    if let Some((request, answer)) = held {
        let _ = viewer.answer_pay(request, answer).await;
    }
    if let Ok(event) = tokio::time::timeout(Duration::from_secs(1), viewer.next_event()).await {
        assert!(!matches!(event, Event::Step(Step::Keys(_) | Step::Final(_))), "a secret after the reorg: {event:?}");
    }

    let key = viewer.session_key().public_key();
    assert_eq!(viewer.client().latest_state(&key).await.unwrap(), None, "latestState forgets the missing channel");
    // A new `play` on it sells nothing either: refused in its ack
    // (PROTOCOL.md D7), so no session starts.
    let refused = viewer.play("demo", 0).await.expect_err("play on a missing channel is refused");
    assert_eq!(refused.code(), Some(ErrorCode::UnknownChannel), "{refused}");

    // The stored payment is kept, but nothing is settled for a channel that
    // is not on chain: no close is sent, however many blocks come.
    let nonce = chain.nonce(payee, true).await;
    chain.mine(5).await;
    server
        .holds_for(3.0, "no close for the missing channel", async || {
            chain.nonce(payee, true).await == nonce && chain.closed_events(channel).await.is_empty()
        })
        .await;
    assert_eq!(server.metric("tollstream_channels_dropped_total").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_channel_gets_its_unconfirmed_windows_then_waits_for_confirmations() {
    let chain = TestChain::own().await;
    let server = ServerProcess::start(&chain, &options(&["--confirmations", "3", "--unconfirmed-windows", "1"]));
    chain.set_automine(false).await;
    let (mut viewer, wallet) = viewer(&chain, &server).await;
    buy_in_one_block(&chain, &mut viewer, wallet.address(), 10).await;

    // One confirmation: one window, at once.
    viewer.play("demo", 0).await.unwrap();
    let pay = next_pay(&server, &mut viewer, 1, 5).await;
    answer_and_get_keys(&server, &mut viewer, pay).await;
    no_pay_for(&server, &mut viewer, 1.5, "one window is all an unconfirmed channel gets").await;

    // Two confirmations: still not enough.
    chain.mine(1).await;
    no_pay_for(&server, &mut viewer, 2.0, "the open has two confirmations of three").await;

    // Three: the server asks again at once, and the stream goes on.
    chain.mine(1).await;
    let pay = next_pay(&server, &mut viewer, 2, 5).await;
    answer_and_get_keys(&server, &mut viewer, pay).await;
    let pay = next_pay(&server, &mut viewer, 3, 5).await;
    answer_and_get_keys(&server, &mut viewer, pay).await;
}

/// A viewer streaming in the background, counting its paid windows.
struct Background {
    paid: Arc<AtomicU64>,
    /// Why the stream ended, if it did.
    ended: Arc<Mutex<Option<String>>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Viewer>,
}

impl Background {
    async fn start(mut viewer: Viewer) -> Background {
        viewer.play("demo", 0).await.unwrap();
        let paid = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(Mutex::new(None));
        let (stop, mut stopped) = oneshot::channel();
        let (count, why) = (paid.clone(), ended.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    step = viewer.next_step() => match step {
                        Step::Keys(secret) => count.store(secret.client_sequence_number, Ordering::SeqCst),
                        Step::Paid { .. } => {}
                        other => {
                            *why.lock().unwrap() = Some(format!("{other:?}"));
                            break;
                        }
                    },
                }
            }
            viewer
        });
        Background { paid, ended, stop: Some(stop), task }
    }

    /// Waits until at least one more window is paid for.
    async fn advances(&self, server: &ServerProcess, seconds: u64) {
        let from = self.paid.load(Ordering::SeqCst);
        server
            .wait_for(seconds, "the background stream to pay another window", async || {
                if let Some(why) = self.ended.lock().unwrap().clone() {
                    panic!("the background stream ended: {why}\n{}", server.log());
                }
                (self.paid.load(Ordering::SeqCst) > from).then_some(())
            })
            .await;
    }

    async fn stop(mut self) -> Viewer {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap()
    }
}

/// Asks `newChannel` for a fresh channel (opened on the node directly)
/// while the server cannot reach the chain: `chain_unavailable`, quickly.
async fn new_channel_is_refused_quickly(chain: &TestChain, server: &ServerProcess, viewer: &mut Viewer) {
    let asked = Instant::now();
    let refused = viewer.buy(&chain.node_rpc(), 2, LIFETIME).await;
    let took = asked.elapsed();
    let code = refused.as_ref().err().and_then(|e| e.code());
    assert_eq!(code, Some(ErrorCode::ChainUnavailable), "{refused:?}\n{}", server.log());
    assert!(took < Duration::from_secs(8), "newChannel took {took:?} to give up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_go_on_while_rpc_endpoints_fail_or_hang_and_settlement_catches_up() {
    let mut chain = TestChain::own().await;
    let mut first = Proxy::start(&chain.node_rpc()).await;
    let mut second = Proxy::start(&chain.node_rpc()).await;
    chain.rpc = first.url();
    let server = ServerProcess::start(
        &chain,
        &ServerOptions {
            // The short channel's last `pay` is answered a while after it is asked.
            pay_timeout: 60.0,
            ..options(&["--rpc-url", &second.url(), "--rpc-timeout", "2", "--confirmations", "1"])
        },
    );

    // A long stream, and a short channel whose last window is paid for
    // while the chain is out of reach.
    let (mut long, _) = viewer(&chain, &server).await;
    long.buy(&chain.node_rpc(), 400, LIFETIME).await.unwrap();
    let long = Background::start(long).await;
    let (mut short, _) = viewer(&chain, &server).await;
    let short_channel = short.buy(&chain.node_rpc(), 2, LIFETIME).await.unwrap().channel_id;
    short.play("demo", 0).await.unwrap();
    let pay = next_pay(&server, &mut short, 1, 10).await;
    answer_and_get_keys(&server, &mut short, pay).await;
    let last_pay = next_pay(&server, &mut short, 2, 10).await;
    long.advances(&server, 5).await;

    // One endpoint gone: nothing changes, newChannel included.
    first.down().await;
    long.advances(&server, 5).await;
    let (mut newcomer, _) = viewer(&chain, &server).await;
    newcomer.buy(&chain.node_rpc(), 2, LIFETIME).await.expect("newChannel through the other endpoint");
    long.advances(&server, 5).await;

    // Both gone: newChannel is refused at once, streams go on.
    second.down().await;
    new_channel_is_refused_quickly(&chain, &server, &mut newcomer).await;
    long.advances(&server, 5).await;

    // Both hang for 30 s: the same, and a final payment is taken.
    first.hang().await;
    second.hang().await;
    let hung = Instant::now();
    new_channel_is_refused_quickly(&chain, &server, &mut newcomer).await;
    answer_and_get_keys(&server, &mut short, last_pay).await;
    while hung.elapsed() < Duration::from_secs(30) {
        long.advances(&server, 5).await;
    }
    assert!(chain.closed_events(short_channel).await.is_empty(), "no close without the chain");

    // The endpoints return: the spent channel is closed, the stream goes on.
    first.up().await;
    second.up().await;
    let closed = closed_once(&server, &chain, short_channel, 30).await;
    assert_eq!(closed.server_balance, wei(2));
    long.advances(&server, 5).await;
    long.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payee_wallet_without_gas_money_is_reported_and_its_close_lands_once_funded() {
    let chain = TestChain::own().await;
    let server = ServerProcess::start(&chain, &options(&["--confirmations", "1"]));
    let payee = chain.server_wallet.address();
    let (mut viewer, _) = viewer(&chain, &server).await;
    let channel = viewer.buy(&chain.rpc, 2, LIFETIME).await.unwrap().channel_id;
    stream_until(&mut viewer, 1).await;

    // The channel owes the payee a window; the payee's wallet is emptied.
    chain.node().set_balance(payee, U256::ZERO).await.unwrap();
    server
        .wait_for(15, "tollstream_payee_gas_low 1 and the warning", async || {
            let low = server.metric("tollstream_payee_gas_low").await == Some(1.0);
            (low && server.log().contains("low on gas")).then_some(())
        })
        .await;
    let metrics = server.metrics().await;
    assert_eq!(metrics.get("tollstream_payee_balance_wei"), Some(&0.0), "{metrics:?}");
    assert!(
        metrics.get("tollstream_close_gas_needed_wei").is_some_and(|wei| *wei > 0.0),
        "the gas needed counts every channel that owes the payee, due or not: {metrics:?}"
    );

    // The channel is spent: its close is due, and cannot be paid for.
    stream_until(&mut viewer, 2).await;
    server.holds_for(1.0, "no close without gas money", async || chain.closed_events(channel).await.is_empty()).await;

    // Funded again: the close lands within a few settlement passes.
    chain.node().set_balance(payee, U256::from(common::ETH)).await.unwrap();
    let closed = closed_once(&server, &chain, channel, 10).await;
    assert_eq!(closed.server_balance, wei(2));
    server
        .wait_for(10, "tollstream_payee_gas_low back to 0", async || {
            (server.metric("tollstream_payee_gas_low").await == Some(0.0)).then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_channel_holding_server_money_is_closed_within_a_minute() {
    let chain = TestChain::own().await;
    let server = ServerProcess::start(&chain, &options(&["--confirmations", "1"]));
    let (mut viewer, wallet) = viewer(&chain, &server).await;
    let bought_at = chain.now().await;
    let old = viewer.buy(&chain.rpc, 10, LIFETIME).await.unwrap();
    stream_until(&mut viewer, 2).await;

    // The viewer opens and announces a second channel: the first will
    // never be paid again.
    let new = viewer.buy(&chain.rpc, 5, LIFETIME).await.unwrap();
    let client_before = chain.balance(wallet.address()).await;
    let closed = closed_once(&server, &chain, old.channel_id, 60).await;
    assert_eq!(closed.server_balance, wei(2));
    assert_eq!(closed.client_balance, wei(8));
    assert_eq!(chain.balance(wallet.address()).await - client_before, wei(8), "the unspent deposit is back");

    // Long before the old channel's settlement margin (hours before it
    // expires), and the new channel is untouched.
    assert!(chain.timestamp_of(closed.block).await < bought_at + LIFETIME - 3600);
    assert_eq!(chain.channel_status(new.channel_id).await, 1, "the new channel stays open");
    let key = viewer.session_key().public_key();
    let latest = viewer.client().latest_state(&key).await.unwrap();
    assert_eq!(latest.map(|state| state.channel_id), Some(new.channel_id));
}
