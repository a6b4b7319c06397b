// The wire protocol's pure parts (PROTOCOL.md §2–§4): encodings, the EIP-712
// types and domain, signing and checking states and plays. No I/O here.

import { getAddress, isAddress, recoverTypedDataAddress } from 'viem';

// Event names (PROTOCOL.md §6).
export const EVENTS = Object.freeze({
  publicKey: 'publicKey',
  latestState: 'latestState',
  newChannel: 'newChannel',
  play: 'play',
  pay: 'pay',
  secret: 'secret',
  stop: 'stop',
  error: 'error',
});

// The EIP-712 types of §3. viem derives the EIP712Domain type from the
// domain object's fields.
export const TYPES = Object.freeze({
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
});

/** A wire value that broke the protocol; the message names the field. */
export class ProtocolError extends Error {}

const DECIMAL = /^(0|[1-9][0-9]*)$/;
const HEX32 = /^0x[0-9a-fA-F]{64}$/;
const HEX16 = /^0x[0-9a-fA-F]{32}$/;
const SIGNATURE = /^0x[0-9a-fA-F]{130}$/;
const COMPRESSED_KEY = /^0x0[23][0-9a-fA-F]{64}$/;
const MAX_UINT256 = (1n << 256n) - 1n;

function check(condition, message) {
  if (!condition) throw new ProtocolError(message);
}

/** An amount: a canonical decimal string (never a JSON number). */
export function parseAmount(value, what) {
  check(typeof value === 'string' && DECIMAL.test(value), `${what} is not a decimal amount: ${JSON.stringify(value)}`);
  const amount = BigInt(value);
  check(amount <= MAX_UINT256, `${what} does not fit in uint256`);
  return amount;
}

/** A sequence number or segment index: a safe non-negative JSON integer. */
export function parseCount(value, what) {
  check(Number.isSafeInteger(value) && value >= 0, `${what} is not a non-negative integer: ${JSON.stringify(value)}`);
  return value;
}

export function parseAddress(value, what) {
  check(typeof value === 'string' && isAddress(value, { strict: false }), `${what} is not an address`);
  return getAddress(value);
}

/** `0x` and 32 hex digits (an AES key or IV) as 16 bytes. */
export function parseHex16(value, what) {
  check(typeof value === 'string' && HEX16.test(value), `${what} is not 16 bytes of hex`);
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 16; i += 1) bytes[i] = Number.parseInt(value.slice(2 + 2 * i, 4 + 2 * i), 16);
  return bytes;
}

/** The `token` of a server whose deposits are the chain's native coin. */
export const NATIVE_TOKEN = '0x0000000000000000000000000000000000000000';

/** An optional wire field: `fallback` when absent (a version-1 server). */
function optional(value, fallback, parse) {
  return value === undefined || value === null ? fallback : parse(value);
}

/** A positive number of seconds (an integer when whole, a decimal otherwise). */
function parseSeconds(value, what) {
  check(typeof value === 'number' && Number.isFinite(value) && value > 0, `${what} is not a positive number`);
  return value;
}

/** The `publicKey` reply (§6.1), checked and typed. */
export function parseServerInfo(info) {
  check(info !== null && typeof info === 'object', 'the server information is not an object');
  check(Number.isSafeInteger(info.chain_id) && info.chain_id > 0, 'chain_id is not a positive integer');
  check(typeof info.window_seconds === 'number' && info.window_seconds > 0, 'window_seconds is not positive');
  const windowPrice = parseAmount(info.window_price, 'window_price');
  check(windowPrice > 0n, 'window_price is 0');
  check(Array.isArray(info.streams), 'streams is not a list');
  const streams = info.streams
    .filter((s) => typeof s?.id === 'string' && typeof s?.playlist === 'string')
    .map((s) => ({ id: s.id, title: typeof s.title === 'string' && s.title ? s.title : s.id, playlist: s.playlist }));
  return {
    publicKey: info.public_key,
    payee: parseAddress(info.wallet_address, 'wallet_address'),
    chainId: info.chain_id,
    contract: parseAddress(info.channel_address, 'channel_address'),
    windowSeconds: info.window_seconds,
    windowPrice,
    minChannelSeconds: Number.isSafeInteger(info.min_channel_seconds) ? info.min_channel_seconds : 0,
    streams,
    // The 1.1 terms. A version-1 server sends none of them; it trusts the
    // latest block and sells for the native coin, without gasless opens.
    confirmations: optional(info.confirmations, 0, (v) => parseCount(v, 'confirmations')),
    unconfirmedWindows: optional(info.unconfirmed_windows, 0, (v) => parseCount(v, 'unconfirmed_windows')),
    settleMarginSeconds: optional(info.settle_margin_seconds, null, (v) => parseCount(v, 'settle_margin_seconds')),
    payTimeoutSeconds: optional(info.pay_timeout_seconds, null, (v) => parseSeconds(v, 'pay_timeout_seconds')),
    token: optional(info.token, NATIVE_TOKEN, (v) => parseAddress(v, 'token')),
    tokenSymbol: typeof info.token_symbol === 'string' && info.token_symbol ? info.token_symbol : 'ETH',
    tokenDecimals: optional(info.token_decimals, 18, (v) => parseCount(v, 'token_decimals')),
    gaslessOpen: info.gasless_open === true,
  };
}

/** The EIP-712 domain of a server's contract (§3). */
export function domainOf(server) {
  return { name: 'Tollstream', version: '1', chainId: server.chainId, verifyingContract: server.contract };
}

/**
 * The compressed public key (`0x02…`/`0x03…`) of a viem local account, the
 * form the protocol names clients by. viem only exposes the uncompressed
 * `0x04 ‖ x ‖ y`; the prefix is 02 for an even y, 03 for an odd one.
 */
export function compressedPublicKey(account) {
  const hex = account.publicKey;
  const x = hex.slice(4, 68);
  const yLastByte = Number.parseInt(hex.slice(-2), 16);
  return `0x0${2 + (yLastByte & 1)}${x}`.toLowerCase();
}

/**
 * A state (§4) as the page holds it: amounts as bigints, plus the wire
 * object itself so it can be sent back byte for byte.
 */
export function parseState(wire) {
  check(wire !== null && typeof wire === 'object', 'the state is not an object');
  check(typeof wire.channel_id === 'string' && HEX32.test(wire.channel_id), 'channel_id is not 32 bytes of hex');
  check(typeof wire.client_public_key === 'string' && COMPRESSED_KEY.test(wire.client_public_key),
    'client_public_key is not a compressed key');
  check(typeof wire.client_signature === 'string' && SIGNATURE.test(wire.client_signature),
    'client_signature is not 65 bytes of hex');
  const state = {
    channelId: wire.channel_id.toLowerCase(),
    contract: parseAddress(wire.channel_address, 'channel_address'),
    wallet: parseAddress(wire.client_wallet_address, 'client_wallet_address'),
    clientPublicKey: wire.client_public_key.toLowerCase(),
    clientBalance: parseAmount(wire.client_balance, 'client_balance'),
    serverBalance: parseAmount(wire.server_balance, 'server_balance'),
    sequence: parseCount(wire.client_sequence_number, 'client_sequence_number'),
    signature: wire.client_signature,
  };
  check(state.clientBalance + state.serverBalance <= MAX_UINT256, 'the balances overflow');
  return state;
}

/** The wire form of a state (§4). */
export function stateToWire(state) {
  return {
    channel_id: state.channelId,
    channel_address: state.contract,
    client_wallet_address: state.wallet,
    client_public_key: state.clientPublicKey,
    client_balance: state.clientBalance.toString(10),
    server_balance: state.serverBalance.toString(10),
    client_sequence_number: state.sequence,
    client_signature: state.signature,
  };
}

function channelStateMessage(state) {
  return {
    channelId: state.channelId,
    clientBalance: state.clientBalance,
    serverBalance: state.serverBalance,
    sequenceNumber: BigInt(state.sequence),
    isFinal: state.clientBalance === 0n,
  };
}

/** Signs `fields` (a state without signature) with the session account. */
export async function signState(account, server, fields) {
  const signature = await account.signTypedData({
    domain: domainOf(server),
    types: TYPES,
    primaryType: 'ChannelState',
    message: channelStateMessage(fields),
  });
  return { ...fields, signature };
}

/**
 * Whether a state returned by the server is ours (§5 idle step 5, §11): our
 * key, the server's contract, and a signature by our session key. A state
 * that fails is treated as no state at all.
 */
export async function isOwnState(state, account, clientPublicKey, server) {
  if (state.clientPublicKey !== clientPublicKey || state.contract !== server.contract) return false;
  try {
    const signer = await recoverTypedDataAddress({
      domain: domainOf(server),
      types: TYPES,
      primaryType: 'ChannelState',
      message: channelStateMessage(state),
      signature: state.signature,
    });
    return signer === account.address;
  } catch {
    return false;
  }
}

/** The `Play` signature binding a play request to this connection (§6.4). */
export function signPlay(account, server, channelId, socketId) {
  return account.signTypedData({
    domain: domainOf(server),
    types: TYPES,
    primaryType: 'Play',
    message: { channelId, session: socketId },
  });
}

/** The `{error: {code, message}}` of a refused request, or null. */
export function errorOf(reply) {
  if (reply !== null && typeof reply === 'object' && 'error' in reply) {
    const { code, message } = reply.error ?? {};
    return { code: String(code ?? 'unknown'), message: String(message ?? '') };
  }
  return null;
}
