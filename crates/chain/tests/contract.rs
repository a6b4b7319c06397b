//! The channel contract on a real anvil node: open, close, refund, and
//! every refusal PROTOCOL.md promises.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionReceipt;
use tollstream_chain::TollstreamChannels::{self, TollstreamChannelsErrors, TollstreamChannelsInstance};
use tollstream_chain::anvil::{self, Anvil};
use tollstream_chain::{ChannelStatus, connect_provider, deploy};
use tollstream_protocol::channel_id::channel_id;
use tollstream_protocol::{Amount, ChannelDomain, ChannelState, Signature, SigningKey};

const ETH: u128 = 1_000_000_000_000_000_000;
const HOUR: u64 = 3600;

/// One test's actors on a node: a fresh contract, and fresh wallets so
/// tests sharing the node never race for nonces.
struct Scene {
    rpc: String,
    contract: Address,
    chain_id: u64,
    client: SigningKey,
    payee: SigningKey,
    session: SigningKey,
}

impl Scene {
    async fn new(node: &Anvil) -> Scene {
        let deployer = node.funded_wallet(U256::from(10 * ETH)).await.unwrap();
        let provider = connect_provider(node.endpoint(), Some(&deployer)).unwrap();
        let contract = deploy(provider.clone()).await.unwrap();
        Scene {
            rpc: node.endpoint().to_owned(),
            contract,
            chain_id: provider.get_chain_id().await.unwrap(),
            client: node.funded_wallet(U256::from(100 * ETH)).await.unwrap(),
            payee: node.funded_wallet(U256::from(10 * ETH)).await.unwrap(),
            session: SigningKey::from_bytes(B256::random().0).unwrap(),
        }
    }

    fn as_wallet(&self, key: &SigningKey) -> TollstreamChannelsInstance<DynProvider> {
        TollstreamChannels::new(self.contract, connect_provider(&self.rpc, Some(key)).unwrap())
    }

    fn reader(&self) -> DynProvider {
        connect_provider(&self.rpc, None).unwrap()
    }

    fn domain(&self) -> ChannelDomain {
        ChannelDomain::new(self.chain_id, self.contract)
    }

    async fn now(&self) -> u64 {
        self.reader().get_block_by_number(Default::default()).await.unwrap().unwrap().header.timestamp
    }

    /// Opens a channel of `deposit` wei expiring in `lifetime` seconds.
    async fn open(&self, deposit: U256, lifetime: u64) -> (B256, TransactionReceipt) {
        let salt = B256::random();
        let expires = self.now().await + lifetime;
        let receipt = self
            .as_wallet(&self.client)
            .open(self.payee.address(), self.session.address(), expires, salt)
            .value(deposit)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status());
        (channel_id(self.client.address(), self.payee.address(), salt), receipt)
    }

    /// The session key's signed state paying the server `server` of `deposit`.
    fn state(&self, id: B256, deposit: U256, server: U256, sequence: u64, signer: &SigningKey) -> ChannelState {
        let mut state = ChannelState {
            channel_id: id,
            channel_address: self.contract,
            client_wallet_address: self.client.address(),
            client_public_key: self.session.public_key(),
            client_balance: Amount(deposit.saturating_sub(server)),
            server_balance: Amount(server),
            client_sequence_number: sequence,
            client_signature: Signature([0; 65]),
        };
        state.sign(&self.domain(), signer);
        state
    }

    /// Sends `close` as `caller`, returning the receipt or the decoded revert.
    async fn close(
        &self,
        caller: &SigningKey,
        state: &ChannelState,
    ) -> Result<TransactionReceipt, TollstreamChannelsErrors> {
        let registry = self.as_wallet(caller);
        let call = registry.close(
            state.channel_id,
            state.server_balance.0,
            state.client_sequence_number,
            Bytes::copy_from_slice(&state.client_signature.0),
        );
        match call.send().await {
            Ok(pending) => Ok(pending.get_receipt().await.unwrap()),
            Err(error) => Err(error
                .as_decoded_interface_error::<TollstreamChannelsErrors>()
                .unwrap_or_else(|| panic!("not a contract revert: {error}"))),
        }
    }

    async fn refund(&self, caller: &SigningKey, id: B256) -> Result<TransactionReceipt, TollstreamChannelsErrors> {
        match self.as_wallet(caller).refund(id).send().await {
            Ok(pending) => Ok(pending.get_receipt().await.unwrap()),
            Err(error) => Err(error.as_decoded_interface_error::<TollstreamChannelsErrors>().unwrap()),
        }
    }

    async fn balance(&self, who: Address) -> U256 {
        self.reader().get_balance(who).await.unwrap()
    }
}

fn gas_cost(receipt: &TransactionReceipt) -> U256 {
    U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price)
}

#[tokio::test]
async fn open_stores_the_fields_and_emits_opened() {
    let scene = Scene::new(anvil::shared()).await;
    let deposit = U256::from(ETH / 2);
    let (id, receipt) = scene.open(deposit, 2 * HOUR).await;

    let entry = scene.as_wallet(&scene.client).channels(id).call().await.unwrap();
    assert_eq!(entry.client, scene.client.address());
    assert_eq!(entry.payee, scene.payee.address());
    assert_eq!(entry.signer, scene.session.address());
    assert_eq!(U256::from(entry.deposit), deposit);
    assert_eq!(entry.status, ChannelStatus::Open as u8);
    assert!(entry.expiresAt > scene.now().await);

    let raw = receipt
        .inner
        .logs()
        .iter()
        .find(|log| log.log_decode::<TollstreamChannels::Opened>().is_ok())
        .expect("an Opened event");
    let event = raw.log_decode::<TollstreamChannels::Opened>().unwrap().inner.data;
    assert_eq!(event.channelId, id);
    assert_eq!(event.client, scene.client.address());
    assert_eq!(event.payee, scene.payee.address());
    assert_eq!(event.signer, scene.session.address());
    assert_eq!(event.deposit, deposit);
    assert_eq!(event.expiresAt, entry.expiresAt);
    // The channel id is the first indexed topic.
    assert_eq!(raw.topics()[1], id);
}

#[tokio::test]
async fn an_id_is_never_opened_twice() {
    let scene = Scene::new(anvil::shared()).await;
    let salt = B256::random();
    let expires = scene.now().await + HOUR;
    let registry = scene.as_wallet(&scene.client);
    let open = || registry.open(scene.payee.address(), scene.session.address(), expires, salt).value(U256::from(1000));
    open().send().await.unwrap().get_receipt().await.unwrap();
    let error = open().send().await.unwrap_err();
    assert!(matches!(
        error.as_decoded_interface_error::<TollstreamChannelsErrors>(),
        Some(TollstreamChannelsErrors::ChannelIdUsed(_))
    ));
}

#[tokio::test]
async fn close_pays_the_payee_its_balance_and_the_client_the_rest() {
    let scene = Scene::new(anvil::shared()).await;
    let deposit = U256::from(ETH);
    let server = U256::from(ETH * 3 / 10);
    let (id, _) = scene.open(deposit, 2 * HOUR).await;
    let state = scene.state(id, deposit, server, 5, &scene.session);

    let payee_before = scene.balance(scene.payee.address()).await;
    let client_before = scene.balance(scene.client.address()).await;
    let receipt = scene.close(&scene.payee, &state).await.unwrap();
    assert!(receipt.status());

    let payee_after = scene.balance(scene.payee.address()).await;
    let client_after = scene.balance(scene.client.address()).await;
    assert_eq!(payee_after + gas_cost(&receipt) - payee_before, server);
    assert_eq!(client_after - client_before, deposit - server);

    let closed = receipt
        .inner
        .logs()
        .iter()
        .find_map(|log| log.log_decode::<TollstreamChannels::Closed>().ok())
        .expect("a Closed event")
        .inner
        .data;
    assert_eq!((closed.channelId, closed.serverBalance, closed.clientBalance), (id, server, deposit - server));
    let entry = scene.as_wallet(&scene.client).channels(id).call().await.unwrap();
    assert_eq!(entry.status, ChannelStatus::Closed as u8);
}

#[tokio::test]
async fn a_final_state_pays_everything_to_the_payee() {
    let scene = Scene::new(anvil::shared()).await;
    let deposit = U256::from(ETH / 10);
    let (id, _) = scene.open(deposit, 2 * HOUR).await;
    let state = scene.state(id, deposit, deposit, 10, &scene.session);
    assert!(state.is_final());
    let client_before = scene.balance(scene.client.address()).await;
    let payee_before = scene.balance(scene.payee.address()).await;
    let receipt = scene.close(&scene.payee, &state).await.unwrap();
    assert_eq!(scene.balance(scene.payee.address()).await + gas_cost(&receipt) - payee_before, deposit);
    assert_eq!(scene.balance(scene.client.address()).await, client_before);
}

#[tokio::test]
async fn close_is_refused_for_strangers_forgeries_overclaims_and_twice() {
    let scene = Scene::new(anvil::shared()).await;
    let deposit = U256::from(ETH);
    let (id, _) = scene.open(deposit, 2 * HOUR).await;
    let state = scene.state(id, deposit, U256::from(ETH / 4), 3, &scene.session);

    // Not the payee.
    let stranger = anvil::shared().funded_wallet(U256::from(ETH)).await.unwrap();
    assert!(matches!(scene.close(&stranger, &state).await, Err(TollstreamChannelsErrors::NotPayee(_))));
    assert!(matches!(scene.close(&scene.client, &state).await, Err(TollstreamChannelsErrors::NotPayee(_))));

    // Signed by another key.
    let forged = scene.state(id, deposit, U256::from(ETH / 4), 3, &stranger);
    assert!(matches!(scene.close(&scene.payee, &forged).await, Err(TollstreamChannelsErrors::InvalidSignature(_))));

    // A state claiming more than the deposit, even if the session key signed it.
    let greedy = scene.state(id, deposit, deposit + U256::from(1), 3, &scene.session);
    assert!(matches!(
        scene.close(&scene.payee, &greedy).await,
        Err(TollstreamChannelsErrors::BalanceExceedsDeposit(_))
    ));

    // A high-s twin of a valid signature, and a signature with v flipped.
    let mut malleated = state.clone();
    malleated.client_signature.0[64] = 55 - malleated.client_signature.0[64];
    assert!(matches!(scene.close(&scene.payee, &malleated).await, Err(TollstreamChannelsErrors::InvalidSignature(_))));

    // The real close works once, and only once.
    scene.close(&scene.payee, &state).await.unwrap();
    assert!(matches!(scene.close(&scene.payee, &state).await, Err(TollstreamChannelsErrors::ChannelNotOpen(_))));
}

#[tokio::test]
async fn refund_waits_for_expiry_and_then_returns_the_deposit() {
    // Moving the clock would disturb other tests: this one has its own node.
    let node = Anvil::spawn().unwrap();
    let scene = Scene::new(&node).await;
    let deposit = U256::from(ETH / 2);
    let (id, _) = scene.open(deposit, HOUR).await;
    let state = scene.state(id, deposit, U256::from(ETH / 10), 1, &scene.session);

    // Anyone may ask, but not before expiry.
    let caller = node.funded_wallet(U256::from(ETH)).await.unwrap();
    assert!(matches!(scene.refund(&caller, id).await, Err(TollstreamChannelsErrors::ChannelNotExpired(_))));

    node.increase_time(HOUR + 1).await.unwrap();
    // Past expiry the payee can no longer close.
    assert!(matches!(scene.close(&scene.payee, &state).await, Err(TollstreamChannelsErrors::ChannelExpired(_))));

    let client_before = scene.balance(scene.client.address()).await;
    let receipt = scene.refund(&caller, id).await.unwrap();
    assert_eq!(scene.balance(scene.client.address()).await - client_before, deposit);
    let refunded = receipt
        .inner
        .logs()
        .iter()
        .find_map(|log| log.log_decode::<TollstreamChannels::Refunded>().ok())
        .expect("a Refunded event")
        .inner
        .data;
    assert_eq!((refunded.channelId, refunded.amount), (id, deposit));

    // Refunded once; never closed after.
    assert!(matches!(scene.refund(&caller, id).await, Err(TollstreamChannelsErrors::ChannelNotOpen(_))));
    assert!(matches!(scene.close(&scene.payee, &state).await, Err(TollstreamChannelsErrors::ChannelNotOpen(_))));
}

#[tokio::test]
async fn the_contracts_domain_separator_is_the_protocols() {
    let scene = Scene::new(anvil::shared()).await;
    let onchain = scene.as_wallet(&scene.client).domainSeparator().call().await.unwrap();
    assert_eq!(onchain, scene.domain().separator());
}

/// Prints the gas of each entry point (the README quotes these figures).
/// Gas is deterministic for the same inputs, so the bounds below are the
/// design's budget, not a timing.
#[tokio::test]
async fn gas_used_by_open_close_and_refund() {
    let node = Anvil::spawn().unwrap();
    let scene = Scene::new(&node).await;
    let deposit = U256::from(ETH);
    let (id, open) = scene.open(deposit, HOUR).await;
    let close =
        scene.close(&scene.payee, &scene.state(id, deposit, U256::from(ETH / 3), 7, &scene.session)).await.unwrap();
    let (final_id, _) = scene.open(deposit, HOUR).await;
    let close_final =
        scene.close(&scene.payee, &scene.state(final_id, deposit, deposit, 9, &scene.session)).await.unwrap();
    let (expiring, _) = scene.open(deposit, HOUR).await;
    node.increase_time(HOUR).await.unwrap();
    let refund = scene.refund(&scene.client, expiring).await.unwrap();
    println!(
        "gas: open {} | close (both paid) {} | close (final) {} | refund {}",
        open.gas_used, close.gas_used, close_final.gas_used, refund.gas_used
    );
    assert!(open.gas_used < 100_000, "open used {}", open.gas_used);
    assert!(close.gas_used < 71_000, "close used {}", close.gas_used);
    assert!(refund.gas_used < 60_000, "refund used {}", refund.gas_used);
}
