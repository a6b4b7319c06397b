// Numbers as the viewer reads them: ETH amounts and durations.

import { formatEther } from 'viem';

/**
 * `wei` in ETH, exact up to `maxDecimals` places (rounded beyond), with the
 * unit: `0.0006 ETH`.
 */
export function formatEth(wei, maxDecimals = 18) {
  const unit = 10n ** BigInt(18 - maxDecimals);
  const rounded = ((wei + unit / 2n) / unit) * unit;
  return `${formatEther(rounded)} ETH`;
}

/**
 * The price of `seconds` of stream at `windowPrice` per `windowSeconds`,
 * in wei (rounded down). `windowSeconds` may be fractional (D17), so the
 * ratio is taken in milliseconds.
 */
export function priceFor(seconds, windowPrice, windowSeconds) {
  const windowMs = BigInt(Math.round(windowSeconds * 1000));
  return (windowPrice * BigInt(Math.round(seconds * 1000))) / windowMs;
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
