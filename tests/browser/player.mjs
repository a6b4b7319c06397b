// The player page in a real browser: headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core; no browser is downloaded)
// against a running `tollstream demo` server.
//
// As a viewer would, it: picks the demo wallet, buys 1 minute, presses
// play, and watches. It checks that
//   - frames decode (videoWidth/videoHeight > 0, currentTime advances) past
//     two windows, and the page's shown balance is the deposit less exactly
//     the payments made (deposit − payments × window_price);
//   - after a reload the channel resumes at the server's stored sequence
//     number, payments continue at sequence + 1, and no segment is paid twice;
//   - played to the end of the purchase, the page says the time is used up,
//     and the server's `latestState` for the page's key is null;
//   - the page loads nothing from any host but the server (and talks to
//     nothing but the server and the demo's chain node);
//   - the page is served with its Content-Security-Policy (scripts only
//     from the server, nothing inline, connections to the server and the
//     demo's chain node) and the other security headers, and the whole run
//     breaks none of it: no `securitypolicyviolation` event, no CSP message
//     on the console.
// Screenshots of the playing page and of the used-up page go to
// <out>/player-playing.png and <out>/player-spent.png.
//
// With --token the server sells in an ERC-20 dollar with gasless opens
// (`tollstream demo --token`): its viewers hold the token and no ETH. The
// run then also checks that
//   - the page shows prices in dollars (`$…` and "per hour") and the
//     balance in dollars, still deposit − payments × window_price;
//   - the wallet is asked for exactly one signature for the purchase (the
//     page's count of wallet prompts), and for nothing while it plays;
//   - the viewer's ETH balance stays 0 and it sends no transaction (read
//     from the demo's chain node), while its token balance drops by the
//     deposit.
// Without --token, the purchase is one wallet transaction (one prompt) in ETH.
//
// With --until-playing the run ends once the page plays past two windows
// (after the purchase, the security headers and the first payments), with
// the same checks of foreign hosts and the Content-Security-Policy: enough
// to show the page works over another transport (https), in a quarter of
// the time.
//
// Usage:
//   node tests/browser/player.mjs --server http://127.0.0.1:PORT --out DIR \
//     [--timeout 300] [--chromium /usr/bin/chromium] [--console] \
//     [--server-cert CERT.pem] [--token] [--until-playing]
//
// An https server whose certificate no public CA signed is accepted with
// --server-cert: Chromium then trusts that certificate's public key, and
// only it (--ignore-certificate-errors-spki-list); Node's own requests
// trust the CA named by NODE_EXTRA_CA_CERTS.
//
// --console prints the page's console at the end (it is always printed on
// failure).
//
// The demo server should sell windows of a few seconds (e.g. `tollstream
// demo --window-seconds 6`): the run lasts about one minute of stream.
// Progress goes to stderr. Exit 0 on success, 1 with a message otherwise;
// the last stdout line is a JSON summary.

import { X509Certificate, createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { io } from 'socket.io-client';
import { createPublicClient, erc20Abi, getAddress, http, parseUnits, zeroAddress } from 'viem';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

class TestFailure extends Error {}

function fail(message) {
  throw new TestFailure(message);
}

function check(condition, message) {
  if (!condition) fail(message);
}

let step = 'starting';
/** What the page logged, for diagnosis. */
const pageConsole = [];
const started = Date.now();

function log(message) {
  const t = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`player-test ${t}s: ${message}\n`);
}

/** Fails if the page reached a host it should not, or broke its CSP. */
function checkOnlyAllowedHosts(requests, allowedOrigins, violations) {
  const foreign = requests.filter((url) => !url.startsWith('data:') && !allowedOrigins.has(new URL(url).origin));
  check(foreign.length === 0, `the page reached other hosts: ${JSON.stringify([...new Set(foreign)])}`);
  check(violations.length === 0, `the page broke its Content-Security-Policy: ${JSON.stringify(violations)}`);
}

function parseCommandLine() {
  const { values } = parseArgs({
    options: {
      server: { type: 'string' },
      out: { type: 'string' },
      timeout: { type: 'string', default: '300' },
      chromium: { type: 'string', default: '/usr/bin/chromium' },
      console: { type: 'boolean', default: false },
      'server-cert': { type: 'string' },
      token: { type: 'boolean', default: false },
      'until-playing': { type: 'boolean', default: false },
    },
  });
  check(values.server, '--server URL is required (a running `tollstream demo`)');
  check(values.out, '--out DIR is required (where the screenshot goes)');
  const timeout = Number(values.timeout);
  check(Number.isFinite(timeout) && timeout > 0, '--timeout must be a positive number of seconds');
  return {
    server: new URL(values.server).origin,
    out: resolve(values.out),
    timeoutMs: timeout * 1000,
    chromium: values.chromium,
    console: values.console,
    serverCert: values['server-cert'],
    token: values.token,
    untilPlaying: values['until-playing'],
  };
}

/** Chromium's pin of a certificate: base64 of the SHA-256 of its public key (SPKI). */
function spkiPin(pemFile) {
  const spki = new X509Certificate(readFileSync(pemFile)).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

// ---------------------------------------------------------------------------
// Reading the page.
// ---------------------------------------------------------------------------

/**
 * One consistent reading of the page: the test hook, the visible meter and
 * the video element, taken in one task of the page so they agree.
 */
function readPage(page) {
  return page.evaluate(() => {
    const video = document.getElementById('video');
    const text = (id) => document.getElementById(id)?.textContent ?? '';
    return {
      hook: window.tollstream?.state ?? null,
      shown: {
        balance: text('balance'),
        payments: text('payments'),
        timeLeft: text('time-left'),
        status: text('status'),
        message: text('message'),
      },
      video: {
        currentTime: video.currentTime,
        videoWidth: video.videoWidth,
        videoHeight: video.videoHeight,
        paused: video.paused,
        readyState: video.readyState,
      },
      localStorage: Object.fromEntries(Object.keys(localStorage).map((k) => [k, localStorage.getItem(k)])),
    };
  });
}

/** Polls `readPage` until `predicate(reading)` holds; fails after `ms`. */
async function waitFor(page, what, predicate, ms) {
  step = `waiting for ${what}`;
  const deadline = Date.now() + ms;
  let reading;
  for (;;) {
    reading = await readPage(page);
    if (reading.hook?.lastError && !['disconnected', 'stream_ended'].includes(reading.hook.lastError)) {
      fail(`the page shows error ${reading.hook.lastError}: "${reading.shown.message}"`);
    }
    if (predicate(reading)) return reading;
    if (Date.now() > deadline) {
      fail(`${what} did not happen within ${ms / 1000} s; the page: ${JSON.stringify(summaryOf(reading))}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function summaryOf(reading) {
  const { hook, shown, video } = reading;
  return {
    status: hook?.status,
    sequence: hook?.sequence,
    clientBalance: hook?.clientBalance,
    lastError: hook?.lastError,
    shown,
    video,
  };
}

/**
 * A shown amount in the server's token, in its smallest unit: `0.0009 ETH`
 * → wei; for a dollar token `$0.0108` → millionths (for 6 decimals), with
 * at least two decimals, as the page promises.
 */
function shownUnits(text, hook) {
  const symbol = hook.tokenSymbol;
  const decimals = hook.tokenDecimals;
  const pattern = symbol.toUpperCase().includes('USD')
    ? /^\$([0-9]+\.[0-9]{2,})$/
    : new RegExp(`^([0-9]+(?:\\.[0-9]+)?) ${symbol.replace(/[^A-Za-z0-9]/g, '\\$&')}$`);
  const match = pattern.exec(text.trim());
  check(match, `the shown amount ${JSON.stringify(text)} is not an amount of ${symbol}`);
  return parseUnits(match[1], decimals);
}

/**
 * The page's balance, as shown and in the hook, is the deposit less exactly
 * `payments` windows.
 */
function checkBalance(reading, deposit, price, what) {
  const { hook, shown } = reading;
  const payments = hook.payments;
  const expected = deposit - BigInt(payments) * price;
  check(hook.clientBalance === expected.toString(),
    `${what}: the hook's balance ${hook.clientBalance} is not deposit ${deposit} − ${payments} × ${price} = ${expected}`);
  check(shownUnits(shown.balance, hook) === expected,
    `${what}: the page shows a balance of ${shown.balance}, expected ${expected} units after ${payments} payments`);
  check(shown.payments === String(payments), `${what}: the page shows ${shown.payments} payments, the hook ${payments}`);
  return expected;
}

/**
 * The page's response headers: a Content-Security-Policy that lets scripts
 * and styles come only from the server, allows nothing inline or
 * evaluated, and lets the page connect to the server and `rpcOrigin` only;
 * the headers against sniffing, framing, openers and referrers; and HSTS
 * exactly when the page came over `https`.
 */
function checkSecurityHeaders(headers, rpcOrigin, https) {
  const policy = headers['content-security-policy'];
  check(policy, 'the page has no Content-Security-Policy header');
  const directives = new Map(policy.split(';').map((d) => d.trim().split(/\s+/)).map(([name, ...sources]) => [name, sources]));
  const sources = (name) => JSON.stringify(directives.get(name) ?? null);
  check(sources('default-src') === `["'none'"]`, `default-src is ${sources('default-src')} in ${policy}`);
  check(sources('script-src') === `["'self'"]`, `script-src is ${sources('script-src')} in ${policy}`);
  check(sources('style-src') === `["'self'"]`, `style-src is ${sources('style-src')} in ${policy}`);
  check(sources('connect-src') === JSON.stringify(["'self'", rpcOrigin]),
    `connect-src is ${sources('connect-src')}, not 'self' and the chain node ${rpcOrigin}, in ${policy}`);
  for (const name of ['frame-ancestors', 'base-uri', 'form-action']) {
    check(sources(name) === `["'none'"]`, `${name} is ${sources(name)} in ${policy}`);
  }
  check(!/unsafe-|\*/.test(policy), `the policy allows unsafe or wildcard sources: ${policy}`);
  const expected = {
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'x-frame-options': 'DENY',
    'cross-origin-opener-policy': 'same-origin',
  };
  for (const [name, value] of Object.entries(expected)) {
    check(headers[name] === value, `the page's ${name} is ${JSON.stringify(headers[name])}, not ${value}`);
  }
  // HSTS from a server that speaks TLS itself, and only from one.
  const hsts = headers['strict-transport-security'];
  check(https ? /^max-age=[1-9]/.test(hsts ?? '') : hsts === undefined,
    `the page's strict-transport-security over ${https ? 'https' : 'http'} is ${JSON.stringify(hsts)}`);
  log(`the page's policy: ${policy}`);
}

/** The server's `latestState` for `clientPublicKey`, asked from Node. */
async function latestState(server, clientPublicKey) {
  const socket = io(server, { transports: ['websocket'], reconnection: false });
  try {
    await new Promise((ok, ko) => {
      socket.once('connect', ok);
      socket.once('connect_error', ko);
    });
    return await socket.timeout(10_000).emitWithAck('latestState', { client_public_key: clientPublicKey });
  } finally {
    socket.disconnect();
  }
}

/** What the viewer's wallet has on the demo's chain: ETH, sent transactions, the token. */
async function walletOnChain(chain, token, address) {
  const [eth, transactions, tokens] = await Promise.all([
    chain.getBalance({ address }),
    chain.getTransactionCount({ address }),
    token === zeroAddress
      ? Promise.resolve(null)
      : chain.readContract({ address: token, abi: erc20Abi, functionName: 'balanceOf', args: [address] }),
  ]);
  return { eth, transactions, tokens };
}

/**
 * The prices the page shows in the server's token: each stream's per
 * minute and per hour, and the purchase buttons. For a dollar token they
 * read `$…` and the hour's price is exactly window_price × 3600 /
 * window_seconds.
 */
async function checkPrices(page, hook, price, windowSeconds) {
  const prices = await page.locator('#streams .price').allTextContents();
  const buttons = await page.locator('button.buy-option').allTextContents();
  check(prices.length > 0 && buttons.length > 0, 'the page shows no prices');
  const perHour = (price * 3600n) / BigInt(windowSeconds);
  for (const text of prices) {
    const match = /^(.+) per minute · (.+) per hour$/.exec(text);
    check(match, `the price ${JSON.stringify(text)} is not per minute and per hour`);
    check(shownUnits(match[2], hook) === perHour,
      `the page prices an hour at ${match[2]}, not ${perHour} units (${price} per ${windowSeconds} s)`);
    if (hook.tokenSymbol.toUpperCase().includes('USD')) check(/^\$.*\$/.test(text), `the price ${JSON.stringify(text)} is not in dollars`);
  }
  for (const text of buttons) {
    const match = /^Buy .+ · (.+)$/.exec(text);
    check(match, `the purchase button ${JSON.stringify(text)} shows no price`);
    shownUnits(match[1], hook);
  }
  log(`the page's prices: ${JSON.stringify(prices)}; ${JSON.stringify(buttons)}`);
}

// ---------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------

async function run(options, context) {
  const page = context.pages()[0] ?? await context.newPage();
  page.on('console', (message) => pageConsole.push(`[${message.type()}] ${message.text()}`));
  page.on('pageerror', (error) => pageConsole.push(`[pageerror] ${error.message}`));

  // Every request the page makes: only the server's origin, and the demo's
  // chain node for JSON-RPC, may be reached.
  const requests = [];
  // Every Content-Security-Policy violation, across reloads: the page's
  // `securitypolicyviolation` events and Chromium's console reports.
  const violations = [];
  await page.exposeFunction('__tollstreamCspViolation', (violation) => violations.push(violation));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__tollstreamCspViolation(`${e.effectiveDirective} refused ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  page.on('console', (message) => {
    if (/Content.Security.Policy|Trusted Type/i.test(message.text())) violations.push(`console: ${message.text()}`);
  });
  // Stalls (the video's \`waiting\` events), for the summary: keys arrive
  // as they are paid for, so this shows whether payment keeps up.
  await page.addInitScript(() => {
    window.__stalls = 0;
    document.addEventListener('waiting', () => { window.__stalls += 1; }, true);
  });
  page.on('request', (request) => requests.push(request.url()));

  step = 'opening the page';
  log(`opening ${options.server}/`);
  const response = await page.goto(`${options.server}/`);
  check(response?.ok(), `GET / answered ${response?.status()}`);
  const demo = await (await fetch(`${options.server}/demo.json`)).json();
  const allowedOrigins = new Set([options.server, new URL(demo.rpc_url).origin]);
  const chain = createPublicClient({ transport: http(demo.rpc_url) });
  checkSecurityHeaders(await response.allHeaders(), new URL(demo.rpc_url).origin, options.server.startsWith('https:'));

  step = 'choosing the demo wallet';
  await page.locator('#use-demo-wallet').click({ timeout: 20_000 });
  await waitFor(page, 'the demo wallet', (r) => Boolean(r.hook?.wallet), 20_000);
  const first = await waitFor(page, 'the server information', (r) => r.hook?.windowPrice !== null && r.hook?.streamId, 20_000);
  const price = BigInt(first.hook.windowPrice);
  const windowSeconds = first.hook.windowSeconds;
  check(first.hook.sequence === null, `a fresh browser already has a channel at sequence ${first.hook.sequence}`);
  const windows = Math.ceil(60 / windowSeconds - 1e-9);
  const deposit = BigInt(windows) * price;
  const unit = first.hook.tokenSymbol;
  log(`server: ${price} units of ${unit} per ${windowSeconds} s window; 1 minute = ${windows} windows = ${deposit} units`);
  check(windows >= 4, `the server's windows are ${windowSeconds} s; the test needs at least 4 in a minute`);

  // The token: the server's, the demo's, and a dollar with gasless opens
  // under --token; ETH otherwise.
  const token = getAddress(first.hook.token);
  if (options.token) {
    check(token !== zeroAddress, 'the server sells in ETH, not a token');
    check(typeof demo.token === 'string' && getAddress(demo.token) === token,
      `the server's token ${token} is not the demo's ${demo.token}`);
    check(first.hook.tokenSymbol === demo.token_symbol && first.hook.tokenDecimals === demo.token_decimals,
      `the page's token is ${first.hook.tokenSymbol}/${first.hook.tokenDecimals}, the demo's ${demo.token_symbol}/${demo.token_decimals}`);
    check(/USD/i.test(first.hook.tokenSymbol), `the demo's token ${first.hook.tokenSymbol} is not a dollar`);
    check(first.hook.gaslessOpen === true, 'the server offers no gasless open');
  } else {
    check(token === zeroAddress && first.hook.tokenSymbol === 'ETH', `the server sells in ${first.hook.tokenSymbol}, not ETH`);
  }
  await checkPrices(page, first.hook, price, windowSeconds);
  const viewer = getAddress(first.hook.wallet);
  const before = await walletOnChain(chain, token, viewer);
  log(`the viewer ${viewer} holds ${before.eth} wei and ${before.tokens ?? '-'} units of the token, ${before.transactions} transactions sent`);
  if (options.token) {
    check(before.eth === 0n, `the token demo's viewer holds ${before.eth} wei, not 0`);
    check(before.tokens >= deposit, `the viewer holds ${before.tokens} units of the token, less than ${deposit}`);
  }
  check(first.hook.walletPrompts === 0, `the wallet was asked ${first.hook.walletPrompts} times before buying`);

  step = 'buying 1 minute';
  await page.locator('button.buy-option[data-seconds="60"]').click();
  const bought = await waitFor(page, 'the purchase', (r) => r.hook?.clientBalance === deposit.toString() && r.hook.status === 'ready',
    options.token ? 150_000 : 60_000);
  checkBalance(bought, deposit, price, 'after buying');
  // One confirmation: the ETH transaction, or the token's authorization.
  check(bought.hook.walletPrompts === 1, `the purchase asked the wallet ${bought.hook.walletPrompts} times, not once`);
  const afterPurchase = await walletOnChain(chain, token, viewer);
  if (options.token) {
    check(afterPurchase.eth === 0n && afterPurchase.transactions === 0,
      `the gasless purchase cost the viewer ${afterPurchase.eth} wei and ${afterPurchase.transactions} transactions`);
    check(afterPurchase.tokens === before.tokens - deposit,
      `the viewer's token balance went from ${before.tokens} to ${afterPurchase.tokens}, not down by the deposit ${deposit}`);
    // The wallet panel shows what the wallet holds of the token (refreshed
    // just after the purchase).
    const shownHoldings = async () => {
      const text = (await page.locator('#wallet-balance').textContent()) ?? '';
      return text.startsWith('Holds ') ? shownUnits(text.slice('Holds '.length), bought.hook) : null;
    };
    const deadline = Date.now() + 10_000;
    while (await shownHoldings() !== afterPurchase.tokens && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    const holds = await page.locator('#wallet-balance').textContent();
    check(await shownHoldings() === afterPurchase.tokens,
      `the wallet panel reads ${JSON.stringify(holds)}, not the ${afterPurchase.tokens} units the viewer holds`);
    log(`the wallet panel reads ${JSON.stringify(holds)}`);
  } else {
    check(afterPurchase.transactions === before.transactions + 1,
      `the purchase sent ${afterPurchase.transactions - before.transactions} transactions, not one`);
  }
  log(`bought channel ${bought.hook.channelId}; the page shows ${bought.shown.balance}`);

  step = 'playing';
  await page.locator('#play').click();
  const twoWindows = 2 * windowSeconds;
  const playing = await waitFor(page, `playback past two windows (${twoWindows} s)`,
    (r) => r.video.currentTime > twoWindows + 0.5, 30_000 + 3 * twoWindows * 1000);
  check(playing.video.videoWidth > 0 && playing.video.videoHeight > 0,
    `no decoded frames: the video is ${playing.video.videoWidth}×${playing.video.videoHeight}`);
  await new Promise((r) => setTimeout(r, 1000));
  const later = await readPage(page);
  check(later.video.currentTime > playing.video.currentTime,
    `currentTime does not advance: ${playing.video.currentTime} then ${later.video.currentTime}`);
  check(later.hook.status === 'streaming', `the page is ${later.hook.status} while playing, not streaming`);
  checkBalance(later, deposit, price, 'while playing');
  check(later.hook.payments >= 2, `only ${later.hook.payments} payments after two windows of playback`);
  check(later.hook.walletPrompts === 1, `the wallet was asked ${later.hook.walletPrompts} times by the time it plays`);
  log(`playing at ${later.video.currentTime.toFixed(1)} s, ${later.video.videoWidth}×${later.video.videoHeight}, ` +
    `${later.hook.payments} payments, the page shows ${later.shown.balance}`);
  mkdirSync(options.out, { recursive: true });
  const screenshot = join(options.out, 'player-playing.png');
  await page.screenshot({ path: screenshot });
  if (options.untilPlaying) {
    checkOnlyAllowedHosts(requests, allowedOrigins, violations);
    return {
      ok: true,
      until_playing: true,
      token,
      token_symbol: first.hook.tokenSymbol,
      wallet_prompts: bought.hook.walletPrompts,
      window_seconds: windowSeconds,
      window_price: price.toString(),
      windows,
      payments: later.hook.payments,
      video: { width: later.video.videoWidth, height: later.video.videoHeight },
      screenshot,
      seconds: Math.round((Date.now() - started) / 1000),
    };
  }

  // Reload mid-stream, as a viewer pressing F5 would.
  step = 'reloading';
  const beforeReload = await readPage(page);
  const paidBefore = beforeReload.hook.paid;
  const positionBefore = beforeReload.video.currentTime;
  log(`reloading at ${positionBefore.toFixed(1)} s after ${beforeReload.hook.payments} payments`);
  await page.reload();
  const resumed = await waitFor(page, 'the channel after the reload',
    (r) => r.hook?.sequence !== null && r.hook?.sequence !== undefined && r.hook.status !== 'connecting', 20_000);
  // The stored sequence is the page's last one, or one more if a payment
  // was in flight when the page went away.
  const stored = await latestState(options.server, resumed.hook.clientPublicKey);
  check(stored !== null, 'latestState is null after the reload, with time left');
  check(resumed.hook.sequence === stored.client_sequence_number,
    `after the reload the page is at sequence ${resumed.hook.sequence}, the server at ${stored.client_sequence_number}`);
  check(resumed.hook.sequence >= beforeReload.hook.sequence && resumed.hook.sequence <= beforeReload.hook.sequence + 1,
    `after the reload the page is at sequence ${resumed.hook.sequence}; before it was ${beforeReload.hook.sequence}`);
  check(resumed.hook.channelId === beforeReload.hook.channelId, 'the reload lost the channel');
  checkBalance(resumed, deposit, price, 'after the reload');
  const resumedAt = resumed.hook.sequence;
  log(`resumed channel at sequence ${resumedAt}, the page shows ${resumed.shown.balance}`);

  step = 'playing after the reload';
  await page.locator('#play').click();
  const continuing = await waitFor(page, 'a payment after the reload', (r) => r.hook.paid.length > 0, 30_000);
  check(continuing.hook.paid[0].sequence === resumedAt + 1,
    `the first payment after the reload is sequence ${continuing.hook.paid[0].sequence}, not ${resumedAt + 1}`);
  check(continuing.video.currentTime >= positionBefore - windowSeconds - 1,
    `playback restarted at ${continuing.video.currentTime.toFixed(1)} s, not near ${positionBefore.toFixed(1)} s`);

  // Pausing stops paying: no `pay` is answered while paused.
  step = 'pausing';
  await page.locator('#pause').click();
  const paused = await waitFor(page, 'the paused state', (r) => r.hook.status === 'paused' && !r.hook.streaming, 10_000);
  await new Promise((r) => setTimeout(r, (2 * windowSeconds + 1) * 1000));
  const stillPaused = await readPage(page);
  check(stillPaused.hook.sequence === paused.hook.sequence,
    `payments went on while paused: sequence ${paused.hook.sequence} then ${stillPaused.hook.sequence}`);
  check(/paused/i.test(stillPaused.shown.status), `the page's status reads "${stillPaused.shown.status}" while paused`);
  checkBalance(stillPaused, deposit, price, 'while paused');
  log(`paused for ${2 * windowSeconds + 1} s at sequence ${paused.hook.sequence}: no payment`);
  await page.locator('#play').click();

  step = 'playing until the time is used up';
  const spent = await waitFor(page, 'the used-up state', (r) => r.hook.status === 'spent',
    (windows + 4) * windowSeconds * 1000 + 30_000);
  check(/used up/i.test(spent.shown.status), `the page's status reads "${spent.shown.status}", not that the time is used up`);
  check(spent.hook.clientBalance === null, 'the page still holds a channel after its final secret');
  check(shownUnits(spent.shown.balance, spent.hook) === 0n, `the page shows a balance of ${spent.shown.balance} when spent`);
  // Paying by the second asked the wallet nothing (the reload reconnected it).
  check(spent.hook.walletPrompts === 0, `the wallet was asked ${spent.hook.walletPrompts} times while playing after the reload`);
  const atEnd = await walletOnChain(chain, token, viewer);
  if (options.token) {
    check(atEnd.eth === 0n && atEnd.transactions === 0,
      `by the end the viewer holds ${atEnd.eth} wei and sent ${atEnd.transactions} transactions`);
  }
  check(spent.video.videoWidth > 0, 'no picture at the end');
  await page.screenshot({ path: join(options.out, 'player-spent.png') });
  const buyAgain = await page.locator('button.buy-option').count();
  check(buyAgain > 0, 'the used-up page offers no purchase');

  // Every window of the channel paid exactly once, in order.
  const paid = [...paidBefore, ...spent.hook.paid];
  const sequences = paid.map((p) => p.sequence);
  const segments = paid.flatMap((p) => Array.from({ length: p.segmentCount }, (_, i) => p.firstSegment + i));
  check(new Set(segments).size === segments.length, `a segment was paid twice: ${JSON.stringify(segments)}`);
  check(sequences.at(-1) === windows, `the last payment is sequence ${sequences.at(-1)}, the purchase had ${windows} windows`);
  const afterReload = spent.hook.paid.map((p) => p.sequence);
  check(afterReload.every((s, i) => s === resumedAt + 1 + i), `payments after the reload: ${JSON.stringify(afterReload)}`);
  const stallsAfterReload = await page.evaluate(() => window.__stalls);
  const latest = await latestState(options.server, spent.hook.clientPublicKey);
  check(latest === null, `latestState after the final payment is not null: ${JSON.stringify(latest)}`);
  log(`used up after ${windows} payments; segments paid ${JSON.stringify(segments)}`);

  checkOnlyAllowedHosts(requests, allowedOrigins, violations);

  return {
    ok: true,
    token,
    token_symbol: first.hook.tokenSymbol,
    wallet_prompts: bought.hook.walletPrompts,
    viewer_eth_wei: atEnd.eth.toString(),
    viewer_transactions: atEnd.transactions,
    window_seconds: windowSeconds,
    window_price: price.toString(),
    windows,
    payments_before_reload: paidBefore.length,
    resumed_at_sequence: resumedAt,
    payments_after_reload: spent.hook.paid.length,
    segments_paid: segments,
    stalls_after_reload: stallsAfterReload,
    video: { width: later.video.videoWidth, height: later.video.videoHeight },
    screenshot,
    seconds: Math.round((Date.now() - started) / 1000),
  };
}

async function main() {
  let options;
  try {
    options = parseCommandLine();
  } catch (error) {
    process.stderr.write(`player-test: ${error.message}\n`);
    return 1;
  }
  const profile = mkdtempSync(join(tmpdir(), 'tollstream-chromium-'));
  let context = null;
  let timer;
  try {
    step = 'launching Chromium';
    context = await chromium.launchPersistentContext(profile, {
      executablePath: options.chromium,
      headless: true,
      args: options.serverCert
        ? [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${spkiPin(options.serverCert)}`]
        : CHROMIUM_ARGS,
      viewport: { width: 1280, height: 800 },
    });
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new TestFailure(`the run did not finish within ${options.timeoutMs / 1000} s`)),
        options.timeoutMs);
    });
    const summary = await Promise.race([run(options, context), timeout]);
    if (options.console) process.stderr.write(`page console:\n  ${pageConsole.join('\n  ')}\n`);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  } catch (error) {
    const text = error instanceof TestFailure ? error.message : (error.stack ?? String(error));
    process.stderr.write(`player-test: FAILED while ${step}: ${text}\n`);
    if (pageConsole.length) process.stderr.write(`page console (last lines):\n  ${pageConsole.slice(-40).join('\n  ')}\n`);
    process.stdout.write(`${JSON.stringify({ ok: false, step, error: text })}\n`);
    return 1;
  } finally {
    clearTimeout(timer);
    await context?.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

process.exit(await main());
