// The client side of the protocol (PROTOCOL.md §5–§6) over one Socket.IO
// connection: the idle requests (publicKey, latestState, newChannel), and
// the streaming state in which every `pay` is checked and answered with the
// session key's signature and every `secret` feeds the key store.
//
// It knows nothing of the page: it reports changes through `onChange` and
// session-ending events through `onEnded`.

import { privateKeyToAccount } from 'viem/accounts';
import {
  EVENTS,
  ProtocolError,
  compressedPublicKey,
  errorOf,
  isOwnState,
  openChannelRequest,
  parseAmount,
  parseCount,
  parseHex16,
  parseServerInfo,
  parseState,
  signPlay,
  signState,
  stateToWire,
} from './protocol.js';

/** How long a request waits for its acknowledgement. */
const ACK_TIMEOUT_MS = 15_000;

/**
 * How long an `openChannel` waits for its answer before it is sent again
 * (once): the server answers only once its transaction is mined, and
 * clients wait at least 120 s (1.1 "openChannel").
 */
export const OPEN_ACK_TIMEOUT_MS = 120_000;

/** How many times an `openChannel` is sent at most: the request is idempotent. */
const OPEN_ATTEMPTS = 2;

/** A request the server refused: `code` is one of PROTOCOL.md §7. */
export class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class Session {
  /**
   * @param {object} options
   * @param {import('socket.io-client').Socket} options.socket a connected or connecting socket
   * @param {`0x${string}`} options.sessionKey the key that signs states and plays
   * @param {import('./keys.js').KeyStore} options.keyStore where paid keys go
   * @param {() => void} options.onChange called after any change of the fields below
   * @param {(code: string, message: string) => void} options.onEnded called when streaming ends without `stop`
   * @param {(req: object) => string|null} options.shouldDefer asks the page whether a `pay` is too far ahead of playback
   */
  constructor({ socket, sessionKey, keyStore, onChange, onEnded, shouldDefer }) {
    this.socket = socket;
    this.account = privateKeyToAccount(sessionKey);
    this.clientPublicKey = compressedPublicKey(this.account);
    this.keyStore = keyStore;
    this.onChange = onChange;
    this.onEnded = onEnded;
    this.shouldDefer = shouldDefer;

    /** The server's `publicKey` reply, parsed (protocol.js parseServerInfo). */
    this.server = null;
    /** The latest state this client signed or verified, or null: no channel. */
    this.state = null;
    /** Whether `state`'s secret has arrived in this streaming session. */
    this.stateConfirmed = false;
    /**
     * The running streaming session, or null when idle:
     * `{streamId, fromSegment, nextSegment}`; `nextSegment` is the first
     * segment the next `pay` must start at (null until the first `pay`).
     */
    this.streaming = null;
    /** Windows paid by this page: `{sequence, streamId, firstSegment, segmentCount}`. */
    this.paid = [];
    /** True once the final secret of a channel arrived (time used up). */
    this.spent = false;
    /** That channel's final state, kept only to show what it paid. */
    this.finalState = null;
    /**
     * True after this client refused a `pay` on purpose: the server's
     * `payment_refused` error that follows is expected, not a failure.
     */
    this.deferredRefusal = false;

    socket.on(EVENTS.pay, (req, ack) => this.handlePay(req, ack));
    socket.on(EVENTS.secret, (msg) => this.handleSecret(msg));
    socket.on(EVENTS.error, (msg) => this.handleError(msg));
    socket.on('disconnect', () => {
      // The server ends the session on disconnect (§6.7); a new connection
      // has a new socket id and needs a new `play`.
      if (this.streaming) {
        this.streaming = null;
        this.onEnded('disconnected', 'the connection to the server was lost');
      }
      this.onChange();
    });
  }

  /** The connection's Socket.IO socket id: the `session` of `Play` (D6). */
  get socketId() {
    return this.socket.id;
  }

  /** Sends `event` with an acknowledgement; a refusal becomes a RequestError. */
  async request(event, data, timeoutMs = ACK_TIMEOUT_MS) {
    let reply;
    try {
      reply = await this.socket.timeout(timeoutMs).emitWithAck(event, data);
    } catch {
      throw new RequestError('no_answer', `the server did not answer ${event}`);
    }
    const refused = errorOf(reply);
    if (refused) throw new RequestError(refused.code, refused.message);
    return reply;
  }

  /** `publicKey`: who the server is, its chain, prices and streams. */
  async loadServer() {
    this.server = parseServerInfo(await this.request(EVENTS.publicKey, {}));
    this.onChange();
    return this.server;
  }

  /**
   * `latestState`: adopts the server's latest state of our channel if it is
   * ours (signed by our session key), otherwise treats it as none.
   */
  async refreshState() {
    const reply = await this.request(EVENTS.latestState, { client_public_key: this.clientPublicKey });
    let state = null;
    if (reply !== null) {
      try {
        const parsed = parseState(reply);
        if (await isOwnState(parsed, this.account, this.clientPublicKey, this.server)) state = parsed;
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
      }
    }
    this.state = state;
    // The latest state's secret is re-sent on `play`; the opening state has none.
    this.stateConfirmed = state !== null && state.sequence === 0;
    if (state) this.spent = false;
    this.onChange();
    return state;
  }

  /**
   * Signs the opening state of a channel just opened on chain and announces
   * it with `newChannel`; the reply must be that state.
   */
  async announce({ channelId, wallet, deposit }) {
    const opening = await this.openingState({ channelId, wallet, deposit });
    const reply = await this.request(EVENTS.newChannel, stateToWire(opening));
    this.adoptOpening(opening, reply);
  }

  /**
   * A gasless open (1.1 "openChannel"): signs the opening state of the
   * channel `open` describes (its id, terms and the wallet's signed
   * authorization, from `Wallet.authorizeOpen`) and asks the server to
   * open it on chain. The server answers once the channel is mined; an
   * answer that does not come in OPEN_ACK_TIMEOUT_MS is asked for again,
   * once, with the same request (the server treats it idempotently).
   */
  async openGasless({ wallet, deposit, open }) {
    const opening = await this.openingState({ channelId: open.channelId, wallet, deposit });
    const request = openChannelRequest(opening, open);
    let reply;
    for (let attempt = 1; ; attempt += 1) {
      try {
        reply = await this.request(EVENTS.openChannel, request, OPEN_ACK_TIMEOUT_MS);
        break;
      } catch (error) {
        const retry = error instanceof RequestError && ['no_answer', 'rate_limited'].includes(error.code);
        if (!retry || attempt >= OPEN_ATTEMPTS) throw error;
        // A client that meets `rate_limited` waits a second (1.1 "Rate limits").
        if (error.code === 'rate_limited') await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
    this.adoptOpening(opening, reply);
  }

  /** The signed first state of a channel holding `deposit` (sequence 0, nothing paid). */
  openingState({ channelId, wallet, deposit }) {
    return signState(this.account, this.server, {
      channelId: channelId.toLowerCase(),
      contract: this.server.contract,
      wallet,
      clientPublicKey: this.clientPublicKey,
      clientBalance: deposit,
      serverBalance: 0n,
      sequence: 0,
    });
  }

  /** Makes `opening` the current state once the server's `reply` shows it kept it. */
  adoptOpening(opening, reply) {
    const stored = reply === null ? null : parseState(reply);
    if (!stored || stored.channelId !== opening.channelId || stored.sequence !== 0
      || stored.clientBalance !== opening.clientBalance) {
      throw new RequestError('bad_reply', 'the server did not keep the new channel');
    }
    this.state = opening;
    this.stateConfirmed = true;
    this.spent = false;
    this.onChange();
  }

  /**
   * Starts streaming `streamId` from `fromSegment` (§6.4). Returns false
   * when there is no channel to pay with.
   */
  async play(streamId, fromSegment) {
    // A running session is ended first (acknowledged), so that no `pay` of
    // it arrives after the new one started and is judged against it.
    await this.stop();
    // Every play starts from the server's latest state (idle step 3): a
    // payment whose secret never came may or may not have been stored.
    const state = await this.refreshState();
    if (!state) return false;
    const signature = await signPlay(this.account, this.server, state.channelId, this.socketId);
    // Handlers must be ready before the request: `pay` may come before the ack (D10).
    this.streaming = { streamId, fromSegment, nextSegment: null };
    this.onChange();
    try {
      await this.request(EVENTS.play, {
        client_public_key: this.clientPublicKey,
        stream_id: streamId,
        from_segment: fromSegment,
        signature,
      });
    } catch (error) {
      this.streaming = null;
      this.onChange();
      throw error;
    }
    return true;
  }

  /** Leaves the streaming state (§6.7). */
  async stop() {
    if (!this.streaming) return;
    this.streaming = null;
    this.onChange();
    try {
      await this.request(EVENTS.stop, { client_public_key: this.clientPublicKey });
    } catch (error) {
      // `not_streaming`: the server had already ended the session.
      if (!(error instanceof RequestError)) throw error;
    }
  }

  /**
   * The first segment the running session will deliver a key for next: the
   * window paid but not yet confirmed by its secret, else the next segment
   * `pay` will ask for. Null when not streaming.
   */
  coveredFrom() {
    const streaming = this.streaming;
    if (!streaming) return null;
    const last = this.paid[this.paid.length - 1];
    if (!this.stateConfirmed && last && this.state && last.sequence === this.state.sequence) return last.firstSegment;
    return this.keyStore.firstMissing(streaming.streamId, streaming.nextSegment ?? streaming.fromSegment);
  }

  /**
   * Why this client refuses `req`, or null to pay it. Synchronous: the
   * successor is recorded before the first await, so a second `pay` is
   * judged against it.
   */
  refusal(req) {
    const streaming = this.streaming;
    if (req === null || typeof req !== 'object') return 'the request is not an object';
    const state = this.state;
    if (!state) return 'no channel';
    if (typeof req.channel_id !== 'string' || req.channel_id.toLowerCase() !== state.channelId) {
      return `pay names another channel (${req.channel_id})`;
    }
    if (req.stream_id !== streaming.streamId) return `pay names another stream (${req.stream_id})`;
    if (!this.stateConfirmed) return `the secret of payment ${state.sequence} has not arrived`;
    let amount;
    let first;
    let count;
    let sequence;
    try {
      sequence = parseCount(req.client_sequence_number, 'client_sequence_number');
      amount = parseAmount(req.amount, 'amount');
      first = parseCount(req.first_segment, 'first_segment');
      count = parseCount(req.segment_count, 'segment_count');
    } catch (error) {
      return error.message;
    }
    if (sequence !== state.sequence + 1) return `pay asks for payment ${sequence}, expected ${state.sequence + 1}`;
    if (amount === 0n || amount > this.server.windowPrice) {
      return `pay asks ${amount} wei, more than the window price ${this.server.windowPrice}`;
    }
    if (amount > state.clientBalance) return `pay asks ${amount} wei, only ${state.clientBalance} is left`;
    if (count === 0) return 'pay buys no segment';
    if (streaming.nextSegment === null) {
      // The first window starts at `from_segment`, or after the window
      // already paid for when `from_segment` lies inside it (D15), whose
      // keys the re-sent secret has just delivered.
      if (first < streaming.fromSegment) return `pay starts at segment ${first}, before ${streaming.fromSegment}`;
      if (this.keyStore.firstMissing(streaming.streamId, streaming.fromSegment) < first) {
        return `pay starts at segment ${first}, skipping segments not paid for`;
      }
    } else if (first !== streaming.nextSegment) {
      return `pay starts at segment ${first}, expected ${streaming.nextSegment}`;
    }
    return null;
  }

  async handlePay(req, ack) {
    if (typeof ack !== 'function') return;
    if (!this.streaming) {
      // A `pay` sent before the server saw our `stop`: that session is
      // over, and so is its answer; an `error` about it is not news.
      this.deferredRefusal = true;
      ack({ error: { code: 'payment_refused', message: 'not streaming' } });
      return;
    }
    const refusal = this.refusal(req) ?? this.deferral(req);
    if (refusal) {
      ack({ error: { code: 'payment_refused', message: refusal } });
      return;
    }
    const prev = this.state;
    const amount = BigInt(req.amount);
    const fields = {
      ...prev,
      clientBalance: prev.clientBalance - amount,
      serverBalance: prev.serverBalance + amount,
      sequence: req.client_sequence_number,
    };
    // Recorded before the signature's await, so that anything looking at
    // the session meanwhile sees this window as paid and awaiting its secret.
    this.state = { ...fields, signature: null };
    this.stateConfirmed = false;
    this.streaming.nextSegment = req.first_segment + req.segment_count;
    this.paid.push({
      sequence: fields.sequence,
      streamId: req.stream_id,
      firstSegment: req.first_segment,
      segmentCount: req.segment_count,
    });
    const next = await signState(this.account, this.server, fields);
    // A newer state (an `error` and a fresh latestState) wins over this one.
    if (this.state?.sequence === next.sequence && this.state.channelId === next.channelId) this.state = next;
    ack(stateToWire(next));
    this.onChange();
  }

  /** The page's reason not to pay yet (playback far behind), or null. */
  deferral(req) {
    const reason = this.shouldDefer?.(req) ?? null;
    // The server answers a refusal with `error` payment_refused (D19);
    // this one is expected and not shown as a failure.
    if (reason) this.deferredRefusal = true;
    return reason;
  }

  handleSecret(msg) {
    const state = this.state;
    if (!state || msg === null || typeof msg !== 'object') return;
    // A secret for a payment this client does not know is ignored (§11),
    // and so is one that names another channel (1.1): an older channel's
    // re-sent final secret confirms nothing of the current one.
    if (msg.client_sequence_number !== state.sequence || typeof msg.stream_id !== 'string') return;
    if (msg.channel_id !== undefined
      && (typeof msg.channel_id !== 'string' || msg.channel_id.toLowerCase() !== state.channelId)) return;
    let keys;
    try {
      if (!Array.isArray(msg.keys)) throw new ProtocolError('keys is not a list');
      keys = msg.keys.map((entry, i) => ({
        segment: parseCount(entry?.segment, `keys[${i}].segment`),
        key: parseHex16(entry?.key, `keys[${i}].key`),
      }));
    } catch (error) {
      if (error instanceof ProtocolError) return;
      throw error;
    }
    this.keyStore.add(msg.stream_id, keys);
    this.stateConfirmed = true;
    if (state.clientBalance === 0n) {
      // The final secret: the channel is spent; forget it (§6.6).
      this.finalState = state;
      this.state = null;
      this.stateConfirmed = false;
      this.streaming = null;
      this.spent = true;
    }
    this.onChange();
  }

  handleError(msg) {
    // An error that ended another client's session on this connection
    // (1.1 names the client) is not about this one.
    const client = msg?.client_public_key;
    if (typeof client === 'string' && client.toLowerCase() !== this.clientPublicKey) return;
    const code = typeof msg?.code === 'string' ? msg.code : 'unknown';
    const message = typeof msg?.message === 'string' ? msg.message : '';
    this.streaming = null;
    const expected = code === 'payment_refused' && this.deferredRefusal;
    this.deferredRefusal = false;
    this.onChange();
    this.onEnded(expected ? 'deferred' : code, message);
  }
}
