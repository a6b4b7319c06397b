// The server's ERC-20 token, seen from the viewer's wallet (PROTOCOL.md
// 1.1, "Token channels" and "openChannel"): balances, chain time, the
// EIP-3009 authorization of a gasless open, and the token's EIP-2612
// permit domain. No contract of the registry here (wallet.js sends its
// transactions), so Node's unit tests can load this module as it is.

import { domainSeparator, erc20Abi, parseAbi, toHex } from 'viem';
import { WalletError } from './errors.js';
import { authorizationNonce, channelIdOf, receiveAuthorization } from './protocol.js';

/** The EIP-2612 views `openWithPermit` needs of a token. */
export const PERMIT_ABI = parseAbi([
  'function nonces(address owner) view returns (uint256)',
  'function DOMAIN_SEPARATOR() view returns (bytes32)',
  'function version() view returns (string)',
]);

/**
 * How long a gasless open's authorization (and a permit) stays valid, in
 * chain time: long enough for the server's 120 s answer and one re-send;
 * the server needs at least 60 s left when it checks.
 */
export const AUTHORIZATION_SECONDS = 3600;

/** 32 random bytes, the salt that makes a channel's id. */
export function randomSalt() {
  return toHex(crypto.getRandomValues(new Uint8Array(32)));
}

/** The latest block's time: expiries are in chain time, not the browser's clock. */
export async function chainTime(publicClient) {
  const block = await publicClient.getBlock({ blockTag: 'latest' });
  return block.timestamp;
}

/** What `owner` holds of `token`, in its smallest unit. */
export function tokenBalance(publicClient, token, owner) {
  return publicClient.readContract({ address: token, abi: erc20Abi, functionName: 'balanceOf', args: [owner] });
}

/** Fails, before the wallet prompts for anything, when `owner` holds less than `amount`. */
export async function requireTokens(publicClient, token, owner, amount) {
  if (await tokenBalance(publicClient, token, owner) < amount) {
    throw new WalletError('The wallet holds less of the token than the purchase costs.', 'insufficient_tokens');
  }
}

/**
 * A gasless open's authorization (1.1 "openChannel"): `signTypedData`
 * (the wallet `from`'s) signs the EIP-3009 `ReceiveWithAuthorization` that
 * lets the registry pull `deposit` for a channel paying `server.payee`,
 * signed for by `signer` (the session key's address) and expiring
 * `lifetimeSeconds` from now in chain time; the nonce commits to those
 * terms. Valid from chain time 0 to AUTHORIZATION_SECONDS from now.
 * Returns the channel's id and terms and the signature, for
 * `Session.openGasless`.
 */
export async function authorizeOpen({ publicClient, signTypedData, from, server, signer, deposit, lifetimeSeconds }) {
  const now = await chainTime(publicClient);
  await requireTokens(publicClient, server.token, from, deposit);
  const expiresAt = now + BigInt(lifetimeSeconds);
  const validAfter = 0n;
  const validBefore = now + BigInt(AUTHORIZATION_SECONDS);
  const salt = randomSalt();
  const nonce = authorizationNonce(server.payee, signer, expiresAt, salt);
  const signature = await signTypedData(receiveAuthorization(server, { from, value: deposit, validAfter, validBefore, nonce }));
  return { channelId: channelIdOf(from, server.payee, salt), expiresAt, salt, validAfter, validBefore, signature };
}

/**
 * The token's EIP-712 domain for a permit by `owner`, or null when it
 * takes none. Its name and version come from `eip712Domain()` (EIP-5267),
 * else `name()` and `version()` (or "1"); a domain counts only when it
 * hashes to the token's own `DOMAIN_SEPARATOR()` and the token has
 * `nonces`.
 */
export async function permitDomain(publicClient, server, owner) {
  const read = (abi, functionName, args = []) =>
    publicClient.readContract({ address: server.token, abi, functionName, args });
  try {
    const [separator] = await Promise.all([read(PERMIT_ABI, 'DOMAIN_SEPARATOR'), read(PERMIT_ABI, 'nonces', [owner])]);
    let name;
    let version;
    try {
      ({ domain: { name, version } } = await publicClient.getEip712Domain({ address: server.token }));
    } catch {
      name = await read(erc20Abi, 'name');
      version = await read(PERMIT_ABI, 'version').catch(() => '1');
    }
    const domain = { name, version, chainId: server.chainId, verifyingContract: server.token };
    return domainSeparator({ domain }) === separator ? domain : null;
  } catch {
    return null;
  }
}
