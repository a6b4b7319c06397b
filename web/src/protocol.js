// The wire protocol's pure parts (PROTOCOL.md §2–§4): encodings, the EIP-712
// types and domain, signing and checking states and plays. No I/O here.

import { encodeAbiParameters, getAddress, isAddress, keccak256, recoverTypedDataAddress } from 'viem';

// Event names (PROTOCOL.md §6).
export const EVENTS = Object.freeze({
  publicKey: 'publicKey',
  latestState: 'latestState',
  newChannel: 'newChannel',
  openChannel: 'openChannel',
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

// The token's own EIP-712 types (1.1, "Token channels" and "openChannel"):
// EIP-3009's ReceiveWithAuthorization, which a gasless open spends, and
// EIP-2612's Permit, which `openWithPermit` spends.
export const TOKEN_TYPES = Object.freeze({
  ReceiveWithAuthorization: [
    { name: 'from', type: 'address' },
    { name: 'to', type: 'address' },
    { name: 'value', type: 'uint256' },
    { name: 'validAfter', type: 'uint256' },
    { name: 'validBefore', type: 'uint256' },
    { name: 'nonce', type: 'bytes32' },
  ],
  Permit: [
    { name: 'owner', type: 'address' },
    { name: 'spender', type: 'address' },
    { name: 'value', type: 'uint256' },
    { name: 'nonce', type: 'uint256' },
    { name: 'deadline', type: 'uint256' },
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
    tokenDecimals: optional(info.token_decimals, 18, (v) => parseDecimals(v)),
    gaslessOpen: info.gasless_open === true,
    // The token's EIP-712 name and version, for signing a gasless open's
    // authorization; null when the server offers no gasless open.
    tokenDomain: info.gasless_open === true ? parseTokenDomain(info.token_domain) : null,
  };
}

/** `token_decimals`: a uint8, as ERC-20's `decimals()` returns it. */
function parseDecimals(value) {
  const decimals = parseCount(value, 'token_decimals');
  check(decimals <= 255, 'token_decimals is more than 255');
  return decimals;
}

/** `token_domain`: `{name, version}`, or null when absent. */
function parseTokenDomain(value) {
  if (value === undefined || value === null) return null;
  check(typeof value === 'object' && typeof value.name === 'string' && typeof value.version === 'string',
    'token_domain is not {name, version}');
  return { name: value.name, version: value.version };
}

/** Whether a server's deposits are an ERC-20 token rather than the native coin. */
export function sellsToken(server) {
  return server.token !== NATIVE_TOKEN;
}

/**
 * A channel's id as the registry derives it, for every kind of channel:
 * keccak256(abi.encode(client, payee, salt)), `client` being the wallet
 * whose funds it holds. Lower-case hex, as states carry it.
 */
export function channelIdOf(client, payee, salt) {
  return keccak256(encodeAbiParameters(
    [{ type: 'address' }, { type: 'address' }, { type: 'bytes32' }],
    [client, payee, salt],
  ));
}

/**
 * The EIP-3009 nonce of a gasless open, as the registry computes it:
 * keccak256(abi.encode(address payee, address signer, uint64 expiresAt,
 * bytes32 salt)). It binds the authorization to the channel's terms.
 */
export function authorizationNonce(payee, signer, expiresAt, salt) {
  return keccak256(encodeAbiParameters(
    [{ type: 'address' }, { type: 'address' }, { type: 'uint64' }, { type: 'bytes32' }],
    [payee, signer, BigInt(expiresAt), salt],
  ));
}

/** A token's EIP-712 domain: its name and version, the chain, the token. */
export function tokenDomainOf(server) {
  check(server.tokenDomain, 'the server announces no token_domain');
  return {
    name: server.tokenDomain.name,
    version: server.tokenDomain.version,
    chainId: server.chainId,
    verifyingContract: server.token,
  };
}

/**
 * The typed data a wallet signs for a gasless open (1.1 "openChannel"):
 * `from` lets the registry pull `value` between `validAfter` and
 * `validBefore`, with the nonce of the channel's terms. Ready for viem's
 * `signTypedData`.
 */
export function receiveAuthorization(server, { from, value, validAfter, validBefore, nonce }) {
  return {
    domain: tokenDomainOf(server),
    types: { ReceiveWithAuthorization: TOKEN_TYPES.ReceiveWithAuthorization },
    primaryType: 'ReceiveWithAuthorization',
    message: { from, to: server.contract, value, validAfter: BigInt(validAfter), validBefore: BigInt(validBefore), nonce },
  };
}

/** The typed data of an EIP-2612 permit in the token's `domain`. */
export function permitTypedData(domain, { owner, spender, value, nonce, deadline }) {
  return {
    domain,
    types: { Permit: TOKEN_TYPES.Permit },
    primaryType: 'Permit',
    message: { owner, spender, value, nonce, deadline },
  };
}

/**
 * The `openChannel` request (1.1): the signed opening state, the
 * channel's terms and the wallet's authorization. Times go as JSON
 * integers (they are below 2^53).
 */
export function openChannelRequest(state, { expiresAt, salt, validAfter, validBefore, signature }) {
  return {
    state: stateToWire(state),
    expires_at: Number(expiresAt),
    salt,
    authorization: { valid_after: Number(validAfter), valid_before: Number(validBefore), signature },
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
