/** Rates with their 95% Wilson score intervals. */

/** The two-sided 95% quantile of the standard normal distribution. */
export const Z95 = 1.959963984540054;

export interface Rate {
  /** Successes. */
  k: number;
  /** Trials; rate and interval are null when it is 0. */
  n: number;
  rate: number | null;
  low: number | null;
  high: number | null;
}

/** k of n with the Wilson score interval (no continuity correction), which stays inside [0, 1] and is sound at 0 and n. */
export function wilson(k: number, n: number, z = Z95): Rate {
  if (!Number.isInteger(k) || !Number.isInteger(n) || k < 0 || n < 0 || k > n) throw new RangeError(`wilson: need integers 0 <= k <= n, got k=${k}, n=${n}`);
  if (n === 0) return { k, n, rate: null, low: null, high: null };
  const p = k / n;
  const z2 = z * z;
  const denom = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denom;
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / denom;
  return { k, n, rate: p, low: k === 0 ? 0 : Math.max(0, centre - half), high: k === n ? 1 : Math.min(1, centre + half) };
}
