// What the page keeps in localStorage: the session key, the chosen stream
// and demo wallet, and where each stream was left. Everything is optional:
// a browser without storage gets a fresh session key on every load.

import { generatePrivateKey } from 'viem/accounts';

const PREFIX = 'tollstream.';
const HEX32 = /^0x[0-9a-fA-F]{64}$/;

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

function get(name) {
  try {
    return storage()?.getItem(PREFIX + name) ?? null;
  } catch {
    return null;
  }
}

function set(name, value) {
  try {
    storage()?.setItem(PREFIX + name, value);
  } catch {
    // Storage full or disabled: the page works, it just forgets.
  }
}

/** The Storage the key store persists to, and its key prefix. */
export const keyStorage = { storage: storage(), namespace: `${PREFIX}keys.` };

/**
 * The browser's session key: it signs every state and play, and is the
 * channel's `signer` on chain. Generated once and kept, so a reload finds
 * and resumes the same channel. It holds no money itself: the wallet pays
 * the deposit, and the key can only sign payments to this server.
 */
export function sessionKey() {
  let key = get('sessionKey');
  if (!key || !HEX32.test(key)) {
    key = generatePrivateKey();
    set('sessionKey', key);
  }
  return key;
}

export const selectedStream = {
  get: () => get('stream'),
  set: (id) => set('stream', id),
};

export const demoWalletIndex = {
  get: () => {
    const value = Number(get('demoWallet'));
    return get('demoWallet') !== null && Number.isSafeInteger(value) && value >= 0 ? value : null;
  },
  set: (index) => set('demoWallet', String(index)),
};

/** Where the viewer was in each stream, in seconds. */
export const position = {
  get: (streamId) => {
    const value = Number(get(`position.${streamId}`));
    return Number.isFinite(value) && value > 0 ? value : 0;
  },
  set: (streamId, seconds) => set(`position.${streamId}`, String(Math.floor(seconds * 10) / 10)),
};
