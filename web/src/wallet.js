// The wallet that pays deposits: the browser's own (`window.ethereum`) or,
// on a server started with `tollstream demo`, one of the demo's funded keys.
// A wallet is needed only to open a channel; every payment after that is
// signed by the session key (storage.js), so a purchase costs one
// wallet transaction, not one per window.

import {
  createPublicClient,
  createWalletClient,
  custom,
  defineChain,
  encodeAbiParameters,
  http,
  keccak256,
  parseEventLogs,
  toHex,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
// Only the ABI is bundled (esbuild drops the artifact's other fields).
import { abi as CHANNELS_ABI } from '../../contracts/TollstreamChannels.json';

/** A wallet failure with a message for the viewer. */
export class WalletError extends Error {}

/** The demo's configuration from `GET /demo.json`, or null when not a demo. */
export async function fetchDemoConfig() {
  let response;
  try {
    response = await fetch('/demo.json', { cache: 'no-store' });
  } catch {
    return null;
  }
  if (!response.ok) return null;
  try {
    const demo = await response.json();
    const keys = Array.isArray(demo.viewer_private_keys)
      ? demo.viewer_private_keys.filter((k) => typeof k === 'string' && /^0x[0-9a-fA-F]{64}$/.test(k))
      : [];
    if (typeof demo.rpc_url !== 'string' || keys.length === 0) return null;
    return { rpcUrl: demo.rpc_url, chainId: demo.chain_id, contract: demo.contract, viewerKeys: keys };
  } catch {
    return null;
  }
}

function chainOf(server, rpcUrl) {
  return defineChain({
    id: server.chainId,
    name: `Tollstream chain ${server.chainId}`,
    nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
    rpcUrls: { default: { http: rpcUrl ? [rpcUrl] : [] } },
  });
}

/**
 * A connected wallet: `address`, `label`, `balance()` and `openChannel()`.
 * Built by `connectInjected` or `connectDemo`.
 */
class Wallet {
  constructor({ label, account, walletClient, publicClient }) {
    this.label = label;
    this.account = account;
    this.address = typeof account === 'string' ? account : account.address;
    this.walletClient = walletClient;
    this.publicClient = publicClient;
  }

  /** The wallet's balance in wei. */
  balance() {
    return this.publicClient.getBalance({ address: this.address });
  }

  /**
   * Opens a channel paying `server.payee`, signed for by `signer` (the
   * session key's address), holding `deposit` wei, and waits for it to be
   * mined. Returns its id.
   */
  async openChannel({ server, signer, deposit, lifetimeSeconds }) {
    // Expiry in chain time, not the browser's clock.
    const block = await this.publicClient.getBlock({ blockTag: 'latest' });
    const expiresAt = block.timestamp + BigInt(lifetimeSeconds);
    const salt = toHex(crypto.getRandomValues(new Uint8Array(32)));
    // The contract derives the id as keccak256(abi.encode(msg.sender, payee, salt)).
    const channelId = keccak256(encodeAbiParameters(
      [{ type: 'address' }, { type: 'address' }, { type: 'bytes32' }],
      [this.address, server.payee, salt],
    ));
    // Simulating first turns a revert into a readable error before the
    // wallet asks the viewer to sign anything.
    const { request } = await this.publicClient.simulateContract({
      account: this.account,
      address: server.contract,
      abi: CHANNELS_ABI,
      functionName: 'open',
      args: [server.payee, signer, expiresAt, salt],
      value: deposit,
    });
    const hash = await this.walletClient.writeContract(request);
    const receipt = await this.publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== 'success') throw new WalletError('The purchase transaction failed on chain.');
    const opened = parseEventLogs({ abi: CHANNELS_ABI, eventName: 'Opened', logs: receipt.logs })
      .find((log) => log.args.channelId === channelId);
    if (!opened || opened.args.deposit !== deposit) {
      throw new WalletError('The purchase transaction did not open the expected channel.');
    }
    return channelId;
  }
}

/** The browser's wallet (an EIP-1193 provider), switched to the server's chain. */
export async function connectInjected(server) {
  const provider = window.ethereum;
  if (!provider) throw new WalletError('No browser wallet found.');
  const chain = chainOf(server, null);
  const transport = custom(provider);
  const [address] = await createWalletClient({ chain, transport }).requestAddresses();
  if (!address) throw new WalletError('The browser wallet shared no account.');
  const walletClient = createWalletClient({ account: address, chain, transport });
  const chainId = await walletClient.getChainId();
  if (chainId !== server.chainId) {
    try {
      await walletClient.switchChain({ id: server.chainId });
    } catch {
      throw new WalletError(`Switch your wallet to chain ${server.chainId} (it is on chain ${chainId}).`);
    }
  }
  const publicClient = createPublicClient({ chain, transport });
  return new Wallet({ label: 'Browser wallet', account: address, walletClient, publicClient });
}

/** A demo wallet: a funded key from `/demo.json`, talking to the demo's node. */
export function connectDemo(server, demo, index) {
  const account = privateKeyToAccount(demo.viewerKeys[index]);
  const chain = chainOf(server, demo.rpcUrl);
  const transport = http(demo.rpcUrl);
  return new Wallet({
    label: `Demo wallet ${index + 1}`,
    account,
    walletClient: createWalletClient({ account, chain, transport }),
    publicClient: createPublicClient({ chain, transport }),
  });
}

/** The address of demo key `index`, to list the demo wallets. */
export function demoAddress(demo, index) {
  return privateKeyToAccount(demo.viewerKeys[index]).address;
}
