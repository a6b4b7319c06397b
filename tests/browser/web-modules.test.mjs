// Unit tests of the player page's pure modules (web/src), run in Node with
// its test runner: `node --test tests/browser/web-modules.test.mjs`.
//
// The page signs with the same EIP-712 types as every other client, so its
// signatures must reproduce the project's test vectors byte for byte.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { privateKeyToAccount } from 'viem/accounts';
import { formatDuration, formatEth, priceFor, purchaseFor } from '../../web/src/format.js';
import { KeyStore, parseKeyUri } from '../../web/src/keys.js';
import { Session } from '../../web/src/session.js';
import {
  compressedPublicKey,
  isOwnState,
  parseServerInfo,
  parseState,
  signPlay,
  signState,
  stateToWire,
} from '../../web/src/protocol.js';

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
