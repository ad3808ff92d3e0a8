/**
 * Pure decisions about Stripe meter posts: the event timestamp, the identifier, the summary
 * window used by reconciliation, how a Stripe failure is handled, and retry backoff.
 *
 * The meter aggregates with `last`: per customer and invoice period, Stripe keeps the value of
 * the event with the latest timestamp. We post the absolute billable total of the period, so
 * every post must carry a timestamp inside the period and strictly later than the previous one.
 */
import { backoff } from "@aigate/shared";

/**
 * How far behind the current second a post's timestamp stays (and, once a window ended, how many
 * seconds before its last minute boundary its posts start from). Whenever Stripe cuts a window
 * short (a change or a cancellation now), at least this many seconds less one minute are left in
 * it after its last post, for what is judged during its final invoice's grace.
 */
export const POST_LAG_SECONDS = 600;

export interface TimestampInput {
  now: number;
  periodStart: number;
  periodEnd: number;
  /** Timestamp (s) of the last post reserved for this period, null when never posted. */
  lastTs: number | null;
}

/**
 * The timestamp (unix seconds) of the next post for a series, or null when no valid one exists
 * right now (then the series waits: to be posted later, or, once frozen, adjusted).
 *
 * - inside the series' window and never in the future: 600 s before the current second while the
 *   window runs, 600 s before its last minute boundary once it ended (the same rule: the earlier of
 *   the two), never before the window's start. A plan change or cancellation made after a post, even
 *   within the same second, sees it (Stripe bills usage before the change's second), and a window
 *   cut short by one still has about ten minutes of seconds after its last post, so posts made
 *   during its final invoice's grace still increase strictly inside it;
 * - strictly after the last post (`last` must never depend on equal timestamps): a post with no
 *   second left before the current one waits (null) rather than take a timestamp in the future;
 * - before the window's last whole minute boundary when the window spans one: the minute-aligned
 *   summary window of a series (see `summaryWindow`) then holds its own events only, never the
 *   previous or the next series' (which start at or after the boundary).
 */
export function meterTimestamp({ now, periodStart, periodEnd, lastTs }: TimestampInput): number | null {
  const nowS = Math.floor(now / 1000);
  const startS = Math.ceil(periodStart / 1000);
  const boundary = Math.floor(periodEnd / 60_000) * 60;
  const stop = boundary > startS ? boundary - 1 : Math.ceil(periodEnd / 1000) - 1;
  if (stop < startS) return null;
  const base = Math.min(nowS, stop + 1) - POST_LAG_SECONDS;
  const ts = Math.max(base, startS, (lastTs ?? Number.NEGATIVE_INFINITY) + 1);
  if (ts > stop || ts > nowS - 1) return null;
  return ts;
}

/**
 * Identifier of a post: the series, the total and its reserved timestamp. A retry of one post (a
 * crash after Stripe's success) carries the same identifier, so Stripe drops the copy inside its
 * ~24 h window (and, after it, the copy repeats the same total at the same timestamp: harmless).
 * Two different posts never share one: a total posted again later, higher or lower, has a later
 * timestamp, so Stripe never drops it as a duplicate.
 */
export function meterIdentifier(
  customer: string,
  plan: string,
  periodStart: number,
  value: number,
  ts: number,
): string {
  return `${customer}:${plan}:${periodStart}:${value}:${ts}`;
}

/**
 * Minute-aligned [start, end) in seconds for a series' meter event summary (Stripe requires minute
 * boundaries): from the minute its window starts in to its window's last whole minute boundary.
 * Its posts all lie in it (see `meterTimestamp`); the previous series' end before its start minute
 * and the next one's start after its end. Null for a window inside one minute (not reconciled).
 */
export function summaryWindow(periodStart: number, periodEnd: number): { start: number; end: number } | null {
  const start = Math.floor(periodStart / 60_000) * 60;
  const end = Math.floor(periodEnd / 60_000) * 60;
  return end > start && end * 1000 > periodStart ? { start, end } : null;
}

export type StripeFailure =
  /** Stripe already holds an event with this identifier (hence this very total). */
  | { kind: "duplicate" }
  /** 429, 5xx, network, conflicts: retry later with backoff. */
  | { kind: "transient"; message: string }
  /** Validation errors: retrying the same request cannot succeed; park with the reason. */
  | { kind: "rejected"; message: string };

function field(obj: object, name: string): unknown {
  return Reflect.get(obj, name);
}

export function classifyStripeError(err: unknown): StripeFailure {
  if (typeof err !== "object" || err === null) return { kind: "transient", message: String(err) };
  const type = field(err, "type");
  const message = String(field(err, "message") ?? "unknown error");
  const headers = field(err, "headers");
  const shouldRetry =
    typeof headers === "object" && headers !== null ? field(headers, "stripe-should-retry") : undefined;
  const code = field(err, "code");
  const detail = typeof code === "string" ? `${code}: ${message}` : message;
  if (type === "StripeInvalidRequestError") {
    if (field(err, "param") === "identifier" && /already exists/i.test(message)) return { kind: "duplicate" };
    if (shouldRetry === "true") return { kind: "transient", message: detail };
    return { kind: "rejected", message: detail };
  }
  return { kind: "transient", message: detail };
}

/** Queue retry delay for the n-th delivery (1-based): 10 s doubling, capped at 10 min. */
export function retryDelaySeconds(attempts: number): number {
  return backoff(attempts, { base: 10, max: 600, maxDoublings: 10 });
}

/** When the sweep may try a failing period again: 1 min doubling, capped at 1 h. */
export function nextPostAt(now: number, failures: number): number {
  return now + backoff(failures, { base: 60_000, max: 3_600_000, maxDoublings: 10 });
}
