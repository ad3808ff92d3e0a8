/**
 * When things happen: settle windows, staleness and retry backoff. Pure functions.
 * (The settle window and staleness themselves are settings: config.ts.)
 */
import { backoff } from "@aigate/shared";

/** Where a session stands for judging. */
export type JudgeState =
  | "judged" // has its final verdict
  | "due" // settle window over, or stale: judge now
  | "settling" // `ended` seen, settle window still running
  | "live"; // no `ended`, recent telemetry: judged once stale

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

export const RETRY_BASE_SECONDS = 5;
export const RETRY_MAX_SECONDS = 600;

/** Exponential backoff for transient failures: 5 s, 10 s, 20 s ... capped at 10 min. */
export function retryDelaySeconds(attempts: number): number {
  return backoff(attempts, { base: RETRY_BASE_SECONDS, max: RETRY_MAX_SECONDS, maxDoublings: 30 });
}
