/**
 * Posting absolute period totals to the Stripe meter: at most one call in flight per customer
 * (meter_locks) and at most one call per customer per invocation.
 *
 * Per customer: take the lock and read the period rows (one batch for all customers); pick the
 * oldest period whose total is not confirmed; reserve a meter timestamp strictly after the
 * previous one (written BEFORE the call, so a crash after Stripe's success can never make a
 * later post reuse an older timestamp); post the current billable total read under the lock;
 * then record what Stripe acknowledged and release the lock (one batch for all customers).
 */
import { errorFields, mapLimit } from "@aigate/shared";
import { periodKey } from "./attribution";
import { type Biller, METER_LOCK_TTL_MS, STRIPE_CONCURRENCY } from "./config";
import { classifyStripeError, meterIdentifier, meterTimestamp, nextPostAt } from "./meter";
import {
  acquireLock,
  commitPosted,
  type PeriodRef,
  recordPostFailure,
  releaseLock,
  reserveTimestamp,
  rowsOf,
  selectPeriod,
  type UsagePeriodRow,
} from "./queries";

export type PostOutcome =
  /** Stripe acknowledged this absolute total (or already held it: duplicate identifier). */
  | { kind: "posted"; value: number }
  /** Nothing to post: Stripe already confirmed the period's total. */
  | { kind: "up_to_date"; value: number }
  /** Not attempted now; the usage is recorded and the minute sweep posts it. */
  | { kind: "deferred"; reason: string }
  /** 429, 5xx, network error after the SDK's own retries, or our commit failed: retry later. */
  | { kind: "transient"; error: string }
  /** Stripe rejected the request as invalid: park with the reason. */
  | { kind: "rejected"; error: string };

export interface PostOptions {
  now: number;
  /**
   * Defer an open period posted less than this long ago (the consumer passes the configured
   * interval, the minute sweep a little less so it never misses its turn by a hair).
   */
  minIntervalMs?: number;
  /** Post even when the total looks confirmed, with a repair identifier (reconciliation). */
  repair?: boolean;
}

interface PlannedPost {
  customer: string;
  row: UsagePeriodRow;
  ts: number;
  value: number;
}

export function refKey(ref: PeriodRef): string {
  return periodKey(ref.user_id, ref.plan, ref.period_start);
}

/** Posts the totals of the given periods, grouped by Stripe customer; outcome per periodKey. */
export async function postTotals(
  b: Biller,
  requested: Map<string, PeriodRef[]>,
  opts: PostOptions,
): Promise<Map<string, PostOutcome>> {
  const outcomes = new Map<string, PostOutcome>();
  const { db } = b;
  const now = opts.now;
  // Periods posted less than the interval ago wait, and their customers are not even locked
  // (a lock costs two row writes): one read of the periods first.
  const byCustomer =
    (opts.minIntervalMs ?? 0) > 0 && opts.repair !== true && requested.size > 0
      ? await withoutRecentlyPosted(db, requested, outcomes, opts)
      : requested;
  if (byCustomer.size === 0) return outcomes;
  const holder = crypto.randomUUID();
  const customers = [...byCustomer.keys()];

  // 1. Locks and period rows, in one transaction.
  const first = await db.batch<Record<string, unknown>>(
    customers.flatMap((customer) => [
      acquireLock(db, customer, holder, now, METER_LOCK_TTL_MS),
      ...(byCustomer.get(customer) ?? []).map((ref) => selectPeriod(db, ref)),
    ]),
  );
  const locked: string[] = [];
  const candidates: { customer: string; row: UsagePeriodRow }[] = [];
  let i = 0;
  for (const customer of customers) {
    const acquired = (first[i++]?.results.length ?? 0) > 0;
    const rows: UsagePeriodRow[] = [];
    for (const ref of byCustomer.get(customer) ?? []) {
      const row = rowsOf<UsagePeriodRow>(first[i++])[0];
      if (!row) outcomes.set(refKey(ref), { kind: "rejected", error: "no paid usage period recorded" });
      else rows.push(row);
    }
    if (acquired) locked.push(customer);
    const pending = rows
      .filter((row) => {
        const due = opts.repair === true || row.billable_sessions > row.posted_total;
        if (!due) outcomes.set(refKey(row), { kind: "up_to_date", value: row.posted_total });
        return due;
      })
      .sort((a, b2) => a.period_start - b2.period_start);
    pending.forEach((row, index) => {
      if (postedRecently(row, now, opts))
        outcomes.set(refKey(row), { kind: "deferred", reason: "posted less than the posting interval ago" });
      else if (!acquired)
        outcomes.set(refKey(row), { kind: "deferred", reason: "meter lock held by another consumer" });
      else if (index > 0)
        outcomes.set(refKey(row), { kind: "deferred", reason: "one Stripe call per customer" });
      else candidates.push({ customer, row });
    });
  }

  try {
    return await postLocked(b, candidates, locked, holder, outcomes, opts);
  } catch (err) {
    // D1 failed before the commit: free the locks now (else their lease expires) and let the caller retry
    await db.batch(locked.map((customer) => releaseLock(db, customer, holder))).catch(() => undefined);
    throw err;
  }
}

async function withoutRecentlyPosted(
  db: D1Database,
  byCustomer: Map<string, PeriodRef[]>,
  outcomes: Map<string, PostOutcome>,
  opts: PostOptions,
): Promise<Map<string, PeriodRef[]>> {
  const refs = [...byCustomer.entries()].flatMap(([customer, list]) =>
    list.map((ref) => ({ customer, ref })),
  );
  const rows = await db.batch<UsagePeriodRow>(refs.map(({ ref }) => selectPeriod(db, ref)));
  const due = new Map<string, PeriodRef[]>();
  refs.forEach(({ customer, ref }, k) => {
    const row = rows[k]?.results[0];
    if (row && postedRecently(row, opts.now, opts)) {
      outcomes.set(refKey(ref), { kind: "deferred", reason: "posted less than the posting interval ago" });
    } else {
      due.set(customer, [...(due.get(customer) ?? []), ref]);
    }
  });
  return due;
}

/** An open period whose total went to Stripe less than the posting interval ago waits its turn. */
export function postedRecently(
  row: Pick<UsagePeriodRow, "posted_at" | "period_end">,
  now: number,
  opts: Pick<PostOptions, "minIntervalMs" | "repair">,
): boolean {
  const interval = opts.minIntervalMs ?? 0;
  if (opts.repair === true || interval <= 0 || row.posted_at === null) return false;
  return now < row.period_end && now - row.posted_at < interval;
}

async function postLocked(
  b: Biller,
  candidates: { customer: string; row: UsagePeriodRow }[],
  locked: string[],
  holder: string,
  outcomes: Map<string, PostOutcome>,
  opts: PostOptions,
): Promise<Map<string, PostOutcome>> {
  const { db } = b;
  const now = opts.now;
  // 2. Reserve a timestamp per post; read the total to post under the lock.
  const planned: PlannedPost[] = [];
  const reservations: { customer: string; row: UsagePeriodRow; ts: number }[] = [];
  for (const { customer, row } of candidates) {
    const ts = meterTimestamp({
      now,
      periodStart: row.period_start,
      periodEnd: row.period_end,
      lastTs: row.last_meter_ts,
    });
    if (ts === null) outcomes.set(refKey(row), { kind: "deferred", reason: "no valid meter timestamp yet" });
    else reservations.push({ customer, row, ts });
  }
  if (reservations.length > 0) {
    const reserved = await db.batch<{ billable_sessions: number }>(
      reservations.map((r) => reserveTimestamp(db, r.row, r.ts, r.row.last_meter_ts, now)),
    );
    reservations.forEach((r, k) => {
      const value = reserved[k]?.results[0]?.billable_sessions;
      if (value === undefined) {
        outcomes.set(refKey(r.row), { kind: "deferred", reason: "meter timestamp reservation lost" });
      } else planned.push({ ...r, value });
    });
  }

  // 3. One Stripe call per planned customer, a few customers at a time.
  const results = await mapLimit(planned, STRIPE_CONCURRENCY, async (p) => postOne(b, p, opts));

  // 4. Record what Stripe acknowledged (or why not) and release every lock we hold.
  const writes: D1PreparedStatement[] = [];
  planned.forEach((p, k) => {
    const outcome = results[k] ?? { kind: "transient", error: "no result" };
    outcomes.set(refKey(p.row), outcome);
    if (outcome.kind === "posted") writes.push(commitPosted(db, p.row, outcome.value, now));
    else if (outcome.kind === "transient" || outcome.kind === "rejected") {
      writes.push(recordPostFailure(db, p.row, outcome.error, nextPostAt(now, p.row.post_failures + 1), now));
    }
  });
  const releases = locked.map((customer) => releaseLock(db, customer, holder));
  if (writes.length + releases.length === 0) return outcomes;
  try {
    await db.batch([...writes, ...releases]);
  } catch (err) {
    b.log.error("recording meter posts failed", { ...errorFields(err), posts: planned.length });
    for (const p of planned) {
      const outcome = outcomes.get(refKey(p.row));
      if (outcome?.kind === "posted") {
        outcomes.set(refKey(p.row), { kind: "transient", error: `posted but not recorded: ${String(err)}` });
      }
    }
    if (releases.length > 0) await db.batch(releases).catch(() => undefined); // else the lease expires
  }
  return outcomes;
}

async function postOne(b: Biller, p: PlannedPost, opts: PostOptions): Promise<PostOutcome> {
  const identifier = meterIdentifier(p.customer, p.row.period_start, p.value, opts.repair ? p.ts : undefined);
  try {
    await b.stripe.billing.meterEvents.create({
      event_name: b.config.meterEventName,
      payload: { stripe_customer_id: p.customer, value: String(p.value) },
      identifier,
      timestamp: p.ts,
    });
    b.log.info("meter total posted", {
      customer: p.customer,
      period_start: p.row.period_start,
      value: p.value,
      ts: p.ts,
    });
    return { kind: "posted", value: p.value };
  } catch (err) {
    const failure = classifyStripeError(err);
    if (failure.kind === "duplicate") {
      b.log.info("meter total already held by Stripe", { customer: p.customer, identifier });
      return { kind: "posted", value: p.value };
    }
    b.log.warn("meter post failed", {
      customer: p.customer,
      period_start: p.row.period_start,
      value: p.value,
      failure: failure.kind,
      error: failure.message,
    });
    return failure.kind === "transient"
      ? { kind: "transient", error: failure.message }
      : { kind: "rejected", error: failure.message };
  }
}
