// The wallet that pays deposits: the browser's own (`window.ethereum`) or,
// on a server started with `tollstream demo`, one of the demo's funded keys.
// A wallet is needed only to open a channel; every payment after that is
// signed by the session key (storage.js), so a purchase costs one
// wallet confirmation, not one per window.
//
// How a channel is opened depends on the server's token (PROTOCOL.md 1.1):
//   - the native coin: `open` with the deposit as value (one transaction);
//   - a token, on a server with `gasless_open`: the wallet signs an EIP-3009
//     authorization and the server sends the transaction (one signature, no
//     gas: the wallet may hold only the token);
//   - another token with EIP-2612: a permit signature and `openWithPermit`;
//   - any other ERC-20: `approve` (when the allowance is short) and `openToken`.

import {
  createPublicClient,
  createWalletClient,
  custom,
  defineChain,
  encodeAbiParameters,
  erc20Abi,
  http,
  keccak256,
  parseEventLogs,
  toHex,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
// Only the ABI is bundled (esbuild drops the artifact's other fields).
import { abi as CHANNELS_ABI } from '../../contracts/TollstreamChannels.json';
import { WalletError } from './errors.js';
import { NATIVE_TOKEN, channelIdOf, permitTypedData } from './protocol.js';
import {
  AUTHORIZATION_SECONDS,
  PERMIT_ABI,
  authorizeOpen,
  chainTime,
  permitDomain,
  randomSalt,
  requireTokens,
  tokenBalance,
} from './token.js';

export { WalletError };

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
 * A connected wallet: `address`, `label`, `balance()` and the ways to open
 * a channel. Built by `connectInjected` or `connectDemo`.
 */
class Wallet {
  constructor({ label, account, walletClient, publicClient, token }) {
    this.label = label;
    this.account = account;
    this.address = typeof account === 'string' ? account : account.address;
    this.walletClient = walletClient;
    this.publicClient = publicClient;
    /** The server's deposit token (NATIVE_TOKEN for the chain's coin). */
    this.token = token;
    /**
     * How many times this wallet asked its holder to sign something (a
     * message or a transaction): one per purchase, or two where a token
     * needs an `approve` first.
     */
    this.prompts = 0;
  }

  /** The wallet's balance of the server's token, in its smallest unit. */
  balance() {
    if (this.token === NATIVE_TOKEN) return this.publicClient.getBalance({ address: this.address });
    return tokenBalance(this.publicClient, this.token, this.address);
  }

  signTypedData(typedData) {
    this.prompts += 1;
    return this.walletClient.signTypedData({ account: this.account, ...typedData });
  }

  /** Sends a simulated `request` and waits for it to be mined successfully. */
  async send(request) {
    this.prompts += 1;
    const hash = await this.walletClient.writeContract(request);
    const receipt = await this.publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== 'success') throw new WalletError('The purchase transaction failed on chain.');
    return receipt;
  }

  /** Checks that `receipt` opened channel `channelId` holding `deposit`. */
  static checkOpened(receipt, channelId, deposit) {
    const opened = parseEventLogs({ abi: CHANNELS_ABI, eventName: 'Opened', logs: receipt.logs })
      .find((log) => log.args.channelId === channelId);
    if (!opened || opened.args.deposit !== deposit) {
      throw new WalletError('The purchase transaction did not open the expected channel.');
    }
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
    const receipt = await this.send(request);
    Wallet.checkOpened(receipt, channelId, deposit);
    return channelId;
  }

  /**
   * A gasless open (1.1 "openChannel"): the wallet signs the EIP-3009
   * authorization (token.js `authorizeOpen`); nothing is sent, the server
   * opens the channel. Returns the channel's id, terms and authorization.
   */
  authorizeOpen({ server, signer, deposit, lifetimeSeconds }) {
    return authorizeOpen({
      publicClient: this.publicClient,
      signTypedData: (typedData) => this.signTypedData(typedData),
      from: this.address,
      server,
      signer,
      deposit,
      lifetimeSeconds,
    });
  }

  /**
   * Opens a token channel with the wallet's own transaction:
   * `openWithPermit` when the token takes EIP-2612 permits, else `approve`
   * (when the allowance falls short) and `openToken`. Waits for it to be
   * mined and returns the channel's id.
   */
  async openTokenChannel({ server, signer, deposit, lifetimeSeconds }) {
    const now = await chainTime(this.publicClient);
    await requireTokens(this.publicClient, server.token, this.address, deposit);
    const expiresAt = now + BigInt(lifetimeSeconds);
    const salt = randomSalt();
    const channelId = channelIdOf(this.address, server.payee, salt);
    const terms = [server.token, deposit, server.payee, signer, expiresAt, salt];
    const domain = await permitDomain(this.publicClient, server, this.address);
    let request;
    if (domain) {
      const nonce = await this.publicClient.readContract({
        address: server.token, abi: PERMIT_ABI, functionName: 'nonces', args: [this.address],
      });
      const deadline = now + BigInt(AUTHORIZATION_SECONDS);
      const permit = await this.signTypedData(permitTypedData(domain, {
        owner: this.address, spender: server.contract, value: deposit, nonce, deadline,
      }));
      ({ request } = await this.publicClient.simulateContract({
        account: this.account,
        address: server.contract,
        abi: CHANNELS_ABI,
        functionName: 'openWithPermit',
        args: [...terms, deadline, permit],
      }));
    } else {
      const allowance = await this.publicClient.readContract({
        address: server.token, abi: erc20Abi, functionName: 'allowance', args: [this.address, server.contract],
      });
      if (allowance < deposit) {
        const { request: approve } = await this.publicClient.simulateContract({
          account: this.account,
          address: server.token,
          abi: erc20Abi,
          functionName: 'approve',
          args: [server.contract, deposit],
        });
        await this.send(approve);
      }
      ({ request } = await this.publicClient.simulateContract({
        account: this.account,
        address: server.contract,
        abi: CHANNELS_ABI,
        functionName: 'openToken',
        args: terms,
      }));
    }
    Wallet.checkOpened(await this.send(request), channelId, deposit);
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
  return new Wallet({ label: 'Browser wallet', account: address, walletClient, publicClient, token: server.token });
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
    token: server.token,
  });
}

/** The address of demo key `index`, to list the demo wallets. */
export function demoAddress(demo, index) {
  return privateKeyToAccount(demo.viewerKeys[index]).address;
}
