// Unit tests of the player page's pure modules (web/src), run in Node with
// its test runner: `node --test tests/browser/web-modules.test.mjs`.
//
// The page signs with the same EIP-712 types as every other client, so its
// signatures must reproduce the project's test vectors byte for byte.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  createWalletClient,
  custom,
  encodeAbiParameters,
  getAddress,
  hashTypedData,
  keccak256,
  recoverTypedDataAddress,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import {
  formatAmount,
  formatDuration,
  formatEth,
  formatPerHour,
  formatPerMinute,
  priceFor,
  purchaseFor,
  unitOf,
} from '../../web/src/format.js';
import { KeyStore, parseKeyUri } from '../../web/src/keys.js';
import { OPEN_ACK_TIMEOUT_MS, Session } from '../../web/src/session.js';
import {
  authorizationNonce,
  channelIdOf,
  compressedPublicKey,
  isOwnState,
  openChannelRequest,
  parseServerInfo,
  parseState,
  permitTypedData,
  receiveAuthorization,
  signPlay,
  signState,
  stateToWire,
} from '../../web/src/protocol.js';
import { AUTHORIZATION_SECONDS, authorizeOpen } from '../../web/src/token.js';

const vectors = JSON.parse(readFileSync(new URL('../vectors/eip712.json', import.meta.url), 'utf8'));

function serverOf(domain) {
  return { chainId: domain.chain_id, contract: domain.verifying_contract };
}

test('compressed public keys match the vectors', () => {
  for (const key of vectors.keys) {
    assert.equal(compressedPublicKey(privateKeyToAccount(key.private_key)), key.public_key);
  }
});

test('states are signed, parsed and checked as the vectors say', async () => {
  for (const vector of vectors.states) {
    const key = vectors.keys[vector.key_index];
    const server = serverOf(vectors.domains[vector.domain_index]);
    const account = privateKeyToAccount(key.private_key);
    const parsed = parseState(vector.state);
    const { signature, ...fields } = parsed;
    const signed = await signState(account, server, fields);
    assert.equal(signed.signature, vector.state.client_signature);
    assert.deepEqual(stateToWire(signed), { ...vector.state, channel_id: vector.state.channel_id.toLowerCase() });
    assert.equal(await isOwnState(parsed, account, key.public_key, server), true);
    // Another key's state, or a changed balance, is not ours.
    const other = privateKeyToAccount(vectors.keys[(vector.key_index + 1) % vectors.keys.length].private_key);
    assert.equal(await isOwnState(parsed, other, compressedPublicKey(other), server), false);
    const tampered = { ...parsed, serverBalance: parsed.serverBalance + 1n };
    assert.equal(await isOwnState(tampered, account, key.public_key, server), false);
    assert.ok(signature);
  }
});

test('plays are signed as the vectors say', async () => {
  for (const vector of vectors.plays) {
    const account = privateKeyToAccount(vectors.keys[vector.key_index].private_key);
    const server = serverOf(vectors.domains[vector.domain_index]);
    assert.equal(await signPlay(account, server, vector.channel_id, vector.session), vector.signature);
  }
});

test('malformed wire values are refused', () => {
  const good = vectors.states[0].state;
  for (const bad of [
    { client_balance: 1000 },
    { client_balance: '0100' },
    { client_sequence_number: '1' },
    { client_sequence_number: 1.5 },
    { client_signature: '0x1234' },
    { client_public_key: '0x04' + '11'.repeat(32) },
    { channel_address: '0x1234' },
  ]) {
    assert.throws(() => parseState({ ...good, ...bad }), undefined, JSON.stringify(bad));
  }
  assert.throws(() => parseServerInfo({ chain_id: 1, window_seconds: 10, window_price: '0', streams: [] }));
});

test('prices, purchases and durations as the viewer reads them', () => {
  // 100000000000000 wei per 10 s window.
  const price = 100_000_000_000_000n;
  assert.equal(priceFor(60, price, 10), 600_000_000_000_000n);
  assert.equal(priceFor(3600, price, 10), 36_000_000_000_000_000n);
  assert.equal(priceFor(60, price, 0.25), 24_000_000_000_000_000n);
  assert.deepEqual(purchaseFor(60, price, 6), { windows: 10, deposit: 1_000_000_000_000_000n });
  assert.deepEqual(purchaseFor(60, price, 7), { windows: 9, deposit: 900_000_000_000_000n });
  assert.equal(formatEth(600_000_000_000_000n), '0.0006 ETH');
  assert.equal(formatEth(0n), '0 ETH');
  assert.equal(formatEth(123_456_789_000_000n, 8), '0.00012346 ETH');
  assert.equal(formatDuration(75), '1:15');
  assert.equal(formatDuration(3725), '1:02:05');
});

test('key URIs name a stream and a segment', () => {
  assert.deepEqual(parseKeyUri('tollstream://demo/12'), { streamId: 'demo', segment: 12 });
  assert.equal(parseKeyUri('https://example.com/key'), null);
  assert.equal(parseKeyUri('tollstream://demo/+1'), null);
  assert.equal(parseKeyUri('tollstream://demo/'), null);
});

test('the key store holds loads until their key is paid, and remembers keys', () => {
  const memory = new Map();
  const storage = { getItem: (k) => memory.get(k) ?? null, setItem: (k, v) => memory.set(k, v) };
  const store = new KeyStore(storage, 'keys.');
  const missing = [];
  store.onMissing = (stream, segment) => missing.push([stream, segment]);
  const got = [];
  const cancel = store.wait('demo', 1, (key) => got.push(['one', key[0]]));
  store.wait('demo', 2, (key) => got.push(['two', key[0]]));
  assert.deepEqual(missing, [['demo', 1], ['demo', 2]]);
  assert.equal(store.lowestWaiting('demo'), 1);
  cancel();
  assert.equal(store.lowestWaiting('demo'), 2);
  store.add('demo', [{ segment: 0, key: new Uint8Array(16).fill(7) }, { segment: 2, key: new Uint8Array(16).fill(9) }]);
  assert.deepEqual(got, [['two', 9]]);
  assert.equal(store.lowestWaiting('demo'), null);
  assert.equal(store.firstMissing('demo', 0), 1);
  // A reload finds the keys again.
  const reloaded = new KeyStore(storage, 'keys.');
  assert.equal(reloaded.has('demo', 2), true);
  assert.equal(reloaded.firstMissing('demo', 2), 3);
  let immediate = null;
  reloaded.wait('demo', 0, (key) => { immediate = key[0]; });
  assert.equal(immediate, 7);
});

test('the publicKey reply of a 1.1 server and of a version-1 server', () => {
  const v1 = {
    public_key: vectors.keys[0].public_key,
    wallet_address: '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266',
    chain_id: 31337,
    channel_address: '0x5FbDB2315678afecb367f032d93F642f64180aa3',
    window_seconds: 10,
    window_price: '100000000000000',
    min_channel_seconds: 86400,
    streams: [{ id: 'demo', title: 'Demo', playlist: '/streams/demo/index.m3u8' }],
  };
  const old = parseServerInfo(v1);
  assert.deepEqual(
    [old.confirmations, old.unconfirmedWindows, old.settleMarginSeconds, old.payTimeoutSeconds],
    [0, 0, null, null],
  );
  assert.deepEqual([old.token, old.tokenSymbol, old.tokenDecimals, old.gaslessOpen],
    ['0x0000000000000000000000000000000000000000', 'ETH', 18, false]);

  const terms = {
    confirmations: 10,
    unconfirmed_windows: 3,
    settle_margin_seconds: 3600,
    pay_timeout_seconds: 2.5,
    token: '0x0000000000000000000000000000000000000000',
    token_symbol: 'ETH',
    token_decimals: 18,
    gasless_open: false,
    token_domain: null,
  };
  const info = parseServerInfo({ ...v1, ...terms });
  assert.deepEqual(
    [info.confirmations, info.unconfirmedWindows, info.settleMarginSeconds, info.payTimeoutSeconds],
    [10, 3, 3600, 2.5],
  );
  for (const bad of [{ confirmations: -1 }, { pay_timeout_seconds: 0 }, { token: '0x12' }]) {
    assert.throws(() => parseServerInfo({ ...v1, ...terms, ...bad }), undefined, JSON.stringify(bad));
  }
});

test('a session ignores secrets of other channels and errors of other clients', () => {
  const memory = new Map();
  const storage = { getItem: (k) => memory.get(k) ?? null, setItem: (k, v) => memory.set(k, v) };
  const keyStore = new KeyStore(storage, 'keys.');
  const ended = [];
  const session = new Session({
    socket: { on() {} },
    sessionKey: vectors.keys[0].private_key,
    keyStore,
    onChange() {},
    onEnded: (code) => ended.push(code),
  });
  const channelId = `0x${'ab'.repeat(32)}`;
  session.state = { channelId, sequence: 1, clientBalance: 5n };
  session.streaming = { streamId: 'demo', fromSegment: 0, nextSegment: 1 };
  const secret = (id) => ({
    channel_id: id,
    stream_id: 'demo',
    client_sequence_number: 1,
    keys: [{ segment: 0, key: `0x${'07'.repeat(16)}`, iv: `0x${'01'.repeat(16)}` }],
  });
  session.handleSecret(secret(`0x${'cd'.repeat(32)}`));
  assert.equal(keyStore.has('demo', 0), false, 'another channel\'s secret');
  session.handleSecret(secret(channelId.toUpperCase().replace('0X', '0x')));
  assert.equal(keyStore.has('demo', 0), true, 'our channel, in any letter case');
  // A version-1 server names no channel.
  const old = secret(channelId);
  delete old.channel_id;
  old.keys[0].segment = 1;
  session.handleSecret(old);
  assert.equal(keyStore.has('demo', 1), true);

  session.handleError({ code: 'session_replaced', message: 'x', client_public_key: vectors.keys[1].public_key });
  assert.deepEqual(ended, [], 'an error about another client');
  assert.notEqual(session.streaming, null);
  session.handleError({ code: 'session_replaced', message: 'x', client_public_key: vectors.keys[0].public_key });
  assert.deepEqual(ended, ['session_replaced']);
  session.handleError({ code: 'pay_timeout', message: 'x' });
  assert.deepEqual(ended, ['session_replaced', 'pay_timeout']);
});

// ---------------------------------------------------------------------------
// Token channels: amounts in the token, and the gasless open.
// ---------------------------------------------------------------------------

const TUSD = { symbol: 'tUSD', decimals: 6 };

test('token amounts: dollars with at least cents, other tokens with their symbol', () => {
  const dollars = (units) => formatAmount(BigInt(units), { symbol: 'USDC', decimals: 6 });
  // The Rust side's format_amount cases (crates/protocol/src/token.rs).
  assert.equal(dollars(600_000), '$0.60');
  assert.equal(dollars(1_234_567), '$1.234567');
  assert.equal(dollars(2_500), '$0.0025');
  assert.equal(dollars(0), '$0.00');
  assert.equal(dollars(1), '$0.000001');
  assert.equal(dollars(5_000_000), '$5.00');
  assert.equal(dollars(12_345_000_000), '$12345.00');
  assert.equal(formatAmount(7n, { symbol: 'usd', decimals: 0 }), '$7.00');
  assert.equal(formatAmount(7n, { symbol: 'tUSD', decimals: 1 }), '$0.70');
  assert.equal(formatAmount(1_000_000_000n, TUSD), '$1000.00');
  // Rounded to at most `maxDecimals` places, cents kept.
  assert.equal(formatAmount(1_234_567n, TUSD, 2), '$1.23');
  assert.equal(formatAmount(1_235_000n, TUSD, 2), '$1.24');
  assert.equal(formatAmount(1_000_000n, TUSD, 0), '$1.00');
  const eth = { symbol: 'ETH', decimals: 18 };
  assert.equal(formatAmount(250_000_000_000_000n, eth), '0.00025 ETH');
  assert.equal(formatAmount(10n ** 18n, eth), '1 ETH');
  assert.equal(formatAmount(1n, eth), '0.000000000000000001 ETH');
  assert.equal(formatAmount(0n, eth), '0 ETH');
  assert.equal(formatAmount(1500n, { symbol: '', decimals: 3 }), '1.5');
  assert.equal(formatAmount(12n, { symbol: 'WEI', decimals: 0 }), '12 WEI');
  assert.equal(formatEth(123_456_789_000_000n, 8), formatAmount(123_456_789_000_000n, eth, 8));
});

test('prices per minute and per hour in the server\'s token', () => {
  // The demo's test dollar: 200 units per second of window.
  assert.equal(formatPerHour(1_200n, 6, TUSD), '$0.72 per hour');
  assert.equal(formatPerMinute(1_200n, 6, TUSD), '$0.012 per minute');
  assert.equal(formatPerHour(10_000n, 60, { symbol: 'USDC', decimals: 6 }), '$0.60 per hour');
  assert.equal(formatPerHour(1_666n, 10, { symbol: 'USDC', decimals: 6 }), '$0.59976 per hour');
  // ETH keeps its look: up to 8 decimals, no trailing zeros.
  const eth = { symbol: 'ETH', decimals: 18 };
  assert.equal(formatPerHour(1_500_000_000_000n, 6, eth), '0.0009 ETH per hour');
  assert.equal(formatPerMinute(100_000_000_000_000n, 10, eth), '0.0006 ETH per minute');
  assert.equal(formatPerHour(1n, 10, eth), '0 ETH per hour');
  // The unit comes from the server's terms, ETH for a version-1 server.
  assert.deepEqual(unitOf({ tokenSymbol: 'tUSD', tokenDecimals: 6 }), TUSD);
});

/** A 1.1 `publicKey` reply of a server selling the test dollar gaslessly. */
function tokenServerInfo(overrides = {}) {
  return {
    public_key: vectors.keys[1].public_key,
    wallet_address: vectors.keys[1].address,
    chain_id: 31337,
    channel_address: vectors.domains[0].verifying_contract,
    window_seconds: 6,
    window_price: '1200',
    min_channel_seconds: 86400,
    streams: [{ id: 'demo', title: 'Demo', playlist: '/streams/demo/index.m3u8' }],
    confirmations: 1,
    unconfirmed_windows: 0,
    settle_margin_seconds: 3600,
    pay_timeout_seconds: 10,
    token: '0xe7f1725e7734ce288f8367e1bb143e90bb3f0512',
    token_symbol: 'tUSD',
    token_decimals: 6,
    gasless_open: true,
    token_domain: { name: 'Tollstream Test Dollar', version: '1' },
    ...overrides,
  };
}

test('the publicKey reply of a server selling a token', () => {
  const server = parseServerInfo(tokenServerInfo());
  assert.equal(server.token, '0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512');
  assert.deepEqual([server.tokenSymbol, server.tokenDecimals, server.gaslessOpen], ['tUSD', 6, true]);
  assert.deepEqual(server.tokenDomain, { name: 'Tollstream Test Dollar', version: '1' });
  // No gasless open: the domain is not used.
  assert.equal(parseServerInfo(tokenServerInfo({ gasless_open: false })).tokenDomain, null);
  assert.equal(parseServerInfo(tokenServerInfo({ token_domain: null })).tokenDomain, null);
  for (const bad of [{ token_domain: { name: 'x' } }, { token_decimals: 256 }, { token_decimals: -1 }]) {
    assert.throws(() => parseServerInfo(tokenServerInfo(bad)), undefined, JSON.stringify(bad));
  }
});

// Written out here, apart from the page's code: the EIP-3009 type as
// contracts/ERC3009.sol hashes it.
const RECEIVE_WITH_AUTHORIZATION = [
  { name: 'from', type: 'address' },
  { name: 'to', type: 'address' },
  { name: 'value', type: 'uint256' },
  { name: 'validAfter', type: 'uint256' },
  { name: 'validBefore', type: 'uint256' },
  { name: 'nonce', type: 'bytes32' },
];

function expectedNonce(payee, signer, expiresAt, salt) {
  return keccak256(encodeAbiParameters(
    [{ type: 'address' }, { type: 'address' }, { type: 'uint64' }, { type: 'bytes32' }],
    [payee, signer, BigInt(expiresAt), salt],
  ));
}

/**
 * The wallet side of a gasless open as the page runs it (wallet.js hands
 * token.js the same pieces): viem's wallet client with a local key signs,
 * on a chain whose latest block is at `now`, where the wallet holds
 * `tokens`. The transport refuses every request: signing with a local key
 * needs none.
 */
function authorizeWith(privateKey, now, tokens) {
  const account = privateKeyToAccount(privateKey);
  const transport = custom({ request: async ({ method }) => { throw new Error(`no RPC in this test: ${method}`); } });
  const chain = { id: 31337, name: 'test', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [] } } };
  const walletClient = createWalletClient({ account, chain, transport });
  const publicClient = {
    getBlock: async () => ({ timestamp: now }),
    readContract: async ({ functionName, args }) => {
      assert.deepEqual([functionName, args], ['balanceOf', [account.address]]);
      return tokens;
    },
  };
  const prompts = [];
  const authorize = (terms) => authorizeOpen({
    publicClient,
    signTypedData: (typedData) => {
      prompts.push(typedData.primaryType);
      return walletClient.signTypedData({ account, ...typedData });
    },
    from: account.address,
    ...terms,
  });
  return { authorize, prompts };
}

test('a gasless open signs the authorization the token and the registry expect', async () => {
  const server = parseServerInfo(tokenServerInfo());
  const walletKey = vectors.keys[0];
  const signer = vectors.keys[4].address;
  const now = 1_767_225_600n;
  const wallet = authorizeWith(walletKey.private_key, now, 1_000_000_000n);
  const deposit = 12_000n;
  const open = await wallet.authorize({ server, signer, deposit, lifetimeSeconds: 172_800 });
  assert.deepEqual(wallet.prompts, ['ReceiveWithAuthorization'], 'one signature');
  assert.equal(open.expiresAt, now + 172_800n);
  assert.equal(open.validAfter, 0n);
  assert.equal(open.validBefore, now + BigInt(AUTHORIZATION_SECONDS));
  assert.ok(open.validBefore >= now + 60n, 'valid for at least a minute more');
  assert.match(open.salt, /^0x[0-9a-f]{64}$/);
  // The channel id the registry derives, from the wallet, the payee and the salt.
  assert.equal(open.channelId, keccak256(encodeAbiParameters(
    [{ type: 'address' }, { type: 'address' }, { type: 'bytes32' }],
    [walletKey.address, server.payee, open.salt],
  )));
  // The signature is the wallet's over exactly the terms the registry
  // hands the token, in the token's own domain.
  const typedData = {
    domain: { name: 'Tollstream Test Dollar', version: '1', chainId: 31337, verifyingContract: server.token },
    types: { ReceiveWithAuthorization: RECEIVE_WITH_AUTHORIZATION },
    primaryType: 'ReceiveWithAuthorization',
    message: {
      from: walletKey.address,
      to: server.contract,
      value: deposit,
      validAfter: 0n,
      validBefore: open.validBefore,
      nonce: expectedNonce(server.payee, signer, open.expiresAt, open.salt),
    },
  };
  assert.equal(await recoverTypedDataAddress({ ...typedData, signature: open.signature }), walletKey.address);
  assert.equal(open.signature, await privateKeyToAccount(walletKey.private_key).signTypedData(typedData));
  // Any other term, and the signature is not the wallet's for it.
  for (const change of [{ value: deposit + 1n }, { to: server.payee }, { validBefore: open.validBefore + 1n },
    { nonce: expectedNonce(server.payee, signer, open.expiresAt + 1n, open.salt) }]) {
    const other = { ...typedData, message: { ...typedData.message, ...change } };
    assert.notEqual(await recoverTypedDataAddress({ ...other, signature: open.signature }), walletKey.address);
  }
  // Two purchases never share a salt.
  const again = await wallet.authorize({ server, signer, deposit, lifetimeSeconds: 172_800 });
  assert.notEqual(again.salt, open.salt);
  assert.equal(wallet.prompts.length, 2);
});

test('a gasless open is refused before any prompt when the wallet lacks the tokens', async () => {
  const server = parseServerInfo(tokenServerInfo());
  const wallet = authorizeWith(vectors.keys[0].private_key, 1_767_225_600n, 11_999n);
  await assert.rejects(wallet.authorize({ server, signer: vectors.keys[4].address, deposit: 12_000n, lifetimeSeconds: 86_400 }),
    (error) => error.pageCode === 'insufficient_tokens');
  assert.deepEqual(wallet.prompts, []);
});

// The project's EIP-3009 and EIP-2612 vectors (tests/js/make-vectors.mjs,
// computed with viem), when the vector file has them.
const OPEN_VECTORS = vectors.open_channels ?? [];

test('authorization nonces and channel ids match the vectors', { skip: !vectors.authorization_nonces && 'no nonce vectors' }, () => {
  for (const v of vectors.authorization_nonces) {
    assert.equal(authorizationNonce(v.payee, v.signer, BigInt(v.expires_at), v.salt), v.nonce);
  }
  for (const v of OPEN_VECTORS) {
    const wallet = vectors.keys[v.wallet_key_index].address;
    assert.equal(channelIdOf(wallet, v.payee, v.request.salt), v.channel_id.toLowerCase());
  }
});

test('openChannel requests are built and signed as the vectors say', { skip: OPEN_VECTORS.length === 0 && 'no openChannel vectors' }, async () => {
  for (const v of OPEN_VECTORS) {
    const tokenDomain = vectors.token_domains[v.token_domain_index];
    const domain = vectors.domains[v.domain_index];
    const server = {
      chainId: domain.chain_id,
      contract: getAddress(domain.verifying_contract),
      payee: getAddress(v.payee),
      token: getAddress(tokenDomain.verifying_contract),
      tokenDomain: { name: tokenDomain.name, version: tokenDomain.version },
    };
    const walletKey = vectors.keys[v.wallet_key_index];
    const sessionKey = vectors.keys[v.session_key_index];
    const { request } = v;
    const expiresAt = BigInt(request.expires_at);
    const nonce = authorizationNonce(server.payee, privateKeyToAccount(sessionKey.private_key).address, expiresAt, request.salt);
    assert.equal(nonce, v.nonce);
    const typedData = receiveAuthorization(server, {
      from: walletKey.address,
      value: BigInt(request.state.client_balance),
      validAfter: BigInt(request.authorization.valid_after),
      validBefore: BigInt(request.authorization.valid_before),
      nonce,
    });
    assert.equal(hashTypedData(typedData), v.digest);
    const signature = await privateKeyToAccount(walletKey.private_key).signTypedData(typedData);
    assert.equal(signature, request.authorization.signature);
    const opening = await signState(privateKeyToAccount(sessionKey.private_key), server, {
      channelId: channelIdOf(walletKey.address, server.payee, request.salt),
      contract: server.contract,
      wallet: getAddress(walletKey.address),
      clientPublicKey: sessionKey.public_key,
      clientBalance: BigInt(request.state.client_balance),
      serverBalance: 0n,
      sequence: 0,
    });
    const built = openChannelRequest(opening, {
      expiresAt,
      salt: request.salt,
      validAfter: BigInt(request.authorization.valid_after),
      validBefore: BigInt(request.authorization.valid_before),
      signature,
    });
    assert.deepEqual(built, {
      ...request,
      state: { ...request.state, channel_id: request.state.channel_id.toLowerCase() },
    });
  }
});

test('permits are signed as the vectors say', { skip: !vectors.permits && 'no permit vectors' }, async () => {
  for (const v of vectors.permits) {
    const t = vectors.token_domains[v.token_domain_index];
    const domain = { name: t.name, version: t.version, chainId: t.chain_id, verifyingContract: getAddress(t.verifying_contract) };
    const typedData = permitTypedData(domain, {
      owner: v.owner, spender: v.spender, value: BigInt(v.value), nonce: BigInt(v.nonce), deadline: BigInt(v.deadline),
    });
    assert.equal(hashTypedData(typedData), v.digest);
    assert.equal(await privateKeyToAccount(vectors.keys[v.key_index].private_key).signTypedData(typedData), v.signature);
  }
});

/**
 * A socket that answers `openChannel` with `answers` in turn: a value is
 * the ack, `null` an ack that never comes (the timeout fires).
 */
function fakeSocket(answers) {
  const sent = [];
  return {
    sent,
    on() {},
    timeout(ms) {
      return {
        emitWithAck: async (event, data) => {
          sent.push({ event, data, ms });
          const answer = answers.shift();
          if (answer === null) throw new Error('operation has timed out');
          return typeof answer === 'function' ? answer(data) : answer;
        },
      };
    },
  };
}

test('openChannel waits its 120 s, is sent again once, and adopts the stored state', async () => {
  const socket = fakeSocket([null, (data) => data.state]);
  const session = new Session({
    socket, sessionKey: vectors.keys[4].private_key, keyStore: new KeyStore(null, 'k.'), onChange() {}, onEnded() {},
  });
  session.server = parseServerInfo(tokenServerInfo());
  const wallet = vectors.keys[0].address;
  const open = {
    channelId: channelIdOf(wallet, session.server.payee, `0x${'11'.repeat(32)}`),
    expiresAt: 1_767_312_000n,
    salt: `0x${'11'.repeat(32)}`,
    validAfter: 0n,
    validBefore: 1_767_229_200n,
    signature: `0x${'22'.repeat(65)}`,
  };
  await session.openGasless({ wallet, deposit: 12_000n, open });
  assert.equal(socket.sent.length, 2);
  assert.deepEqual(socket.sent.map((s) => [s.event, s.ms]), [['openChannel', OPEN_ACK_TIMEOUT_MS], ['openChannel', OPEN_ACK_TIMEOUT_MS]]);
  assert.ok(OPEN_ACK_TIMEOUT_MS >= 120_000);
  assert.deepEqual(socket.sent[1].data, socket.sent[0].data, 'the same request again');
  const { data } = socket.sent[0];
  assert.deepEqual(Object.keys(data).sort(), ['authorization', 'expires_at', 'salt', 'state']);
  assert.deepEqual(data.authorization, { valid_after: 0, valid_before: 1_767_229_200, signature: open.signature });
  assert.equal(data.expires_at, 1_767_312_000);
  assert.equal(data.salt, open.salt);
  // The first state exactly as newChannel sends it, signed by the session key.
  assert.equal(data.state.client_sequence_number, 0);
  assert.equal(data.state.server_balance, '0');
  assert.equal(data.state.client_balance, '12000');
  assert.equal(data.state.channel_id, open.channelId);
  assert.equal(data.state.channel_address, session.server.contract);
  assert.equal(data.state.client_wallet_address, wallet);
  assert.equal(data.state.client_public_key, vectors.keys[4].public_key);
  assert.equal(await isOwnState(parseState(data.state), session.account, session.clientPublicKey, session.server), true);
  assert.equal(session.state.clientBalance, 12_000n);
  assert.equal(session.state.sequence, 0);

  // Two silent answers: the purchase fails, no third request.
  const silent = fakeSocket([null, null, null]);
  const other = new Session({
    socket: silent, sessionKey: vectors.keys[4].private_key, keyStore: new KeyStore(null, 'k.'), onChange() {}, onEnded() {},
  });
  other.server = session.server;
  await assert.rejects(other.openGasless({ wallet, deposit: 12_000n, open }), (error) => error.code === 'no_answer');
  assert.equal(silent.sent.length, 2);
  // A refusal is final.
  const refusing = fakeSocket([{ error: { code: 'bad_deposit', message: 'x' } }]);
  const third = new Session({
    socket: refusing, sessionKey: vectors.keys[4].private_key, keyStore: new KeyStore(null, 'k.'), onChange() {}, onEnded() {},
  });
  third.server = session.server;
  await assert.rejects(third.openGasless({ wallet, deposit: 12_000n, open }), (error) => error.code === 'bad_deposit');
  assert.equal(refusing.sent.length, 1);
  assert.equal(third.state, null);
});
