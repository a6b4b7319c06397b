//! The channel registry on a real anvil node: every entry point (native-coin
//! and token opens, gasless opens, close, closeMany, refund, withdraw), every
//! refusal by its error's name, the misbehaving tokens of `contracts/test/`,
//! and the gas table the README quotes.
//!
//! Each test deploys its own registry and uses fresh wallets, so tests sharing
//! the node never race for a nonce; tests that move the clock start a node of
//! their own.

use alloy::network::Ethereum;
use alloy::primitives::{Address, B256, Bytes, FixedBytes, U256, keccak256};
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::sol_types::{Eip712Domain, SolCall, SolError, SolEvent, SolInterface, SolStruct, SolValue, eip712_domain};
use tollstream_chain::TollstreamChannels::{self, TollstreamChannelsErrors, TollstreamChannelsInstance};
use tollstream_chain::anvil::{self, Anvil};
use tollstream_chain::{
    ChannelStatus, TestStablecoin, connect_provider, deploy, deploy_test_stablecoin, terms_of, wallet_of,
};
use tollstream_protocol::channel_id::channel_id;
use tollstream_protocol::{Amount, ChannelDomain, ChannelState, Signature, SigningKey};

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    FeeOnTransferToken,
    "../../contracts/test/FeeOnTransferToken.json"
);
alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    NoReturnToken,
    "../../contracts/test/NoReturnToken.json"
);
alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    ReentrantToken,
    "../../contracts/test/ReentrantToken.json"
);
alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    BlockingToken,
    "../../contracts/test/BlockingToken.json"
);
alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    NoPermitToken,
    "../../contracts/test/NoPermitToken.json"
);
alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    FalseReturningToken,
    "../../contracts/test/FalseReturningToken.json"
);

alloy::sol! {
    /// What every test token has in common (NoReturnToken's `approve`
    /// returns nothing, so it is only ever sent, never called).
    #[sol(rpc)]
    #[derive(Debug)]
    interface TestToken {
        function mint(address to, uint256 amount) external;
        function approve(address spender, uint256 amount) external returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
        event Transfer(address indexed from, address indexed to, uint256 value);
    }

    /// EIP-2612, in the token's domain.
    #[derive(Debug)]
    struct Permit {
        address owner;
        address spender;
        uint256 value;
        uint256 nonce;
        uint256 deadline;
    }

    /// EIP-3009, in the token's domain.
    #[derive(Debug)]
    struct ReceiveWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

const ETH: u128 = 1_000_000_000_000_000_000;
/// One test dollar (6 decimals).
const USD: u128 = 1_000_000;
const HOUR: u64 = 3600;
/// secp256k1's group order, to build high-s twins of signatures.
const SECP256K1_N: U256 = U256::from_be_slice(&[
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc,
    0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
]);

type Sent = Result<PendingTransactionBuilder<Ethereum>, alloy::contract::Error>;

/// The receipt of a sent transaction. Anvil mines on arrival, so the receipt
/// is there at once; polling for it would cost a quarter second per send.
async fn receipt_of(pending: PendingTransactionBuilder<Ethereum>) -> TransactionReceipt {
    let hash = *pending.tx_hash();
    let receipt = match pending.provider().get_transaction_receipt(hash).await.expect("the node answers") {
        Some(receipt) => receipt,
        None => pending.get_receipt().await.expect("a receipt"),
    };
    assert!(receipt.status(), "transaction {hash} reverted on chain");
    receipt
}

/// The receipt, or the revert decoded as one of `E`'s errors (panics on a
/// revert `E` does not know, or an RPC failure).
async fn outcome<E: SolInterface>(sent: Sent) -> Result<TransactionReceipt, E> {
    match sent {
        Ok(pending) => Ok(receipt_of(pending).await),
        Err(error) => Err(error
            .as_decoded_interface_error::<E>()
            .unwrap_or_else(|| panic!("not a {} revert: {error}", std::any::type_name::<E>()))),
    }
}

/// The receipt of a transaction that must succeed.
async fn mined(sent: Sent) -> TransactionReceipt {
    match sent {
        Ok(pending) => receipt_of(pending).await,
        Err(error) => panic!("the transaction failed: {error}"),
    }
}

/// Asserts that a registry transaction reverts with the named error.
macro_rules! refused {
    ($sent:expr, $error:ident) => {{
        let result = outcome::<TollstreamChannelsErrors>($sent.await).await;
        assert!(
            matches!(result, Err(TollstreamChannelsErrors::$error(_))),
            "expected {}, got {:?}",
            stringify!($error),
            result.map(|receipt| receipt.transaction_hash)
        );
    }};
}

/// The events of type `E` in `receipt`, in log order.
fn events<E: SolEvent>(receipt: &TransactionReceipt) -> Vec<E> {
    receipt.inner.logs().iter().filter_map(|log| log.log_decode::<E>().ok()).map(|log| log.inner.data).collect()
}

/// The token transfers `token` logged in `receipt` to `to`.
fn transfers_to(receipt: &TransactionReceipt, token: Address, to: Address) -> Vec<U256> {
    receipt
        .inner
        .logs()
        .iter()
        .filter(|log| log.address() == token)
        .filter_map(|log| log.log_decode::<TestToken::Transfer>().ok())
        .map(|log| log.inner.data)
        .filter(|transfer| transfer.to == to)
        .map(|transfer| transfer.value)
        .collect()
}

fn gas_cost(receipt: &TransactionReceipt) -> U256 {
    U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price)
}

fn selector_of(data: &[u8]) -> [u8; 4] {
    data.get(..4).and_then(|head| head.try_into().ok()).unwrap_or_default()
}

/// The EIP-712 domain of the test dollar.
fn dollar_domain(chain_id: u64, token: Address) -> Eip712Domain {
    eip712_domain! {
        name: "Tollstream Test Dollar",
        version: "1",
        chain_id: chain_id,
        verifying_contract: token,
    }
}

/// The EIP-3009 nonce the registry derives from a channel's terms.
fn authorization_nonce(payee: Address, signer: Address, expires_at: u64, salt: B256) -> B256 {
    keccak256((payee, signer, expires_at, salt).abi_encode())
}

/// The terms of one channel to open.
#[derive(Debug, Clone, Copy)]
struct Terms {
    payee: Address,
    signer: Address,
    expires_at: u64,
    salt: B256,
}

/// One test's actors on a node: a fresh registry, and fresh wallets.
struct Scene<'n> {
    node: &'n Anvil,
    rpc: String,
    contract: Address,
    chain_id: u64,
    /// Deploys and mints the test tokens (the test dollar's minter).
    minter: SigningKey,
    client: SigningKey,
    payee: SigningKey,
    session: SigningKey,
}

impl<'n> Scene<'n> {
    async fn new(node: &'n Anvil) -> Scene<'n> {
        let minter = node.funded_wallet(U256::from(10 * ETH)).await.unwrap();
        let provider = connect_provider(node.endpoint(), Some(&minter)).unwrap();
        let contract = deploy(provider.clone()).await.unwrap();
        Scene {
            node,
            rpc: node.endpoint().to_owned(),
            contract,
            chain_id: provider.get_chain_id().await.unwrap(),
            minter,
            client: node.funded_wallet(U256::from(100 * ETH)).await.unwrap(),
            payee: node.funded_wallet(U256::from(10 * ETH)).await.unwrap(),
            session: SigningKey::from_bytes(B256::random().0).unwrap(),
        }
    }

    async fn wallet(&self) -> SigningKey {
        self.node.funded_wallet(U256::from(10 * ETH)).await.unwrap()
    }

    /// A provider sending as `key` that asks the node for each nonce. The
    /// default cached nonce manager reserves a nonce even for a transaction
    /// whose gas estimate reverts, leaving a gap that stalls the wallet's next
    /// transaction, and the refusals are what these tests send.
    fn provider(&self, key: &SigningKey) -> DynProvider {
        ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(wallet_of(key))
            .connect_reqwest(tollstream_chain::rpc::http_client_builder().build().unwrap(), self.rpc.parse().unwrap())
            .erased()
    }

    fn registry(&self, key: &SigningKey) -> TollstreamChannelsInstance<DynProvider> {
        TollstreamChannels::new(self.contract, self.provider(key))
    }

    fn reader(&self) -> DynProvider {
        connect_provider(&self.rpc, None).unwrap()
    }

    fn token(&self, token: Address, key: &SigningKey) -> TestToken::TestTokenInstance<DynProvider> {
        TestToken::new(token, self.provider(key))
    }

    fn domain(&self) -> ChannelDomain {
        ChannelDomain::new(self.chain_id, self.contract)
    }

    async fn now(&self) -> u64 {
        self.reader().get_block_by_number(Default::default()).await.unwrap().unwrap().header.timestamp
    }

    async fn terms(&self, lifetime: u64) -> Terms {
        Terms {
            payee: self.payee.address(),
            signer: self.session.address(),
            expires_at: self.now().await + lifetime,
            salt: B256::random(),
        }
    }

    async fn channel(&self, id: B256) -> TollstreamChannels::channelsReturn {
        self.registry(&self.client).channels(id).call().await.unwrap()
    }

    async fn status(&self, id: B256) -> ChannelStatus {
        ChannelStatus::from_u8(self.channel(id).await.status).unwrap()
    }

    async fn balance(&self, who: Address) -> U256 {
        self.reader().get_balance(who).await.unwrap()
    }

    async fn token_balance(&self, token: Address, who: Address) -> U256 {
        TestToken::new(token, self.reader()).balanceOf(who).call().await.unwrap()
    }

    async fn owed(&self, client: Address, token: Address) -> U256 {
        self.registry(&self.client).owed(client, token).call().await.unwrap()
    }

    // ------------------------------------------------------------ deploys

    async fn dollar(&self) -> Address {
        deploy_test_stablecoin(self.provider(&self.minter)).await.unwrap()
    }

    async fn mint(&self, token: Address, to: Address, amount: U256) {
        mined(self.token(token, &self.minter).mint(to, amount).send().await).await;
    }

    // ------------------------------------------------------------ opens

    /// Opens a channel of `deposit` wei from the scene's client.
    async fn open(&self, deposit: U256, lifetime: u64) -> (B256, TransactionReceipt) {
        self.open_coin_as(&self.client, deposit, lifetime).await
    }

    async fn open_coin_as(&self, client: &SigningKey, deposit: U256, lifetime: u64) -> (B256, TransactionReceipt) {
        let terms = self.terms(lifetime).await;
        let receipt = mined(
            self.registry(client)
                .open(terms.payee, terms.signer, terms.expires_at, terms.salt)
                .value(deposit)
                .send()
                .await,
        )
        .await;
        (channel_id(client.address(), terms.payee, terms.salt), receipt)
    }

    /// Mints `amount` of `token` to `client` (plus as much again, so the
    /// wallet is never emptied), approves the registry for exactly `amount`
    /// and opens; returns the id, the open's and the approval's receipts.
    async fn open_token_as(
        &self,
        token: Address,
        client: &SigningKey,
        amount: U256,
        lifetime: u64,
    ) -> (B256, TransactionReceipt, TransactionReceipt) {
        self.mint(token, client.address(), amount * U256::from(2)).await;
        let approve = mined(self.token(token, client).approve(self.contract, amount).send().await).await;
        let terms = self.terms(lifetime).await;
        let open = mined(
            self.registry(client)
                .openToken(token, amount, terms.payee, terms.signer, terms.expires_at, terms.salt)
                .send()
                .await,
        )
        .await;
        (channel_id(client.address(), terms.payee, terms.salt), open, approve)
    }

    async fn open_token(&self, token: Address, amount: U256, lifetime: u64) -> B256 {
        self.open_token_as(token, &self.client, amount, lifetime).await.0
    }

    /// `owner`'s EIP-2612 permit of `value` to the registry, `r ‖ s ‖ v`.
    async fn permit(&self, token: Address, owner: &SigningKey, value: U256, deadline: U256) -> Bytes {
        let nonce = TestStablecoin::new(token, self.reader()).nonces(owner.address()).call().await.unwrap();
        let permit = Permit { owner: owner.address(), spender: self.contract, value, nonce, deadline };
        let digest = permit.eip712_signing_hash(&dollar_domain(self.chain_id, token));
        Bytes::copy_from_slice(&owner.sign_digest(&digest).0)
    }

    /// `client`'s EIP-3009 authorization of `value` to the registry for a
    /// channel on `terms`, valid from `valid_after` to `valid_before`.
    fn authorization(
        &self,
        token: Address,
        client: &SigningKey,
        value: U256,
        terms: &Terms,
        valid_after: U256,
        valid_before: U256,
    ) -> Bytes {
        let authorization = ReceiveWithAuthorization {
            from: client.address(),
            to: self.contract,
            value,
            validAfter: valid_after,
            validBefore: valid_before,
            nonce: authorization_nonce(terms.payee, terms.signer, terms.expires_at, terms.salt),
        };
        let digest = authorization.eip712_signing_hash(&dollar_domain(self.chain_id, token));
        Bytes::copy_from_slice(&client.sign_digest(&digest).0)
    }

    /// Sends `openWithAuthorization` as `relayer` for `client` on `terms`.
    #[allow(clippy::too_many_arguments)]
    async fn open_with_authorization(
        &self,
        relayer: &SigningKey,
        token: Address,
        client: Address,
        amount: U256,
        terms: &Terms,
        valid_before: U256,
        signature: &Bytes,
    ) -> Sent {
        self.registry(relayer)
            .openWithAuthorization(
                token,
                client,
                amount,
                terms.payee,
                terms.signer,
                terms.expires_at,
                terms.salt,
                U256::ZERO,
                valid_before,
                signature.clone(),
            )
            .send()
            .await
    }

    // ------------------------------------------------------------ closes

    /// `signer`'s state paying the server `server` of `deposit`.
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

    async fn close(
        &self,
        caller: &SigningKey,
        state: &ChannelState,
    ) -> Result<TransactionReceipt, TollstreamChannelsErrors> {
        outcome(self.close_sent(caller, state).await).await
    }

    async fn close_sent(&self, caller: &SigningKey, state: &ChannelState) -> Sent {
        self.registry(caller)
            .close(
                state.channel_id,
                state.server_balance.0,
                state.client_sequence_number,
                Bytes::copy_from_slice(&state.client_signature.0),
            )
            .send()
            .await
    }

    async fn close_many(
        &self,
        caller: &SigningKey,
        states: &[ChannelState],
    ) -> Result<TransactionReceipt, TollstreamChannelsErrors> {
        outcome(self.registry(caller).closeMany(states.iter().map(entry).collect()).send().await).await
    }

    async fn refund(&self, caller: &SigningKey, id: B256) -> Result<TransactionReceipt, TollstreamChannelsErrors> {
        outcome(self.registry(caller).refund(id).send().await).await
    }
}

/// One `closeMany` entry.
fn entry(state: &ChannelState) -> TollstreamChannels::Close {
    TollstreamChannels::Close {
        channelId: state.channel_id,
        serverBalance: state.server_balance.0,
        sequenceNumber: state.client_sequence_number,
        signature: Bytes::copy_from_slice(&state.client_signature.0),
    }
}

/// The high-s twin of a valid signature: the same signer recovers from it,
/// but the protocol (and the contract) accept only the low-s form.
fn high_s_twin(signature: &Signature) -> Signature {
    let s = U256::from_be_slice(&signature.0[32..64]);
    let mut twin = signature.0;
    twin[32..64].copy_from_slice(&(SECP256K1_N - s).to_be_bytes::<32>());
    twin[64] = 55 - twin[64];
    Signature(twin)
}

// ================================================================ coin

#[tokio::test]
async fn open_stores_the_fields_and_emits_opened() {
    let scene = Scene::new(anvil::shared()).await;
    let deposit = U256::from(ETH / 2);
    let (id, receipt) = scene.open(deposit, 2 * HOUR).await;

    let entry = scene.channel(id).await;
    assert_eq!(entry.client, scene.client.address());
    assert_eq!(entry.token, Address::ZERO);
    assert_eq!(entry.terms, terms_of(scene.payee.address(), scene.session.address()));
    assert_eq!(entry.deposit, deposit);
    assert_eq!(entry.status, ChannelStatus::Open as u8);
    assert!(entry.expiresAt > scene.now().await);
    let on_chain_terms: FixedBytes<20> =
        scene.registry(&scene.client).termsOf(scene.payee.address(), scene.session.address()).call().await.unwrap();
    assert_eq!(on_chain_terms, entry.terms);

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
    // An id never used reads as all zeros.
    let unused = scene.channel(B256::random()).await;
    assert_eq!((unused.client, unused.status, unused.deposit), (Address::ZERO, 0, U256::ZERO));
}

#[tokio::test]
async fn opens_refuse_bad_terms_and_reused_ids() {
    let scene = Scene::new(anvil::shared()).await;
    let registry = scene.registry(&scene.client);
    let terms = scene.terms(HOUR).await;
    let (payee, signer) = (terms.payee, terms.signer);
    let open = |payee, signer, expires, salt| registry.open(payee, signer, expires, salt);
    let one = U256::from(1000);

    mined(open(payee, signer, terms.expires_at, terms.salt).value(one).send().await).await;
    refused!(open(payee, signer, terms.expires_at, terms.salt).value(one).send(), ChannelIdUsed);
    refused!(open(payee, signer, terms.expires_at, B256::random()).send(), ZeroDeposit);
    refused!(open(Address::ZERO, signer, terms.expires_at, B256::random()).value(one).send(), ZeroAddress);
    refused!(open(payee, Address::ZERO, terms.expires_at, B256::random()).value(one).send(), ZeroAddress);
    let now = scene.now().await;
    refused!(open(payee, signer, now, B256::random()).value(one).send(), AlreadyExpired);
    refused!(open(payee, signer, 0, B256::random()).value(one).send(), AlreadyExpired);

    // The same refusals for token channels, which check before pulling.
    let dollar = scene.dollar().await;
    let expires = terms.expires_at;
    let open_token = |amount, payee| registry.openToken(dollar, amount, payee, signer, expires, B256::random());
    refused!(open_token(U256::ZERO, payee).send(), ZeroDeposit);
    refused!(open_token(U256::from(1) << 96, payee).send(), DepositTooLarge);
    refused!(open_token(one, Address::ZERO).send(), ZeroAddress);
    // A uint96 deposit is the most a channel holds.
    scene.mint(dollar, scene.client.address(), (U256::from(1) << 96) - U256::from(1)).await;
    mined(scene.token(dollar, &scene.client).approve(scene.contract, U256::MAX).send().await).await;
    mined(open_token((U256::from(1) << 96) - U256::from(1), payee).send().await).await;
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

    let payee_after = scene.balance(scene.payee.address()).await;
    let client_after = scene.balance(scene.client.address()).await;
    assert_eq!(payee_after + gas_cost(&receipt) - payee_before, server);
    assert_eq!(client_after - client_before, deposit - server);
    assert_eq!(scene.balance(scene.contract).await, U256::ZERO);

    let closed = events::<TollstreamChannels::Closed>(&receipt);
    assert_eq!(closed.len(), 1);
    assert_eq!((closed[0].channelId, closed[0].serverBalance, closed[0].clientBalance), (id, server, deposit - server));
    let raw = receipt.inner.logs().iter().find(|log| log.log_decode::<TollstreamChannels::Closed>().is_ok()).unwrap();
    assert_eq!(raw.topics()[1], id);
    assert_eq!(scene.status(id).await, ChannelStatus::Closed);
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

    // Not the payee: the terms the contract keeps do not match.
    let stranger = scene.wallet().await;
    assert!(matches!(scene.close(&stranger, &state).await, Err(TollstreamChannelsErrors::TermsMismatch(_))));
    assert!(matches!(scene.close(&scene.client, &state).await, Err(TollstreamChannelsErrors::TermsMismatch(_))));

    // Signed by another key: it recovers, but to the wrong signer.
    let forged = scene.state(id, deposit, U256::from(ETH / 4), 3, &stranger);
    assert!(matches!(scene.close(&scene.payee, &forged).await, Err(TollstreamChannelsErrors::TermsMismatch(_))));
    // v flipped: recovers to some other key.
    let mut flipped = state.clone();
    flipped.client_signature.0[64] = 55 - flipped.client_signature.0[64];
    assert!(matches!(scene.close(&scene.payee, &flipped).await, Err(TollstreamChannelsErrors::TermsMismatch(_))));

    // A state claiming more than the deposit, even if the session key signed it.
    let greedy = scene.state(id, deposit, deposit + U256::from(1), 3, &scene.session);
    assert!(matches!(
        scene.close(&scene.payee, &greedy).await,
        Err(TollstreamChannelsErrors::BalanceExceedsDeposit(_))
    ));

    // Signatures the contract does not accept at all: the high-s twin, a v
    // outside {27, 28}, a wrong length, garbage.
    let mut twin = state.clone();
    twin.client_signature = high_s_twin(&state.client_signature);
    assert!(matches!(scene.close(&scene.payee, &twin).await, Err(TollstreamChannelsErrors::InvalidSignature(_))));
    let mut bad_v = state.clone();
    bad_v.client_signature.0[64] = 1;
    assert!(matches!(scene.close(&scene.payee, &bad_v).await, Err(TollstreamChannelsErrors::InvalidSignature(_))));
    let short = scene
        .registry(&scene.payee)
        .close(id, state.server_balance.0, 3, Bytes::copy_from_slice(&state.client_signature.0[..64]))
        .send()
        .await;
    assert!(matches!(outcome(short).await, Err(TollstreamChannelsErrors::InvalidSignature(_))));
    let mut garbage = state.clone();
    garbage.client_signature.0[..64].fill(0);
    assert!(matches!(scene.close(&scene.payee, &garbage).await, Err(TollstreamChannelsErrors::InvalidSignature(_))));

    // A state of another channel does not close this one.
    let (other, _) = scene.open(deposit, 2 * HOUR).await;
    let mut misplaced = scene.state(other, deposit, U256::from(ETH / 4), 3, &scene.session);
    misplaced.channel_id = id;
    assert!(matches!(scene.close(&scene.payee, &misplaced).await, Err(TollstreamChannelsErrors::TermsMismatch(_))));

    // The real close works once, and only once; a never-used id is not open.
    scene.close(&scene.payee, &state).await.unwrap();
    assert!(matches!(scene.close(&scene.payee, &state).await, Err(TollstreamChannelsErrors::ChannelNotOpen(_))));
    let unknown = scene.state(B256::random(), deposit, U256::from(1), 1, &scene.session);
    assert!(matches!(scene.close(&scene.payee, &unknown).await, Err(TollstreamChannelsErrors::ChannelNotOpen(_))));
}

#[tokio::test]
async fn refund_waits_for_expiry_and_then_returns_the_deposit() {
    // Moving the clock would disturb other tests: this one has its own node.
    let node = Anvil::spawn().unwrap();
    let scene = Scene::new(&node).await;
    let deposit = U256::from(ETH / 2);
    let (id, _) = scene.open(deposit, HOUR).await;
    let state = scene.state(id, deposit, U256::from(ETH / 10), 1, &scene.session);
    let dollar = scene.dollar().await;
    let token_deposit = U256::from(40 * USD);
    let token_id = scene.open_token(dollar, token_deposit, HOUR).await;

    // Anyone may ask, but not before expiry.
    let caller = scene.wallet().await;
    assert!(matches!(scene.refund(&caller, id).await, Err(TollstreamChannelsErrors::ChannelNotExpired(_))));
    assert!(matches!(scene.refund(&caller, token_id).await, Err(TollstreamChannelsErrors::ChannelNotExpired(_))));

    node.increase_time(HOUR + 1).await.unwrap();
    // Past expiry the payee can no longer close.
    assert!(matches!(scene.close(&scene.payee, &state).await, Err(TollstreamChannelsErrors::ChannelExpired(_))));

    let client_before = scene.balance(scene.client.address()).await;
    let receipt = scene.refund(&caller, id).await.unwrap();
    assert_eq!(scene.balance(scene.client.address()).await - client_before, deposit);
    let refunded = events::<TollstreamChannels::Refunded>(&receipt);
    assert_eq!((refunded[0].channelId, refunded[0].amount), (id, deposit));
    let raw = receipt.inner.logs().iter().find(|log| log.log_decode::<TollstreamChannels::Refunded>().is_ok()).unwrap();
    assert_eq!(raw.topics()[1], id);
    assert_eq!(scene.status(id).await, ChannelStatus::Refunded);

    // A token channel is refunded in its token.
    let tokens_before = scene.token_balance(dollar, scene.client.address()).await;
    let receipt = scene.refund(&caller, token_id).await.unwrap();
    assert_eq!(scene.token_balance(dollar, scene.client.address()).await - tokens_before, token_deposit);
    assert_eq!(transfers_to(&receipt, dollar, scene.client.address()), vec![token_deposit]);
    assert_eq!(scene.token_balance(dollar, scene.contract).await, U256::ZERO);

    // Refunded once; never closed after.
    assert!(matches!(scene.refund(&caller, id).await, Err(TollstreamChannelsErrors::ChannelNotOpen(_))));
    assert!(matches!(scene.refund(&caller, token_id).await, Err(TollstreamChannelsErrors::ChannelNotOpen(_))));
    assert!(matches!(scene.close(&scene.payee, &state).await, Err(TollstreamChannelsErrors::ChannelNotOpen(_))));
    assert!(matches!(scene.refund(&caller, B256::random()).await, Err(TollstreamChannelsErrors::ChannelNotOpen(_))));
}

#[tokio::test]
async fn the_contracts_domain_separator_is_the_protocols() {
    let scene = Scene::new(anvil::shared()).await;
    let onchain = scene.registry(&scene.client).domainSeparator().call().await.unwrap();
    assert_eq!(onchain, scene.domain().separator());
}

/// A wallet contract that refuses the coin: its client share is owed, not
/// lost, and its payee payout reverts the close (TransferFailed).
#[tokio::test]
async fn a_coin_payout_that_fails_is_owed_to_the_client_and_reverts_for_the_payee() {
    let scene = Scene::new(anvil::shared()).await;
    let operator = scene.wallet().await;
    let wallet = ReentrantToken::deploy(scene.provider(&operator)).await.unwrap();
    let wallet_address = *wallet.address();
    let deposit = U256::from(ETH);
    let server = U256::from(ETH / 4);

    // The contract wallet opens a channel, then refuses the coin.
    let terms = scene.terms(HOUR).await;
    let open = TollstreamChannels::openCall {
        payee: terms.payee,
        signer: terms.signer,
        expiresAt: terms.expires_at,
        salt: terms.salt,
    };
    mined(wallet.execute(scene.contract, open.abi_encode().into()).value(deposit).send().await).await;
    let id = channel_id(wallet_address, terms.payee, terms.salt);
    mined(wallet.setRefuseCoin(true).send().await).await;

    let receipt = scene.close(&scene.payee, &scene.state(id, deposit, server, 1, &scene.session)).await.unwrap();
    assert_eq!(events::<TollstreamChannels::Closed>(&receipt)[0].clientBalance, deposit - server);
    assert_eq!(scene.owed(wallet_address, Address::ZERO).await, deposit - server);
    assert_eq!(scene.balance(scene.contract).await, deposit - server);

    // Withdrawing while still refusing fails; after, it pays once.
    let withdraw = TollstreamChannels::withdrawCall { token: Address::ZERO }.abi_encode();
    refused!(wallet.execute(scene.contract, withdraw.clone().into()).send(), TransferFailed);
    mined(wallet.setRefuseCoin(false).send().await).await;
    mined(wallet.execute(scene.contract, withdraw.clone().into()).send().await).await;
    assert_eq!(scene.balance(wallet_address).await, deposit - server);
    assert_eq!(scene.owed(wallet_address, Address::ZERO).await, U256::ZERO);
    refused!(wallet.execute(scene.contract, withdraw.into()).send(), NothingOwed);
    refused!(scene.registry(&scene.client).withdraw(Address::ZERO).send(), NothingOwed);

    // A payee that refuses the coin cannot close: that is its own problem.
    let session = &scene.session;
    let salt = B256::random();
    let expires = scene.now().await + HOUR;
    mined(
        scene
            .registry(&scene.client)
            .open(wallet_address, session.address(), expires, salt)
            .value(deposit)
            .send()
            .await,
    )
    .await;
    let id = channel_id(scene.client.address(), wallet_address, salt);
    let state = scene.state(id, deposit, server, 1, session);
    let close = TollstreamChannels::closeCall {
        channelId: id,
        serverBalance: server,
        sequenceNumber: 1,
        signature: Bytes::copy_from_slice(&state.client_signature.0),
    };
    mined(wallet.setRefuseCoin(true).send().await).await;
    refused!(wallet.execute(scene.contract, close.abi_encode().into()).send(), TransferFailed);
    mined(wallet.setRefuseCoin(false).send().await).await;
    mined(wallet.execute(scene.contract, close.abi_encode().into()).send().await).await;
    assert_eq!(scene.status(id).await, ChannelStatus::Closed);
}

// ================================================================ tokens

#[tokio::test]
async fn open_token_pulls_the_approved_deposit_and_closes_in_the_token() {
    let scene = Scene::new(anvil::shared()).await;
    let dollar = scene.dollar().await;
    let deposit = U256::from(25 * USD);

    // Without an approval the token refuses the pull.
    let terms = scene.terms(HOUR).await;
    scene.mint(dollar, scene.client.address(), deposit).await;
    let unapproved = scene
        .registry(&scene.client)
        .openToken(dollar, deposit, terms.payee, terms.signer, terms.expires_at, terms.salt)
        .send()
        .await;
    assert!(matches!(
        outcome::<TestStablecoin::TestStablecoinErrors>(unapproved).await,
        Err(TestStablecoin::TestStablecoinErrors::ERC20InsufficientAllowance(_))
    ));

    let client_before = scene.token_balance(dollar, scene.client.address()).await;
    let (id, receipt, _) = scene.open_token_as(dollar, &scene.client, deposit, HOUR).await;
    let entry = scene.channel(id).await;
    assert_eq!(
        (entry.client, entry.token, entry.deposit, entry.status),
        (scene.client.address(), dollar, deposit, ChannelStatus::Open as u8)
    );
    assert_eq!(entry.terms, terms_of(scene.payee.address(), scene.session.address()));
    let opened = events::<TollstreamChannels::Opened>(&receipt);
    assert_eq!((opened[0].channelId, opened[0].client, opened[0].deposit), (id, scene.client.address(), deposit));
    assert_eq!(transfers_to(&receipt, dollar, scene.contract), vec![deposit]);
    // open_token_as minted twice the deposit and the registry took one.
    assert_eq!(scene.token_balance(dollar, scene.client.address()).await, client_before + deposit);
    assert_eq!(scene.token_balance(dollar, scene.contract).await, deposit);

    let server = U256::from(7 * USD);
    let coin_before = scene.balance(scene.contract).await;
    let receipt = scene.close(&scene.payee, &scene.state(id, deposit, server, 4, &scene.session)).await.unwrap();
    assert_eq!(transfers_to(&receipt, dollar, scene.payee.address()), vec![server]);
    assert_eq!(transfers_to(&receipt, dollar, scene.client.address()), vec![deposit - server]);
    assert_eq!(scene.token_balance(dollar, scene.payee.address()).await, server);
    assert_eq!(scene.token_balance(dollar, scene.contract).await, U256::ZERO);
    assert_eq!(scene.balance(scene.contract).await, coin_before);
    let closed = events::<TollstreamChannels::Closed>(&receipt);
    assert_eq!((closed[0].serverBalance, closed[0].clientBalance), (server, deposit - server));

    // A final state of a token channel pays the payee only.
    let (id, _, _) = scene.open_token_as(dollar, &scene.client, deposit, HOUR).await;
    let receipt = scene.close(&scene.payee, &scene.state(id, deposit, deposit, 9, &scene.session)).await.unwrap();
    assert_eq!(transfers_to(&receipt, dollar, scene.payee.address()), vec![deposit]);
    assert!(transfers_to(&receipt, dollar, scene.client.address()).is_empty());
}

#[tokio::test]
async fn open_with_permit_opens_in_one_transaction_even_if_the_permit_was_used() {
    let scene = Scene::new(anvil::shared()).await;
    let dollar = scene.dollar().await;
    let deposit = U256::from(10 * USD);
    scene.mint(dollar, scene.client.address(), U256::from(100 * USD)).await;
    let deadline = U256::from(scene.now().await + HOUR);
    let registry = scene.registry(&scene.client);

    // One transaction, no approval before.
    let permit = scene.permit(dollar, &scene.client, deposit, deadline).await;
    let terms = scene.terms(HOUR).await;
    let receipt = mined(
        registry
            .openWithPermit(dollar, deposit, terms.payee, terms.signer, terms.expires_at, terms.salt, deadline, permit)
            .send()
            .await,
    )
    .await;
    let id = channel_id(scene.client.address(), terms.payee, terms.salt);
    assert_eq!(events::<TollstreamChannels::Opened>(&receipt)[0].channelId, id);
    assert_eq!((scene.channel(id).await.token, scene.channel(id).await.deposit), (dollar, deposit));
    assert_eq!(transfers_to(&receipt, dollar, scene.contract), vec![deposit]);
    let token = TestStablecoin::new(dollar, scene.reader());
    assert_eq!(token.allowance(scene.client.address(), scene.contract).call().await.unwrap(), U256::ZERO);

    // Someone submits the permit first: the open still goes through on the
    // allowance it left.
    let permit = scene.permit(dollar, &scene.client, deposit, deadline).await;
    let (v, r, s) = (permit[64], B256::from_slice(&permit[..32]), B256::from_slice(&permit[32..64]));
    let front_runner = scene.wallet().await;
    mined(
        TestStablecoin::new(dollar, scene.provider(&front_runner))
            .permit(scene.client.address(), scene.contract, deposit, deadline, v, r, s)
            .send()
            .await,
    )
    .await;
    let terms = scene.terms(HOUR).await;
    mined(
        registry
            .openWithPermit(
                dollar,
                deposit,
                terms.payee,
                terms.signer,
                terms.expires_at,
                terms.salt,
                deadline,
                permit.clone(),
            )
            .send()
            .await,
    )
    .await;
    assert_eq!(scene.status(channel_id(scene.client.address(), terms.payee, terms.salt)).await, ChannelStatus::Open);

    // The used permit again, with no allowance left: PermitFailed. So for a
    // permit signed by someone else, or for too little.
    let terms = scene.terms(HOUR).await;
    let open = |permit: Bytes, amount| {
        registry.openWithPermit(
            dollar,
            amount,
            terms.payee,
            terms.signer,
            terms.expires_at,
            terms.salt,
            deadline,
            permit,
        )
    };
    refused!(open(permit, deposit).send(), PermitFailed);
    let stranger = scene.wallet().await;
    refused!(open(scene.permit(dollar, &stranger, deposit, deadline).await, deposit).send(), PermitFailed);
    let small = scene.permit(dollar, &scene.client, deposit - U256::from(1), deadline).await;
    refused!(open(small, deposit).send(), PermitFailed);
    refused!(open(Bytes::from_static(&[1, 2, 3]), deposit).send(), PermitFailed);

    // A token without permit: PermitFailed, unless approved beforehand.
    let plain = *NoPermitToken::deploy(scene.provider(&scene.minter)).await.unwrap().address();
    scene.mint(plain, scene.client.address(), deposit).await;
    let open_plain = |salt| {
        registry.openWithPermit(
            plain,
            deposit,
            terms.payee,
            terms.signer,
            terms.expires_at,
            salt,
            deadline,
            Bytes::new(),
        )
    };
    refused!(open_plain(B256::random()).send(), PermitFailed);
    mined(scene.token(plain, &scene.client).approve(scene.contract, deposit).send().await).await;
    mined(open_plain(terms.salt).send().await).await;
    assert_eq!(scene.token_balance(plain, scene.contract).await, deposit);
}

#[tokio::test]
async fn open_with_authorization_lets_anyone_open_for_the_client_on_its_terms_only() {
    let scene = Scene::new(anvil::shared()).await;
    let dollar = scene.dollar().await;
    let deposit = U256::from(12 * USD);
    // The client holds only the token, no coin at all.
    let client = SigningKey::from_bytes(B256::random().0).unwrap();
    scene.mint(dollar, client.address(), U256::from(50 * USD)).await;
    let relayer = scene.wallet().await;
    let terms = scene.terms(HOUR).await;
    let valid_before = U256::from(scene.now().await + HOUR);
    let signature = scene.authorization(dollar, &client, deposit, &terms, U256::ZERO, valid_before);
    let errors =
        |result: Result<TransactionReceipt, TestStablecoin::TestStablecoinErrors>| result.map(|_| ()).unwrap_err();

    // Front-running with the client's authorization on other terms: the
    // nonce the registry derives differs, so the token rejects the signature.
    let other_signer = Terms { signer: relayer.address(), ..terms };
    let other_payee = Terms { payee: relayer.address(), ..terms };
    let other_expiry = Terms { expires_at: terms.expires_at + 1, ..terms };
    let other_salt = Terms { salt: B256::random(), ..terms };
    for other in [other_signer, other_payee, other_expiry, other_salt] {
        let sent = scene
            .open_with_authorization(&relayer, dollar, client.address(), deposit, &other, valid_before, &signature)
            .await;
        assert!(matches!(
            errors(outcome(sent).await),
            TestStablecoin::TestStablecoinErrors::InvalidAuthorizationSignature(_)
        ));
    }
    // Nor for another amount, or another client.
    let sent = scene
        .open_with_authorization(
            &relayer,
            dollar,
            client.address(),
            deposit + U256::from(1),
            &terms,
            valid_before,
            &signature,
        )
        .await;
    assert!(matches!(
        errors(outcome(sent).await),
        TestStablecoin::TestStablecoinErrors::InvalidAuthorizationSignature(_)
    ));
    let sent = scene
        .open_with_authorization(&relayer, dollar, scene.client.address(), deposit, &terms, valid_before, &signature)
        .await;
    assert!(matches!(
        errors(outcome(sent).await),
        TestStablecoin::TestStablecoinErrors::InvalidAuthorizationSignature(_)
    ));
    // The relayer cannot take the funds with the token directly either.
    let (v, r, s) = (signature[64], B256::from_slice(&signature[..32]), B256::from_slice(&signature[32..64]));
    let nonce = authorization_nonce(terms.payee, terms.signer, terms.expires_at, terms.salt);
    let direct = TestStablecoin::new(dollar, scene.provider(&relayer))
        .receiveWithAuthorization(client.address(), scene.contract, deposit, U256::ZERO, valid_before, nonce, v, r, s)
        .send()
        .await;
    assert!(matches!(errors(outcome(direct).await), TestStablecoin::TestStablecoinErrors::CallerMustBePayee(_)));

    // The real thing, sent by the relayer, opens for the client.
    let receipt = mined(
        scene
            .open_with_authorization(&relayer, dollar, client.address(), deposit, &terms, valid_before, &signature)
            .await,
    )
    .await;
    let id = channel_id(client.address(), terms.payee, terms.salt);
    let opened = events::<TollstreamChannels::Opened>(&receipt);
    assert_eq!((opened[0].channelId, opened[0].client, opened[0].payee), (id, client.address(), terms.payee));
    let entry = scene.channel(id).await;
    assert_eq!((entry.client, entry.token, entry.deposit), (client.address(), dollar, deposit));
    assert_eq!(scene.token_balance(dollar, client.address()).await, U256::from(38 * USD));
    assert_eq!(scene.token_balance(dollar, relayer.address()).await, U256::ZERO);
    let token = TestStablecoin::new(dollar, scene.reader());
    assert!(token.authorizationState(client.address(), nonce).call().await.unwrap());

    // Used once: the same authorization again names the same channel.
    refused!(
        scene.open_with_authorization(&relayer, dollar, client.address(), deposit, &terms, valid_before, &signature),
        ChannelIdUsed
    );

    // An authorization not valid yet, and the refusals of the registry.
    let later = scene.terms(HOUR).await;
    let valid_after = U256::from(scene.now().await + HOUR);
    let future = scene.authorization(dollar, &client, deposit, &later, valid_after, valid_after + U256::from(HOUR));
    let sent = scene
        .registry(&relayer)
        .openWithAuthorization(
            dollar,
            client.address(),
            deposit,
            later.payee,
            later.signer,
            later.expires_at,
            later.salt,
            valid_after,
            valid_after + U256::from(HOUR),
            future,
        )
        .send()
        .await;
    assert!(matches!(errors(outcome(sent).await), TestStablecoin::TestStablecoinErrors::AuthorizationNotYetValid(_)));
    refused!(
        scene.open_with_authorization(&relayer, dollar, Address::ZERO, deposit, &later, valid_before, &signature),
        ZeroAddress
    );
    refused!(
        scene.open_with_authorization(
            &relayer,
            Address::ZERO,
            client.address(),
            deposit,
            &later,
            valid_before,
            &signature
        ),
        NotAToken
    );
}

#[tokio::test]
async fn token_opens_refuse_what_is_not_a_token() {
    let scene = Scene::new(anvil::shared()).await;
    let terms = scene.terms(HOUR).await;
    let registry = scene.registry(&scene.client);
    let deposit = U256::from(USD);
    let eoa = scene.wallet().await.address();
    let deadline = U256::from(terms.expires_at);
    for token in [Address::ZERO, eoa, Address::repeat_byte(0x42)] {
        refused!(
            registry.openToken(token, deposit, terms.payee, terms.signer, terms.expires_at, terms.salt).send(),
            NotAToken
        );
        refused!(
            registry
                .openWithPermit(
                    token,
                    deposit,
                    terms.payee,
                    terms.signer,
                    terms.expires_at,
                    terms.salt,
                    deadline,
                    Bytes::new()
                )
                .send(),
            NotAToken
        );
        refused!(
            scene.open_with_authorization(
                &scene.client,
                token,
                scene.client.address(),
                deposit,
                &terms,
                deadline,
                &Bytes::new()
            ),
            NotAToken
        );
    }
}

#[tokio::test]
async fn a_fee_on_transfer_token_is_refused_with_deposit_shortfall() {
    let scene = Scene::new(anvil::shared()).await;
    let token = *FeeOnTransferToken::deploy(scene.provider(&scene.minter)).await.unwrap().address();
    let deposit = U256::from(1000 * USD);
    scene.mint(token, scene.client.address(), deposit).await;
    mined(scene.token(token, &scene.client).approve(scene.contract, deposit).send().await).await;
    let terms = scene.terms(HOUR).await;
    let sent = scene
        .registry(&scene.client)
        .openToken(token, deposit, terms.payee, terms.signer, terms.expires_at, terms.salt)
        .send()
        .await;
    match outcome::<TollstreamChannelsErrors>(sent).await {
        Err(TollstreamChannelsErrors::DepositShortfall(shortfall)) => {
            assert_eq!((shortfall.received, shortfall.expected), (deposit * U256::from(99) / U256::from(100), deposit));
        }
        other => panic!("expected DepositShortfall, got {:?}", other.map(|receipt| receipt.transaction_hash)),
    }
    assert_eq!(scene.status(channel_id(scene.client.address(), terms.payee, terms.salt)).await, ChannelStatus::None);
    assert_eq!(scene.token_balance(token, scene.client.address()).await, deposit);
}

#[tokio::test]
async fn a_token_that_returns_nothing_opens_closes_and_refunds() {
    let scene = Scene::new(anvil::shared()).await;
    let token = *NoReturnToken::deploy(scene.provider(&scene.minter)).await.unwrap().address();
    let deposit = U256::from(30 * USD);
    let server = U256::from(11 * USD);
    let id = scene.open_token(token, deposit, HOUR).await;
    assert_eq!(scene.token_balance(token, scene.contract).await, deposit);
    scene.close(&scene.payee, &scene.state(id, deposit, server, 2, &scene.session)).await.unwrap();
    assert_eq!(scene.token_balance(token, scene.payee.address()).await, server);
    assert_eq!(scene.token_balance(token, scene.client.address()).await, deposit * U256::from(2) - server);
    assert_eq!(scene.token_balance(token, scene.contract).await, U256::ZERO);

    // And in a batch.
    let first = scene.open_token(token, deposit, HOUR).await;
    let second = scene.open_token(token, deposit, HOUR).await;
    let states = [
        scene.state(first, deposit, server, 1, &scene.session),
        scene.state(second, deposit, deposit, 1, &scene.session),
    ];
    let receipt = scene.close_many(&scene.payee, &states).await.unwrap();
    assert_eq!(events::<TollstreamChannels::Closed>(&receipt).len(), 2);
    assert_eq!(transfers_to(&receipt, token, scene.payee.address()), vec![server + deposit]);
    assert_eq!(scene.token_balance(token, scene.contract).await, U256::ZERO);
}

#[tokio::test]
async fn a_token_that_returns_false_fails_the_open_and_the_payees_close() {
    let scene = Scene::new(anvil::shared()).await;
    let false_token = FalseReturningToken::deploy(scene.provider(&scene.minter)).await.unwrap();
    let token = *false_token.address();
    let deposit = U256::from(5 * USD);
    let id = scene.open_token(token, deposit, HOUR).await;
    mined(false_token.setFailing(true).send().await).await;

    // The pull: SafeERC20 refuses a `false`.
    scene.mint(token, scene.client.address(), deposit).await;
    mined(scene.token(token, &scene.client).approve(scene.contract, deposit).send().await).await;
    let terms = scene.terms(HOUR).await;
    refused!(
        scene
            .registry(&scene.client)
            .openToken(token, deposit, terms.payee, terms.signer, terms.expires_at, terms.salt)
            .send(),
        SafeERC20FailedOperation
    );
    // The payee's payout reverts the close; the channel stays open.
    let state = scene.state(id, deposit, U256::from(USD), 1, &scene.session);
    refused!(scene.close_sent(&scene.payee, &state), SafeERC20FailedOperation);
    assert_eq!(scene.status(id).await, ChannelStatus::Open);
    mined(false_token.setFailing(false).send().await).await;
    scene.close(&scene.payee, &state).await.unwrap();
}

#[tokio::test]
async fn a_blocked_client_cannot_stop_the_close_and_withdraws_later() {
    let scene = Scene::new(anvil::shared()).await;
    let blocking = BlockingToken::deploy(scene.provider(&scene.minter)).await.unwrap();
    let token = *blocking.address();
    let deposit = U256::from(20 * USD);
    let server = U256::from(8 * USD);
    let id = scene.open_token(token, deposit, HOUR).await;
    let client_tokens = scene.token_balance(token, scene.client.address()).await;

    mined(blocking.setBlocked(scene.client.address(), true).send().await).await;
    let receipt = scene.close(&scene.payee, &scene.state(id, deposit, server, 3, &scene.session)).await.unwrap();
    assert_eq!(transfers_to(&receipt, token, scene.payee.address()), vec![server]);
    let closed = events::<TollstreamChannels::Closed>(&receipt);
    assert_eq!((closed[0].serverBalance, closed[0].clientBalance), (server, deposit - server));
    assert_eq!(scene.token_balance(token, scene.client.address()).await, client_tokens);
    assert_eq!(scene.owed(scene.client.address(), token).await, deposit - server);
    assert_eq!(scene.owed(scene.client.address(), Address::ZERO).await, U256::ZERO);
    assert_eq!(scene.token_balance(token, scene.contract).await, deposit - server);

    // Still blocked: the withdrawal reverts with the token's error.
    let sent = scene.registry(&scene.client).withdraw(token).send().await;
    assert!(matches!(outcome(sent).await, Err(BlockingToken::BlockingTokenErrors::Blocked(_))));
    assert_eq!(scene.owed(scene.client.address(), token).await, deposit - server);

    mined(blocking.setBlocked(scene.client.address(), false).send().await).await;
    let receipt = mined(scene.registry(&scene.client).withdraw(token).send().await).await;
    assert_eq!(transfers_to(&receipt, token, scene.client.address()), vec![deposit - server]);
    assert_eq!(scene.token_balance(token, scene.client.address()).await, client_tokens + deposit - server);
    assert_eq!(scene.owed(scene.client.address(), token).await, U256::ZERO);
    refused!(scene.registry(&scene.client).withdraw(token).send(), NothingOwed);
    refused!(scene.registry(&scene.payee).withdraw(token).send(), NothingOwed);

    // A blocked payee, though, cannot close.
    let id = scene.open_token(token, deposit, HOUR).await;
    mined(blocking.setBlocked(scene.payee.address(), true).send().await).await;
    let sent = scene.close_sent(&scene.payee, &scene.state(id, deposit, server, 1, &scene.session)).await;
    assert!(matches!(outcome(sent).await, Err(BlockingToken::BlockingTokenErrors::Blocked(_))));
    assert_eq!(scene.status(id).await, ChannelStatus::Open);
}

#[tokio::test]
async fn a_blocked_client_is_refunded_into_owed() {
    let node = Anvil::spawn().unwrap();
    let scene = Scene::new(&node).await;
    let blocking = BlockingToken::deploy(scene.provider(&scene.minter)).await.unwrap();
    let token = *blocking.address();
    let deposit = U256::from(3 * USD);
    let id = scene.open_token(token, deposit, HOUR).await;
    mined(blocking.setBlocked(scene.client.address(), true).send().await).await;
    node.increase_time(HOUR + 1).await.unwrap();
    let receipt = scene.refund(&scene.payee, id).await.unwrap();
    assert_eq!(events::<TollstreamChannels::Refunded>(&receipt)[0].amount, deposit);
    assert_eq!(scene.owed(scene.client.address(), token).await, deposit);
    mined(blocking.setBlocked(scene.client.address(), false).send().await).await;
    mined(scene.registry(&scene.client).withdraw(token).send().await).await;
    assert_eq!(scene.token_balance(token, scene.contract).await, U256::ZERO);
}

// ================================================================ re-entrancy

/// Every guarded entry point, re-entered from a token transfer inside a
/// close, is refused with OpenZeppelin's ReentrancyGuardReentrantCall, and the
/// close pays each party once.
#[tokio::test]
async fn reentry_from_a_token_callback_is_refused_and_pays_once() {
    let scene = Scene::new(anvil::shared()).await;
    let attacker = ReentrantToken::deploy(scene.provider(&scene.minter)).await.unwrap();
    let token = *attacker.address();
    let deposit = U256::from(10 * USD);
    let server = U256::from(4 * USD);
    let payee = scene.payee.address();
    let session = scene.session.address();
    let expires = scene.now().await + HOUR;
    let guard = TollstreamChannels::ReentrancyGuardReentrantCall::SELECTOR;

    // A channel of the attacker's own: its re-entries are by its payee's
    // rules, so only the guard stops them.
    let (victim, _, _) = scene.open_token_as(token, &scene.client, deposit, HOUR).await;
    let victim_state = scene.state(victim, deposit, server, 1, &scene.session);
    let calls: Vec<(&str, Vec<u8>)> = vec![
        (
            "close",
            TollstreamChannels::closeCall {
                channelId: victim,
                serverBalance: server,
                sequenceNumber: 1,
                signature: Bytes::copy_from_slice(&victim_state.client_signature.0),
            }
            .abi_encode(),
        ),
        ("closeMany", TollstreamChannels::closeManyCall { closes: vec![entry(&victim_state)] }.abi_encode()),
        ("refund", TollstreamChannels::refundCall { channelId: victim }.abi_encode()),
        ("withdraw", TollstreamChannels::withdrawCall { token }.abi_encode()),
        (
            "openToken",
            TollstreamChannels::openTokenCall {
                token,
                amount: U256::from(1),
                payee,
                signer: session,
                expiresAt: expires,
                salt: B256::random(),
            }
            .abi_encode(),
        ),
        (
            "openWithPermit",
            TollstreamChannels::openWithPermitCall {
                token,
                amount: U256::from(1),
                payee,
                signer: session,
                expiresAt: expires,
                salt: B256::random(),
                deadline: U256::from(expires),
                permitSignature: Bytes::new(),
            }
            .abi_encode(),
        ),
        (
            "openWithAuthorization",
            TollstreamChannels::openWithAuthorizationCall {
                token,
                client: scene.client.address(),
                amount: U256::from(1),
                payee,
                signer: session,
                expiresAt: expires,
                salt: B256::random(),
                validAfter: U256::ZERO,
                validBefore: U256::from(expires),
                signature: Bytes::new(),
            }
            .abi_encode(),
        ),
    ];
    for (name, call) in calls {
        // Recording: the re-entry fails inside the payee's payout; the close
        // goes on and pays each party exactly once.
        let id = scene.open_token(token, deposit, HOUR).await;
        mined(attacker.arm(scene.contract, call.clone().into(), payee, false).send().await).await;
        let registry_before = scene.token_balance(token, scene.contract).await;
        let payee_before = scene.token_balance(token, payee).await;
        let receipt = scene.close(&scene.payee, &scene.state(id, deposit, server, 1, &scene.session)).await.unwrap();
        assert!(!attacker.lastSucceeded().call().await.unwrap(), "{name} re-entered");
        assert_eq!(selector_of(&attacker.lastResult().call().await.unwrap()), guard, "{name}");
        assert_eq!(events::<TollstreamChannels::Closed>(&receipt).len(), 1, "{name}");
        assert_eq!(scene.token_balance(token, payee).await - payee_before, server, "{name}");
        assert_eq!(registry_before - scene.token_balance(token, scene.contract).await, deposit, "{name}");

        // Bubbling: the payee's payout fails, so the close reverts with the
        // guard's error and the channel stays open.
        let id = scene.open_token(token, deposit, HOUR).await;
        mined(attacker.arm(scene.contract, call.into(), payee, true).send().await).await;
        let state = scene.state(id, deposit, server, 1, &scene.session);
        assert!(
            matches!(
                scene.close(&scene.payee, &state).await,
                Err(TollstreamChannelsErrors::ReentrancyGuardReentrantCall(_))
            ),
            "{name}"
        );
        assert_eq!(scene.status(id).await, ChannelStatus::Open, "{name}");
        mined(attacker.arm(scene.contract, Bytes::new(), Address::repeat_byte(0xde), false).send().await).await;
        scene.close(&scene.payee, &state).await.unwrap();
    }
    assert_eq!(scene.status(victim).await, ChannelStatus::Open);
    assert_eq!(attacker.reentries().call().await.unwrap(), U256::from(7));

    // Bubbling from the client's payout: the client's share is owed instead.
    let id = scene.open_token(token, deposit, HOUR).await;
    let withdraw = TollstreamChannels::withdrawCall { token }.abi_encode();
    mined(attacker.arm(scene.contract, withdraw.clone().into(), scene.client.address(), true).send().await).await;
    let payee_before = scene.token_balance(token, payee).await;
    scene.close(&scene.payee, &scene.state(id, deposit, server, 1, &scene.session)).await.unwrap();
    assert_eq!(scene.token_balance(token, payee).await - payee_before, server);
    assert_eq!(scene.owed(scene.client.address(), token).await, deposit - server);

    // Re-entering from the deposit's pull reverts the open.
    let terms = scene.terms(HOUR).await;
    scene.mint(token, scene.client.address(), deposit).await;
    mined(scene.token(token, &scene.client).approve(scene.contract, deposit).send().await).await;
    mined(attacker.arm(scene.contract, withdraw.into(), scene.contract, true).send().await).await;
    refused!(
        scene
            .registry(&scene.client)
            .openToken(token, deposit, terms.payee, terms.signer, terms.expires_at, terms.salt)
            .send(),
        ReentrancyGuardReentrantCall
    );

    // The victim channel was never touched: it still closes normally.
    mined(attacker.arm(scene.contract, Bytes::new(), Address::repeat_byte(0xde), false).send().await).await;
    let receipt = scene.close(&scene.payee, &victim_state).await.unwrap();
    assert_eq!(transfers_to(&receipt, token, payee), vec![server]);
}

// ================================================================ closeMany

#[tokio::test]
async fn close_many_closes_what_it_can_and_skips_the_rest() {
    // One channel must expire while the others stay open: a node of its own.
    let node = Anvil::spawn().unwrap();
    let scene = Scene::new(&node).await;
    let dollar = scene.dollar().await;
    let other_token = *NoReturnToken::deploy(scene.provider(&scene.minter)).await.unwrap().address();
    let coin = U256::from(ETH / 10);
    let dollars = U256::from(10 * USD);
    let session = &scene.session;
    let payee = scene.payee.address();

    // Channels that close, each from its own client.
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(scene.wallet().await);
    }
    let (coin_a, _) = scene.open_coin_as(&clients[0], coin, 3 * HOUR).await;
    let (dollar_a, _, _) = scene.open_token_as(dollar, &clients[1], dollars, 3 * HOUR).await;
    let (dollar_b, _, _) = scene.open_token_as(dollar, &clients[2], dollars, 3 * HOUR).await;
    let (coin_b, _) = scene.open_coin_as(&clients[3], coin, 3 * HOUR).await;
    let (other_a, _, _) = scene.open_token_as(other_token, &clients[4], dollars, 3 * HOUR).await;
    let (dollar_c, _, _) = scene.open_token_as(dollar, &clients[5], dollars, 3 * HOUR).await;

    // Channels that cannot.
    let (closed, _) = scene.open(coin, 3 * HOUR).await;
    scene.close(&scene.payee, &scene.state(closed, coin, coin, 1, session)).await.unwrap();
    let never = B256::random();
    let someone_else = scene.wallet().await;
    let salt = B256::random();
    let expires = scene.now().await + 3 * HOUR;
    mined(
        scene
            .registry(&scene.client)
            .open(someone_else.address(), session.address(), expires, salt)
            .value(coin)
            .send()
            .await,
    )
    .await;
    let not_ours = channel_id(scene.client.address(), someone_else.address(), salt);
    let (expiring, _) = scene.open(coin, HOUR).await;
    let (greedy, _) = scene.open(coin, 3 * HOUR).await;
    let (badly_signed, _) = scene.open(coin, 3 * HOUR).await;
    node.increase_time(HOUR + 1).await.unwrap();

    let server = |deposit: U256| deposit * U256::from(3) / U256::from(10);
    let mut short = scene.state(badly_signed, coin, server(coin), 1, session);
    short.client_signature = high_s_twin(&short.client_signature);
    let states = vec![
        scene.state(coin_a, coin, server(coin), 1, session),
        scene.state(dollar_a, dollars, server(dollars), 1, session),
        scene.state(dollar_b, dollars, dollars, 1, session),
        scene.state(coin_b, coin, coin, 1, session),
        scene.state(coin_a, coin, server(coin), 1, session),
        scene.state(never, coin, server(coin), 1, session),
        scene.state(closed, coin, server(coin), 2, session),
        scene.state(not_ours, coin, server(coin), 1, session),
        scene.state(expiring, coin, server(coin), 1, session),
        scene.state(greedy, coin, coin + U256::from(1), 1, session),
        short,
        scene.state(badly_signed, coin, server(coin), 1, &someone_else),
        scene.state(other_a, dollars, server(dollars), 1, session),
        scene.state(dollar_c, dollars, server(dollars), 1, session),
    ];
    let skipped = [
        (coin_a, TollstreamChannels::ChannelNotOpen::SELECTOR),
        (never, TollstreamChannels::ChannelNotOpen::SELECTOR),
        (closed, TollstreamChannels::ChannelNotOpen::SELECTOR),
        (not_ours, TollstreamChannels::TermsMismatch::SELECTOR),
        (expiring, TollstreamChannels::ChannelExpired::SELECTOR),
        (greedy, TollstreamChannels::BalanceExceedsDeposit::SELECTOR),
        (badly_signed, TollstreamChannels::InvalidSignature::SELECTOR),
        (badly_signed, TollstreamChannels::TermsMismatch::SELECTOR),
    ];

    let registry = scene.registry(&scene.payee);
    let count = registry.closeMany(states.iter().map(entry).collect()).call().await.unwrap();
    assert_eq!(count, U256::from(6));
    let payee_coin = scene.balance(payee).await;
    let client_coin = scene.balance(clients[0].address()).await;
    let receipt = scene.close_many(&scene.payee, &states).await.unwrap();

    let closed_events = events::<TollstreamChannels::Closed>(&receipt);
    let closed_ids: Vec<B256> = closed_events.iter().map(|event| event.channelId).collect();
    assert_eq!(closed_ids, vec![coin_a, dollar_a, dollar_b, coin_b, other_a, dollar_c]);
    assert_eq!(closed_events[2].clientBalance, U256::ZERO);
    let skip_events: Vec<(B256, [u8; 4])> = events::<TollstreamChannels::CloseSkipped>(&receipt)
        .into_iter()
        .map(|event| (event.channelId, event.reason.0))
        .collect();
    assert_eq!(skip_events, skipped.to_vec());

    // The payee is paid once per run of one token: dollars (a, b), then the
    // other token, then dollars (c) again; the coin once per run too.
    assert_eq!(transfers_to(&receipt, dollar, payee), vec![server(dollars) + dollars, server(dollars)]);
    assert_eq!(transfers_to(&receipt, other_token, payee), vec![server(dollars)]);
    assert_eq!(scene.balance(payee).await + gas_cost(&receipt) - payee_coin, server(coin) + coin);
    assert_eq!(scene.balance(clients[0].address()).await - client_coin, coin - server(coin));
    assert_eq!(transfers_to(&receipt, dollar, clients[1].address()), vec![dollars - server(dollars)]);
    assert!(transfers_to(&receipt, dollar, clients[2].address()).is_empty());
    assert_eq!(transfers_to(&receipt, other_token, clients[4].address()), vec![dollars - server(dollars)]);
    assert_eq!(scene.token_balance(dollar, scene.contract).await, U256::ZERO);
    assert_eq!(scene.token_balance(other_token, scene.contract).await, U256::ZERO);

    for id in [coin_a, dollar_a, dollar_b, coin_b, other_a, dollar_c, closed] {
        assert_eq!(scene.status(id).await, ChannelStatus::Closed);
    }
    for id in [not_ours, expiring, greedy, badly_signed] {
        assert_eq!(scene.status(id).await, ChannelStatus::Open);
    }

    // Nothing to close is no error either.
    let receipt = scene.close_many(&scene.payee, &states[4..12]).await.unwrap();
    assert!(events::<TollstreamChannels::Closed>(&receipt).is_empty());
    assert_eq!(events::<TollstreamChannels::CloseSkipped>(&receipt).len(), 8);
    scene.close_many(&scene.payee, &[]).await.unwrap();
}

// ================================================================ gas

/// One row of the gas table.
struct GasRow {
    what: String,
    gas: u64,
}

/// Opens `count` channels, each from its own client, in `token` (0: the
/// coin), and closes them with one `closeMany`; returns its gas per channel.
async fn close_many_gas(scene: &Scene<'_>, token: Address, count: usize, is_final: bool) -> u64 {
    let deposit = if token == Address::ZERO { U256::from(ETH / 100) } else { U256::from(10 * USD) };
    let server = if is_final { deposit } else { deposit / U256::from(2) };
    let mut states = Vec::new();
    for _ in 0..count {
        let client = scene.wallet().await;
        let id = if token == Address::ZERO {
            scene.open_coin_as(&client, deposit, HOUR).await.0
        } else {
            scene.open_token_as(token, &client, deposit, HOUR).await.0
        };
        states.push(scene.state(id, deposit, server, 1, &scene.session));
    }
    let receipt = scene.close_many(&scene.payee, &states).await.unwrap();
    assert_eq!(events::<TollstreamChannels::Closed>(&receipt).len(), count);
    receipt.gas_used / count as u64
}

/// Prints the gas of every entry point (the README's "Gas" section quotes
/// it). Gas is deterministic for the same inputs and state, so the figures
/// are the same on every machine.
///
/// Steady state, as a server sees it: the payee and every client already
/// hold some of the token, the registry holds other deposits, each channel
/// has its own client, approvals are for the exact deposit.
#[tokio::test]
async fn gas_table() {
    let node = Anvil::spawn().unwrap();
    let scene = Scene::new(&node).await;
    let dollar = scene.dollar().await;
    let coin = U256::from(ETH / 100);
    let dollars = U256::from(10 * USD);
    let mut rows: Vec<GasRow> = Vec::new();
    let mut row = |what: &str, gas: u64| rows.push(GasRow { what: what.to_owned(), gas });

    // Balances that exist in steady state.
    scene.mint(dollar, scene.payee.address(), U256::from(USD)).await;
    scene.mint(dollar, scene.client.address(), U256::from(1000 * USD)).await;
    scene.open_token(dollar, dollars, HOUR).await;

    let (coin_id, open) = scene.open(coin, HOUR).await;
    row("open (coin)", open.gas_used);
    let (token_id, open_token, approve) = scene.open_token_as(dollar, &scene.client, dollars, HOUR).await;
    row("approve (exact deposit)", approve.gas_used);
    row("openToken", open_token.gas_used);

    // Permits: the first of a wallet moves its permit nonce from zero.
    let deadline = U256::from(scene.now().await + HOUR);
    let mut permit_gas = Vec::new();
    for _ in 0..2 {
        let permit = scene.permit(dollar, &scene.client, dollars, deadline).await;
        let terms = scene.terms(HOUR).await;
        let receipt = mined(
            scene
                .registry(&scene.client)
                .openWithPermit(
                    dollar,
                    dollars,
                    terms.payee,
                    terms.signer,
                    terms.expires_at,
                    terms.salt,
                    deadline,
                    permit,
                )
                .send()
                .await,
        )
        .await;
        permit_gas.push(receipt.gas_used);
    }
    row("openWithPermit (wallet's first permit)", permit_gas[0]);
    row("openWithPermit (later permits)", permit_gas[1]);

    let client = SigningKey::from_bytes(B256::random().0).unwrap();
    scene.mint(dollar, client.address(), dollars * U256::from(2)).await;
    let terms = scene.terms(HOUR).await;
    let valid_before = U256::from(scene.now().await + HOUR);
    let signature = scene.authorization(dollar, &client, dollars, &terms, U256::ZERO, valid_before);
    let relayer = scene.wallet().await;
    let receipt = mined(
        scene
            .open_with_authorization(&relayer, dollar, client.address(), dollars, &terms, valid_before, &signature)
            .await,
    )
    .await;
    row("openWithAuthorization (sent by the server)", receipt.gas_used);

    let half = |deposit: U256| deposit / U256::from(2);
    let close = scene.close(&scene.payee, &scene.state(coin_id, coin, half(coin), 1, &scene.session)).await.unwrap();
    row("close, coin, client refunded", close.gas_used);
    let (coin_final, _) = scene.open(coin, HOUR).await;
    let close = scene.close(&scene.payee, &scene.state(coin_final, coin, coin, 1, &scene.session)).await.unwrap();
    row("close, coin, final", close.gas_used);
    let close =
        scene.close(&scene.payee, &scene.state(token_id, dollars, half(dollars), 1, &scene.session)).await.unwrap();
    row("close, token, client refunded", close.gas_used);
    let token_final = scene.open_token(dollar, dollars, HOUR).await;
    let close =
        scene.close(&scene.payee, &scene.state(token_final, dollars, dollars, 1, &scene.session)).await.unwrap();
    row("close, token, final", close.gas_used);

    let (expiring, _) = scene.open(coin, HOUR).await;
    let token_expiring = scene.open_token(dollar, dollars, HOUR).await;
    let mut batches: Vec<(String, Vec<u64>)> = Vec::new();
    for (label, token, is_final) in [
        ("coin, final", Address::ZERO, true),
        ("coin, client refunded", Address::ZERO, false),
        ("token, final", dollar, true),
        ("token, client refunded", dollar, false),
    ] {
        let mut per_channel = Vec::new();
        for size in [1, 5, 10, 20] {
            per_channel.push(close_many_gas(&scene, token, size, is_final).await);
        }
        batches.push((label.to_owned(), per_channel));
    }

    node.increase_time(HOUR + 1).await.unwrap();
    row("refund, coin", scene.refund(&scene.payee, expiring).await.unwrap().gas_used);
    row("refund, token", scene.refund(&scene.payee, token_expiring).await.unwrap().gas_used);

    println!("\n| entry point | gas |\n|---|---:|");
    for GasRow { what, gas } in &rows {
        println!("| {what} | {gas} |");
    }
    println!("\n| closeMany, gas per channel | 1 | 5 | 10 | 20 |\n|---|---:|---:|---:|---:|");
    for (label, per_channel) in &batches {
        let cells: Vec<String> = per_channel.iter().map(u64::to_string).collect();
        println!("| {label} | {} |", cells.join(" | "));
    }

    for GasRow { what, gas } in &rows {
        assert!(*gas > 21_000 && *gas < 200_000, "{what}: {gas}");
    }
    for (label, per_channel) in &batches {
        assert!(per_channel.iter().all(|gas| *gas > 21_000 / 20), "{label}: {per_channel:?}");
        assert!(per_channel.windows(2).all(|pair| pair[1] < pair[0]), "{label} per channel: {per_channel:?}");
    }
}
