//! Channels in an ERC-20 token end to end (PROTOCOL.md 1.1, "Token
//! channels" and "openChannel"): a real anvil, the test dollar (tUSD, 6
//! decimals, EIP-2612 and EIP-3009), `tollstream serve --token` as a child
//! process, and the Rust clients on loopback.
//!
//! Each test deploys its own registry and token, with wallets of its own,
//! and runs its own server. What is asserted is what the chain shows
//! (balances in the token and in ETH, nonces, `Closed` events) and what
//! the server answers.

mod common;

use alloy::primitives::Bytes;
use common::{LIFETIME, PRICE, ServerOptions, ServerProcess, TestChain, TestDollar, within};
use serde_json::json;
use tollstream_chain::{OpenRequest, TestStablecoin, TollstreamChannels, connect_provider};
use tollstream_client::wallet::random_key;
use tollstream_client::{Client, Step, Viewer};
use tollstream_protocol::channel_id::channel_id;
use tollstream_protocol::successor::open_channel_authorization;
use tollstream_protocol::{
    Address, Amount, Authorization, B256, ChannelDomain, ChannelState, ErrorCode, NATIVE_TOKEN, OpenAuthorization,
    OpenChannelRequest, ServerInfo, Signature, SigningKey, TokenSigningDomain, U256, event,
};

/// How long an authorization of these tests stays valid.
const AUTHORIZATION_SECONDS: u64 = 3_600;

fn units(windows: u64) -> U256 {
    U256::from(windows) * U256::from(PRICE)
}

/// A chain with the test dollar, and a server selling channels in it with
/// these extra `serve` flags.
async fn token_server(options: ServerOptions) -> (TestChain, TestDollar, ServerProcess) {
    let chain = TestChain::new().await;
    let dollar = chain.deploy_test_dollar().await;
    let mut extra_args = dollar.serve_args();
    extra_args.extend(options.extra_args.iter().cloned());
    let server = ServerProcess::start(&chain, &ServerOptions { extra_args, ..options });
    (chain, dollar, server)
}

/// The terms of one gasless open, signed on demand, so a test can change
/// one of them (or sign with the wrong key) and see the refusal.
#[derive(Clone)]
struct Open {
    info: ServerInfo,
    /// The wallet whose tokens the channel holds.
    wallet: SigningKey,
    /// The key that signs the channel's states.
    session: SigningKey,
    deposit: U256,
    expires_at: u64,
    salt: B256,
    valid_before: u64,
}

impl Open {
    /// A channel of `windows` windows living [`LIFETIME`] from now, with an
    /// authorization valid for an hour.
    async fn new(chain: &TestChain, info: &ServerInfo, wallet: &SigningKey, windows: u64) -> Open {
        let now = chain.now().await;
        Open {
            info: info.clone(),
            wallet: wallet.clone(),
            session: random_key(),
            deposit: units(windows),
            expires_at: now + LIFETIME,
            salt: B256::from(random_key().to_bytes()),
            valid_before: now + AUTHORIZATION_SECONDS,
        }
    }

    fn channel_id(&self) -> B256 {
        channel_id(self.wallet.address(), self.info.wallet_address, self.salt)
    }

    fn channel_domain(&self) -> ChannelDomain {
        ChannelDomain::new(self.info.chain_id, self.info.channel_address)
    }

    /// The channel's first state, signed by the session key.
    fn opening(&self) -> ChannelState {
        let mut state = ChannelState {
            channel_id: self.channel_id(),
            channel_address: self.info.channel_address,
            client_wallet_address: self.wallet.address(),
            client_public_key: self.session.public_key(),
            client_balance: Amount(self.deposit),
            server_balance: Amount::ZERO,
            client_sequence_number: 0,
            client_signature: Signature([0; 65]),
        };
        state.sign(&self.channel_domain(), &self.session);
        state
    }

    /// The server's token domain, as its `publicKey` names it.
    fn token_domain(&self) -> TokenSigningDomain {
        TokenSigningDomain::of_server(&self.info).expect("the server names its token's domain")
    }

    /// The request with its authorization not signed yet.
    fn unsigned(&self) -> OpenChannelRequest {
        OpenChannelRequest {
            state: self.opening(),
            expires_at: self.expires_at,
            salt: self.salt,
            authorization: OpenAuthorization {
                valid_after: 0,
                valid_before: self.valid_before,
                signature: Signature([0; 65]),
            },
        }
    }

    /// The EIP-3009 terms the wallet signs.
    fn authorization(&self) -> Authorization {
        open_channel_authorization(&self.unsigned(), self.info.wallet_address)
    }

    /// The request with `signature` as its authorization's.
    fn with_signature(&self, signature: Signature) -> OpenChannelRequest {
        let mut request = self.unsigned();
        request.authorization.signature = signature;
        request
    }

    /// The request as a well-behaved viewer sends it: the wallet signs the
    /// authorization in the token's domain.
    fn request(&self) -> OpenChannelRequest {
        self.with_signature(self.authorization().sign(&self.token_domain(), &self.wallet))
    }
}

/// The code a refused `openChannel` carries.
async fn open_refused(client: &Client, request: &OpenChannelRequest) -> ErrorCode {
    match client.open_channel(request).await {
        Ok(reply) => panic!("openChannel was accepted: {reply:?}"),
        Err(error) => error.code().unwrap_or_else(|| panic!("not a protocol refusal: {error}")),
    }
}

/// Buys `windows` windows through [`Viewer::buy`] and watches until the
/// final payment; the opening state and the final one.
async fn watch_to_final(
    server: &ServerProcess,
    rpc: &str,
    wallet: SigningKey,
    windows: u64,
) -> (ChannelState, ChannelState) {
    let mut viewer = Viewer::connect(&server.url, wallet).await.unwrap();
    assert!(viewer.info().gasless_open, "the server offers gasless opens");
    let opening = viewer.buy(rpc, windows, LIFETIME).await.unwrap();
    assert_eq!(opening.client_balance, Amount(units(windows)));
    viewer.play("demo", 0).await.unwrap();
    let mut last = None;
    within(60, async {
        loop {
            match viewer.next_step().await {
                Step::Paid { state, .. } => last = Some(state),
                Step::Keys(_) => {}
                Step::Final(_) => break,
                other => panic!("unexpected {other:?}\n{}", server.log()),
            }
        }
    })
    .await;
    let last = last.expect("the viewer paid");
    assert!(last.is_final());
    assert_eq!(last.server_balance, Amount(units(windows)));
    (opening, last)
}

/// Viewers holding the token and no ETH open gaslessly, watch to their
/// final payment, and the server collects in the token: the payee's token
/// balance rises by exactly what they paid, each viewer's falls by exactly
/// what it paid, and the payee's ETH pays only gas. The server runs
/// without settlement passes while the viewers watch and is then restarted
/// with them, so the three spent channels are due in one pass.
#[tokio::test]
async fn viewers_with_only_the_token_open_gasless_watch_and_the_payee_collects_the_token() {
    const WINDOWS: [u64; 3] = [2, 3, 4];
    let (chain, dollar, mut server) =
        token_server(ServerOptions { settle_interval: 3_600.0, ..ServerOptions::default() }).await;
    let payee = chain.server_wallet.address();
    let minted = units(10);
    let mut wallets = Vec::new();
    for _ in WINDOWS {
        let wallet = chain.dollar_wallet(&dollar, minted).await;
        assert_eq!(chain.balance(wallet.address()).await, U256::ZERO, "the viewer holds no ETH");
        wallets.push(wallet);
    }
    let payee_tokens_before = chain.token_balance(dollar.address, payee).await;
    let payee_eth_before = chain.balance(payee).await;
    let from_block = chain.block_number().await + 1;

    let (a, b, c) = tokio::join!(
        watch_to_final(&server, &chain.rpc, wallets[0].clone(), WINDOWS[0]),
        watch_to_final(&server, &chain.rpc, wallets[1].clone(), WINDOWS[1]),
        watch_to_final(&server, &chain.rpc, wallets[2].clone(), WINDOWS[2]),
    );
    let watched = [a, b, c];
    for (opening, _) in &watched {
        assert_eq!(chain.channel_status(opening.channel_id).await, 1, "open on chain");
    }

    server.set_flag("--settle-interval", "0.2");
    server.restart();
    let mut closes = Vec::new();
    for ((opening, last), windows) in watched.iter().zip(WINDOWS) {
        let closed = server
            .wait_for(60, "the channel's Closed event", async || {
                let events = chain.closed_events(opening.channel_id).await;
                (!events.is_empty()).then_some(events)
            })
            .await;
        assert_eq!(closed.len(), 1, "one channel, one close: {closed:?}");
        assert_eq!(closed[0].server_balance, last.server_balance.0);
        assert_eq!(closed[0].server_balance, units(windows));
        assert_eq!(closed[0].client_balance, U256::ZERO);
        closes.push(closed[0].clone());
    }
    // All three were due in one settlement pass: one closeMany closed them.
    assert!(closes.windows(2).all(|pair| pair[0].tx == pair[1].tx), "closed in one batch: {closes:?}");
    let paid: U256 = WINDOWS.iter().map(|&windows| units(windows)).sum();
    assert_eq!(chain.token_balance(dollar.address, payee).await - payee_tokens_before, paid);
    for (wallet, windows) in wallets.iter().zip(WINDOWS) {
        assert_eq!(chain.token_balance(dollar.address, wallet.address()).await, minted - units(windows));
        assert_eq!(chain.balance(wallet.address()).await, U256::ZERO, "the viewer spent no ETH");
    }
    let gas = chain.gas_paid_by(payee, from_block).await;
    assert!(gas > U256::ZERO, "the payee paid the opens' and closes' gas");
    assert_eq!(payee_eth_before - chain.balance(payee).await, gas, "the payee's ETH paid only gas");
}

/// `publicKey` of a token server names the token, its display terms and
/// its EIP-712 domain, and offers gasless opens.
#[tokio::test]
async fn a_token_servers_public_key_names_the_test_dollar() {
    let (_chain, dollar, server) = token_server(ServerOptions::default()).await;
    let client = Client::connect(&server.url).await.unwrap();
    let info = client.public_key().await.unwrap();
    assert_eq!(info.token, dollar.address);
    assert_eq!(info.token_symbol, "tUSD");
    assert_eq!(info.token_decimals, 6);
    assert!(info.gasless_open);
    let domain = info.token_domain.expect("a token domain");
    assert_eq!((domain.name.as_str(), domain.version.as_str()), ("Tollstream Test Dollar", "1"));
    let raw = client.request_raw(event::PUBLIC_KEY, &json!({})).await.unwrap();
    assert_eq!(raw["token_domain"], json!({"name": "Tollstream Test Dollar", "version": "1"}));
    assert_eq!(raw["gasless_open"], json!(true));
}

/// Every refusal of `openChannel` the protocol names, none of which sends a
/// transaction or counts against the connection's two gasless opens a
/// minute; then two opens, a repeat of the first (answered from the store,
/// no second transaction), and a third open on the same connection
/// refused as `rate_limited`, which another connection may still send.
#[tokio::test]
async fn open_channel_refusals_idempotence_and_the_per_connection_limit() {
    let (chain, dollar, server) = token_server(ServerOptions::default()).await;
    let client = Client::connect(&server.url).await.unwrap();
    let info = client.public_key().await.unwrap();
    let payee = info.wallet_address;
    let wallet = chain.dollar_wallet(&dollar, units(20)).await;
    let nonce_before = chain.nonce(payee, true).await;

    // The authorization signed by the session key instead of the wallet.
    let open = Open::new(&chain, &info, &wallet, 2).await;
    let by_session = open.with_signature(open.authorization().sign(&open.token_domain(), &open.session));
    assert_eq!(open_refused(&client, &by_session).await, ErrorCode::InvalidSignature);
    // The wallet's signature of another amount.
    let other_amount = Authorization { value: open.deposit + U256::from(PRICE), ..open.authorization() };
    let for_other_amount = open.with_signature(other_amount.sign(&open.token_domain(), &wallet));
    assert_eq!(open_refused(&client, &for_other_amount).await, ErrorCode::InvalidSignature);

    // A channel id that is not the registry's for these terms (the state
    // signed again, so only the id is wrong).
    let mut wrong_id = open.request();
    wrong_id.state.channel_id = B256::repeat_byte(0x42);
    wrong_id.state.sign(&open.channel_domain(), &open.session);
    assert_eq!(open_refused(&client, &wrong_id).await, ErrorCode::BadRequest);

    // A deposit that is not a whole number of windows.
    let odd = Open { deposit: units(2) + U256::from(1), ..open.clone() };
    assert_eq!(open_refused(&client, &odd.request()).await, ErrorCode::BadDeposit);

    // A wallet holding less than the deposit.
    let poor = chain.dollar_wallet(&dollar, units(1)).await;
    let too_much = Open::new(&chain, &info, &poor, 2).await;
    assert_eq!(open_refused(&client, &too_much.request()).await, ErrorCode::BadDeposit);

    // A channel expiring before the server's minimum (an hour).
    let now = chain.now().await;
    let short = Open { expires_at: now + 600, ..open.clone() };
    assert_eq!(open_refused(&client, &short.request()).await, ErrorCode::ChannelExpiring);

    // An authorization that lapses within a minute.
    let lapsing = Open { valid_before: now + 30, ..open.clone() };
    assert_eq!(open_refused(&client, &lapsing.request()).await, ErrorCode::BadRequest);

    assert_eq!(chain.nonce(payee, true).await, nonce_before, "no refusal sent a transaction");
    assert_eq!(chain.channel_status(open.channel_id()).await, 0);
    assert_eq!(chain.token_balance(dollar.address, wallet.address()).await, units(20));

    // The first open: mined by the server before it answers.
    let first = open.request();
    let stored = client.open_channel(&first).await.unwrap();
    assert_eq!(stored, Some(first.state.clone()));
    assert_eq!(chain.channel_status(open.channel_id()).await, 1, "open on chain when answered");
    assert_eq!(chain.token_balance(dollar.address, wallet.address()).await, units(18));
    let nonce_after_first = chain.nonce(payee, true).await;
    assert_eq!(nonce_after_first, nonce_before + 1, "one transaction of the payee");

    // The same request again: the stored state, and no second transaction.
    assert_eq!(client.open_channel(&first).await.unwrap(), stored);
    assert_eq!(chain.nonce(payee, true).await, nonce_after_first, "a repeat sends nothing");
    assert_eq!(chain.token_balance(dollar.address, wallet.address()).await, units(18));

    // The second open on this connection within the minute.
    let second = Open::new(&chain, &info, &wallet, 3).await.request();
    assert_eq!(client.open_channel(&second).await.unwrap(), Some(second.state.clone()));
    assert_eq!(chain.nonce(payee, true).await, nonce_after_first + 1);

    // The third: refused, nothing sent, nothing moved.
    let third_open = Open::new(&chain, &info, &wallet, 1).await;
    let third = third_open.request();
    assert_eq!(open_refused(&client, &third).await, ErrorCode::RateLimited);
    assert_eq!(chain.nonce(payee, true).await, nonce_after_first + 1, "a limited open sends nothing");
    assert_eq!(chain.channel_status(third_open.channel_id()).await, 0);
    assert_eq!(chain.token_balance(dollar.address, wallet.address()).await, units(15));

    // The limit is the connection's: another one opens it.
    let other = Client::connect(&server.url).await.unwrap();
    assert_eq!(other.open_channel(&third).await.unwrap(), Some(third.state.clone()));
    assert_eq!(chain.channel_status(third_open.channel_id()).await, 1);
    assert_eq!(chain.token_balance(dollar.address, wallet.address()).await, units(14));
}

/// Someone else submits the viewer's authorization with
/// `openWithAuthorization` first: the server finds the channel on chain,
/// continues as `newChannel` and sends nothing itself.
#[tokio::test]
async fn an_open_a_third_party_submitted_first_is_accepted_as_new_channel() {
    let (chain, dollar, server) = token_server(ServerOptions::default()).await;
    let client = Client::connect(&server.url).await.unwrap();
    let info = client.public_key().await.unwrap();
    let payee = info.wallet_address;
    let wallet = chain.dollar_wallet(&dollar, units(5)).await;
    let open = Open::new(&chain, &info, &wallet, 5).await;
    let request = open.request();

    let third_party = chain.viewer_wallet().await;
    let registry =
        TollstreamChannels::new(chain.contract, connect_provider(&chain.node_rpc(), Some(&third_party)).unwrap());
    let receipt = registry
        .openWithAuthorization(
            dollar.address,
            wallet.address(),
            open.deposit,
            payee,
            open.session.address(),
            open.expires_at,
            open.salt,
            U256::from(request.authorization.valid_after),
            U256::from(request.authorization.valid_before),
            Bytes::copy_from_slice(&request.authorization.signature.0),
        )
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status(), "the third party's open succeeds");
    assert_eq!(chain.channel_status(open.channel_id()).await, 1);
    assert_eq!(chain.token_balance(dollar.address, wallet.address()).await, U256::ZERO);

    let nonce_before = chain.nonce(payee, true).await;
    assert_eq!(client.open_channel(&request).await.unwrap(), Some(request.state.clone()));
    assert_eq!(chain.nonce(payee, true).await, nonce_before, "the server sent nothing");
    assert_eq!(client.latest_state(&open.session.public_key()).await.unwrap(), Some(request.state.clone()));
}

/// `--no-gasless-open`: `publicKey` says so, and `openChannel` is
/// `bad_request` however valid.
#[tokio::test]
async fn a_token_server_without_gasless_opens_refuses_open_channel() {
    let (chain, dollar, server) =
        token_server(ServerOptions { extra_args: common::args(&["--no-gasless-open"]), ..ServerOptions::default() })
            .await;
    let client = Client::connect(&server.url).await.unwrap();
    let info = client.public_key().await.unwrap();
    assert_eq!(info.token, dollar.address);
    assert!(!info.gasless_open);
    let wallet = chain.dollar_wallet(&dollar, units(2)).await;
    let open = Open::new(&chain, &info, &wallet, 2).await;
    // Signed in the token's real domain, as a client that ignored the
    // server's terms would.
    let domain = TokenSigningDomain::new("Tollstream Test Dollar", "1", info.chain_id, dollar.address);
    let request = open.with_signature(open.authorization().sign(&domain, &wallet));
    let nonce_before = chain.nonce(info.wallet_address, true).await;
    assert_eq!(open_refused(&client, &request).await, ErrorCode::BadRequest);
    assert_eq!(chain.nonce(info.wallet_address, true).await, nonce_before);
    assert_eq!(chain.channel_status(open.channel_id()).await, 0);
}

/// `newChannel` on a token server: a channel in ETH (v1 `open`) is
/// `bad_deposit`; one in the token, opened by a viewer who holds ETH with
/// `approve` and `openToken`, is accepted.
#[tokio::test]
async fn new_channel_on_a_token_server_takes_the_token_and_refuses_eth() {
    let (chain, dollar, server) = token_server(ServerOptions::default()).await;
    let client = Client::connect(&server.url).await.unwrap();
    let info = client.public_key().await.unwrap();
    let wallet = chain.viewer_wallet().await;
    let rpc = chain.node_rpc();

    let in_eth = Open::new(&chain, &info, &wallet, 2).await;
    let request = OpenRequest {
        contract: chain.contract,
        payee: info.wallet_address,
        signer: in_eth.session.address(),
        deposit: in_eth.deposit,
        expires_at: in_eth.expires_at,
        salt: in_eth.salt,
    };
    tollstream_chain::open_channel(&rpc, &wallet, &request).await.unwrap();
    assert_eq!(chain.channel_status(in_eth.channel_id()).await, 1);
    let refused = client.new_channel(&in_eth.opening()).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::BadDeposit), "{refused}");

    dollar.mint(&chain, wallet.address(), units(3)).await;
    let in_token = Open::new(&chain, &info, &wallet, 3).await;
    let provider = connect_provider(&rpc, Some(&wallet)).unwrap();
    let token = TestStablecoin::new(dollar.address, &provider);
    let approved = token.approve(chain.contract, in_token.deposit).send().await.unwrap().get_receipt().await.unwrap();
    assert!(approved.status());
    let registry = TollstreamChannels::new(chain.contract, &provider);
    let opened = registry
        .openToken(
            dollar.address,
            in_token.deposit,
            info.wallet_address,
            in_token.session.address(),
            in_token.expires_at,
            in_token.salt,
        )
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(opened.status());
    assert_eq!(chain.token_balance(dollar.address, wallet.address()).await, U256::ZERO);
    let opening = in_token.opening();
    assert_eq!(client.new_channel(&opening).await.unwrap(), Some(opening.clone()));
    assert_eq!(client.latest_state(&in_token.session.public_key()).await.unwrap(), Some(opening));
}

/// A version-1 server in ETH: `publicKey` names the native coin and offers
/// no gasless open, and `openChannel` is `bad_request`.
#[tokio::test]
async fn an_eth_server_names_the_native_coin_and_refuses_open_channel() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions::default());
    let client = Client::connect(&server.url).await.unwrap();
    let info = client.public_key().await.unwrap();
    assert_eq!(info.token, NATIVE_TOKEN);
    assert_eq!(info.token, Address::ZERO);
    assert_eq!(info.token_symbol, "ETH");
    assert_eq!(info.token_decimals, 18);
    assert!(!info.gasless_open);
    assert_eq!(info.token_domain, None);
    let raw = client.request_raw(event::PUBLIC_KEY, &json!({})).await.unwrap();
    assert_eq!(raw["token"], json!("0x0000000000000000000000000000000000000000"));
    assert!(raw["token_domain"].is_null(), "token_domain absent or null: {raw}");

    let wallet = chain.viewer_wallet().await;
    let open = Open::new(&chain, &info, &wallet, 2).await;
    // No token domain to sign in: any domain will do, the server refuses
    // before it looks.
    let domain = TokenSigningDomain::new("Ether", "1", info.chain_id, Address::ZERO);
    let request = open.with_signature(open.authorization().sign(&domain, &wallet));
    let nonce_before = chain.nonce(info.wallet_address, true).await;
    assert_eq!(open_refused(&client, &request).await, ErrorCode::BadRequest);
    assert_eq!(chain.nonce(info.wallet_address, true).await, nonce_before);
}

/// Without a gasless open, a viewer that holds ETH and the token opens with
/// an EIP-2612 permit: one transaction of its own (no separate approve),
/// and the server accepts the channel announced with `newChannel`.
#[tokio::test]
async fn without_gasless_opens_the_viewer_opens_with_one_permit_transaction() {
    let (chain, dollar, server) =
        token_server(ServerOptions { extra_args: common::args(&["--no-gasless-open"]), ..ServerOptions::default() })
            .await;
    let wallet = chain.viewer_wallet().await;
    dollar.mint(&chain, wallet.address(), units(5)).await;
    let nonce_before = chain.nonce(wallet.address(), false).await;
    let mut viewer = Viewer::connect(&server.url, wallet.clone()).await.unwrap();
    assert!(!viewer.info().gasless_open);

    let opening = viewer.buy(&chain.node_rpc(), 3, LIFETIME).await.unwrap();
    assert_eq!(chain.nonce(wallet.address(), false).await, nonce_before + 1, "one transaction: the permit open");
    assert_eq!(opening.client_balance.0, units(3));
    assert_eq!(chain.token_balance(dollar.address, wallet.address()).await, units(2));
    assert_eq!(chain.token_balance(dollar.address, chain.contract).await, units(3), "the registry holds the deposit");
    let allowance = TestStablecoin::new(dollar.address, connect_provider(&chain.node_rpc(), None).unwrap())
        .allowance(wallet.address(), chain.contract)
        .call()
        .await
        .unwrap();
    assert_eq!(allowance, U256::ZERO, "the permit's allowance is spent by the open");
    assert_eq!(chain.channel_status(opening.channel_id).await, 1);
}

/// A wallet that can fund one deposit asks for two gasless opens at once on
/// two connections: the server checks and sends them one after the other,
/// so the second sees the spent balance and is refused before anything is
/// sent — the server never pays for an open that reverts.
#[tokio::test]
async fn two_opens_of_one_wallet_at_once_are_checked_one_after_the_other() {
    let (chain, dollar, server) = token_server(ServerOptions::default()).await;
    let first = Client::connect(&server.url).await.unwrap();
    let second = Client::connect(&server.url).await.unwrap();
    let info = first.public_key().await.unwrap();
    let wallet = chain.dollar_wallet(&dollar, units(3)).await;
    let (a, b) = (Open::new(&chain, &info, &wallet, 3).await, Open::new(&chain, &info, &wallet, 3).await);
    let nonce_before = chain.nonce(info.wallet_address, true).await;

    let (request_a, request_b) = (a.request(), b.request());
    let (ra, rb) = tokio::join!(first.open_channel(&request_a), second.open_channel(&request_b));
    let codes: Vec<Option<ErrorCode>> = [&ra, &rb].iter().map(|r| r.as_ref().err().and_then(|e| e.code())).collect();
    assert_eq!(codes.iter().filter(|code| code.is_none()).count(), 1, "one open succeeds: {ra:?} {rb:?}");
    assert!(codes.contains(&Some(ErrorCode::BadDeposit)), "the other lacks the funds: {ra:?} {rb:?}");
    assert_eq!(chain.nonce(info.wallet_address, true).await, nonce_before + 1, "one transaction, none reverted");
    assert_eq!(chain.token_balance(dollar.address, wallet.address()).await, U256::ZERO);
}
