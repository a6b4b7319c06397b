// The segment keys this browser has paid for, and the hls.js loader that
// hands them to the decrypter.
//
// The playlist names every segment's key `tollstream://<stream_id>/<segment>`
// (PROTOCOL.md §6.6). Those URIs are not fetchable: the keys arrive in paid
// `secret` messages. A key load for a segment not paid yet is held until its
// key arrives; nothing else fetches keys.
//
// Keys are kept in localStorage too: after a reload the player can replay
// and resume from what it already bought without paying for it again (the
// server only re-sends the latest window's keys, PROTOCOL.md N3).

import { LoaderContextType, LoadStats } from 'hls.js/light';

const KEY_URI = /^tollstream:\/\/([A-Za-z0-9_-]+)\/([0-9]+)$/;

/** How many keys per stream survive a reload (the most recent ones). */
const PERSISTED_KEYS_PER_STREAM = 512;

/** `{streamId, segment}` of a key URI, or null when it is not ours. */
export function parseKeyUri(uri) {
  const match = KEY_URI.exec(uri);
  if (!match) return null;
  const segment = Number(match[2]);
  return Number.isSafeInteger(segment) ? { streamId: match[1], segment } : null;
}

export class KeyStore {
  /**
   * @param {Storage|null} storage where keys persist (localStorage), or null
   * @param {string} namespace storage key prefix
   */
  constructor(storage, namespace) {
    this.storage = storage;
    this.namespace = namespace;
    /** streamId → Map(segment → Uint8Array(16)) */
    this.keys = new Map();
    /** `${streamId}/${segment}` → Set of callbacks waiting for that key */
    this.waiters = new Map();
    /** Called with (streamId, segment) when a load waits for a missing key. */
    this.onMissing = null;
  }

  streamKeys(streamId) {
    let keys = this.keys.get(streamId);
    if (!keys) {
      keys = new Map();
      for (const [segment, hex] of Object.entries(this.readPersisted(streamId))) {
        keys.set(Number(segment), hexToBytes(hex));
      }
      this.keys.set(streamId, keys);
    }
    return keys;
  }

  has(streamId, segment) {
    return this.streamKeys(streamId).has(segment);
  }

  /** The first segment at or after `segment` whose key is not held. */
  firstMissing(streamId, segment) {
    const keys = this.streamKeys(streamId);
    let next = segment;
    while (keys.has(next)) next += 1;
    return next;
  }

  /** Stores keys from a `secret` and releases the loads waiting for them. */
  add(streamId, entries) {
    const keys = this.streamKeys(streamId);
    for (const { segment, key } of entries) {
      keys.set(segment, key);
      const id = `${streamId}/${segment}`;
      const waiting = this.waiters.get(id);
      if (waiting) {
        this.waiters.delete(id);
        for (const resolve of waiting) resolve(key);
      }
    }
    this.persist(streamId, keys);
  }

  /**
   * Calls `resolve(key)` once the key of `segment` is held (at once if it is
   * already). Returns a function that cancels the wait.
   */
  wait(streamId, segment, resolve) {
    const key = this.streamKeys(streamId).get(segment);
    if (key) {
      resolve(key);
      return () => {};
    }
    const id = `${streamId}/${segment}`;
    let waiting = this.waiters.get(id);
    if (!waiting) this.waiters.set(id, (waiting = new Set()));
    waiting.add(resolve);
    this.onMissing?.(streamId, segment);
    return () => {
      waiting.delete(resolve);
      if (waiting.size === 0 && this.waiters.get(id) === waiting) this.waiters.delete(id);
    };
  }

  /** The lowest segment of `streamId` a load is waiting for, or null. */
  lowestWaiting(streamId) {
    let lowest = null;
    for (const [id, waiting] of this.waiters) {
      const slash = id.lastIndexOf('/');
      if (waiting.size === 0 || id.slice(0, slash) !== streamId) continue;
      const segment = Number(id.slice(slash + 1));
      if (lowest === null || segment < lowest) lowest = segment;
    }
    return lowest;
  }

  readPersisted(streamId) {
    try {
      const text = this.storage?.getItem(`${this.namespace}${streamId}`);
      const parsed = text ? JSON.parse(text) : {};
      return parsed && typeof parsed === 'object' ? parsed : {};
    } catch {
      return {};
    }
  }

  persist(streamId, keys) {
    if (!this.storage) return;
    const segments = [...keys.keys()].sort((a, b) => a - b).slice(-PERSISTED_KEYS_PER_STREAM);
    const out = {};
    for (const segment of segments) out[segment] = bytesToHex(keys.get(segment));
    try {
      this.storage.setItem(`${this.namespace}${streamId}`, JSON.stringify(out));
    } catch {
      // A full storage only costs a re-purchase after a reload.
    }
  }
}

/**
 * An hls.js loader class: `tollstream://` key loads are answered from
 * `keyStore` (held until the key is paid for), everything else goes to
 * hls.js's own loader `Base`.
 */
export function keyLoaderClass(keyStore, Base) {
  return class TollstreamLoader extends Base {
    load(context, config, callbacks) {
      const target = context.type === LoaderContextType.KEY ? parseKeyUri(context.url) : null;
      if (!target) {
        if (context.type === LoaderContextType.KEY) {
          // A key URI we do not know: never fetch it from anywhere.
          this.context = context;
          callbacks.onError({ code: 0, text: `not a Tollstream key URI: ${context.url}` }, context, null, this.stats);
          return;
        }
        super.load(context, config, callbacks);
        return;
      }
      this.context = context;
      this.callbacks = callbacks;
      this.stats = new LoadStats();
      this.stats.loading.start = performance.now();
      // No timeout on purpose: the key comes when the window is paid for,
      // which may be a whole window (or a purchase) away.
      this.cancelWait = keyStore.wait(target.streamId, target.segment, (key) => {
        this.cancelWait = null;
        const callbacksNow = this.callbacks;
        if (!callbacksNow) return;
        const now = performance.now();
        this.stats.loading.first = now;
        this.stats.loading.end = now;
        this.stats.loaded = this.stats.total = key.byteLength;
        // A copy: hls.js keeps the buffer, the store keeps its own.
        const data = key.slice().buffer;
        callbacksNow.onSuccess({ url: context.url, data }, this.stats, context, null);
      });
    }

    abort() {
      this.cancelWait?.();
      this.cancelWait = null;
      super.abort();
    }

    destroy() {
      this.cancelWait?.();
      this.cancelWait = null;
      super.destroy();
    }
  };
}

function hexToBytes(hex) {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i += 1) bytes[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
