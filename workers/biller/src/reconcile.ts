/**
 * Hourly reconciliation: compares each recent paid period's billable total with what Stripe's
 * meter event summaries hold, re-posts our absolute total where they differ (idempotent: a
 * `last` meter keeps the latest total) while Stripe still invoices the period, and keeps a
 * report in reconciliation_runs for the admin API.
 *
 * Sharded D1: each shard is reconciled in turn and keeps its own run (and report) in its own
 * reconciliation_runs; one log line sums them. A shard that fails does not stop the others; the
 * run then fails with the first error (its shard's run row stays unfinished).
 */
import { errorFields, settleEveryShard } from "@aigate/shared";
import type Stripe from "stripe";
import { type Biller, onShard } from "./config";
import { classifyStripeError, summaryWindow } from "./meter";
import { postTotals, refKey } from "./posting";
import {
  finishReconciliationRun,
  insertReconciliationRun,
  markReconciled,
  type PeriodRef,
  periodsToReconcile,
  type UsagePeriodRow,
} from "./queries";

const DAY_MS = 86_400_000;
/** Stripe keeps meter events of the last 35 days. */
export const RECONCILE_LOOKBACK_MS = 35 * DAY_MS;
/** Periods checked per run (one or two Stripe calls each), least recently checked first. */
export const RECONCILE_LIMIT = 200;
/** Stripe aggregates meter events asynchronously: skip totals posted more recently than this. */
export const RECONCILE_SETTLE_MS = 5 * 60_000;

export interface ReconcileOptions {
  now: number;
  limit?: number;
  settleMs?: number;
}

export type ReportAction =
  /** Stripe differed; our total was re-posted and Stripe now agrees. */
  | "reposted"
  /** Re-posted, but Stripe still shows another total (checked again next run). */
  | "reposted_unconfirmed"
  /** The re-post failed; the error is in the entry. */
  | "repost_failed"
  /** Stripe already finalized the period's invoice: needs an operator (credit note or charge). */
  | "invoice_finalized"
  /** Our total is not posted yet: the minute sweep owns it. */
  | "awaiting_sweep";

export interface ReportEntry {
  user_id: string;
  stripe_customer_id: string;
  plan: string;
  period_start: number;
  period_end: number;
  ours: number;
  stripe: number | null;
  action: ReportAction;
  error?: string;
}

export interface ReconcileResult {
  /** The run recorded on each shard reconciled (in shard order). */
  runs: string[];
  checked: number;
  mismatches: number;
  repaired: number;
  report: ReportEntry[];
}

const meterIds = new WeakMap<Stripe, Map<string, string>>();

/** The active meter's id for an event name (cached per client in the isolate). */
export async function meterIdFor(stripe: Stripe, eventName: string, refresh = false): Promise<string> {
  let cache = meterIds.get(stripe);
  if (!cache) {
    cache = new Map();
    meterIds.set(stripe, cache);
  }
  const hit = cache.get(eventName);
  if (hit && !refresh) return hit;
  for await (const meter of stripe.billing.meters.list({ status: "active", limit: 100 })) {
    if (meter.event_name === eventName) {
      cache.set(eventName, meter.id);
      return meter.id;
    }
  }
  throw new Error(`no active Stripe meter with event name ${eventName}`);
}

/** Stripe's aggregated value of a customer's meter over a period's summary window. */
async function stripeTotal(b: Biller, row: UsagePeriodRow): Promise<number> {
  const eventName = row.meter_event_name;
  if (!eventName) throw new Error("the series names no meter");
  const window = summaryWindow(row.period_start, row.period_end);
  if (!window) throw new Error("the series' window lies inside one minute: not reconciled");
  const read = async (meterId: string) => {
    const page = await b.stripe.billing.meters.listEventSummaries(meterId, {
      customer: row.stripe_customer_id,
      start_time: window.start,
      end_time: window.end,
    });
    return page.data.reduce((sum, s) => sum + s.aggregated_value, 0);
  };
  try {
    return await read(await meterIdFor(b.stripe, eventName));
  } catch (err) {
    const failure = classifyStripeError(err);
    if (failure.kind === "rejected" && /no such billing meter/i.test(failure.message)) {
      return read(await meterIdFor(b.stripe, eventName, true));
    }
    throw err;
  }
}

/** Reconciles every shard, one after the other; the result sums them (reports concatenated). */
export async function reconcile(b: Biller, opts: ReconcileOptions): Promise<ReconcileResult> {
  const total: ReconcileResult = { runs: [], checked: 0, mismatches: 0, repaired: 0, report: [] };
  const { results, failure } = await settleEveryShard(b.shards, b.log, "reconciliation", (db) =>
    reconcileShard(onShard(b, db), opts),
  );
  for (const run of results) {
    total.runs.push(run.id);
    total.checked += run.checked;
    total.mismatches += run.mismatches;
    total.repaired += run.repaired;
    total.report.push(...run.report);
  }
  if (total.runs.length > 0)
    b.log.info("reconciliation done", {
      runs: total.runs,
      checked: total.checked,
      mismatches: total.mismatches,
      repaired: total.repaired,
    });
  if (failure) throw failure.error;
  return total;
}

/** Reconciles the biller's shard and records the run there. */
async function reconcileShard(
  b: Biller,
  opts: ReconcileOptions,
): Promise<{ id: string; checked: number; mismatches: number; repaired: number; report: ReportEntry[] }> {
  const { now } = opts;
  const settleMs = opts.settleMs ?? RECONCILE_SETTLE_MS;
  const id = crypto.randomUUID();
  await insertReconciliationRun(b.db, id, now).run();
  const rows = await periodsToReconcile(
    b.db,
    now - RECONCILE_LOOKBACK_MS,
    now,
    b.config.graceMs,
    opts.limit ?? RECONCILE_LIMIT,
  );
  const report: ReportEntry[] = [];
  const checked: PeriodRef[] = [];
  let mismatches = 0;
  let repaired = 0;
  for (const row of rows) {
    const entry = (stripe: number | null, action: ReportAction, error?: string): ReportEntry => ({
      user_id: row.user_id,
      stripe_customer_id: row.stripe_customer_id,
      plan: row.plan,
      period_start: row.period_start,
      period_end: row.period_end,
      ours: row.billable_sessions,
      stripe,
      action,
      ...(error === undefined ? {} : { error }),
    });
    if (row.billable_sessions !== row.posted_total) {
      report.push(entry(null, "awaiting_sweep"));
      continue;
    }
    if (row.posted_at !== null && row.posted_at > now - settleMs) continue;
    let stripe: number;
    try {
      stripe = await stripeTotal(b, row);
    } catch (err) {
      b.log.warn("reading Stripe meter summary failed", { key: refKey(row), ...errorFields(err) });
      continue;
    }
    checked.push(row);
    if (stripe === row.billable_sessions) continue;
    mismatches += 1;
    if (now >= row.period_end + b.config.graceMs) {
      report.push(entry(stripe, "invoice_finalized"));
      continue;
    }
    const outcome = (await postTotals(b, [row], { now, repair: true })).get(refKey(row));
    if (outcome?.kind !== "posted") {
      const error =
        outcome?.kind === "transient" || outcome?.kind === "rejected" ? outcome.error : outcome?.kind;
      report.push(entry(stripe, "repost_failed", error));
      continue;
    }
    const after = await stripeTotal(b, row).catch(() => null);
    if (after === row.billable_sessions) repaired += 1;
    report.push(entry(stripe, after === row.billable_sessions ? "reposted" : "reposted_unconfirmed"));
  }
  const finishedAt = Math.max(now, Date.now());
  await b.db.batch([
    // every period looked at moves to the back of the rotation, checked or skipped
    markReconciled(b.db, rows, now),
    finishReconciliationRun(b.db, { id, finishedAt, checked: checked.length, mismatches, repaired, report }),
  ]);
  return { id, checked: checked.length, mismatches, repaired, report };
}
