// Generates tests/vectors/eip712.json: EIP-712 test vectors for the Tollstream
// protocol (ChannelState and Play messages, domain separators, channel ids;
// for token channels the token's own domain, EIP-3009 ReceiveWithAuthorization,
// the registry's authorization nonce, whole openChannel requests, and EIP-2612
// Permit), computed with viem. viem is an implementation independent of the project's
// Rust code, so the Rust tests can check their hashing, signing and signature
// encoding against these vectors byte for byte.
//
// Usage (from anywhere; paths are resolved relative to this file):
//   node tests/js/make-vectors.mjs           writes tests/vectors/eip712.json
//   node tests/js/make-vectors.mjs --check   exits 1 if the committed file
//                                            differs from what would be written
//
// Everything is deterministic: fixed keys, fixed data, and RFC 6979 signatures
// (viem signs without extra entropy unless told otherwise), so the output only
// changes when this script or the viem version changes.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// @noble/curves is viem's own secp256k1 dependency; it is used here only to
// derive compressed public keys, which viem does not expose directly.
import { secp256k1 } from '@noble/curves/secp256k1';
import {
  concat,
  encodeAbiParameters,
  getAddress,
  hashDomain,
  hashStruct,
  hashTypedData,
  hexToBytes,
  keccak256,
  maxUint256,
  recoverTypedDataAddress,
  toHex,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = resolve(HERE, '..', '..');
const OUTPUT = resolve(REPO_ROOT, 'tests', 'vectors', 'eip712.json');

// ---------------------------------------------------------------------------
// Protocol definitions (must match contracts/TollstreamChannels.sol).
// ---------------------------------------------------------------------------

// The domain type is spelled out rather than inferred by viem from the domain
// object, so the field order is pinned to the contract's DOMAIN_TYPEHASH.
const TYPES = {
  EIP712Domain: [
    { name: 'name', type: 'string' },
    { name: 'version', type: 'string' },
    { name: 'chainId', type: 'uint256' },
    { name: 'verifyingContract', type: 'address' },
  ],
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

const utf8 = (s) => toHex(new TextEncoder().encode(s));
const DOMAIN_TYPEHASH = keccak256(
  utf8('EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)'),
);
const STATE_TYPEHASH = keccak256(
  utf8('ChannelState(bytes32 channelId,uint256 clientBalance,uint256 serverBalance,uint64 sequenceNumber,bool isFinal)'),
);
const PLAY_TYPEHASH = keccak256(utf8('Play(bytes32 channelId,string session)'));

// The token's own EIP-712 types (contracts/ERC3009.sol and OpenZeppelin's
// ERC20Permit).
const TOKEN_TYPES = {
  EIP712Domain: TYPES.EIP712Domain,
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
};
const RECEIVE_TYPEHASH = keccak256(
  utf8('ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)'),
);
const PERMIT_TYPEHASH = keccak256(
  utf8('Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)'),
);

// secp256k1 group order; signatures must have s <= N / 2 (the contract's HALF_N).
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

// ---------------------------------------------------------------------------
// Fixed inputs.
// ---------------------------------------------------------------------------

const PRIVATE_KEYS = [
  // The first three anvil dev accounts (0xf39F..., 0x7099..., 0x3C44...),
  // copied from `anvil`'s startup output, so the vectors match a local chain.
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
  // Edge cases: the smallest key (mostly leading zero bytes; its public key
  // is the generator G) and the largest one (n - 1; public key -G, so the
  // compressed prefix differs from key 1's).
  '0x0000000000000000000000000000000000000000000000000000000000000001',
  '0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140',
];

const DOMAINS = [
  // Local anvil chain; the address is the first contract anvil account 0 deploys.
  { chainId: 31337, verifyingContract: '0x5fbdb2315678afecb367f032d93f642f64180aa3' },
  // Mainnet with an arbitrary fixed address, so both domain fields vary.
  { chainId: 1, verifyingContract: '0x1234567890abcdef1234567890abcdef12345678' },
];

// Channels as the contract derives their ids: keccak256(abi.encode(client, payee, salt)).
// `client` and `payee` are key indexes; the client wallet opens the channel.
const CHANNELS = [
  { client: 0, payee: 1, salt: '0x0000000000000000000000000000000000000000000000000000000000000000' },
  { client: 1, payee: 0, salt: '0x0000000000000000000000000000000000000000000000000000000000000001' },
  { client: 2, payee: 1, salt: '0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff' },
  { client: 3, payee: 2, salt: '0x746f6c6c73747265616d2d73616c742d30303030303030303030303030303031' },
];

// `key` signs the state; `wallet` (default: the signer's own address) is the
// client wallet recorded alongside it. The contract lets a client name a
// separate session key as signer, which state 7 exercises.
const STATES = [
  // Opening state: nothing spent yet.
  { key: 0, domain: 0, channel: 0, clientBalance: 1000n, serverBalance: 0n, sequence: 0n },
  // Middle of a channel.
  { key: 0, domain: 0, channel: 0, clientBalance: 900n, serverBalance: 100n, sequence: 1n },
  // Final state: the client balance is exhausted.
  { key: 0, domain: 0, channel: 0, clientBalance: 0n, serverBalance: 1000n, sequence: 10n },
  // Realistic wei amounts on the mainnet domain.
  {
    key: 1, domain: 1, channel: 1,
    clientBalance: 990_000_000_000_000_000n, serverBalance: 10_000_000_000_000_000n, sequence: 42n,
  },
  // Balances near 2^256 - 1 (their sum is exactly 2^256 - 1).
  { key: 2, domain: 0, channel: 2, clientBalance: maxUint256 - 12345n, serverBalance: 12345n, sequence: 7n },
  // Final with the largest possible server balance.
  { key: 3, domain: 1, channel: 3, clientBalance: 0n, serverBalance: maxUint256, sequence: 3n },
  // Largest sequence number exactly representable as a JSON / JS number.
  {
    key: 1, domain: 1, channel: 1,
    clientBalance: 1n, serverBalance: 999_999n, sequence: 9_007_199_254_740_991n,
  },
  // Session key (key 4) signing for a channel opened by wallet 0.
  { key: 4, domain: 0, channel: 0, wallet: 0, clientBalance: 500n, serverBalance: 500n, sequence: 12n },
  // Final state on the mainnet domain with tiny amounts.
  { key: 2, domain: 1, channel: 2, clientBalance: 0n, serverBalance: 1n, sequence: 1n },
];

// Token domains: the test stablecoin (contracts/TestStablecoin.sol) at the
// second address anvil account 0 deploys to, and USDC's own domain on mainnet,
// so every field varies. Each pairs with the channel domain of its chain.
const TOKEN_DOMAINS = [
  { name: 'Tollstream Test Dollar', version: '1', chainId: 31337, verifyingContract: '0xe7f1725e7734ce288f8367e1bb143e90bb3f0512' },
  { name: 'USD Coin', version: '2', chainId: 1, verifyingContract: '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48' },
];

const MAX_UINT64 = 2n ** 64n - 1n;
const MAX_SAFE = 9_007_199_254_740_991n;

// The registry's EIP-3009 nonce of a gasless open:
// keccak256(abi.encode(address payee, address signer, uint64 expiresAt, bytes32 salt)).
// `payee` and `signer` are key indexes.
const NONCES = [
  { payee: 1, signer: 4, expiresAt: 1_767_225_600n, salt: CHANNELS[3].salt },
  { payee: 0, signer: 1, expiresAt: 0n, salt: CHANNELS[1].salt },
  { payee: 2, signer: 3, expiresAt: MAX_UINT64, salt: CHANNELS[2].salt },
];

// Whole openChannel requests: the client `wallet` authorizes the registry (the
// channel domain's contract) to pull `deposit`; the `session` key signs the
// opening state. Key indexes throughout.
const OPENS = [
  {
    wallet: 0, session: 4, payee: 1, tokenDomain: 0, domain: 0, deposit: 600_000n,
    expiresAt: 1_767_225_600n, salt: CHANNELS[3].salt, validAfter: 0n, validBefore: 1_767_225_600n,
  },
  // The largest safe times and the smallest deposit.
  {
    wallet: 2, session: 3, payee: 1, tokenDomain: 0, domain: 0, deposit: 1n,
    expiresAt: MAX_SAFE, salt: CHANNELS[2].salt, validAfter: 1n, validBefore: MAX_SAFE,
  },
  // The wallet's own key as the session key, the largest deposit, mainnet.
  {
    wallet: 1, session: 1, payee: 0, tokenDomain: 1, domain: 1, deposit: maxUint256,
    expiresAt: 1_800_000_000n, salt: CHANNELS[0].salt, validAfter: 0n, validBefore: 1_799_999_999n,
  },
];

// EIP-2612 permits for openWithPermit: `owner` (a key index) approves the
// registry of the token's chain.
const PERMITS = [
  { owner: 0, tokenDomain: 0, domain: 0, value: 600_000n, nonce: 0n, deadline: 1_767_225_600n },
  { owner: 3, tokenDomain: 1, domain: 1, value: maxUint256, nonce: 7n, deadline: maxUint256 },
  { owner: 4, tokenDomain: 0, domain: 0, value: 0n, nonce: maxUint256, deadline: 0n },
];

const LONG_SESSION = 'tollstream-session-'.repeat(11).slice(0, 200);

const PLAYS = [
  // A typical Socket.IO socket id.
  { key: 0, domain: 0, channel: 0, session: 'Aq3kZ_x9bQ2-AAAB' },
  { key: 1, domain: 1, channel: 1, session: '' },
  // Non-ASCII: a 2-byte and a 4-byte UTF-8 sequence (the latter a surrogate pair in JS).
  { key: 2, domain: 0, channel: 2, session: 'caf\u00e9 \ud83c\udfac' },
  { key: 3, domain: 1, channel: 3, session: LONG_SESSION },
  // Characters that must be escaped in JSON.
  { key: 4, domain: 0, channel: 0, session: 'say "hi"\\\n\t' },
];

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

function assert(condition, message) {
  if (!condition) throw new Error(`make-vectors: ${message}`);
}

/** Builds the viem domain object for TOKEN_DOMAINS[index]. */
function viemTokenDomain(index) {
  const { name, version, chainId, verifyingContract } = TOKEN_DOMAINS[index];
  return { name, version, chainId, verifyingContract: getAddress(verifyingContract) };
}

/** keccak256(abi.encode(address payee, address signer, uint64 expiresAt, bytes32 salt)). */
function authorizationNonce(payee, signer, expiresAt, salt) {
  return keccak256(
    encodeAbiParameters(
      [{ type: 'address' }, { type: 'address' }, { type: 'uint64' }, { type: 'bytes32' }],
      [payee, signer, expiresAt, salt],
    ),
  );
}

/** Builds the viem domain object for DOMAINS[index]. */
function viemDomain(index) {
  const { chainId, verifyingContract } = DOMAINS[index];
  return { name: 'Tollstream', version: '1', chainId, verifyingContract: getAddress(verifyingContract) };
}

/**
 * Checks a signature has the exact shape the contract accepts (65 bytes
 * r ‖ s ‖ v, v in {27, 28}, low s) and that it recovers to `address`.
 */
async function checkSignature({ signature, address, typedData }) {
  assert(/^0x[0-9a-f]{130}$/.test(signature), `signature is not 65 lowercase hex bytes: ${signature}`);
  const s = BigInt(`0x${signature.slice(66, 130)}`);
  const v = signature.slice(130);
  assert(s <= SECP256K1_N / 2n, `signature has a high s: ${signature}`);
  assert(v === '1b' || v === '1c', `signature v is not 27/28: ${signature}`);
  const recovered = await recoverTypedDataAddress({ ...typedData, signature });
  assert(recovered === address, `signature recovers to ${recovered}, expected ${address}`);
}

/** Checks viem's digest against the EIP-712 formula written out by hand. */
function checkDigest({ digest, separator, structHash }) {
  const expected = keccak256(concat(['0x1901', separator, structHash]));
  assert(digest === expected, `digest mismatch: ${digest} != ${expected}`);
}

// JSON.stringify cannot encode bigints; amounts are emitted as decimal strings.
const decimal = (n) => n.toString(10);

// ---------------------------------------------------------------------------
// Vector computation.
// ---------------------------------------------------------------------------

async function buildVectors() {
  const viemPackage = JSON.parse(
    readFileSync(createRequire(import.meta.url).resolve('viem/package.json'), 'utf8'),
  );

  const accounts = PRIVATE_KEYS.map((privateKey) => privateKeyToAccount(privateKey));
  const keys = PRIVATE_KEYS.map((privateKey, i) => {
    const publicKey = toHex(secp256k1.getPublicKey(hexToBytes(privateKey), true));
    // Same point as viem's uncompressed key (0x04 ‖ x ‖ y), prefix from y's parity.
    const uncompressed = accounts[i].publicKey;
    const yIsOdd = BigInt(`0x${uncompressed.slice(68)}`) & 1n;
    assert(
      publicKey === `0x0${yIsOdd ? 3 : 2}${uncompressed.slice(4, 68)}`,
      `compressed public key of key ${i} does not match viem's`,
    );
    return { private_key: privateKey, public_key: publicKey, address: accounts[i].address };
  });

  const domains = DOMAINS.map((_, i) => {
    const domain = viemDomain(i);
    const separator = hashDomain({ domain, types: { EIP712Domain: TYPES.EIP712Domain } });
    // Cross-check against the contract's _buildDomainSeparator.
    const expected = keccak256(
      encodeAbiParameters(
        [{ type: 'bytes32' }, { type: 'bytes32' }, { type: 'bytes32' }, { type: 'uint256' }, { type: 'address' }],
        [DOMAIN_TYPEHASH, keccak256(utf8(domain.name)), keccak256(utf8(domain.version)), BigInt(domain.chainId), domain.verifyingContract],
      ),
    );
    assert(separator === expected, `domain ${i} separator mismatch`);
    return {
      name: domain.name,
      version: domain.version,
      chain_id: domain.chainId,
      verifying_contract: domain.verifyingContract,
      separator,
    };
  });

  const channelIds = CHANNELS.map(({ client, payee, salt }) => {
    const clientAddress = keys[client].address;
    const payeeAddress = keys[payee].address;
    const channelId = keccak256(
      encodeAbiParameters(
        [{ type: 'address' }, { type: 'address' }, { type: 'bytes32' }],
        [clientAddress, payeeAddress, salt],
      ),
    );
    return { client: clientAddress, payee: payeeAddress, salt, channel_id: channelId };
  });

  const states = [];
  for (const spec of STATES) {
    const { key, domain: domainIndex, channel, clientBalance, serverBalance, sequence } = spec;
    const account = accounts[key];
    const domain = viemDomain(domainIndex);
    const channelId = channelIds[channel].channel_id;
    const isFinal = clientBalance === 0n;
    const message = { channelId, clientBalance, serverBalance, sequenceNumber: sequence, isFinal };
    const typedData = { domain, types: TYPES, primaryType: 'ChannelState', message };

    const structHash = hashStruct({ data: message, primaryType: 'ChannelState', types: TYPES });
    // Cross-check against the contract's abi.encode in close().
    const expectedStructHash = keccak256(
      encodeAbiParameters(
        [{ type: 'bytes32' }, { type: 'bytes32' }, { type: 'uint256' }, { type: 'uint256' }, { type: 'uint64' }, { type: 'bool' }],
        [STATE_TYPEHASH, channelId, clientBalance, serverBalance, sequence, isFinal],
      ),
    );
    assert(structHash === expectedStructHash, `state struct hash mismatch for ${JSON.stringify(decimalSpec(spec))}`);
    const digest = hashTypedData(typedData);
    checkDigest({ digest, separator: domains[domainIndex].separator, structHash });
    const signature = await account.signTypedData(typedData);
    await checkSignature({ signature, address: account.address, typedData });

    assert(sequence <= BigInt(Number.MAX_SAFE_INTEGER), 'sequence number must be a safe JSON integer');
    states.push({
      key_index: key,
      domain_index: domainIndex,
      state: {
        channel_id: channelId,
        channel_address: domain.verifyingContract,
        client_wallet_address: keys[spec.wallet ?? key].address,
        client_public_key: keys[key].public_key,
        client_balance: decimal(clientBalance),
        server_balance: decimal(serverBalance),
        client_sequence_number: Number(sequence),
        client_signature: signature,
      },
      is_final: isFinal,
      struct_hash: structHash,
      digest,
    });
  }

  const plays = [];
  for (const { key, domain: domainIndex, channel, session } of PLAYS) {
    const account = accounts[key];
    const domain = viemDomain(domainIndex);
    const channelId = channelIds[channel].channel_id;
    const message = { channelId, session };
    const typedData = { domain, types: TYPES, primaryType: 'Play', message };

    const structHash = hashStruct({ data: message, primaryType: 'Play', types: TYPES });
    // EIP-712 encodes a string member as the keccak256 of its UTF-8 bytes.
    const expectedStructHash = keccak256(
      encodeAbiParameters(
        [{ type: 'bytes32' }, { type: 'bytes32' }, { type: 'bytes32' }],
        [PLAY_TYPEHASH, channelId, keccak256(utf8(session))],
      ),
    );
    assert(structHash === expectedStructHash, `play struct hash mismatch for session ${JSON.stringify(session)}`);
    const digest = hashTypedData(typedData);
    checkDigest({ digest, separator: domains[domainIndex].separator, structHash });
    const signature = await account.signTypedData(typedData);
    await checkSignature({ signature, address: account.address, typedData });

    plays.push({
      key_index: key,
      domain_index: domainIndex,
      channel_id: channelId,
      session,
      struct_hash: structHash,
      digest,
      signature,
    });
  }

  const tokenDomains = TOKEN_DOMAINS.map((_, i) => {
    const domain = viemTokenDomain(i);
    const separator = hashDomain({ domain, types: { EIP712Domain: TOKEN_TYPES.EIP712Domain } });
    // Cross-check against OpenZeppelin's EIP712._buildDomainSeparator.
    const expected = keccak256(
      encodeAbiParameters(
        [{ type: 'bytes32' }, { type: 'bytes32' }, { type: 'bytes32' }, { type: 'uint256' }, { type: 'address' }],
        [DOMAIN_TYPEHASH, keccak256(utf8(domain.name)), keccak256(utf8(domain.version)), BigInt(domain.chainId), domain.verifyingContract],
      ),
    );
    assert(separator === expected, `token domain ${i} separator mismatch`);
    return {
      name: domain.name,
      version: domain.version,
      chain_id: domain.chainId,
      verifying_contract: domain.verifyingContract,
      separator,
    };
  });

  const nonces = NONCES.map(({ payee, signer, expiresAt, salt }) => ({
    payee: keys[payee].address,
    signer: keys[signer].address,
    // A string: uint64 expiries beyond 2^53 - 1 are not safe JSON numbers.
    expires_at: decimal(expiresAt),
    salt,
    nonce: authorizationNonce(keys[payee].address, keys[signer].address, expiresAt, salt),
  }));

  const opens = [];
  for (const spec of OPENS) {
    const { wallet, session, payee, tokenDomain: tokenIndex, domain: domainIndex, deposit, expiresAt, salt } = spec;
    const tokenDomain = viemTokenDomain(tokenIndex);
    const domain = viemDomain(domainIndex);
    assert(tokenDomain.chainId === domain.chainId, 'an open pairs a token and a registry of one chain');
    const walletAddress = keys[wallet].address;
    const payeeAddress = keys[payee].address;
    const channelId = keccak256(
      encodeAbiParameters([{ type: 'address' }, { type: 'address' }, { type: 'bytes32' }], [walletAddress, payeeAddress, salt]),
    );
    const nonce = authorizationNonce(payeeAddress, keys[session].address, expiresAt, salt);
    const message = {
      from: walletAddress,
      to: domain.verifyingContract,
      value: deposit,
      validAfter: spec.validAfter,
      validBefore: spec.validBefore,
      nonce,
    };
    const typedData = { domain: tokenDomain, types: TOKEN_TYPES, primaryType: 'ReceiveWithAuthorization', message };
    const structHash = hashStruct({ data: message, primaryType: 'ReceiveWithAuthorization', types: TOKEN_TYPES });
    // Cross-check against contracts/ERC3009.sol's abi.encode in _authorize.
    const expectedStructHash = keccak256(
      encodeAbiParameters(
        [{ type: 'bytes32' }, { type: 'address' }, { type: 'address' }, { type: 'uint256' }, { type: 'uint256' }, { type: 'uint256' }, { type: 'bytes32' }],
        [RECEIVE_TYPEHASH, message.from, message.to, message.value, message.validAfter, message.validBefore, nonce],
      ),
    );
    assert(structHash === expectedStructHash, `authorization struct hash mismatch for ${JSON.stringify(decimalSpec(spec))}`);
    const digest = hashTypedData(typedData);
    checkDigest({ digest, separator: tokenDomains[tokenIndex].separator, structHash });
    const signature = await accounts[wallet].signTypedData(typedData);
    await checkSignature({ signature, address: walletAddress, typedData });

    // The opening state, signed by the session key in the registry's domain.
    const stateMessage = { channelId, clientBalance: deposit, serverBalance: 0n, sequenceNumber: 0n, isFinal: false };
    const stateTypedData = { domain, types: TYPES, primaryType: 'ChannelState', message: stateMessage };
    const stateSignature = await accounts[session].signTypedData(stateTypedData);
    await checkSignature({ signature: stateSignature, address: keys[session].address, typedData: stateTypedData });

    for (const time of [expiresAt, spec.validAfter, spec.validBefore]) {
      assert(time <= MAX_SAFE, 'times must be safe JSON integers');
    }
    opens.push({
      token_domain_index: tokenIndex,
      domain_index: domainIndex,
      wallet_key_index: wallet,
      session_key_index: session,
      payee: payeeAddress,
      channel_id: channelId,
      nonce,
      struct_hash: structHash,
      digest,
      request: {
        state: {
          channel_id: channelId,
          channel_address: domain.verifyingContract,
          client_wallet_address: walletAddress,
          client_public_key: keys[session].public_key,
          client_balance: decimal(deposit),
          server_balance: '0',
          client_sequence_number: 0,
          client_signature: stateSignature,
        },
        expires_at: Number(expiresAt),
        salt,
        authorization: {
          valid_after: Number(spec.validAfter),
          valid_before: Number(spec.validBefore),
          signature,
        },
      },
    });
  }

  const permits = [];
  for (const spec of PERMITS) {
    const { owner, tokenDomain: tokenIndex, domain: domainIndex, value, nonce, deadline } = spec;
    const tokenDomain = viemTokenDomain(tokenIndex);
    const message = { owner: keys[owner].address, spender: viemDomain(domainIndex).verifyingContract, value, nonce, deadline };
    const typedData = { domain: tokenDomain, types: TOKEN_TYPES, primaryType: 'Permit', message };
    const structHash = hashStruct({ data: message, primaryType: 'Permit', types: TOKEN_TYPES });
    // Cross-check against OpenZeppelin's ERC20Permit.permit.
    const expectedStructHash = keccak256(
      encodeAbiParameters(
        [{ type: 'bytes32' }, { type: 'address' }, { type: 'address' }, { type: 'uint256' }, { type: 'uint256' }, { type: 'uint256' }],
        [PERMIT_TYPEHASH, message.owner, message.spender, value, nonce, deadline],
      ),
    );
    assert(structHash === expectedStructHash, `permit struct hash mismatch for ${JSON.stringify(decimalSpec(spec))}`);
    const digest = hashTypedData(typedData);
    checkDigest({ digest, separator: tokenDomains[tokenIndex].separator, structHash });
    const signature = await accounts[owner].signTypedData(typedData);
    await checkSignature({ signature, address: message.owner, typedData });
    permits.push({
      key_index: owner,
      token_domain_index: tokenIndex,
      owner: message.owner,
      spender: message.spender,
      value: decimal(value),
      nonce: decimal(nonce),
      deadline: decimal(deadline),
      struct_hash: structHash,
      digest,
      signature,
    });
  }

  return {
    generator: `viem ${viemPackage.version}`,
    keys,
    domains,
    states,
    plays,
    channel_ids: channelIds,
    token_domains: tokenDomains,
    authorization_nonces: nonces,
    open_channels: opens,
    permits,
  };
}

/** A state spec with bigints as strings, for error messages. */
function decimalSpec(spec) {
  return Object.fromEntries(
    Object.entries(spec).map(([k, v]) => [k, typeof v === 'bigint' ? decimal(v) : v]),
  );
}

// ---------------------------------------------------------------------------
// Entry point.
// ---------------------------------------------------------------------------

async function main(args) {
  const check = args.includes('--check');
  const unknown = args.filter((arg) => arg !== '--check');
  if (unknown.length > 0) {
    process.stderr.write(`make-vectors: unknown argument(s): ${unknown.join(' ')}\nusage: node tests/js/make-vectors.mjs [--check]\n`);
    return 2;
  }

  assert(LONG_SESSION.length === 200, 'the long session must be 200 characters');
  const text = `${JSON.stringify(await buildVectors(), null, 2)}\n`;
  const shown = relative(REPO_ROOT, OUTPUT);

  if (!check) {
    mkdirSync(dirname(OUTPUT), { recursive: true });
    writeFileSync(OUTPUT, text);
    console.log(`make-vectors: wrote ${shown}`);
    return 0;
  }

  let committed;
  try {
    committed = readFileSync(OUTPUT, 'utf8');
  } catch (error) {
    process.stderr.write(`make-vectors: cannot read ${shown} (${error.code ?? error.message}); run \`node tests/js/make-vectors.mjs\` to create it\n`);
    return 1;
  }
  if (committed !== text) {
    const have = committed.split('\n');
    const want = text.split('\n');
    let line = 0;
    while (line < have.length && have[line] === want[line]) line += 1;
    process.stderr.write(
      `make-vectors: ${shown} is out of date (first difference at line ${line + 1}):\n` +
        `  file:      ${have[line] ?? '<end of file>'}\n` +
        `  generated: ${want[line] ?? '<end of file>'}\n` +
        'run `node tests/js/make-vectors.mjs` to regenerate it\n',
    );
    return 1;
  }
  console.log(`make-vectors: ${shown} is up to date`);
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
