// An independent third-party client of the Tollstream wire protocol.
//
// It is written from the protocol page (PROTOCOL.md) alone, with the official
// `socket.io-client` (v4, Socket.IO protocol v5) and `viem`, the way an
// integrator outside the project would write one. It shares no code with the
// Rust server or client, so when it completes a paid session against the
// server, the two implementations agree on the transport, the JSON encodings,
// the EIP-712 signatures and the payment state machine, not merely with
// themselves.
//
// It runs the seed cycle once:
//   connect → publicKey → latestState (null for a fresh session key)
//   → open a channel on chain → newChannel → play
//   → answer every `pay`, check every `secret`, until the channel is spent
//   → latestState (null again) → disconnect.
//
// Usage:
//   node tests/js/interop-client.mjs --server http://127.0.0.1:PORT \
//     --rpc http://127.0.0.1:PORT2 --private-key 0x<wallet key> [--windows 3] \
//     [--stream ID] [--timeout 60] [--trace]
//
// --trace logs every event on the wire (both directions) to stderr, for
// diagnosing a disagreement with the server.
//
// Progress goes to stderr. On success the last stdout line is one JSON
// summary, e.g. {"ok":true,"payments":3,"secrets":3,"channel_id":"0x…",
// "final_server_balance":"3000"}, and the exit code is 0. Any deviation from
// the protocol prints a message to stderr and exits 1.

import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

// @noble/curves is viem's own secp256k1 dependency; viem does not expose
// compressed public keys, which the protocol uses to name a client.
import { secp256k1 } from '@noble/curves/secp256k1';
import { io } from 'socket.io-client';
import {
  createPublicClient,
  createWalletClient,
  defineChain,
  encodeAbiParameters,
  getAddress,
  http,
  isAddress,
  keccak256,
  parseEventLogs,
  recoverTypedDataAddress,
  toHex,
} from 'viem';
import { generatePrivateKey, privateKeyToAccount, publicKeyToAddress } from 'viem/accounts';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = resolve(HERE, '..', '..');

// Only the ABI is taken from the project: it is the contract's published
// interface, which any integrator needs to call `open`.
const CHANNELS_ABI = JSON.parse(
  readFileSync(resolve(REPO_ROOT, 'contracts', 'TollstreamChannels.json'), 'utf8'),
).abi;

// How long one request (an event with an ack) may wait for its answer.
const ACK_TIMEOUT_MS = 10_000;

// The EIP-712 types of the protocol page. viem derives the EIP712Domain type
// from the domain object's fields (name, version, chainId, verifyingContract),
// which is the domain the page defines.
const TYPES = {
  ChannelState: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'clientBalance', type: 'uint256' },
    { name: 'serverBalance', type: 'uint256' },
    { name: 'sequenceNumber', type: 'uint64' },
    { name: 'isFinal', type: 'bool' },
  ],
  Play: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'session', type: 'string' },
  ],
};

// The fields of the state object, in the page's order; a reply with more or
// fewer is not the state object.
const STATE_FIELDS = [
  'channel_id',
  'channel_address',
  'client_wallet_address',
  'client_public_key',
  'client_balance',
  'server_balance',
  'client_sequence_number',
  'client_signature',
];

// The seed cycle expects no `error` event at all: a fresh channel, a stream
// longer than the deposit, and every payment answered at once. A scenario that
// provokes one (e.g. `stream_ended` for a short stream) would list it here.
const EXPECTED_ERRORS = new Set();

// ---------------------------------------------------------------------------
// Small helpers: failures, logging and validation of wire values.
// ---------------------------------------------------------------------------

/** A failure of the run; its message is what the person reading stderr sees. */
class InteropError extends Error {}

function fail(message) {
  throw new InteropError(message);
}

function check(condition, message) {
  if (!condition) fail(message);
}

// What the cycle is doing, so a failure says where it happened.
let step = 'starting';

function log(message) {
  process.stderr.write(`interop-client: ${message}\n`);
}

const show = (value) => JSON.stringify(value);

const HEX = (bytes) => new RegExp(`^0x[0-9a-fA-F]{${bytes * 2}}$`);
const HEX16 = HEX(16);
const HEX32 = HEX(32);
const COMPRESSED_KEY = /^0x0[23][0-9a-fA-F]{64}$/;
const SIGNATURE = HEX(65);
// Canonical decimal: no sign, no leading zeros, never a JSON number.
const DECIMAL = /^(0|[1-9][0-9]*)$/;

/** Parses a wire amount, insisting on the canonical decimal-string form. */
function amount(value, what) {
  check(typeof value === 'string' && DECIMAL.test(value), `${what} is not a canonical decimal string: ${show(value)}`);
  return BigInt(value);
}

/** Checks a wire sequence number: a JSON integer that JavaScript holds exactly. */
function sequence(value, what) {
  check(Number.isSafeInteger(value) && value >= 0, `${what} is not a safe non-negative integer: ${show(value)}`);
  return value;
}

/** The page says addresses are emitted EIP-55 checksummed; hold the server to it. */
function emittedAddress(value, what) {
  check(typeof value === 'string' && isAddress(value, { strict: false }), `${what} is not an address: ${show(value)}`);
  check(value === getAddress(value), `${what} is not EIP-55 checksummed: ${value} (expected ${getAddress(value)})`);
  return value;
}

/** The error object of a refused request, if `reply` is one. */
function errorOf(reply) {
  if (reply !== null && typeof reply === 'object' && 'error' in reply) {
    const { code, message } = reply.error ?? {};
    return { code: String(code), message: String(message) };
  }
  return null;
}

/**
 * A state with addresses in checksummed form and other hex in lower case, so
 * two encodings of the same state compare equal: the page accepts addresses
 * in any case, and does not fix the case of other hex strings.
 */
function normaliseState(state) {
  const out = {};
  for (const [key, value] of Object.entries(state)) {
    if (typeof value === 'string' && key.endsWith('_address') && isAddress(value, { strict: false })) {
      out[key] = getAddress(value);
    } else if (typeof value === 'string' && /^0x[0-9a-fA-F]*$/.test(value)) {
      out[key] = value.toLowerCase();
    } else {
      out[key] = value;
    }
  }
  return out;
}

/** Deep equality of two state objects (flat objects of strings and numbers). */
function sameState(a, b) {
  const left = normaliseState(a);
  const right = normaliseState(b);
  const keys = Object.keys(left).sort();
  return show(keys) === show(Object.keys(right).sort()) && keys.every((key) => left[key] === right[key]);
}

/** Compressed secp256k1 public key (0x02/0x03 ‖ x) of a private key. */
function compressedPublicKey(privateKey) {
  return toHex(secp256k1.getPublicKey(privateKey.slice(2), true));
}

/** The address of a compressed public key. */
function addressOfCompressedKey(publicKey) {
  const point = secp256k1.ProjectivePoint.fromHex(publicKey.slice(2));
  return publicKeyToAddress(toHex(point.toRawBytes(false)));
}

// ---------------------------------------------------------------------------
// Command line.
// ---------------------------------------------------------------------------

function parseCommandLine(argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      server: { type: 'string' },
      rpc: { type: 'string' },
      'private-key': { type: 'string' },
      windows: { type: 'string', default: '3' },
      stream: { type: 'string' },
      timeout: { type: 'string', default: '60' },
      trace: { type: 'boolean', default: false },
    },
  });
  check(values.server, '--server URL is required (the Tollstream server, e.g. http://127.0.0.1:8080)');
  check(values.rpc, '--rpc URL is required (the chain JSON-RPC endpoint)');
  check(values['private-key'], '--private-key 0x<hex> is required (the wallet that opens the channel)');
  const privateKey = values['private-key'].startsWith('0x') ? values['private-key'] : `0x${values['private-key']}`;
  check(HEX32.test(privateKey), '--private-key must be 32 bytes of hex');
  check(/^[1-9][0-9]*$/.test(values.windows), `--windows must be a positive integer, got ${show(values.windows)}`);
  const timeout = Number(values.timeout);
  check(Number.isFinite(timeout) && timeout > 0, `--timeout must be a positive number of seconds, got ${show(values.timeout)}`);
  return {
    server: values.server,
    rpc: values.rpc,
    privateKey,
    windows: BigInt(values.windows),
    stream: values.stream,
    timeoutMs: timeout * 1000,
    trace: values.trace,
  };
}

// ---------------------------------------------------------------------------
// The seed cycle.
// ---------------------------------------------------------------------------

/**
 * Runs the whole cycle and resolves with the summary. `onFailure` receives
 * failures detected in event handlers (pay, secret, error, disconnect), which
 * happen outside the awaited flow; `main` races them against this promise.
 */
async function runCycle(options, onFailure, sockets) {
  step = 'connecting';
  // 1. Connect. WebSocket only and no reconnection: a silent reconnect would
  // change the socket id the `play` signature is bound to and hide failures.
  const socket = io(options.server, { transports: ['websocket'], reconnection: false });
  sockets.push(socket);
  if (options.trace) {
    // Acks of server requests (our answers to `pay`) are not events, so they
    // are logged where they are sent; the server's acks show as replies.
    socket.onAny((event, ...args) => log(`<- ${event} ${args.filter((a) => typeof a !== 'function').map(show).join(' ')}`));
    socket.onAnyOutgoing((event, ...args) => log(`-> ${event} ${args.filter((a) => typeof a !== 'function').map(show).join(' ')}`));
  }
  let closing = false;
  await new Promise((resolveConnect, rejectConnect) => {
    socket.once('connect', resolveConnect);
    socket.once('connect_error', (error) =>
      rejectConnect(new InteropError(`cannot connect to ${options.server}: ${error.message}`)));
  });
  log(`connected to ${options.server} as socket ${socket.id}`);
  socket.on('disconnect', (reason) => {
    if (!closing) onFailure(new InteropError(`the server dropped the connection (${reason})`));
  });

  /**
   * Sends `event` with an ack and returns the reply; an `{error: {...}}`
   * reply becomes a failure naming the event and the code.
   */
  async function request(event, data) {
    let reply;
    try {
      reply = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, data);
    } catch (error) {
      fail(`no ack for \`${event}\` within ${ACK_TIMEOUT_MS} ms (${error.message})`);
    }
    if (options.trace) log(`<- ack of ${event} ${show(reply)}`);
    const refused = errorOf(reply);
    if (refused) fail(`\`${event}\` was refused: ${refused.code}: ${refused.message}`);
    return reply;
  }

  // 2. Server information.
  step = 'asking for the server information (publicKey)';
  const info = await request('publicKey', {});
  check(info !== null && typeof info === 'object', `publicKey reply is not an object: ${show(info)}`);
  check(Number.isSafeInteger(info.chain_id) && info.chain_id > 0, `publicKey chain_id is not a positive integer: ${show(info.chain_id)}`);
  const channelAddress = emittedAddress(info.channel_address, 'publicKey channel_address');
  const payee = emittedAddress(info.wallet_address, 'publicKey wallet_address');
  const windowPrice = amount(info.window_price, 'publicKey window_price');
  check(windowPrice > 0n, 'publicKey window_price is 0');
  check(Number.isSafeInteger(info.min_channel_seconds) && info.min_channel_seconds >= 0,
    `publicKey min_channel_seconds is not an integer: ${show(info.min_channel_seconds)}`);
  check(typeof info.window_seconds === 'number' && info.window_seconds > 0,
    `publicKey window_seconds is not a positive number: ${show(info.window_seconds)}`);
  check(Array.isArray(info.streams) && info.streams.length > 0, `publicKey lists no streams: ${show(info.streams)}`);
  for (const stream of info.streams) {
    check(typeof stream?.id === 'string' && typeof stream?.playlist === 'string', `malformed stream entry: ${show(stream)}`);
  }
  // `public_key` is the key of `wallet_address`: check it, since a client
  // would use it to recognise the server.
  check(typeof info.public_key === 'string' && COMPRESSED_KEY.test(info.public_key),
    `publicKey public_key is not a compressed key: ${show(info.public_key)}`);
  check(addressOfCompressedKey(info.public_key) === payee,
    `publicKey public_key ${info.public_key} is not the key of wallet_address ${payee}`);
  // The 1.1 terms. A version-1 server omits them all; when present they
  // must be well formed, and this client can only pay in the native coin.
  const present = (field) => info[field] !== undefined;
  for (const field of ['confirmations', 'unconfirmed_windows', 'settle_margin_seconds', 'token_decimals']) {
    check(!present(field) || (Number.isSafeInteger(info[field]) && info[field] >= 0),
      `publicKey ${field} is not a non-negative integer: ${show(info[field])}`);
  }
  check(!present('pay_timeout_seconds') || (typeof info.pay_timeout_seconds === 'number' && info.pay_timeout_seconds > 0),
    `publicKey pay_timeout_seconds is not a positive number: ${show(info.pay_timeout_seconds)}`);
  check(!present('settle_margin_seconds') || info.settle_margin_seconds < info.min_channel_seconds,
    `publicKey settle_margin_seconds ${info.settle_margin_seconds} is not less than min_channel_seconds`);
  check(!present('token') || BigInt(emittedAddress(info.token, 'publicKey token')) === 0n,
    `publicKey token is ${show(info.token)}: this client deposits only the native coin`);
  check(!present('gasless_open') || typeof info.gasless_open === 'boolean',
    `publicKey gasless_open is not a boolean: ${show(info.gasless_open)}`);
  check(!info.gasless_open || (typeof info.token_domain?.name === 'string' && typeof info.token_domain?.version === 'string'),
    `publicKey says gasless_open without a token_domain {name, version}: ${show(info.token_domain)}`);
  const streamId = options.stream ?? info.streams[0].id;
  check(info.streams.some((stream) => stream.id === streamId), `the server does not sell stream ${show(streamId)}`);
  log(`server: chain ${info.chain_id}, contract ${channelAddress}, payee ${payee}, ` +
    `window ${info.window_seconds} s for ${windowPrice} wei, stream ${show(streamId)}`);

  // 3. A fresh session key. It signs states and plays; the wallet only pays
  // the deposit. A new key has no history, so the server must know nothing.
  const sessionKey = generatePrivateKey();
  const session = privateKeyToAccount(sessionKey);
  const clientPublicKey = compressedPublicKey(sessionKey);
  check(addressOfCompressedKey(clientPublicKey) === session.address, 'compressed public key does not match the session address');
  log(`session key ${clientPublicKey} (${session.address})`);

  // 4. Nothing is known about the fresh key.
  step = 'asking latestState of a fresh key';
  const before = await request('latestState', { client_public_key: clientPublicKey });
  check(before === null, `latestState of a fresh key is not null: ${show(before)}`);

  step = 'opening the channel on chain';
  // 5. Open the channel on chain. The chain is defined from what the server
  // announced, so signing for the wrong chain id fails here, not later.
  const chain = defineChain({
    id: info.chain_id,
    name: `tollstream-${info.chain_id}`,
    nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
    rpcUrls: { default: { http: [options.rpc] } },
  });
  const publicClient = createPublicClient({ chain, transport: http(options.rpc) });
  const wallet = privateKeyToAccount(options.privateKey);
  const walletClient = createWalletClient({ account: wallet, chain, transport: http(options.rpc) });
  const rpcChainId = await publicClient.getChainId();
  check(rpcChainId === info.chain_id, `the RPC endpoint is chain ${rpcChainId} but the server says ${info.chain_id}`);

  // Expiry in chain time, with room to spare over the server's minimum.
  const block = await publicClient.getBlock({ blockTag: 'latest' });
  const expiresAt = block.timestamp + 2n * BigInt(info.min_channel_seconds);
  const salt = toHex(crypto.getRandomValues(new Uint8Array(32)));
  const deposit = options.windows * windowPrice;
  // The id is known before sending: keccak256(abi.encode(msg.sender, payee, salt)).
  const channelId = keccak256(encodeAbiParameters(
    [{ type: 'address' }, { type: 'address' }, { type: 'bytes32' }],
    [wallet.address, payee, salt],
  ));
  // Simulate first: it surfaces a revert reason, and its return value
  // cross-checks the id derivation against the contract.
  const { request: openRequest, result: simulatedId } = await publicClient.simulateContract({
    account: wallet,
    address: channelAddress,
    abi: CHANNELS_ABI,
    functionName: 'open',
    args: [payee, session.address, expiresAt, salt],
    value: deposit,
  });
  check(simulatedId === channelId, `open would return channel id ${simulatedId}, derived ${channelId}`);
  const hash = await walletClient.writeContract(openRequest);
  const receipt = await publicClient.waitForTransactionReceipt({ hash });
  check(receipt.status === 'success', `open transaction ${hash} reverted`);
  const [opened] = parseEventLogs({ abi: CHANNELS_ABI, eventName: 'Opened', logs: receipt.logs });
  check(opened && opened.args.channelId === channelId && opened.args.deposit === deposit,
    `open transaction ${hash} did not emit Opened(${channelId}, deposit ${deposit})`);
  log(`opened channel ${channelId}: deposit ${deposit} wei, expires at ${expiresAt} (tx ${hash})`);

  // Signing helpers, bound to this channel's domain.
  const domain = { name: 'Tollstream', version: '1', chainId: info.chain_id, verifyingContract: channelAddress };

  /** A full state object, signed by the session key. */
  async function signedState(clientBalance, serverBalance, sequenceNumber) {
    const clientSignature = await session.signTypedData({
      domain,
      types: TYPES,
      primaryType: 'ChannelState',
      message: {
        channelId,
        clientBalance,
        serverBalance,
        sequenceNumber: BigInt(sequenceNumber),
        isFinal: clientBalance === 0n,
      },
    });
    return {
      channel_id: channelId,
      channel_address: channelAddress,
      client_wallet_address: wallet.address,
      client_public_key: clientPublicKey,
      client_balance: clientBalance.toString(10),
      server_balance: serverBalance.toString(10),
      client_sequence_number: sequenceNumber,
      client_signature: clientSignature,
    };
  }

  // 6. Announce the channel with its opening state; the reply is the stored
  // state, which must be exactly what was sent.
  step = 'announcing the channel (newChannel)';
  const opening = await signedState(deposit, 0n, 0);
  check(SIGNATURE.test(opening.client_signature), 'viem produced a malformed signature');
  const stored = await request('newChannel', opening);
  check(stored !== null && typeof stored === 'object', `newChannel reply is not a state: ${show(stored)}`);
  check(show(Object.keys(stored).sort()) === show([...STATE_FIELDS].sort()),
    `newChannel reply has fields ${show(Object.keys(stored))}, expected ${show(STATE_FIELDS)}`);
  emittedAddress(stored.channel_address, 'newChannel reply channel_address');
  emittedAddress(stored.client_wallet_address, 'newChannel reply client_wallet_address');
  check(sameState(stored, opening), `newChannel reply differs from the state sent:\n  sent:  ${show(opening)}\n  reply: ${show(stored)}`);
  // As the page asks of any returned state: the signature must be our own.
  const storedSigner = await recoverTypedDataAddress({
    domain,
    types: TYPES,
    primaryType: 'ChannelState',
    message: {
      channelId: stored.channel_id,
      clientBalance: amount(stored.client_balance, 'newChannel reply client_balance'),
      serverBalance: amount(stored.server_balance, 'newChannel reply server_balance'),
      sequenceNumber: BigInt(sequence(stored.client_sequence_number, 'newChannel reply client_sequence_number')),
      isFinal: stored.client_balance === '0',
    },
    signature: stored.client_signature,
  });
  check(storedSigner === session.address, `newChannel reply is signed by ${storedSigner}, not by the session key`);
  log('newChannel accepted the opening state');

  // 7 and 8. Stream and pay. The handlers are registered before `play` is
  // sent: the page says `pay` may come at any moment after it, possibly
  // before the play ack.
  let current = opening; // The latest state this client signed.
  let awaitingSecretFor = null; // The pay request whose secret has not arrived yet.
  let nextSegment = 0; // The first segment not yet paid for.
  let payments = 0;
  let secrets = 0;
  let finished;
  const finalSecret = new Promise((resolveFinal) => { finished = resolveFinal; });

  /**
   * Decides on a `pay` request: returns the successor's balances and sequence
   * number, or throws an InteropError explaining why this client refuses to
   * pay. Synchronous on purpose: the handler records the payment as in flight
   * before its first `await`, so a second `pay` arriving while the first is
   * being signed is judged against it, not against a stale state.
   */
  function successorFor(req) {
    check(req !== null && typeof req === 'object', `pay request is not an object: ${show(req)}`);
    check(awaitingSecretFor === null,
      `pay for seq ${show(req.client_sequence_number)} arrived before the secret of seq ${awaitingSecretFor?.client_sequence_number}`);
    check(typeof req.channel_id === 'string' && req.channel_id.toLowerCase() === channelId,
      `pay names channel ${show(req.channel_id)}, not ${channelId}`);
    check(req.stream_id === streamId, `pay names stream ${show(req.stream_id)}, not ${show(streamId)}`);
    const seq = sequence(req.client_sequence_number, 'pay client_sequence_number');
    check(seq === current.client_sequence_number + 1,
      `pay asks for seq ${seq}, but the current state is seq ${current.client_sequence_number}`);
    const price = amount(req.amount, 'pay amount');
    const clientBalance = BigInt(current.client_balance);
    check(price > 0n && price <= windowPrice, `pay asks ${price} wei, outside (0, window_price ${windowPrice}]`);
    check(price <= clientBalance, `pay asks ${price} wei but only ${clientBalance} is left in the channel`);
    // Pay for each segment once and in order: the first window starts at the
    // `from_segment` of play, each next one where the previous one ended.
    check(Number.isSafeInteger(req.first_segment) && req.first_segment === nextSegment,
      `pay starts at segment ${show(req.first_segment)}, expected ${nextSegment}`);
    check(Number.isSafeInteger(req.segment_count) && req.segment_count > 0,
      `pay segment_count is not a positive integer: ${show(req.segment_count)}`);
    return { clientBalance: clientBalance - price, serverBalance: BigInt(current.server_balance) + price, seq };
  }

  socket.on('pay', async (req, ack) => {
    if (typeof ack !== 'function') {
      onFailure(new InteropError(`pay was emitted without an ack: ${show(req)}`));
      return;
    }
    let next;
    try {
      const { clientBalance, serverBalance, seq } = successorFor(req);
      awaitingSecretFor = req;
      nextSegment = req.first_segment + req.segment_count;
      next = await signedState(clientBalance, serverBalance, seq);
    } catch (error) {
      // Tell the server why, as the page allows, then fail the run.
      const refusal = { error: { code: 'payment_refused', message: error.message } };
      if (options.trace) log(`-> ack of pay ${show(refusal)}`);
      ack(refusal);
      onFailure(error);
      return;
    }
    // The secret is checked against `current`; it cannot arrive before the
    // ack below, so updating it here is in time.
    current = next;
    payments += 1;
    log(`paid seq ${next.client_sequence_number}: ${req.amount} wei for segments ` +
      `${req.first_segment}..${nextSegment - 1} (client ${next.client_balance}, server ${next.server_balance})`);
    if (options.trace) log(`-> ack of pay ${show(next)}`);
    ack(next);
  });

  socket.on('secret', (msg) => {
    try {
      check(msg !== null && typeof msg === 'object', `secret is not an object: ${show(msg)}`);
      check(awaitingSecretFor !== null, `unrequested secret: ${show(msg)}`);
      const seq = sequence(msg.client_sequence_number, 'secret client_sequence_number');
      check(seq === current.client_sequence_number,
        `secret is for seq ${seq}, but the last paid state is seq ${current.client_sequence_number}`);
      check(msg.stream_id === streamId, `secret names stream ${show(msg.stream_id)}, not ${show(streamId)}`);
      // A 1.1 server names the channel that paid; a version-1 server does not.
      check(msg.channel_id === undefined || (typeof msg.channel_id === 'string' && msg.channel_id.toLowerCase() === channelId),
        `secret names channel ${show(msg.channel_id)}, not ${channelId}`);
      const { first_segment: first, segment_count: count } = awaitingSecretFor;
      check(Array.isArray(msg.keys) && msg.keys.length === count,
        `secret carries ${Array.isArray(msg.keys) ? msg.keys.length : 'no'} keys, the pay was for ${count} segment(s)`);
      msg.keys.forEach((entry, i) => {
        check(entry?.segment === first + i, `secret key ${i} is for segment ${show(entry?.segment)}, expected ${first + i}`);
        check(typeof entry.key === 'string' && HEX16.test(entry.key), `segment ${entry.segment} key is not 0x + 32 hex: ${show(entry.key)}`);
        check(typeof entry.iv === 'string' && HEX16.test(entry.iv), `segment ${entry.segment} iv is not 0x + 32 hex: ${show(entry.iv)}`);
      });
      awaitingSecretFor = null;
      secrets += 1;
      log(`secret for seq ${seq}: segments ${first}..${first + count - 1}`);
      // The secret of a final state is the channel's last message.
      if (current.client_balance === '0') finished();
    } catch (error) {
      onFailure(error);
    }
  });

  socket.on('error', (msg) => {
    const code = msg?.code;
    // An error that ends a session names its client (1.1); this connection
    // streams only for this client's key.
    if (msg?.client_public_key !== undefined && String(msg.client_public_key).toLowerCase() !== clientPublicKey) {
      onFailure(new InteropError(`error ${show(code)} names client ${show(msg.client_public_key)}, not ${clientPublicKey}`));
      return;
    }
    if (EXPECTED_ERRORS.has(code)) {
      log(`expected error ${code}: ${msg?.message}`);
      return;
    }
    onFailure(new InteropError(`server sent error ${show(code)}: ${msg?.message ?? show(msg)}`));
  });

  step = 'starting to stream (play)';
  // The signature binds the request to this connection's socket id.
  const playSignature = await session.signTypedData({
    domain,
    types: TYPES,
    primaryType: 'Play',
    message: { channelId, session: socket.id },
  });
  const played = await request('play', {
    client_public_key: clientPublicKey,
    stream_id: streamId,
    from_segment: 0,
    signature: playSignature,
  });
  check(played !== null && typeof played === 'object' && Object.keys(played).length === 0,
    `play ack is not {}: ${show(played)}`);
  log(`playing ${show(streamId)} from segment 0`);

  step = 'paying for the stream until the channel is spent';
  await finalSecret;
  check(BigInt(current.server_balance) === deposit, `the final state pays the server ${current.server_balance}, not the deposit ${deposit}`);

  // 9. A final channel is no longer active: nothing to resume.
  step = 'asking latestState after the final secret';
  const after = await request('latestState', { client_public_key: clientPublicKey });
  check(after === null, `latestState after the final secret is not null: ${show(after)}`);

  closing = true;
  socket.disconnect();
  return {
    ok: true,
    payments,
    secrets,
    channel_id: channelId,
    final_server_balance: current.server_balance,
  };
}

// ---------------------------------------------------------------------------
// Entry point.
// ---------------------------------------------------------------------------

async function main() {
  let options;
  try {
    options = parseCommandLine(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`interop-client: ${error.message}\n`);
    return 1;
  }

  // Failures from event handlers and the overall deadline reject this
  // promise; the cycle itself is raced against it.
  let onFailure;
  const failure = new Promise((_, reject) => { onFailure = reject; });
  const deadline = setTimeout(
    () => onFailure(new InteropError(`the cycle did not finish within ${options.timeoutMs / 1000} s`)),
    options.timeoutMs,
  );
  const sockets = [];

  try {
    const summary = await Promise.race([runCycle(options, onFailure, sockets), failure]);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  } catch (error) {
    // viem errors carry a long multi-line message; its short form, the
    // underlying cause and the URL are enough to act on.
    const text = error instanceof InteropError
      ? error.message
      : error.shortMessage
        ? [error.shortMessage, error.details, error.url && `(${error.url})`].filter(Boolean).join(' ')
        : (error.stack ?? String(error));
    process.stderr.write(`interop-client: FAILED while ${step}: ${text}\n`);
    return 1;
  } finally {
    clearTimeout(deadline);
    for (const socket of sockets) socket.disconnect();
  }
}

// Exit explicitly: a half-finished cycle may leave timers or sockets that
// would otherwise keep the process alive after a failure.
process.exit(await main());
