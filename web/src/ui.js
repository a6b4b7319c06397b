// The page's DOM: rendering only. Every server-provided string goes in as
// text, never as HTML.

import {
  formatAmount,
  formatDuration,
  formatPerHour,
  formatPerMinute,
  formatPrice,
  purchaseFor,
  shortAddress,
  unitOf,
} from './format.js';

const $ = (id) => document.getElementById(id);

export const elements = {
  video: $('video'),
  play: $('play'),
  pause: $('pause'),
  nowPlaying: $('now-playing'),
  overlay: $('overlay'),
  message: $('message'),
  connection: $('connection'),
  streams: $('streams'),
  balance: $('balance'),
  timeLeft: $('time-left'),
  payments: $('payments'),
  status: $('status'),
  buy: $('buy'),
  wallet: $('wallet'),
};

/** The purchases offered, in seconds of stream. */
export const PURCHASES = [
  { seconds: 60, label: '1 minute' },
  { seconds: 600, label: '10 minutes' },
  { seconds: 3600, label: '1 hour' },
];

/** What each status says to the viewer. */
const STATUS_TEXT = {
  connecting: 'Connecting to the server…',
  offline: 'Not connected to the server.',
  idle: 'No stream time. Buy some to start watching.',
  buying: 'Buying stream time…',
  ready: 'Ready. Press play.',
  starting: 'Starting…',
  streaming: 'Playing: paying as you watch.',
  waiting: 'Playing from what you already paid for.',
  paused: 'Paused: not paying.',
  spent: 'Your time is used up. Buy more to keep watching.',
  ended: 'End of the stream.',
};

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children) node.append(child);
  return node;
}

export function renderConnection(connected, everConnected) {
  const { connection } = elements;
  connection.textContent = connected ? 'Connected' : everConnected ? 'Reconnecting…' : 'Connecting…';
  connection.className = `pill ${connected ? 'online' : 'offline'}`;
}

/** The stream list with each stream's price per minute and per hour, in the server's token. */
export function renderStreams(server, selectedId, onSelect) {
  const list = elements.streams;
  list.replaceChildren();
  if (!server) return;
  if (server.streams.length === 0) {
    list.append(el('li', {}, 'Nothing is on sale right now.'));
    return;
  }
  const unit = unitOf(server);
  const perMinute = formatPerMinute(server.windowPrice, server.windowSeconds, unit);
  const perHour = formatPerHour(server.windowPrice, server.windowSeconds, unit);
  for (const stream of server.streams) {
    list.append(el('li', {},
      el('button', {
        type: 'button',
        class: 'stream',
        'data-stream': stream.id,
        'aria-pressed': String(stream.id === selectedId),
        onclick: () => onSelect(stream.id),
      },
      el('span', { class: 'title' }, stream.title),
      el('span', { class: 'price' }, `${perMinute} · ${perHour}`))));
  }
}

/**
 * The channel meter: balance (exact, in the server's token), time and
 * payments, and the status line.
 */
export function renderChannel({ server, state, finalState, status }) {
  const balance = (amount) => (server ? formatAmount(amount, unitOf(server)) : '—');
  if (state && server) {
    const windowsLeft = state.clientBalance / server.windowPrice;
    elements.balance.textContent = balance(state.clientBalance);
    elements.timeLeft.textContent = formatDuration(Number(windowsLeft) * server.windowSeconds);
    elements.payments.textContent = String(state.sequence);
  } else if (status === 'spent' && finalState) {
    elements.balance.textContent = balance(0n);
    elements.timeLeft.textContent = formatDuration(0);
    elements.payments.textContent = String(finalState.sequence);
  } else {
    elements.balance.textContent = balance(0n);
    elements.timeLeft.textContent = formatDuration(0);
    elements.payments.textContent = '0';
  }
  elements.status.textContent = STATUS_TEXT[status] ?? status;
  elements.status.dataset.status = status;
}

/** The purchase buttons, shown while there is no stream time left. */
export function renderBuy({ server, state, wallet, busy, onBuy }) {
  const box = elements.buy;
  box.replaceChildren();
  if (!server) return;
  if (state) {
    box.append(el('p', {}, 'You can buy more time once this runs out.'));
    return;
  }
  for (const { seconds, label } of PURCHASES) {
    const { deposit } = purchaseFor(seconds, server.windowPrice, server.windowSeconds);
    box.append(el('button', {
      type: 'button',
      class: 'buy-option',
      'data-seconds': String(seconds),
      disabled: !wallet || busy,
      onclick: () => onBuy(seconds),
    }, `Buy ${label} · ${formatPrice(deposit, unitOf(server))}`));
  }
  if (!wallet) box.append(el('p', {}, 'Connect a wallet below to buy.'));
}

/**
 * The wallet panel: the connected wallet and what it holds of the
 * server's token (`unit`), or the ways to connect one (the browser's
 * wallet, or a demo wallet on a demo server).
 */
export function renderWallet({ wallet, walletBalance, unit, injected, demo, demoAddresses, demoIndex, busy, onInjected, onDemo }) {
  const box = elements.wallet;
  box.replaceChildren();
  if (wallet) {
    box.append(
      el('p', {}, `${wallet.label}: `, el('span', { class: 'address', title: wallet.address }, shortAddress(wallet.address))),
      el('p', { class: 'muted', id: 'wallet-balance' }, walletBalance === null || !unit ? '' : `Holds ${formatAmount(walletBalance, unit, 6)}`),
    );
    return;
  }
  if (injected) {
    box.append(el('button', { type: 'button', id: 'connect-wallet', disabled: busy, onclick: onInjected }, 'Connect browser wallet'));
  }
  if (demo) {
    const select = el('select', { id: 'demo-wallet', 'aria-label': 'Demo wallet' });
    demoAddresses.forEach((address, index) => {
      select.append(el('option', { value: String(index), selected: index === demoIndex }, `Demo wallet ${index + 1} (${shortAddress(address)})`));
    });
    box.append(
      el('p', { class: 'muted' }, 'This is a demo server: its test chain funds a few wallets for you.'),
      select,
      el('button', { type: 'button', id: 'use-demo-wallet', disabled: busy, onclick: () => onDemo(Number(select.value)) }, 'Use demo wallet'),
    );
  }
  if (!injected && !demo) {
    box.append(el('p', { class: 'muted' }, 'No wallet found. Install a browser wallet (such as MetaMask) to buy stream time.'));
  }
}

/** The line under the player: an error in words, or information. */
export function renderMessage(message) {
  elements.message.textContent = message?.text ?? '';
  elements.message.className = `message ${message?.kind ?? ''}`;
  elements.message.dataset.code = message?.code ?? '';
}

/** Over the picture while there is nothing to show: what to do next. */
const OVERLAY_TEXT = {
  idle: 'Buy stream time to watch.',
  offline: 'Not connected to the server.',
};

export function renderControls({ stream, status, playing }) {
  elements.nowPlaying.textContent = stream ? stream.title : '';
  const overlay = OVERLAY_TEXT[status] ?? null;
  elements.overlay.hidden = overlay === null || (status === 'idle' && elements.video.currentTime > 0);
  elements.overlay.textContent = overlay ?? '';
  elements.play.disabled = !stream || playing || status === 'connecting' || status === 'offline';
  elements.pause.disabled = !playing;
}
