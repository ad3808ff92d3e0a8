/**
 * The minute cron: post every paid series whose total Stripe has not confirmed (the durable
 * outbox behind the consumer), move sessions whose plan history changed (re-attribution), and
 * bill by adjustment what frozen series counted beyond what Stripe billed.
 *
 * Sharded D1: the whole sweep runs on each shard in turn (its series, re-attributions, freezing
 * and adjustments are its users'), and one log line sums them. A shard that fails does not stop
 * the others; the run then fails with the first error (the next minute's run takes over).
 */
import {
  addOutcome,
  type DeadLetter,
  deadLetterId,
  insertDeadLetters,
  QUEUES,
  settleEveryShard,
  type UsageMessage,
} from "@aigate/shared";
import {
  coveredSeriesCandidates,
  freezeCoveredSeries,
  upsertInvoiceLines,
} from "@aigate/shared/stripeSync/queries";
import { invoicesInStripe } from "@aigate/shared/stripeSync/sync";
import { adjust } from "./adjust";
import { type Biller, onShard } from "./config";
import { type PostOutcome, postTotals, refKey } from "./posting";
import { overdueSeries, unpostedSeries } from "./queries";
import { reattribute } from "./reattribute";

/** Series posted per run (one Stripe call and ~3 D1 statements each). */
export const SWEEP_LIMIT = 150;
/** Subscriptions whose covered series one run may freeze (each costs a Stripe invoice listing). */
export const FREEZE_LIMIT = 20;
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

/**
 * A series whose post Stripe rejected, at the start of its streak of failures, is parked as a
 * usage message for it (what the consumer would have parked): operators see it with the others
 * and replay it once the cause is fixed. Later rejections of the same streak park nothing more;
 * the sweep keeps retrying with backoff meanwhile.
 */
async function parkRejected(
  b: Biller,
  rows: readonly { user_id: string; plan: UsageMessage["series"][number]["plan"]; period_start: number }[],
  outcomes: Map<string, PostOutcome>,
  now: number,
): Promise<void> {
  const letters: DeadLetter[] = [];
  for (const row of rows) {
    const outcome = outcomes.get(refKey(row));
    if (outcome?.kind !== "rejected" || outcome.again === true) continue;
    const body: UsageMessage = {
      v: 2,
      kind: "usage",
      series: [{ user_id: row.user_id, plan: row.plan, period_start: row.period_start }],
      judged: 0,
      judged_at: now,
    };
    const messageId = `sweep:${refKey(row)}:${now}`;
    letters.push({
      id: deadLetterId(QUEUES.verdicts, messageId),
      queue: QUEUES.verdicts,
      message_id: messageId,
      body: JSON.stringify(body),
      error: `Stripe rejected the meter post: ${outcome.error}`,
      attempts: 1,
      failed_at: now,
    });
  }
  if (letters.length === 0) return;
  await insertDeadLetters(b.shards.home, letters).run();
  for (const l of letters) b.log.warn("series parked", { id: l.id, reason: l.error });
}

/**
 * Freezes the series no webhook froze (sessions judged after their invoice): for each candidate
 * D1 sees, Stripe's invoices of the subscription are read and their lines stored in the freezing
 * batch, and a subscription Stripe still holds a draft for is left to a later run.
 */
async function freezeCovered(b: Biller, now: number): Promise<number> {
  const { results } = await coveredSeriesCandidates(b.db, now, FREEZE_LIMIT).all<{
    stripe_subscription_id: string;
    since: number;
  }>();
  const verified: string[] = [];
  const statements: D1PreparedStatement[] = [];
  for (const c of results) {
    try {
      const inStripe = await invoicesInStripe(b.stripe, c.stripe_subscription_id, c.since);
      if (inStripe.latestDraft !== null) continue;
      if (inStripe.lines.length > 0) statements.push(upsertInvoiceLines(b.db, inStripe.lines));
      verified.push(c.stripe_subscription_id);
    } catch (err) {
      b.log.warn("freezing deferred: Stripe's invoices not read", {
        subscription_id: c.stripe_subscription_id,
        error: String(err),
      });
    }
  }
  if (verified.length === 0) return 0;
  const written = await b.db.batch([...statements, freezeCoveredSeries(b.db, now, verified)]);
  return written.at(-1)?.meta.changes ?? 0;
}

/** The sweep of every shard, one after the other; the result sums them. */
export async function sweep(b: Biller, now: number): Promise<SweepResult> {
  const total: SweepResult = {
    attempted: 0,
    posted: 0,
    failed: 0,
    overdue: 0,
    moved: 0,
    frozen: 0,
    adjusted: 0,
  };
  const { results, failure } = await settleEveryShard(b.shards, b.log, "sweep", (db) =>
    sweepShard(onShard(b, db), now),
  );
  for (const result of results) addOutcome(total, result);
  if (total.attempted > 0 || total.moved > 0 || total.adjusted > 0) b.log.info("sweep done", { ...total });
  if (failure) throw failure.error;
  return total;
}

/** The sweep of the biller's shard. */
async function sweepShard(b: Biller, now: number): Promise<SweepResult> {
  // re-attribution first: the posts below then carry the moved totals
  const moved = await reattribute(b, now);
  const rows = await unpostedSeries(b.db, now, SWEEP_LIMIT);
  const outcomes = await postTotals(b, rows, {
    now,
    minIntervalMs: Math.max(0, b.config.postIntervalMs - SWEEP_INTERVAL_SLACK_MS),
  });
  const kinds = [...outcomes.values()].map((o: PostOutcome) => o.kind);
  await parkRejected(b, rows, outcomes, now);
  const frozen = await freezeCovered(b, now);
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
    frozen,
    adjusted: adjusted.reserved + adjusted.created,
  };
  return result;
}
