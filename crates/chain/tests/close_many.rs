//! `closeMany` through `EvmChain` and the transaction manager on a real
//! anvil node: one transaction at one nonce, an entry that cannot close
//! skipped (not reverted), and `closed_in` naming exactly the channels
//! whose `Closed` event the receipt holds.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::BlockNumberOrTag;
use std::convert::Infallible;
use tollstream_chain::anvil::{self, Anvil};
use tollstream_chain::viewer::{OpenRequest, open_channel};
use tollstream_chain::{
    Chain, ChannelStatus, EvmChain, Policy, RecordCloses, Sent, SignedTx, TxManager, connect_provider, deploy,
};
use tollstream_protocol::{Amount, ChannelDomain, ChannelState, Signature, SigningKey};

const ETH: u128 = 1_000_000_000_000_000_000;
const POLICY: Policy = Policy { confirmations: 1, resubmit_blocks: 3, max_fee_per_gas: 1_000_000_000_000 };

/// Takes every close as recorded.
struct Accept;

#[async_trait::async_trait]
impl RecordCloses for Accept {
    type Error = Infallible;

    async fn record(&self, _: &SignedTx, _: &[ChannelState], _: u64) -> Result<Vec<B256>, Infallible> {
        Ok(Vec::new())
    }
}

/// Opens a channel of 1 ETH from `client` to `payee` with `session` as
/// signer, and returns `signer`'s state paying the server `paid` wei.
async fn open_paid(
    node: &Anvil,
    contract: Address,
    client: &SigningKey,
    payee: Address,
    session: &SigningKey,
    signer: &SigningKey,
    paid: u128,
) -> ChannelState {
    let rpc = connect_provider(node.endpoint(), None).unwrap();
    let now = rpc.get_block_by_number(BlockNumberOrTag::Latest).await.unwrap().unwrap().header.timestamp;
    let request = OpenRequest {
        contract,
        payee,
        signer: session.address(),
        deposit: U256::from(ETH),
        expires_at: now + 3_600,
        salt: B256::random(),
    };
    let opened = open_channel(node.endpoint(), client, &request).await.unwrap();
    let mut state = ChannelState {
        channel_id: opened.channel_id,
        channel_address: contract,
        client_wallet_address: client.address(),
        client_public_key: session.public_key(),
        client_balance: Amount(U256::from(ETH - paid)),
        server_balance: Amount(U256::from(paid)),
        client_sequence_number: 1,
        client_signature: Signature([0; 65]),
    };
    let chain_id = rpc.get_chain_id().await.unwrap();
    state.sign(&ChannelDomain::new(chain_id, contract), signer);
    state
}

#[tokio::test]
async fn a_batch_closes_its_good_entries_in_one_transaction_and_skips_a_bad_one() {
    let node = anvil::shared();
    let deployer = node.funded_wallet(U256::from(10 * ETH)).await.unwrap();
    let contract = deploy(connect_provider(node.endpoint(), Some(&deployer)).unwrap()).await.unwrap();
    let rpc = connect_provider(node.endpoint(), None).unwrap();
    let payee = node.funded_wallet(U256::from(10 * ETH)).await.unwrap();
    let stranger = SigningKey::from_bytes(B256::random().0).unwrap();
    let mut states = Vec::new();
    for (n, paid) in [1_000u128, 2_000, 3_000].into_iter().enumerate() {
        let client = node.funded_wallet(U256::from(10 * ETH)).await.unwrap();
        let session = SigningKey::from_bytes(B256::random().0).unwrap();
        // The second state is signed by a key that is not the channel's signer.
        let signer = if n == 1 { &stranger } else { &session };
        states.push(open_paid(node, contract, &client, payee.address(), &session, signer, paid).await);
    }
    let chain = EvmChain::connect(node.endpoint(), Some(&payee), contract).await.unwrap();
    let manager = TxManager::new(std::sync::Arc::new(chain.clone()), POLICY).unwrap();
    let balance_before = rpc.get_balance(payee.address()).await.unwrap();

    // The estimate does not revert for the bad entry: the registry skips it.
    let gas = chain.estimate_closes(&states).await.unwrap();
    // The limit also holds the registry's whole forward to each paid client.
    let gas = gas - 3 * tollstream_chain::evm::CLIENT_PAYOUT_GAS;
    assert!(gas < 3 * 70_000, "a batch costs less than its closes alone: {gas}");
    let started = manager.start_closes(states.clone(), &Accept).await.unwrap().unwrap();
    assert_eq!(started.sent.unwrap(), Sent::Accepted);
    assert_eq!(started.states.len(), 3);
    let mut receipt = None;
    for _ in 0..100 {
        receipt = chain.receipt(started.tx.hash).await.unwrap();
        if receipt.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let receipt = receipt.expect("mined");
    assert!(receipt.success, "a skipped entry does not revert the batch");
    let closed = chain.closed_in(started.tx.hash).await.unwrap();
    assert_eq!(closed, vec![states[0].channel_id, states[2].channel_id]);
    assert_eq!(chain.channel(states[1].channel_id).await.unwrap().status, ChannelStatus::Open);
    for id in &closed {
        assert_eq!(chain.channel(*id).await.unwrap().status, ChannelStatus::Closed);
    }
    // The payee was paid the two closed balances, less the gas.
    let full = rpc.get_transaction_receipt(started.tx.hash).await.unwrap().unwrap();
    let fee = U256::from(full.gas_used) * U256::from(full.effective_gas_price);
    let balance_after = rpc.get_balance(payee.address()).await.unwrap();
    assert_eq!(balance_after + fee - balance_before, U256::from(4_000u128));
    // No receipt, no closes.
    assert!(chain.closed_in(B256::repeat_byte(0x42)).await.unwrap().is_empty());
}

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    GasBurningWallet,
    "../../contracts/test/GasBurningWallet.json"
);

/// A client wallet that is cheap to pay while the node estimates and burns
/// the 50,000 gas the registry forwards when mined cannot make a batch run
/// out of gas: the limit covers every payout in full, so the batch lands,
/// every channel closes, and the hostile wallet's share is owed to it.
#[tokio::test]
async fn a_client_wallet_that_burns_its_payout_gas_cannot_revert_a_batch() {
    let node = anvil::shared();
    let deployer = node.funded_wallet(U256::from(10 * ETH)).await.unwrap();
    let contract = deploy(connect_provider(node.endpoint(), Some(&deployer)).unwrap()).await.unwrap();
    let rpc = connect_provider(node.endpoint(), None).unwrap();
    let payee = node.funded_wallet(U256::from(10 * ETH)).await.unwrap();
    let chain_id = rpc.get_chain_id().await.unwrap();
    let mut states = Vec::new();
    for _ in 0..2 {
        let client = node.funded_wallet(U256::from(10 * ETH)).await.unwrap();
        let session = SigningKey::from_bytes(B256::random().0).unwrap();
        states.push(open_paid(node, contract, &client, payee.address(), &session, &session, 1_000).await);
    }
    let attacker = node.funded_wallet(U256::from(10 * ETH)).await.unwrap();
    let as_attacker = connect_provider(node.endpoint(), Some(&attacker)).unwrap();
    let now = rpc.get_block_by_number(BlockNumberOrTag::Latest).await.unwrap().unwrap().header.timestamp;
    let mut hostile = Vec::new();
    for _ in 0..3 {
        let wallet = GasBurningWallet::deploy(&as_attacker).await.unwrap();
        let session = SigningKey::from_bytes(B256::random().0).unwrap();
        let salt = B256::random();
        let open =
            wallet.openOn(contract, payee.address(), session.address(), now + 3_600, salt).value(U256::from(ETH));
        assert!(open.send().await.unwrap().get_receipt().await.unwrap().status());
        let mut state = ChannelState {
            channel_id: tollstream_protocol::channel_id::channel_id(*wallet.address(), payee.address(), salt),
            channel_address: contract,
            client_wallet_address: *wallet.address(),
            client_public_key: session.public_key(),
            client_balance: Amount(U256::from(ETH - 1_000)),
            server_balance: Amount(U256::from(1_000u128)),
            client_sequence_number: 1,
            client_signature: Signature([0; 65]),
        };
        state.sign(&ChannelDomain::new(chain_id, contract), &session);
        hostile.push(*wallet.address());
        states.push(state);
    }
    let chain = EvmChain::connect(node.endpoint(), Some(&payee), contract).await.unwrap();
    let manager = TxManager::new(std::sync::Arc::new(chain.clone()), POLICY).unwrap();
    let started = manager.start_closes(states.clone(), &Accept).await.unwrap().unwrap();
    assert_eq!(started.sent.unwrap(), Sent::Accepted);
    let mut receipt = None;
    for _ in 0..100 {
        receipt = chain.receipt(started.tx.hash).await.unwrap();
        if receipt.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(receipt.expect("mined").success, "the batch did not run out of gas");
    for state in &states {
        assert_eq!(chain.channel(state.channel_id).await.unwrap().status, ChannelStatus::Closed);
    }
    let registry = tollstream_chain::TollstreamChannels::new(contract, &rpc);
    for wallet in hostile {
        let owed = registry.owed(wallet, Address::ZERO).call().await.unwrap();
        assert_eq!(owed, U256::from(ETH - 1_000), "the refused payout is owed, not lost");
    }
}
