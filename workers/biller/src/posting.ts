/**
 * Posting absolute series totals to the Stripe meters: at most one call in flight per customer
 * (meter_locks) and at most one call per customer per invocation.
 *
 * Each series (user, plan, window) posts to its plan's meter (the series row names it), with a
 * timestamp inside its window, strictly later than its previous post. Per customer: take the lock
 * and read the series rows (one batch for all customers); pick the oldest series whose total
 * Stripe has not confirmed and that has a valid timestamp now; reserve its timestamp (written BEFORE the call, so a crash after
 * Stripe's success can never make a later post reuse an older timestamp); post the current total
 * read under the lock; then record what Stripe acknowledged and release the lock (one batch).
 * A total may go down (sessions re-attributed to another series): the later post wins on `last`.
 * Frozen series (Stripe has billed them) are never posted again: adjustments take over.
 */
import { mapLimit, type SeriesRef, seriesKey } from "@aigate/shared";
import { type Biller, METER_LOCK_TTL_MS, STRIPE_CONCURRENCY } from "./config";
import { classifyStripeError, meterIdentifier, meterTimestamp, nextPostAt } from "./meter";
import {
  acquireLock,
  commitPosted,
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
  /** Nothing to post: Stripe already confirmed the series' total. */
  | { kind: "up_to_date"; value: number }
  /** Stripe has billed the series; what it did not bill is the adjustments' business. */
  | { kind: "frozen" }
  /** Not attempted now; the usage is recorded and the minute sweep posts it. */
  | { kind: "deferred"; reason: string }
  /** 429, 5xx, network error after the SDK's own retries, or our commit failed: retry later. */
  | { kind: "transient"; error: string }
  /**
   * Stripe rejected the request as invalid (or the series cannot be posted): an operator must act.
   * `again`: the series' posts were already failing before this one (its streak of failures was
   * parked when it began, by whoever saw it first: the consumer with its message, or the sweep).
   */
  | { kind: "rejected"; error: string; again?: boolean };

export interface PostOptions {
  now: number;
  /**
   * Defer an open series posted less than this long ago (the consumer passes the configured
   * interval, the minute sweep a little less so it never misses its turn by a hair).
   */
  minIntervalMs?: number;
  /** Post even when the total looks confirmed (reconciliation's repair). */
  repair?: boolean;
}

interface PlannedPost {
  customer: string;
  row: UsagePeriodRow;
  eventName: string;
  ts: number;
  value: number;
}

export function refKey(ref: SeriesRef): string {
  return seriesKey(ref.user_id, ref.plan, ref.period_start);
}

/** Posts the totals of the given series; outcome per refKey. */
export async function postTotals(
  b: Biller,
  requested: readonly SeriesRef[],
  opts: PostOptions,
): Promise<Map<string, PostOutcome>> {
  const outcomes = new Map<string, PostOutcome>();
  const { db } = b;
  const now = opts.now;
  if (requested.length === 0) return outcomes;
  // One read of the series first: which customer each belongs to, and which need no post at all
  // (confirmed, frozen, posted less than the interval ago), so those customers are not locked.
  const unique = [...new Map(requested.map((r) => [refKey(r), r])).values()];
  const rows = await db.batch<UsagePeriodRow>(unique.map((ref) => selectPeriod(db, ref)));
  const byCustomer = new Map<string, SeriesRef[]>();
  unique.forEach((ref, k) => {
    const row = rows[k]?.results[0];
    if (!row) outcomes.set(refKey(ref), { kind: "rejected", error: "no paid usage series recorded" });
    else if (row.frozen_at !== null) outcomes.set(refKey(ref), { kind: "frozen" });
    else if (opts.repair !== true && row.billable_sessions === row.posted_total)
      outcomes.set(refKey(ref), { kind: "up_to_date", value: row.posted_total });
    else if (postedRecently(row, now, opts))
      outcomes.set(refKey(ref), { kind: "deferred", reason: "posted less than the posting interval ago" });
    else byCustomer.set(row.stripe_customer_id, [...(byCustomer.get(row.stripe_customer_id) ?? []), ref]);
  });
  if (byCustomer.size === 0) return outcomes;
  const holder = crypto.randomUUID();
  const customers = [...byCustomer.keys()];

  // 1. Locks and series rows, in one transaction.
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
    const pending: UsagePeriodRow[] = [];
    for (const ref of byCustomer.get(customer) ?? []) {
      const row = rowsOf<UsagePeriodRow>(first[i++])[0];
      if (!row) outcomes.set(refKey(ref), { kind: "rejected", error: "no paid usage series recorded" });
      else if (row.frozen_at !== null) outcomes.set(refKey(ref), { kind: "frozen" });
      else if (opts.repair !== true && row.billable_sessions === row.posted_total)
        outcomes.set(refKey(row), { kind: "up_to_date", value: row.posted_total });
      else pending.push(row);
    }
    if (acquired) locked.push(customer);
    // the oldest series that can be posted now: one with no valid timestamp left (it waits to be
    // frozen) does not hold back the customer's other series
    let chosen = false;
    for (const row of pending.sort((a, b2) => a.period_start - b2.period_start)) {
      if (!acquired)
        outcomes.set(refKey(row), { kind: "deferred", reason: "meter lock held by another consumer" });
      else if (chosen)
        outcomes.set(refKey(row), { kind: "deferred", reason: "one Stripe call per customer" });
      else if (row.meter_event_name && timestampFor(row, now) === null)
        outcomes.set(refKey(row), { kind: "deferred", reason: "no valid meter timestamp now" });
      else {
        candidates.push({ customer, row });
        chosen = true;
      }
    }
  }

  try {
    return await postLocked(b, candidates, locked, holder, outcomes, opts);
  } catch (err) {
    // D1 failed before the commit: free the locks now (else their lease expires) and let the caller retry
    await db.batch(locked.map((customer) => releaseLock(db, customer, holder))).catch(() => undefined);
    throw err;
  }
}

function timestampFor(row: UsagePeriodRow, now: number): number | null {
  return meterTimestamp({
    now,
    periodStart: row.period_start,
    periodEnd: row.period_end,
    lastTs: row.last_meter_ts,
  });
}

/** An open series whose total went to Stripe less than the posting interval ago waits its turn. */
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
  const reservations: { customer: string; row: UsagePeriodRow; eventName: string; ts: number }[] = [];
  for (const { customer, row } of candidates) {
    if (!row.meter_event_name) {
      outcomes.set(refKey(row), {
        kind: "rejected",
        error: "the series names no meter (its price is not metered)",
      });
      continue;
    }
    const ts = timestampFor(row, now);
    if (ts === null) outcomes.set(refKey(row), { kind: "deferred", reason: "no valid meter timestamp now" });
    else reservations.push({ customer, row, eventName: row.meter_event_name, ts });
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
  const results = await mapLimit(planned, STRIPE_CONCURRENCY, async (p) => postOne(b, p));

  // 4. Record what Stripe acknowledged (or why not) and release every lock we hold.
  const writes: D1PreparedStatement[] = [];
  planned.forEach((p, k) => {
    const result = results[k] ?? { kind: "transient", error: "no result" };
    const outcome: PostOutcome =
      result.kind === "rejected" ? { ...result, again: p.row.post_failures > 0 } : result;
    outcomes.set(refKey(p.row), outcome);
    if (outcome.kind === "posted") writes.push(commitPosted(db, p.row, outcome.value, p.ts, now));
    else if (outcome.kind === "transient" || outcome.kind === "rejected") {
      writes.push(recordPostFailure(db, p.row, outcome.error, nextPostAt(now, p.row.post_failures + 1), now));
    }
  });
  const releases = locked.map((customer) => releaseLock(db, customer, holder));
  if (writes.length + releases.length === 0) return outcomes;
  try {
    await db.batch([...writes, ...releases]);
  } catch (err) {
    b.log.error("recording meter posts failed", { error: String(err), posts: planned.length });
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

async function postOne(b: Biller, p: PlannedPost): Promise<PostOutcome> {
  const identifier = meterIdentifier(p.customer, p.row.plan, p.row.period_start, p.value, p.ts);
  try {
    await b.stripe.billing.meterEvents.create({
      event_name: p.eventName,
      payload: { stripe_customer_id: p.customer, value: String(p.value) },
      identifier,
      timestamp: p.ts,
    });
    b.log.info("meter total posted", {
      customer: p.customer,
      plan: p.row.plan,
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
      plan: p.row.plan,
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
