// Numbers as the viewer reads them: amounts of the server's token,
// prices, and durations.
//
// Every amount on the wire is in the token's smallest unit (wei for ETH,
// millionths for a six-decimal dollar); the server's `token_symbol` and
// `token_decimals` say how to show it. A token whose symbol contains "USD"
// is shown as dollars (`$0.72`), any other with its symbol (`0.0009 ETH`),
// as the Rust side's `format_amount` does.

/** How a server's amounts are shown: `{symbol, decimals}` of its token. */
export function unitOf(server) {
  return { symbol: server.tokenSymbol, decimals: server.tokenDecimals };
}

/** ETH, the unit of a server that names no token (version 1). */
export const ETH = Object.freeze({ symbol: 'ETH', decimals: 18 });

/** Whether a symbol names a dollar stablecoin ("USDC", "tUSD"…). */
export function isDollar(symbol) {
  return symbol.toUpperCase().includes('USD');
}

/**
 * `amount` smallest units of `unit`, exact up to `maxDecimals` places
 * (rounded half up beyond), trailing zeros trimmed: `$0.72`, `$0.0108`,
 * `$1000.00` for dollars (at least two decimals), `0.0006 ETH` otherwise.
 */
export function formatAmount(amount, unit, maxDecimals = unit.decimals) {
  let units = amount;
  let places = unit.decimals;
  if (maxDecimals < places) {
    const step = 10n ** BigInt(places - maxDecimals);
    units = (amount + step / 2n) / step;
    places = maxDecimals;
  }
  const digits = units.toString(10).padStart(places + 1, '0');
  const whole = digits.slice(0, digits.length - places);
  let fraction = digits.slice(digits.length - places).replace(/0+$/, '');
  if (isDollar(unit.symbol)) {
    fraction = fraction.padEnd(2, '0');
    return `$${whole}.${fraction}`;
  }
  const number = fraction ? `${whole}.${fraction}` : whole;
  return unit.symbol ? `${number} ${unit.symbol}` : number;
}

/** `wei` in ETH, as `formatAmount` shows it: `0.0006 ETH`. */
export function formatEth(wei, maxDecimals = 18) {
  return formatAmount(wei, ETH, maxDecimals);
}

/**
 * The price of `seconds` of stream at `windowPrice` per `windowSeconds`,
 * in the token's smallest unit (rounded down). `windowSeconds` may be
 * fractional (D17), so the ratio is taken in milliseconds.
 */
export function priceFor(seconds, windowPrice, windowSeconds) {
  const windowMs = BigInt(Math.round(windowSeconds * 1000));
  return (windowPrice * BigInt(Math.round(seconds * 1000))) / windowMs;
}

/** How many decimals a price shows: all of a dollar's, up to 8 of anything else. */
const PRICE_DECIMALS = 8;

/** `$0.72 per hour`, `0.0009 ETH per hour`. */
export function formatPerHour(windowPrice, windowSeconds, unit) {
  return `${formatAmount(priceFor(3600, windowPrice, windowSeconds), unit, PRICE_DECIMALS)} per hour`;
}

/** `$0.012 per minute`, `0.000015 ETH per minute`. */
export function formatPerMinute(windowPrice, windowSeconds, unit) {
  return `${formatAmount(priceFor(60, windowPrice, windowSeconds), unit, PRICE_DECIMALS)} per minute`;
}

/** A price as the purchase buttons show it (up to 8 decimals). */
export function formatPrice(amount, unit) {
  return formatAmount(amount, unit, PRICE_DECIMALS);
}

/** Whole windows needed to cover `seconds`, and their deposit. */
export function purchaseFor(seconds, windowPrice, windowSeconds) {
  const windows = Math.max(1, Math.ceil(seconds / windowSeconds - 1e-9));
  return { windows, deposit: BigInt(windows) * windowPrice };
}

/** `75` → `1:15`, `3725` → `1:02:05`. */
export function formatDuration(totalSeconds) {
  const seconds = Math.max(0, Math.floor(totalSeconds));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  const two = (n) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}

/** `0x1234…abcd`. */
export function shortAddress(address) {
  return `${address.slice(0, 6)}…${address.slice(-4)}`;
}
