// Every error code of PROTOCOL.md §7, and the page's own failures, in words
// a viewer understands. The server's `message` is for developers and goes
// to the console only.

const WORDS = {
  bad_request: 'The player and the server misunderstood each other. Reload the page and try again.',
  unknown_channel: 'The server does not know your purchase. Buy stream time to start watching.',
  invalid_signature: 'The server could not verify this browser\'s signature. Reload the page and try again.',
  stale_sequence: 'Your payments got out of step with the server (is the stream open in another tab?). Press play to continue.',
  wrong_amount: 'A payment did not match the price. Press play to continue.',
  bad_deposit: 'The server did not accept the amount of your purchase. Buy again with one of the offered amounts.',
  channel_not_open: 'Your purchased time is used up or the purchase has been settled. Buy more time to keep watching.',
  channel_expiring: 'Your purchase is about to expire, so it can no longer pay. Buy new time to keep watching; what is left of the old one comes back to your wallet after it expires.',
  wrong_payee: 'That purchase pays someone other than this server.',
  not_streaming: 'Nothing was playing.',
  session_replaced: 'The stream started playing in another tab or window, so it stopped here.',
  pay_timeout: 'A payment took too long to reach the server. Press play to continue.',
  payment_refused: 'The player refused a payment request that did not match what you bought, and stopped.',
  unknown_stream: 'This stream is not on sale here any more.',
  stream_ended: 'You have reached the end of the stream.',
  rate_limited: 'The server is busy. Wait a moment, then press play again.',
  chain_unavailable: 'The server cannot reach the blockchain right now. Try again in a minute.',
  internal: 'The server had a problem. Try again in a minute.',
  // The page's own codes.
  disconnected: 'The connection to the server was lost. Press play to continue once it is back.',
  no_answer: 'The server did not answer. Check your connection and try again.',
  bad_reply: 'The server answered something unexpected. Reload the page and try again.',
  no_channel: 'You have no stream time left. Buy some to start watching.',
  no_wallet: 'Connect a wallet first: it pays for the stream time you buy.',
  wallet_rejected: 'The purchase was cancelled in your wallet.',
  insufficient_funds: 'Your wallet does not hold enough for this purchase and its network fee.',
  insufficient_tokens: 'Your wallet does not hold enough of the server\'s currency for this purchase.',
  wallet_failed: 'The purchase transaction failed.',
  media_failed: 'The video could not be loaded from the server.',
  server_unreachable: 'The server cannot be reached. Reload the page to try again.',
};

/** A wallet failure with a message for the viewer and, maybe, the page's error code. */
export class WalletError extends Error {
  constructor(message, pageCode = null) {
    super(message);
    /** One of the codes above, or null for the generic `wallet_failed`. */
    this.pageCode = pageCode;
  }
}

/** The viewer's words for `code`. */
export function describeError(code) {
  return WORDS[code] ?? `Something went wrong (${code}). Reload the page and try again.`;
}

/** A wallet or chain failure from viem, as one of the page's codes. */
export function walletErrorCode(error) {
  // The page's own wallet failures carry their code.
  if (typeof error?.pageCode === 'string' && WORDS[error.pageCode]) return error.pageCode;
  const chain = [];
  for (let e = error; e; e = e.cause) {
    chain.push(`${e.name ?? ''} ${e.code ?? ''} ${e.shortMessage ?? ''} ${e.message ?? ''}`);
    if (chain.length > 8) break;
  }
  const text = chain.join(' ');
  if (/UserRejected|4001|rejected the request|denied/i.test(text)) return 'wallet_rejected';
  if (/InsufficientFunds|insufficient funds|exceeds the balance/i.test(text)) return 'insufficient_funds';
  return 'wallet_failed';
}
