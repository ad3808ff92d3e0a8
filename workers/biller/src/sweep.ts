/**
 * The minute cron: post every paid period whose total Stripe has not confirmed (the durable
 * outbox behind the consumer), then close ended periods once they take no more usage and
 * their final total is confirmed.
 */
import type { Biller } from "./config";
import { type PostOutcome, postTotals, refKey } from "./posting";
import { closePeriods, overduePeriods, type PeriodRef, unpostedPeriods } from "./queries";

/** Periods posted per run (one Stripe call and ~3 D1 statements each). */
export const SWEEP_LIMIT = 150;
/** Cron runs are about a minute apart, not exactly: the sweep takes its turn slightly early. */
export const SWEEP_INTERVAL_SLACK_MS = 10_000;

export interface SweepResult {
  attempted: number;
  posted: number;
  failed: number;
  closed: number;
  overdue: number;
}

export async function sweep(b: Biller, now: number): Promise<SweepResult> {
  const rows = await unpostedPeriods(b.db, now, SWEEP_LIMIT);
  const byCustomer = new Map<string, PeriodRef[]>();
  for (const row of rows) {
    const list = byCustomer.get(row.stripe_customer_id) ?? [];
    list.push(row);
    byCustomer.set(row.stripe_customer_id, list);
  }
  const outcomes = await postTotals(b, byCustomer, {
    now,
    minIntervalMs: Math.max(0, b.config.postIntervalMs - SWEEP_INTERVAL_SLACK_MS),
  });
  const kinds = [...outcomes.values()].map((o: PostOutcome) => o.kind);

  // A period takes late sessions during the first half of Stripe's invoice grace (see
  // attribution.ts); after that it closes as soon as its final total is confirmed.
  const closed = await closePeriods(b.db, now - Math.floor(b.config.graceMs / 2), now);
  for (const row of closed) {
    b.log.info("usage period closed", { key: refKey(row), final_total: row.posted_total });
  }
  const overdue = await overduePeriods(b.db, now - b.config.graceMs);
  for (const row of overdue) {
    b.log.error("period total not confirmed before Stripe finalized its invoice", {
      key: refKey(row),
      billable: row.billable_sessions,
      posted: row.posted_total,
    });
  }
  const result: SweepResult = {
    attempted: rows.length,
    posted: kinds.filter((k) => k === "posted").length,
    failed: kinds.filter((k) => k === "transient" || k === "rejected").length,
    closed: closed.length,
    overdue: overdue.length,
  };
  if (rows.length > 0 || closed.length > 0) b.log.info("sweep done", { ...result });
  return result;
}
