// The player page: wires the session (the protocol), the wallet (buying),
// the player (hls.js) and the DOM together.
//
// Paying follows the picture: while the viewer wants to play and the next
// segment without a key is close to the playback position, the page
// streams (`play`, answering every `pay`); when the viewer pauses, it sends
// `stop`. Every change ends in `update()`, which re-renders the page and the
// read-only test hook `window.tollstream.state`.

import { io } from 'socket.io-client';
import { describeError, walletErrorCode } from './errors.js';
import { purchaseFor, unitOf } from './format.js';
import { KeyStore } from './keys.js';
import { Player } from './player.js';
import { sellsToken } from './protocol.js';
import { RequestError, Session } from './session.js';
import * as storage from './storage.js';
import {
  elements,
  renderBuy,
  renderChannel,
  renderConnection,
  renderControls,
  renderMessage,
  renderStreams,
  renderWallet,
} from './ui.js';
import { connectDemo, connectInjected, demoAddress, fetchDemoConfig } from './wallet.js';

// Start streaming when the first segment without a key starts within this
// many windows of the playback position (and at least MIN_LEAD_SECONDS).
const LEAD_WINDOWS = 2;
const MIN_LEAD_SECONDS = 8;

// The page's whole state; `update()` renders it.
const app = {
  connected: false,
  everConnected: false,
  /** The selected stream: `{id, title, playlist}`. */
  stream: null,
  /** The connected wallet (wallet.js), or null. */
  wallet: null,
  walletBalance: null,
  /** `/demo.json` when the server runs `tollstream demo`, else null. */
  demo: null,
  demoAddresses: [],
  /** True while a purchase is in progress. */
  buying: false,
  /** True while a `play` request is in flight. */
  starting: false,
  /** The viewer wants the video to play (pressed play, not pause). */
  wantPlaying: false,
  /** The session ended with `stream_ended`. */
  ended: false,
  /** The code of the last error shown, for the test hook. */
  lastError: null,
  /** `{kind: 'error'|'info', text, code}` under the player. */
  message: null,
};

const video = elements.video;
const keyStore = new KeyStore(storage.keyStorage.storage, storage.keyStorage.namespace);
const player = new Player(video, keyStore, () => showError('media_failed'));
// One connection, WebSocket only. Socket.IO reconnects by itself; a new
// connection gets a new socket id, so streaming restarts with a new `play`.
const socket = io(window.location.origin, { transports: ['websocket'] });
const session = new Session({
  socket,
  sessionKey: storage.sessionKey(),
  keyStore,
  onChange: () => update(),
  onEnded: (code, message) => onSessionEnded(code, message),
  shouldDefer: (req) => payTooEarly(req),
});

// Where playback will start once hls.js has seeked there; before that the
// video element still reports 0.
let startPosition = 0;
let startReached = true;

function position() {
  return startReached ? video.currentTime : startPosition;
}

function status() {
  if (!app.connected && !session.server) return app.everConnected ? 'offline' : 'connecting';
  if (app.buying) return 'buying';
  if (session.streaming) return 'streaming';
  if (app.starting) return 'starting';
  if (session.spent && !session.state) return 'spent';
  if (!session.state) return app.ended ? 'ended' : 'idle';
  if (app.ended) return 'ended';
  if (app.wantPlaying) return 'waiting';
  return video.currentTime > 0 ? 'paused' : 'ready';
}

// The inputs each panel was last rendered from: panels with buttons and a
// select are rebuilt only when these change, so a re-render never swallows
// a click or closes an open select.
const rendered = new Map();
function renderIfChanged(panel, inputs, render) {
  const key = JSON.stringify(inputs, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
  if (rendered.get(panel) === key) return;
  rendered.set(panel, key);
  render();
}

function update() {
  const current = status();
  const { server, state } = session;
  renderConnection(app.connected, app.everConnected);
  renderIfChanged('streams', [server?.streams, app.stream?.id], () => renderStreams(server, app.stream?.id, selectStream));
  renderChannel({ server, state, finalState: session.finalState, status: current });
  renderIfChanged('buy', [Boolean(server), Boolean(state), Boolean(app.wallet), app.buying],
    () => renderBuy({ server, state, wallet: app.wallet, busy: app.buying, onBuy: buy }));
  renderIfChanged('wallet', [app.wallet?.address, app.walletBalance, Boolean(app.demo), Boolean(server), app.buying], () => renderWallet({
    wallet: app.wallet,
    walletBalance: app.walletBalance,
    unit: server ? unitOf(server) : null,
    injected: Boolean(window.ethereum),
    demo: app.demo,
    demoAddresses: app.demoAddresses,
    demoIndex: storage.demoWalletIndex.get() ?? 0,
    busy: app.buying || !server,
    onInjected: () => connectWallet(() => connectInjected(session.server)),
    onDemo: (index) => {
      storage.demoWalletIndex.set(index);
      connectWallet(() => connectDemo(session.server, app.demo, index));
    },
  }));
  renderMessage(app.message);
  renderControls({ stream: app.stream, status: current, playing: app.wantPlaying });
  publishHook(current);
}

// The read-only test hook: a fresh frozen snapshot on every change.
let snapshot = Object.freeze({});
Object.defineProperty(window, 'tollstream', {
  value: Object.freeze({ get state() { return snapshot; } }),
});

function publishHook(current) {
  const { state, server } = session;
  snapshot = Object.freeze({
    status: current,
    // Payments of the current channel (of the spent one, once used up).
    payments: (state ?? (current === 'spent' ? session.finalState : null))?.sequence ?? 0,
    sequence: state ? state.sequence : null,
    clientBalance: state ? state.clientBalance.toString(10) : null,
    serverBalance: state ? state.serverBalance.toString(10) : null,
    channelId: state ? state.channelId : null,
    clientPublicKey: session.clientPublicKey,
    windowPrice: server ? server.windowPrice.toString(10) : null,
    windowSeconds: server ? server.windowSeconds : null,
    // The server's token: amounts above are in its smallest unit.
    token: server ? server.token : null,
    tokenSymbol: server ? server.tokenSymbol : null,
    tokenDecimals: server ? server.tokenDecimals : null,
    gaslessOpen: server ? server.gaslessOpen : null,
    streamId: app.stream?.id ?? null,
    streaming: Boolean(session.streaming),
    // Windows paid by this page load, oldest first.
    paid: Object.freeze(session.paid.map((p) => Object.freeze({ ...p }))),
    lastError: app.lastError,
    wallet: app.wallet?.address ?? null,
    // What the connected wallet asked its holder to sign (messages and
    // transactions) since it was connected.
    walletPrompts: app.wallet?.prompts ?? 0,
  });
}

function showError(code, detail) {
  if (detail) console.warn(`tollstream: ${code}: ${detail}`);
  app.lastError = code;
  app.message = { kind: 'error', text: describeError(code), code };
  update();
}

function showInfo(text) {
  app.message = { kind: 'info', text, code: '' };
  update();
}

// ---------------------------------------------------------------------------
// Streaming: start when the picture needs keys, stop on pause.
// ---------------------------------------------------------------------------

// Play and stop requests run one at a time, in order.
let queue = Promise.resolve();
function serial(task) {
  queue = queue.then(task, task);
  return queue;
}

/**
 * Starts, restarts or leaves alone the streaming session, from where the
 * picture is. Called on every playback event, on session changes, and once
 * a second.
 */
function reconcile() {
  if (app.starting || !app.connected || !session.server || !app.stream) return;
  if (!app.wantPlaying) {
    if (session.streaming) serial(() => session.stop());
    return;
  }
  if (!session.state) return;
  const count = player.segmentCount();
  const current = player.segmentAt(position());
  if (count === null || current === null) return;
  // The segment to buy next: the first one from here without a key. It is
  // the segment being played unless its key is already held, so a
  // resumed play never pays for a window twice.
  const needed = keyStore.firstMissing(app.stream.id, current);
  if (needed >= count) return;
  if (session.streaming) {
    // A seek elsewhere: restart from there (a new `play` replaces the session).
    if (session.coveredFrom() === needed) return;
  } else {
    const lead = Math.max(LEAD_WINDOWS * session.server.windowSeconds, MIN_LEAD_SECONDS);
    const start = player.segmentStart(needed);
    if (start === null || start - position() > lead) return;
  }
  startStreaming(needed);
}

function startStreaming(fromSegment) {
  app.starting = true;
  app.ended = false;
  update();
  serial(async () => {
    try {
      if (!app.wantPlaying) return;
      const playing = await session.play(app.stream.id, fromSegment);
      if (!playing) {
        // No channel (any more): the viewer has to buy time.
        app.wantPlaying = false;
        video.pause();
        if (!session.spent) showError('no_channel');
      } else {
        // Streaming again: whatever went wrong before is over.
        app.message = null;
        app.lastError = null;
      }
    } catch (error) {
      app.wantPlaying = false;
      video.pause();
      if (error instanceof RequestError) showError(error.code, error.message);
      else showError('bad_reply', String(error));
    } finally {
      app.starting = false;
      update();
    }
  });
}

/**
 * Whether a `pay` asks for a window too far ahead of the picture (after a
 * seek back, or while the video stalls): then the page declines it, stops
 * streaming, and starts again when playback gets close.
 */
function payTooEarly(req) {
  const start = player.segmentStart(req.first_segment);
  if (start === null || !session.server) return null;
  const lead = Math.max(LEAD_WINDOWS * session.server.windowSeconds, MIN_LEAD_SECONDS);
  const ahead = start - position();
  return ahead > lead + 2 * session.server.windowSeconds
    ? `playback is ${Math.round(ahead)} s behind segment ${req.first_segment}; the player will ask again`
    : null;
}

function onSessionEnded(code, message) {
  if (code === 'deferred') {
    update();
    return;
  }
  if (code === 'stream_ended') {
    // What was bought plays on to the end.
    app.ended = true;
    showInfo(describeError(code));
    return;
  }
  if (code === 'disconnected') {
    // Resumes on reconnection (reconcile on `connect`).
    showError(code, message);
    return;
  }
  app.wantPlaying = false;
  video.pause();
  showError(code, message);
}

// ---------------------------------------------------------------------------
// Buying.
// ---------------------------------------------------------------------------

async function connectWallet(connect) {
  app.buying = true;
  update();
  try {
    app.wallet = await connect();
    app.message = null;
    await refreshWalletBalance();
  } catch (error) {
    showError(walletErrorCode(error), error.shortMessage ?? error.message);
  } finally {
    app.buying = false;
    update();
  }
}

async function refreshWalletBalance() {
  if (!app.wallet) return;
  try {
    app.walletBalance = await app.wallet.balance();
  } catch {
    app.walletBalance = null;
  }
  update();
}

/** Whether a purchase on `server` is a gasless open: the wallet signs, the server sends. */
function gasless(server) {
  return sellsToken(server) && server.gaslessOpen && server.tokenDomain !== null;
}

/**
 * Buys `seconds` of stream. With the native coin: opens a channel on chain,
 * then `newChannel`. With a token on a gasless server: the wallet signs an
 * authorization and `openChannel` has the server open it. With another
 * token: the wallet opens it (permit or approve), then `newChannel`.
 * Either way the viewer confirms once (twice for a token without permits
 * whose allowance is short).
 */
async function buy(seconds) {
  const server = session.server;
  if (!app.wallet) {
    showError('no_wallet');
    return;
  }
  app.buying = true;
  const text = gasless(server)
    ? 'Sign the purchase in your wallet; the server then opens it for you, with no fee to pay…'
    : 'Confirm the purchase in your wallet, then wait for it to be mined…';
  app.message = { kind: 'info', text, code: '' };
  update();
  try {
    // Whole windows: the server only takes deposits that are multiples of its price.
    const { deposit } = purchaseFor(seconds, server.windowPrice, server.windowSeconds);
    // Well past the server's minimum: the server stops using a channel
    // some time before it expires (PROTOCOL.md D4).
    const lifetimeSeconds = Math.max(2 * server.minChannelSeconds, 86_400);
    const terms = { server, signer: session.account.address, deposit, lifetimeSeconds };
    if (!sellsToken(server)) {
      const channelId = await app.wallet.openChannel(terms);
      await session.announce({ channelId, wallet: app.wallet.address, deposit });
    } else if (gasless(server)) {
      const open = await app.wallet.authorizeOpen(terms);
      app.message = { kind: 'info', text: 'Signed. The server is opening your purchase on chain…', code: '' };
      update();
      await session.openGasless({ wallet: app.wallet.address, deposit, open });
    } else {
      const channelId = await app.wallet.openTokenChannel(terms);
      await session.announce({ channelId, wallet: app.wallet.address, deposit });
    }
    app.message = { kind: 'info', text: 'Bought. Press play to watch.', code: '' };
    app.lastError = null;
  } catch (error) {
    if (error instanceof RequestError) showError(error.code, error.message);
    else showError(walletErrorCode(error), error.shortMessage ?? error.message);
  } finally {
    app.buying = false;
    update();
  }
  refreshWalletBalance();
  reconcile();
}

// ---------------------------------------------------------------------------
// Streams and playback events.
// ---------------------------------------------------------------------------

function selectStream(id) {
  const stream = session.server?.streams.find((s) => s.id === id);
  if (!stream || stream.id === app.stream?.id) return;
  if (session.streaming) serial(() => session.stop());
  app.wantPlaying = false;
  app.ended = false;
  app.stream = stream;
  storage.selectedStream.set(stream.id);
  startPosition = storage.position.get(stream.id);
  startReached = startPosition === 0;
  player.load(stream, startPosition || -1);
  update();
}

elements.play.addEventListener('click', () => {
  if (!session.state && !app.buying) {
    // The seed's idle flow: play with no channel prompts to buy.
    showError('no_channel');
    return;
  }
  app.wantPlaying = true;
  video.play().catch(() => {});
  reconcile();
  update();
});

elements.pause.addEventListener('click', () => video.pause());

video.addEventListener('play', () => {
  app.wantPlaying = true;
  reconcile();
  update();
});
video.addEventListener('pause', () => {
  // The element also pauses at the very end of the media.
  app.wantPlaying = false;
  reconcile();
  update();
});
for (const event of ['seeked', 'timeupdate', 'playing']) {
  video.addEventListener(event, () => {
    if (!startReached && video.currentTime > 0) startReached = true;
    if (app.stream && video.currentTime > 0) storage.position.set(app.stream.id, video.currentTime);
    reconcile();
  });
}
video.addEventListener('waiting', reconcile);
video.addEventListener('ended', () => {
  // Watched to the end: next time starts from the beginning.
  if (app.stream) storage.position.set(app.stream.id, 0);
});
// hls.js asks for a key the page does not hold: maybe time to buy it.
keyStore.onMissing = () => queueMicrotask(reconcile);
// Playback stalls waiting for a key fire no events; look once a second.
setInterval(reconcile, 1000);

// ---------------------------------------------------------------------------
// Start-up: connect, learn the server, resume a channel.
// ---------------------------------------------------------------------------

socket.on('connect', async () => {
  app.connected = true;
  app.everConnected = true;
  update();
  try {
    if (!session.server) {
      await session.loadServer();
      const saved = storage.selectedStream.get();
      const streams = session.server.streams;
      const first = streams.find((s) => s.id === saved) ?? streams[0];
      if (!Player.isSupported()) showInfo('This browser cannot play the stream (no Media Source Extensions).');
      else if (first) selectStream(first.id);
      reconnectDemoWallet();
    }
    // Resume: the server's latest state of our channel, if it is ours.
    await session.refreshState();
  } catch (error) {
    if (error instanceof RequestError) showError(error.code, error.message);
    else showError('bad_reply', String(error));
  }
  reconcile();
});
socket.on('disconnect', () => {
  app.connected = false;
  update();
});
socket.on('connect_error', () => {
  app.connected = false;
  update();
});

const demoLoaded = (async () => {
  app.demo = await fetchDemoConfig();
  if (app.demo) {
    app.demoAddresses = app.demo.viewerKeys.map((_, index) => demoAddress(app.demo, index));
  }
  update();
})();

/** A demo wallet chosen on an earlier visit is connected again by itself. */
async function reconnectDemoWallet() {
  await demoLoaded;
  const index = storage.demoWalletIndex.get();
  if (app.wallet || !app.demo || !session.server || index === null || index >= app.demo.viewerKeys.length) return;
  connectWallet(() => connectDemo(session.server, app.demo, index));
}

update();
