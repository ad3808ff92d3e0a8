/**
 * The minute cron: post every paid series whose total Stripe has not confirmed (the durable
 * outbox behind the consumer), move sessions whose plan history changed (re-attribution), and
 * bill by adjustment what frozen series counted beyond what Stripe billed.
 */
import { freezeCoveredSeries } from "@aigate/shared/stripeSync/queries";
import { adjust } from "./adjust";
import type { Biller } from "./config";
import { type PostOutcome, postTotals, refKey } from "./posting";
import { overdueSeries, unpostedSeries } from "./queries";
import { reattribute } from "./reattribute";

/** Series posted per run (one Stripe call and ~3 D1 statements each). */
export const SWEEP_LIMIT = 150;
/** Cron runs are about a minute apart, not exactly: the sweep takes its turn slightly early. */
export const SWEEP_INTERVAL_SLACK_MS = 10_000;

export interface SweepResult {
  attempted: number;
  posted: number;
  failed: number;
  overdue: number;
  moved: number;
  frozen: number;
  adjusted: number;
}

export async function sweep(b: Biller, now: number): Promise<SweepResult> {
  // re-attribution first: the posts below then carry the moved totals
  const moved = await reattribute(b, now);
  const rows = await unpostedSeries(b.db, now, SWEEP_LIMIT);
  const outcomes = await postTotals(b, rows, {
    now,
    minIntervalMs: Math.max(0, b.config.postIntervalMs - SWEEP_INTERVAL_SLACK_MS),
  });
  const kinds = [...outcomes.values()].map((o: PostOutcome) => o.kind);
  const frozen = await freezeCoveredSeries(b.db, now).run();
  const adjusted = await adjust(b, now);

  const overdue = await overdueSeries(b.db, now - b.config.graceMs);
  for (const row of overdue) {
    b.log.error("series total not confirmed before Stripe finalized its invoice", {
      key: refKey(row),
      billable: row.billable_sessions,
      posted: row.posted_total,
    });
  }
  const result: SweepResult = {
    attempted: rows.length,
    posted: kinds.filter((k) => k === "posted").length,
    failed: kinds.filter((k) => k === "transient" || k === "rejected").length,
    overdue: overdue.length,
    moved: moved.moved,
    frozen: frozen.meta.changes ?? 0,
    adjusted: adjusted.reserved + adjusted.created,
  };
  if (rows.length > 0 || moved.moved > 0 || result.adjusted > 0) b.log.info("sweep done", { ...result });
  return result;
}
