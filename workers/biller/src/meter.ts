/**
 * Pure decisions about Stripe meter posts: the event timestamp, the identifier, the summary
 * window used by reconciliation, how a Stripe failure is handled, and retry backoff.
 *
 * The meter aggregates with `last`: per customer and invoice period, Stripe keeps the value of
 * the event with the latest timestamp. We post the absolute billable total of the period, so
 * every post must carry a timestamp inside the period and strictly later than the previous one.
 */
import { backoff } from "@aigate/shared";

/** Seconds at the end of a period kept for posts made after the period ended (grace window). */
export const POST_END_RESERVE_SECONDS = 600;
/** Stripe rejects timestamps more than 5 min in the future; stay under it. */
export const MAX_FUTURE_SECONDS = 240;

export interface TimestampInput {
  now: number;
  periodStart: number;
  periodEnd: number;
  /** Timestamp (s) of the last post reserved for this period, null when never posted. */
  lastTs: number | null;
}

/**
 * The timestamp (unix seconds) of the next post for a period, or null when no valid one exists
 * right now (the only slot would be too far in the future: try later).
 *
 * - inside [period start, period end), strictly after the last post (`last` picks the latest);
 * - never in the period's first partial minute, so the minute-aligned summary window of the
 *   period (see `summaryWindow`) never contains events of the next period;
 * - while the period runs, the current second; once it ended, the next free second of the
 *   reserve at its end, so several posts in the grace window still increase strictly;
 * - never equal to the last one: when the reserve is used up there is no valid timestamp (the
 *   series then waits to be frozen, and whatever Stripe did not bill is billed by adjustment).
 */
export function meterTimestamp({ now, periodStart, periodEnd, lastTs }: TimestampInput): number | null {
  const nowS = Math.floor(now / 1000);
  const startS = Math.ceil(periodStart / 1000);
  const lastInside = Math.ceil(periodEnd / 1000) - 1;
  if (lastInside < startS) return null;
  const firstMinute = Math.ceil(startS / 60) * 60;
  const firstLive = firstMinute <= lastInside ? firstMinute : startS;
  const base = nowS <= lastInside ? nowS : Math.max(firstLive, lastInside - POST_END_RESERVE_SECONDS + 1);
  const ts = Math.min(Math.max(base, firstLive, (lastTs ?? Number.NEGATIVE_INFINITY) + 1), lastInside);
  if (lastTs !== null && ts <= lastTs) return null;
  return ts > nowS + MAX_FUTURE_SECONDS ? null : ts;
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
 * Minute-aligned [start, end) in seconds covering a period, for meter event summaries (Stripe
 * requires minute boundaries). It may include the tail of the previous period, whose events are
 * older than any of this period's (so `last` still returns this period's total), and no event
 * of the next period (those start at its first whole minute, see `meterTimestamp`).
 */
export function summaryWindow(periodStart: number, periodEnd: number): { start: number; end: number } {
  return {
    start: Math.floor(periodStart / 60_000) * 60,
    end: Math.ceil(periodEnd / 60_000) * 60,
  };
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
