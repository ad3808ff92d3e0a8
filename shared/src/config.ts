/**
 * Reading numeric settings from Worker vars, with defaults and bounds.
 */

export function intSetting(value: unknown, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined || value === null || value === "") return fallback;
  const n = typeof value === "number" ? value : Number(String(value));
  if (!Number.isFinite(n) || !Number.isInteger(n) || n < min || n > max) {
    throw new Error(`invalid integer setting: ${String(value)}`);
  }
  return n;
}

export const DEFAULTS = {
  VERDICT_SETTLE_SECONDS: 60,
  STALE_SESSION_MINUTES: 15,
  LEASE_TTL_SECONDS: 120,
  PAST_DUE_GRACE_DAYS: 7,
} as const;
