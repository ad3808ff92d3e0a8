/**
 * Exponential backoff, one formula for every retry schedule: the n-th attempt (1-based) waits
 * `base * 2^(n-1)`, the doubling stopping after `maxDoublings` and the wait capped at `max`.
 * Each caller keeps its own constants (and unit).
 */

export interface Backoff {
  base: number;
  max: number;
  maxDoublings: number;
}

export function backoff(attempt: number, { base, max, maxDoublings }: Backoff): number {
  const n = Math.max(1, Math.floor(attempt));
  return Math.min(max, base * 2 ** Math.min(n - 1, maxDoublings));
}
