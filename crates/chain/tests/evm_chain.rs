//! `EvmChain` on a real anvil node: what the `Chain` trait promises, what
//! the in-memory `MemoryChain` models of it, and the transaction manager
//! driven end to end.
//!
//! Where the double models the node (reorgs, the pool's refusals, a close
//! that cannot succeed), one scenario runs on both through [`Control`], so
//! the double cannot drift from the node unnoticed. Tests that turn
//! automine off, reorg, or move the base fee or a balance start a node of
//! their own; the others share one.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, TxHash, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{BlockNumberOrTag, TransactionRequest};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollstream_chain::anvil::{self, Anvil};
use tollstream_chain::evm::sign_transaction;
use tollstream_chain::fees::Bump;
use tollstream_chain::memory::MemoryChain;
use tollstream_chain::viewer::{OpenRequest, open_channel};
use tollstream_chain::{
    Attempt, BlockRef, Chain, ChainError, ChannelEvent, ChannelStatus, CloseTx, Decision, EvmChain, Fees, Head,
    Inclusion, Policy, RpcOptions, Sent, SignedTx, TxManager, connect_provider, deploy, wallet_of,
};
use tollstream_protocol::{Amount, ChannelDomain, ChannelState, Signature, SigningKey};

const ETH: u128 = 1_000_000_000_000_000_000;
const GWEI: u128 = 1_000_000_000;
const HOUR: u64 = 3600;
/// Gas for closes signed by hand: more than a close takes.
const GAS: u64 = 100_000;

const POLICY: Policy = Policy { confirmations: 2, resubmit_blocks: 3, max_fee_per_gas: 1_000 * GWEI };

fn eth(amount: u128) -> U256 {
    U256::from(amount * ETH)
}

/// One test's actors on a node: a fresh registry and fresh wallets, so
/// tests sharing a node never race for nonces.
struct Node<'a> {
    anvil: &'a Anvil,
    rpc: DynProvider,
    contract: Address,
    chain_id: u64,
    client: SigningKey,
    payee: SigningKey,
    /// The client's session key, which signs the channel's states.
    session: SigningKey,
}

impl<'a> Node<'a> {
    async fn new(anvil: &'a Anvil) -> Node<'a> {
        let deployer = anvil.funded_wallet(eth(10)).await.unwrap();
        let contract = deploy(connect_provider(anvil.endpoint(), Some(&deployer)).unwrap()).await.unwrap();
        let rpc = connect_provider(anvil.endpoint(), None).unwrap();
        Node {
            anvil,
            chain_id: rpc.get_chain_id().await.unwrap(),
            rpc,
            contract,
            client: anvil.funded_wallet(eth(100)).await.unwrap(),
            payee: anvil.funded_wallet(eth(10)).await.unwrap(),
            session: SigningKey::from_bytes(B256::random().0).unwrap(),
        }
    }

    /// The payee's view of the chain, as the server holds it.
    async fn payee_chain(&self) -> EvmChain {
        EvmChain::connect(self.anvil.endpoint(), Some(&self.payee), self.contract).await.unwrap()
    }

    /// Opens a channel of `deposit` wei (waiting for it to be mined, so
    /// automine must be on) and returns its id and the open's hash.
    async fn open(&self, deposit: U256) -> (B256, TxHash) {
        let now = self.rpc.get_block_by_number(BlockNumberOrTag::Latest).await.unwrap().unwrap().header.timestamp;
        let request = OpenRequest {
            contract: self.contract,
            payee: self.payee.address(),
            signer: self.session.address(),
            deposit,
            expires_at: now + HOUR,
            salt: B256::random(),
        };
        let opened = open_channel(self.anvil.endpoint(), &self.client, &request).await.unwrap();
        (opened.channel_id, opened.tx)
    }

    /// `signer`'s state of channel `id` paying the server `server` of `deposit`.
    fn state(&self, id: B256, deposit: U256, server: U256, signer: &SigningKey) -> ChannelState {
        let mut state = ChannelState {
            channel_id: id,
            channel_address: self.contract,
            client_wallet_address: self.client.address(),
            client_public_key: self.session.public_key(),
            client_balance: Amount(deposit - server),
            server_balance: Amount(server),
            client_sequence_number: 1,
            client_signature: Signature([0; 65]),
        };
        state.sign(&ChannelDomain::new(self.chain_id, self.contract), signer);
        state
    }

    /// Opens a channel of 1 ETH and returns the session's state paying the
    /// server a quarter of it.
    async fn open_paid(&self) -> ChannelState {
        let (id, _) = self.open(eth(1)).await;
        self.state(id, eth(1), eth(1) / U256::from(4), &self.session)
    }

    /// A JSON-RPC call of anvil's own (`evm_*`, `anvil_*`).
    async fn call(&self, method: &'static str, params: serde_json::Value) -> serde_json::Value {
        self.rpc.raw_request(method.into(), params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    async fn set_automine(&self, on: bool) {
        self.call("evm_setAutomine", json!([on])).await;
    }
}

/// What a scenario does to a chain besides the `Chain` calls: anvil's own
/// RPC methods on the node, the double's methods in memory.
trait Control {
    /// Mines one block with what the pool holds.
    async fn mine(&self);
    /// Replaces the newest `depth` blocks with empty ones.
    async fn reorg(&self, depth: u64);
    /// Sets the base fee that the next block charges.
    async fn set_next_base_fee(&self, wei: u128);
    async fn set_payee_balance(&self, wei: U256);
    /// While on, blocks leave the payee's close in the pool, as on a
    /// congested chain.
    async fn congest(&self, on: bool);
    /// Mines a payee transaction that is none of ours at `nonce`, paying
    /// more than `fees` so that it takes the place of ours in the pool.
    async fn mine_foreign_transaction(&self, nonce: u64, fees: Fees);
    /// Whether `tx` waits in the pool, where the chain shows it.
    async fn pending(&self, tx: TxHash) -> Option<bool>;
}

impl Control for Node<'_> {
    async fn mine(&self) {
        self.call("evm_mine", json!([])).await;
    }

    async fn reorg(&self, depth: u64) {
        // No transactions go into the replacement blocks.
        self.call("anvil_reorg", json!([depth, []])).await;
    }

    async fn set_next_base_fee(&self, wei: u128) {
        self.call("anvil_setNextBlockBaseFeePerGas", json!([U256::from(wei)])).await;
    }

    async fn set_payee_balance(&self, wei: U256) {
        self.anvil.set_balance(self.payee.address(), wei).await.unwrap();
    }

    async fn congest(&self, on: bool) {
        // A block gas limit under a close's gas keeps it out of blocks and
        // in the pool; 30 million is anvil's default.
        let limit = if on { 40_000 } else { 30_000_000 };
        self.call("anvil_setBlockGasLimit", json!([U256::from(limit)])).await;
    }

    async fn mine_foreign_transaction(&self, nonce: u64, fees: Fees) {
        // The operator's transfer to itself.
        let payee = self.payee.address();
        let transfer = TransactionRequest::default()
            .with_from(payee)
            .with_to(payee)
            .with_value(U256::ZERO)
            .with_chain_id(self.chain_id);
        let Bump::To(more) = fees.bump(fees, POLICY.max_fee_per_gas) else { panic!("under the cap") };
        let foreign = sign_transaction(&wallet_of(&self.payee), transfer, nonce, 21_000, more).await.unwrap();
        let chain = self.payee_chain().await;
        assert_eq!(chain.send(&foreign).await.unwrap(), Sent::Accepted, "it replaces the close in the pool");
        self.mine().await;
        assert!(chain.receipt(foreign.hash).await.unwrap().unwrap().success);
    }

    async fn pending(&self, tx: TxHash) -> Option<bool> {
        let found = self.rpc.get_transaction_by_hash(tx).await.unwrap();
        Some(found.is_some_and(|tx| tx.block_number.is_none()))
    }
}

impl Control for MemoryChain {
    async fn mine(&self) {
        MemoryChain::mine(self);
    }

    async fn reorg(&self, depth: u64) {
        // `requeue: false` is what the double says anvil does; the
        // scenario checks it.
        MemoryChain::reorg(self, depth as usize, false);
    }

    async fn set_next_base_fee(&self, wei: u128) {
        self.set_base_fee(wei);
    }

    async fn set_payee_balance(&self, wei: U256) {
        self.set_balance(wei);
    }

    async fn congest(&self, on: bool) {
        self.set_min_tip(if on { u128::MAX } else { 0 });
    }

    async fn mine_foreign_transaction(&self, _nonce: u64, _fees: Fees) {
        MemoryChain::mine_foreign_transaction(self);
    }

    async fn pending(&self, _tx: TxHash) -> Option<bool> {
        // The double does not show its pool.
        None
    }
}

/// A depth-1 reorg removes the newest block, which holds channel `id`'s
/// open: the channel is gone, and mining on does not bring it back.
async fn a_reorg_takes_back_the_open(chain: &dyn Chain, control: &impl Control, id: B256) {
    let head = chain.head().await.unwrap();
    let open = chain.find_open(id, 0, head.number).await.unwrap();
    assert_eq!(open, Some(BlockRef { number: head.number, hash: head.hash }), "the open is in the newest block");
    assert_eq!(chain.channel(id).await.unwrap().status, ChannelStatus::Open);

    control.reorg(1).await;
    let after = chain.head().await.unwrap();
    assert_eq!(after.number, head.number, "a reorg of depth 1 keeps the height");
    assert_ne!(after.hash, head.hash);
    assert_eq!(chain.block_hash(head.number).await.unwrap(), Some(after.hash));
    assert_eq!(chain.channel(id).await.unwrap().status, ChannelStatus::None);
    assert_eq!(chain.find_open(id, 0, after.number).await.unwrap(), None);

    // The removed block's transactions are not mined again.
    control.mine().await;
    control.mine().await;
    let later = chain.head().await.unwrap();
    assert_eq!(later.number, head.number + 2);
    assert_eq!(chain.find_open(id, 0, later.number).await.unwrap(), None);
    assert_eq!(chain.channel(id).await.unwrap().status, ChannelStatus::None);
}

#[tokio::test]
async fn reads_agree_with_the_node_and_a_reorg_takes_the_open_back() {
    let anvil = Anvil::spawn().unwrap();
    let node = Node::new(&anvil).await;
    let chain = node.payee_chain().await;
    let (id, open_tx) = node.open(eth(1)).await;

    let latest = node.rpc.get_block_by_number(BlockNumberOrTag::Latest).await.unwrap().unwrap().header;
    let head = chain.head().await.unwrap();
    assert_eq!(head, Head { number: latest.number, hash: latest.hash, timestamp: latest.timestamp });
    assert_eq!(chain.now().await.unwrap(), latest.timestamp);
    for number in 0..=head.number {
        let block = node.rpc.get_block_by_number(number.into()).await.unwrap().unwrap();
        assert_eq!(chain.block_hash(number).await.unwrap(), Some(block.header.hash), "block {number}");
    }
    assert_eq!(chain.block_hash(head.number + 1).await.unwrap(), None);

    let receipt = node.rpc.get_transaction_receipt(open_tx).await.unwrap().unwrap();
    let inclusion = chain.receipt(open_tx).await.unwrap().unwrap();
    assert_eq!(
        inclusion,
        Inclusion {
            tx: open_tx,
            block: receipt.block_number.unwrap(),
            block_hash: receipt.block_hash.unwrap(),
            success: true
        }
    );
    let open = BlockRef { number: inclusion.block, hash: inclusion.block_hash };
    assert_eq!(chain.find_open(id, 0, head.number).await.unwrap(), Some(open));
    assert_eq!(chain.find_open(id, open.number, open.number).await.unwrap(), Some(open));
    assert_eq!(chain.find_open(id, 0, open.number - 1).await.unwrap(), None, "the range is kept to");
    assert_eq!(chain.find_open(B256::random(), 0, head.number).await.unwrap(), None);

    let channel = chain.channel(id).await.unwrap();
    assert_eq!(
        (channel.status, channel.client, channel.token, channel.deposit),
        (ChannelStatus::Open, node.client.address(), Address::ZERO, eth(1))
    );
    assert!(channel.is_for(node.payee.address(), node.session.address()), "the terms commit to payee and signer");
    assert!(!channel.is_for(node.session.address(), node.payee.address()));
    let opened = chain.opened_terms(id, 0, head.number).await.unwrap();
    assert_eq!(opened, Some((node.payee.address(), node.session.address())), "the Opened event names them");
    assert_eq!(chain.channel(B256::random()).await.unwrap().status, ChannelStatus::None);
    assert_eq!(chain.nonce(node.client.address()).await.unwrap(), 1);
    assert_eq!(chain.nonce(node.payee.address()).await.unwrap(), 0);
    assert_eq!(chain.balance(node.payee.address()).await.unwrap(), eth(10));
    assert_eq!((chain.chain_id(), chain.contract(), chain.payee()), (31337, node.contract, Some(node.payee.address())));

    a_reorg_takes_back_the_open(&chain, &node, id).await;
    // The open's receipt went with its block.
    assert_eq!(chain.receipt(open_tx).await.unwrap(), None);
    assert!(node.rpc.get_transaction_by_hash(open_tx).await.unwrap().is_none(), "nor is it pending");

    let memory = MemoryChain::new();
    let opened = memory.open_channel(1, 3);
    a_reorg_takes_back_the_open(&memory, &memory, opened.channel_id).await;
}

/// How the pool takes each kind of transaction a payee may send, starting
/// with nothing pending; the chain mines only on request.
async fn refusals(chain: &dyn Chain, control: &impl Control, state: &ChannelState) -> Vec<(&'static str, Sent)> {
    let payee = chain.payee().unwrap();
    let nonce = chain.nonce(payee).await.unwrap();
    let fees = chain.market_fees().await.unwrap();
    let scaled = |percent: u128| Fees {
        max_fee_per_gas: fees.max_fee_per_gas * percent / 100,
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas * percent / 100,
    };
    // Each gas limit makes a transaction of its own.
    let close = |nonce, gas, fees| chain.sign_close(state, nonce, gas, fees);
    let first = close(nonce, GAS, fees).await.unwrap();
    let mut seen = vec![
        ("new", chain.send(&first).await.unwrap()),
        ("the same bytes again", chain.send(&first).await.unwrap()),
        (
            "another at the pending nonce, same fees",
            chain.send(&close(nonce, GAS + 1, fees).await.unwrap()).await.unwrap(),
        ),
        (
            "another at the pending nonce, fees 5 % higher",
            chain.send(&close(nonce, GAS + 2, scaled(105)).await.unwrap()).await.unwrap(),
        ),
    ];
    control.mine().await;
    assert_eq!(chain.nonce(payee).await.unwrap(), nonce + 1, "the pending close is mined");
    seen.push(("the first bytes again, their nonce mined", chain.send(&first).await.unwrap()));
    seen.push((
        "another at the mined nonce",
        chain.send(&close(nonce, GAS + 3, scaled(200)).await.unwrap()).await.unwrap(),
    ));

    // anvil compares the fee cap with the next block's base fee when it
    // admits a transaction ("max fee per gas less than block base fee");
    // geth's and reth's pools admit it and keep it waiting instead.
    let base_fee = 100 * GWEI;
    control.set_next_base_fee(base_fee).await;
    let low = Fees { max_fee_per_gas: base_fee / 2, max_priority_fee_per_gas: GWEI };
    seen.push((
        "fee cap under the next base fee",
        chain.send(&close(nonce + 1, GAS, low).await.unwrap()).await.unwrap(),
    ));

    control.set_payee_balance(U256::ZERO).await;
    let high = Fees { max_fee_per_gas: 2 * base_fee, max_priority_fee_per_gas: GWEI };
    seen.push(("no balance", chain.send(&close(nonce + 1, GAS, high).await.unwrap()).await.unwrap()));
    seen
}

#[tokio::test]
async fn send_names_each_refusal_of_the_pool_as_the_double_does() {
    let anvil = Anvil::spawn().unwrap();
    let node = Node::new(&anvil).await;
    let state = node.open_paid().await;
    let chain = node.payee_chain().await;
    node.set_automine(false).await;
    let on_node = refusals(&chain, &node, &state).await;
    let memory = MemoryChain::new();
    let on_memory = refusals(&memory, &memory, &memory.open_paid_channel(1, 3, 1)).await;

    let mut expected = vec![
        ("new", Sent::Accepted),
        ("the same bytes again", Sent::AlreadyKnown),
        ("another at the pending nonce, same fees", Sent::Underpriced),
        ("another at the pending nonce, fees 5 % higher", Sent::Underpriced),
        ("the first bytes again, their nonce mined", Sent::NonceTooLow),
        ("another at the mined nonce", Sent::NonceTooLow),
        ("fee cap under the next base fee", Sent::FeeCapTooLow),
        ("no balance", Sent::InsufficientFunds),
    ];
    assert_eq!(on_memory, expected);
    // The one difference, and the double's is the stricter rule: anvil
    // replaces a pending transaction with any whose `maxFeePerGas` is
    // higher, by a single wei, whatever the tip; geth asks both fields to
    // rise by 10 %, and the double models geth. The manager's bumps
    // (12.5 % on both) satisfy both.
    expected[3].1 = Sent::Accepted;
    assert_eq!(on_node, expected);

    // A refusal `Sent` has no name for is `Rejected`, not a revert.
    let nonce = chain.nonce(node.payee.address()).await.unwrap();
    let starved = chain.sign_close(&state, nonce, 5_000, chain.market_fees().await.unwrap()).await.unwrap();
    let refused = chain.send(&starved).await;
    assert!(
        matches!(&refused, Err(ChainError::Rejected(text)) if text.contains("intrinsic gas too low")),
        "{refused:?}"
    );
}

/// A close that succeeds once: estimated, signed, sent, mined; then the
/// same state cannot close again.
async fn a_close_estimates_only_while_it_can_succeed(chain: &dyn Chain, control: &impl Control, state: &ChannelState) {
    let payee = chain.payee().unwrap();
    let gas = chain.estimate_close(state).await.unwrap();
    let fees = chain.market_fees().await.unwrap();
    let tx = chain.sign_close(state, chain.nonce(payee).await.unwrap(), gas, fees).await.unwrap();
    assert_eq!(chain.send(&tx).await.unwrap(), Sent::Accepted);
    control.mine().await;
    assert!(chain.receipt(tx.hash).await.unwrap().unwrap().success);
    assert_eq!(chain.channel(state.channel_id).await.unwrap().status, ChannelStatus::Closed);
    let again = chain.estimate_close(state).await;
    assert!(matches!(again, Err(ChainError::Reverted(_))), "{again:?}");
}

#[tokio::test]
async fn estimate_close_reverts_for_a_close_that_would_fail() {
    let node = Node::new(anvil::shared()).await;
    let chain = node.payee_chain().await;
    let state = node.open_paid().await;

    // Signed by a key that is not the channel's signer.
    let stranger = SigningKey::from_bytes(B256::random().0).unwrap();
    let forged = node.state(state.channel_id, eth(1), state.server_balance.0, &stranger);
    let refused = chain.estimate_close(&forged).await;
    assert!(matches!(refused, Err(ChainError::Reverted(_))), "{refused:?}");
    // More than the deposit, though the session signed it.
    let (id, _) = node.open(eth(1)).await;
    let mut greedy = node.state(id, eth(1), eth(1), &node.session);
    greedy.server_balance = Amount(eth(2));
    greedy.sign(&ChannelDomain::new(node.chain_id, node.contract), &node.session);
    let refused = chain.estimate_close(&greedy).await;
    assert!(matches!(refused, Err(ChainError::Reverted(_))), "{refused:?}");
    // Not the payee.
    let other = EvmChain::connect(node.anvil.endpoint(), Some(&node.client), node.contract).await.unwrap();
    let refused = other.estimate_close(&state).await;
    assert!(matches!(refused, Err(ChainError::Reverted(_))), "{refused:?}");

    // With automine on, `mine` only adds an empty block after the close's.
    a_close_estimates_only_while_it_can_succeed(&chain, &node, &state).await;
    let memory = MemoryChain::new();
    a_close_estimates_only_while_it_can_succeed(&memory, &memory, &memory.open_paid_channel(1, 3, 1)).await;
}

/// A loopback address where nothing listens.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A loopback server that accepts connections and never answers; the
/// task holds the sockets until it is aborted.
async fn hung_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("http://{address}"), task)
}

/// Reads and a send through `chain` all work, within `limit` together.
async fn every_call_works(chain: &EvmChain, node: &Node<'_>, limit: Duration) {
    let started = Instant::now();
    let head = chain.head().await.unwrap();
    assert!(chain.block_hash(head.number).await.unwrap().is_some());
    assert!(chain.balance(node.payee.address()).await.unwrap() > U256::ZERO);
    let state = node.open_paid().await;
    assert_eq!(chain.channel(state.channel_id).await.unwrap().status, ChannelStatus::Open);
    let found = chain.find_open(state.channel_id, 0, chain.head().await.unwrap().number).await.unwrap();
    assert!(found.is_some());
    let gas = chain.estimate_close(&state).await.unwrap();
    let nonce = chain.nonce(node.payee.address()).await.unwrap();
    let tx = chain.sign_close(&state, nonce, gas, chain.market_fees().await.unwrap()).await.unwrap();
    assert_eq!(chain.send(&tx).await.unwrap(), Sent::Accepted);
    let deadline = Instant::now() + Duration::from_secs(30);
    while chain.receipt(tx.hash).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the close is never mined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(chain.channel(state.channel_id).await.unwrap().status, ChannelStatus::Closed);
    assert!(started.elapsed() < limit, "the calls took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_dead_endpoint_is_passed_over_and_a_hung_one_times_out() {
    let node = Node::new(anvil::shared()).await;
    let real = node.anvil.endpoint().to_owned();
    let options = |urls: Vec<String>, timeout| RpcOptions { urls, timeout };

    // Connection refused first: every call goes to the node that answers.
    let chain = EvmChain::connect_with(
        &options(vec![dead_endpoint(), real.clone()], Duration::from_secs(5)),
        Some(&node.payee),
        node.contract,
    )
    .await
    .unwrap();
    assert_eq!(chain.chain_id(), node.chain_id);
    every_call_works(&chain, &node, Duration::from_secs(30)).await;

    // Only a server that never answers: the call fails at the timeout.
    let (hung, server) = hung_endpoint().await;
    let started = Instant::now();
    let alone = EvmChain::connect_with(&options(vec![hung.clone()], Duration::from_secs(1)), None, node.contract).await;
    let took = started.elapsed();
    assert!(matches!(alone, Err(ChainError::Unavailable(_))), "{:?}", alone.err());
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "failed after {took:?}");

    // The hung one beside the node: nothing waits for the hung one, though
    // its timeout is long.
    let chain = EvmChain::connect_with(
        &options(vec![hung.clone(), real], Duration::from_secs(60)),
        Some(&node.payee),
        node.contract,
    )
    .await
    .unwrap();
    every_call_works(&chain, &node, Duration::from_secs(30)).await;

    // A chain whose answering node stops: its calls fail at the timeout.
    let spare = Anvil::spawn().unwrap();
    let urls = vec![hung, spare.endpoint().to_owned()];
    let chain = EvmChain::connect_with(&options(urls, Duration::from_secs(1)), None, node.contract).await.unwrap();
    chain.head().await.unwrap();
    spare.stop();
    let started = Instant::now();
    let head = chain.head().await;
    let took = started.elapsed();
    assert!(matches!(head, Err(ChainError::Unavailable(_))), "{head:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "failed after {took:?}");
    server.abort();
}

async fn start(manager: &TxManager, state: &ChannelState) -> (SignedTx, u64, Sent) {
    let mut recorded_at = None;
    let (tx, sent) = manager
        .start_close(state, async |_: &SignedTx, head| {
            recorded_at = Some(head);
            Ok::<_, Infallible>(true)
        })
        .await
        .unwrap()
        .expect("the record is taken");
    (tx, recorded_at.unwrap(), sent.unwrap())
}

/// The close as its caller records it after `start_close`.
fn recorded(tx: &SignedTx, head: u64) -> CloseTx {
    CloseTx {
        nonce: tx.nonce,
        attempts: vec![Attempt { hash: tx.hash, fees: tx.fees }],
        signed_at_block: head,
        mined: None,
    }
}

/// Mines until `close` is confirmed, seeing it mined as `version` on the
/// way, and returns where.
async fn confirm(manager: &TxManager, control: &impl Control, close: &mut CloseTx, version: TxHash) -> Inclusion {
    control.mine().await;
    let seen = manager.observe(close).await.unwrap();
    let decision = manager.decide(close, &seen);
    let Decision::Mined(inclusion) = decision else { panic!("expected mined, got {decision:?}") };
    assert_eq!((inclusion.tx, inclusion.success), (version, true));
    close.mined = Some(inclusion);
    for _ in 1..POLICY.confirmations {
        control.mine().await;
    }
    let seen = manager.observe(close).await.unwrap();
    assert_eq!(manager.decide(close, &seen), Decision::Confirmed(inclusion));
    inclusion
}

/// The `Closed` event of `state`'s channel is in `inclusion`'s block, with
/// the state's balances.
async fn assert_closed_with(chain: &dyn Chain, state: &ChannelState, inclusion: Inclusion) {
    let events = chain.channel_events(inclusion.block, inclusion.block).await.unwrap();
    assert_eq!(
        events,
        vec![ChannelEvent::Closed {
            channel_id: state.channel_id,
            server_balance: state.server_balance.0,
            client_balance: state.client_balance.0,
            tx: Some(inclusion.tx),
        }]
    );
    assert_eq!(chain.channel(state.channel_id).await.unwrap().status, ChannelStatus::Closed);
}

/// A close whose nonce a foreign transaction took is given up, and the
/// channel closed again at the next nonce. The chain mines on request.
async fn a_taken_nonce_is_given_up_and_the_next_closes(
    chain: Arc<dyn Chain>,
    control: &impl Control,
    state: &ChannelState,
) {
    let manager = TxManager::new(chain.clone(), POLICY).unwrap();
    let next = chain.nonce(manager.payee()).await.unwrap();
    let (tx, head, sent) = start(&manager, state).await;
    assert_eq!((tx.nonce, sent), (next, Sent::Accepted));
    let close = recorded(&tx, head);
    assert_eq!(manager.decide(&close, &manager.observe(&close).await.unwrap()), Decision::Rebroadcast);
    assert_eq!(manager.broadcast(&tx).await.unwrap(), Sent::AlreadyKnown);

    control.mine_foreign_transaction(tx.nonce, tx.fees).await;
    assert_eq!(chain.receipt(tx.hash).await.unwrap(), None);
    // Given up only once the foreign transaction is as deep as a close
    // must be to count (POLICY: two confirmations).
    let seen = manager.observe(&close).await.unwrap();
    assert_eq!((seen.mined_nonce, seen.receipt), (tx.nonce, None));
    assert_eq!(manager.decide(&close, &seen), Decision::Rebroadcast);
    control.mine().await;
    let seen = manager.observe(&close).await.unwrap();
    assert_eq!((seen.mined_nonce, seen.receipt), (tx.nonce + 1, None));
    assert_eq!(manager.decide(&close, &seen), Decision::NonceTaken);
    assert_eq!(chain.channel(state.channel_id).await.unwrap().status, ChannelStatus::Open);

    manager.release(tx.nonce).await;
    let (again, head, sent) = start(&manager, state).await;
    assert_eq!((again.nonce, sent), (tx.nonce + 1, Sent::Accepted));
    let mut close = recorded(&again, head);
    let inclusion = confirm(&manager, control, &mut close, again.hash).await;
    assert_closed_with(&*chain, state, inclusion).await;
}

/// A close that blocks leave in the pool is re-priced after the interval;
/// its bump replaces it in the pool and is the version mined.
async fn a_pending_close_is_replaced_by_its_bump(chain: Arc<dyn Chain>, control: &impl Control, state: &ChannelState) {
    let manager = TxManager::new(chain.clone(), POLICY).unwrap();
    let (tx, head, sent) = start(&manager, state).await;
    assert_eq!(sent, Sent::Accepted);
    control.congest(true).await;
    for _ in 0..POLICY.resubmit_blocks {
        control.mine().await;
    }
    assert_eq!(chain.receipt(tx.hash).await.unwrap(), None);
    assert_ne!(control.pending(tx.hash).await, Some(false), "it waits in the pool");

    let mut close = recorded(&tx, head);
    let seen = manager.observe(&close).await.unwrap();
    assert!(seen.in_pool);
    let decision = manager.decide(&close, &seen);
    let Decision::Bump(fees) = decision else { panic!("expected a bump, got {decision:?}") };
    assert_eq!(
        fees,
        match tx.fees.bump(seen.market, POLICY.max_fee_per_gas) {
            Bump::To(fees) => fees,
            Bump::AtCap => panic!("under the cap"),
        }
    );
    let replacement = manager.sign_replacement(&tx, fees).await.unwrap();
    assert_eq!((replacement.nonce, replacement.gas_limit), (tx.nonce, tx.gas_limit));
    assert_ne!(replacement.hash, tx.hash);
    control.congest(false).await;
    assert_eq!(manager.broadcast(&replacement).await.unwrap(), Sent::Accepted);
    assert_ne!(control.pending(tx.hash).await, Some(true), "the replaced version left the pool");
    assert_eq!(manager.broadcast(&tx).await.unwrap(), Sent::Underpriced, "and does not come back");
    close.attempts.push(Attempt { hash: replacement.hash, fees });
    close.signed_at_block = seen.head;

    let inclusion = confirm(&manager, control, &mut close, replacement.hash).await;
    assert_eq!(chain.receipt(tx.hash).await.unwrap(), None);
    assert_closed_with(&*chain, state, inclusion).await;
}

/// A close whose fee cap the base fee outgrew is dropped from the pool;
/// priced anew at the market, it lands at the same nonce. Returns how the chain took the old
/// version sent again while the bump was pending.
async fn a_close_under_the_base_fee_is_dropped_and_its_bump_lands(
    chain: Arc<dyn Chain>,
    control: &impl Control,
    state: &ChannelState,
) -> Sent {
    let manager = TxManager::new(chain.clone(), POLICY).unwrap();
    let (tx, head, sent) = start(&manager, state).await;
    assert_eq!(sent, Sent::Accepted);
    control.set_next_base_fee(tx.fees.max_fee_per_gas * 4).await;
    for _ in 0..POLICY.resubmit_blocks {
        control.mine().await;
    }
    assert_eq!(chain.receipt(tx.hash).await.unwrap(), None);
    assert_ne!(control.pending(tx.hash).await, Some(true), "a block that cannot take it drops it");

    let mut close = recorded(&tx, head);
    let seen = manager.observe(&close).await.unwrap();
    assert!(!seen.in_pool);
    let decision = manager.decide(&close, &seen);
    // Not in the pool: priced anew at the market, which is over the base fee.
    let Decision::Reprice(fees) = decision else { panic!("expected a new price, got {decision:?}") };
    assert_eq!(fees, Fees::capped(seen.market, POLICY.max_fee_per_gas));
    let replacement = manager.sign_replacement(&tx, fees).await.unwrap();
    assert_eq!(manager.broadcast(&replacement).await.unwrap(), Sent::Accepted);
    let old_again = manager.broadcast(&tx).await.unwrap();
    close.attempts.push(Attempt { hash: replacement.hash, fees });
    close.signed_at_block = seen.head;

    let inclusion = confirm(&manager, control, &mut close, replacement.hash).await;
    assert_closed_with(&*chain, state, inclusion).await;
    old_again
}

#[tokio::test]
async fn a_close_whose_nonce_a_foreign_transaction_took_is_closed_again_at_the_next() {
    let anvil = Anvil::spawn().unwrap();
    let node = Node::new(&anvil).await;
    let state = node.open_paid().await;
    node.set_automine(false).await;
    a_taken_nonce_is_given_up_and_the_next_closes(Arc::new(node.payee_chain().await), &node, &state).await;

    let memory = Arc::new(MemoryChain::new());
    let state = memory.open_paid_channel(1, 3, 1);
    a_taken_nonce_is_given_up_and_the_next_closes(memory.clone(), &*memory, &state).await;
}

#[tokio::test]
async fn a_stuck_close_is_bumped_and_the_replacement_is_mined() {
    let anvil = Anvil::spawn().unwrap();
    let node = Node::new(&anvil).await;
    let pending = node.open_paid().await;
    let priced_out = node.open_paid().await;
    node.set_automine(false).await;
    let chain: Arc<dyn Chain> = Arc::new(node.payee_chain().await);
    a_pending_close_is_replaced_by_its_bump(chain.clone(), &node, &pending).await;
    let old_on_node = a_close_under_the_base_fee_is_dropped_and_its_bump_lands(chain, &node, &priced_out).await;

    let memory = Arc::new(MemoryChain::new());
    let pending = memory.open_paid_channel(1, 3, 1);
    let priced_out = memory.open_paid_channel(2, 3, 1);
    a_pending_close_is_replaced_by_its_bump(memory.clone(), &*memory, &pending).await;
    let old_in_memory =
        a_close_under_the_base_fee_is_dropped_and_its_bump_lands(memory.clone(), &*memory, &priced_out).await;

    // The old version, under the base fee and under the pending bump, is
    // refused either way; which reason comes first differs. anvil checks
    // the fee cap against the base fee before the pool; the double looks
    // at the pool first, as geth does (geth's pool never compares a fee
    // cap with the base fee: it keeps such a transaction waiting).
    assert_eq!((old_on_node, old_in_memory), (Sent::FeeCapTooLow, Sent::Underpriced));
}
