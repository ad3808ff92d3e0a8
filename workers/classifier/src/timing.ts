/**
 * When things happen: settle windows, staleness and retry backoff. Pure functions.
 */
import { DEFAULTS, intSetting, QUEUE_LIMITS } from "@aigate/shared";

export interface Settings {
  /** Wait after `ended` is first received before judging (VERDICT_SETTLE_SECONDS). */
  settleMs: number;
  /** A session without telemetry for this long is judged on what was seen (STALE_SESSION_MINUTES). */
  staleMs: number;
}

export function readSettings(env: {
  VERDICT_SETTLE_SECONDS?: unknown;
  STALE_SESSION_MINUTES?: unknown;
}): Settings {
  const settle = intSetting(
    env.VERDICT_SETTLE_SECONDS,
    DEFAULTS.VERDICT_SETTLE_SECONDS,
    0,
    QUEUE_LIMITS.maxDelaySeconds,
  );
  const stale = intSetting(env.STALE_SESSION_MINUTES, DEFAULTS.STALE_SESSION_MINUTES, 1, 7 * 24 * 60);
  return { settleMs: settle * 1000, staleMs: stale * 60_000 };
}

/** Where a session stands for judging. */
export type JudgeState =
  | "judged" // has its final verdict
  | "due" // settle window over, or stale: judge now
  | "settling" // `ended` seen, settle window still running: remind later
  | "live"; // no `ended`, recent telemetry: the cron judges it once stale

export interface JudgeClock {
  verdict_at: number | null;
  settle_due_at: number | null;
  last_seen_at: number;
}

export function judgeState(s: JudgeClock, now: number, staleMs: number): JudgeState {
  if (s.verdict_at !== null) return "judged";
  if (s.settle_due_at !== null && s.settle_due_at <= now) return "due";
  if (s.last_seen_at <= now - staleMs) return "due";
  return s.settle_due_at !== null ? "settling" : "live";
}

/** A queue delay that ends at or after `dueAt` (whole seconds, within the Queues maximum). */
export function delaySecondsUntil(dueAt: number, now: number): number {
  const seconds = Math.ceil((dueAt - now) / 1000);
  return Math.min(Math.max(seconds, 0), QUEUE_LIMITS.maxDelaySeconds);
}

export const RETRY_BASE_SECONDS = 5;
export const RETRY_MAX_SECONDS = 600;

/** Exponential backoff for transient failures: 5 s, 10 s, 20 s ... capped at 10 min. */
export function retryDelaySeconds(attempts: number): number {
  const n = Math.max(1, Math.floor(attempts));
  return Math.min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** Math.min(n - 1, 30));
}
