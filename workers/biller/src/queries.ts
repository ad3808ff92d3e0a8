/**
 * The biller's SQL. Tables: session_usage, usage_periods, meter_locks, reconciliation_runs,
 * dead_letters (written), plan_history, stripe_customers, billing_periods, sessions (read or
 * cleared). Bulk statements take one JSON parameter read with json_each.
 */
import type { PaidPlanId, PlanId } from "@aigate/shared";
import type { AccountSnapshot, BillingPeriodRow, PlanHistoryRow } from "./attribution";
import { periodKey } from "./attribution";

/** Rows of one statement of a mixed db.batch (our own tables: typed like `.all<Row>()`). */
export function rowsOf<Row>(result: D1Result<Record<string, unknown>> | undefined): Row[] {
  return (result?.results ?? []) as unknown as Row[];
}

// ---------------------------------------------------------------------------------------------
// Attribution: everything about the users of one batch, in one round trip.

export async function loadAccounts(
  db: D1Database,
  userIds: string[],
  since: number,
): Promise<AccountSnapshot> {
  const users = JSON.stringify(userIds);
  const [history, customers, periods, closed] = await db.batch<Record<string, unknown>>([
    db
      .prepare(
        `SELECT user_id, effective_from, plan, stripe_subscription_id FROM plan_history
         WHERE user_id IN (SELECT value FROM json_each(?1)) ORDER BY user_id, effective_from`,
      )
      .bind(users),
    db
      .prepare(
        `SELECT user_id, stripe_customer_id FROM stripe_customers WHERE user_id IN (SELECT value FROM json_each(?1))`,
      )
      .bind(users),
    db
      .prepare(
        `SELECT stripe_subscription_id, period_start, period_end FROM billing_periods
         WHERE stripe_subscription_id IN (
           SELECT stripe_subscription_id FROM plan_history
           WHERE user_id IN (SELECT value FROM json_each(?1)) AND stripe_subscription_id IS NOT NULL)
         ORDER BY stripe_subscription_id, period_start`,
      )
      .bind(users),
    db
      .prepare(
        `SELECT user_id, plan, period_start FROM usage_periods
         WHERE user_id IN (SELECT value FROM json_each(?1)) AND closed_at IS NOT NULL AND period_end > ?2`,
      )
      .bind(users, since),
  ]);
  const snapshot: AccountSnapshot = {
    history: new Map(),
    customers: new Map(),
    periods: new Map(),
    closed: new Set(),
  };
  for (const row of rowsOf<PlanHistoryRow>(history)) {
    const list = snapshot.history.get(row.user_id) ?? [];
    list.push(row);
    snapshot.history.set(row.user_id, list);
  }
  for (const row of rowsOf<{ user_id: string; stripe_customer_id: string }>(customers)) {
    snapshot.customers.set(row.user_id, row.stripe_customer_id);
  }
  for (const row of rowsOf<BillingPeriodRow>(periods)) {
    const list = snapshot.periods.get(row.stripe_subscription_id) ?? [];
    list.push(row);
    snapshot.periods.set(row.stripe_subscription_id, list);
  }
  for (const row of rowsOf<{ user_id: string; plan: PlanId; period_start: number }>(closed)) {
    snapshot.closed.add(periodKey(row.user_id, row.plan, row.period_start));
  }
  return snapshot;
}

// ---------------------------------------------------------------------------------------------
// Recording: one transaction per consumed batch.

export interface UsageInsert {
  session_id: string;
  user_id: string;
  project_id: string;
  status: "success" | "failed";
  duration_ms: number;
  created_at: number;
  reason: string;
  rule_version: number;
  plan: PlanId;
  period_start: number;
  period_end: number;
  adjusted_from_period: number | null;
}

export interface PeriodInsert {
  user_id: string;
  plan: PlanId;
  period_start: number;
  period_end: number;
  stripe_customer_id: string | null;
  stripe_subscription_id: string | null;
}

/** Where a session's usage was recorded (first recording wins), with its period's customer. */
export interface StoredUsageRow {
  id: string;
  user_id: string;
  plan: PlanId;
  period_start: number;
  status: "success" | "failed";
  stripe_customer_id: string | null;
}

/**
 * Records verdicts once (INSERT OR IGNORE on the session id) and adds to each period's
 * billable count only the rows inserted by THIS attempt (`token`), so a redelivered batch
 * counts nothing twice. Clears the admission `open` flag of billable sessions. Returns where
 * every session of the batch is recorded, including ones recorded by an earlier attempt.
 */
export async function recordUsage(
  db: D1Database,
  usage: UsageInsert[],
  periods: PeriodInsert[],
  token: string,
  now: number,
): Promise<StoredUsageRow[]> {
  const rows = JSON.stringify(usage);
  const keys = JSON.stringify(periods);
  const results = await db.batch<Record<string, unknown>>([
    db
      .prepare(
        `INSERT OR IGNORE INTO session_usage (id, user_id, project_id, session_id, status, duration_ms, charged,
           created_at, reason, rule_version, plan, period_start, period_end, adjusted_from_period, record_token,
           recorded_at)
         SELECT j.value->>'$.session_id', j.value->>'$.user_id', j.value->>'$.project_id', j.value->>'$.session_id',
           j.value->>'$.status', j.value->>'$.duration_ms', 0, j.value->>'$.created_at', j.value->>'$.reason',
           j.value->>'$.rule_version', j.value->>'$.plan', j.value->>'$.period_start', j.value->>'$.period_end',
           j.value->>'$.adjusted_from_period', ?2, ?3
         FROM json_each(?1) j`,
      )
      .bind(rows, token, now),
    db
      .prepare(
        `INSERT INTO usage_periods (user_id, plan, period_start, period_end, stripe_customer_id,
           stripe_subscription_id, billable_sessions, posted_total, updated_at)
         SELECT j.value->>'$.user_id', j.value->>'$.plan', j.value->>'$.period_start', j.value->>'$.period_end',
           j.value->>'$.stripe_customer_id', j.value->>'$.stripe_subscription_id', 0, 0, ?2
         FROM json_each(?1) j WHERE true
         ON CONFLICT (user_id, plan, period_start) DO NOTHING`,
      )
      .bind(keys, now),
    db
      .prepare(
        // one aggregate over this attempt's rows (found by primary key), joined to their periods
        `UPDATE usage_periods SET billable_sessions = billable_sessions + c.n, updated_at = ?3
         FROM (
           SELECT u.user_id, u.plan, u.period_start, count(*) AS n FROM session_usage u
           WHERE u.id IN (SELECT value->>'$.session_id' FROM json_each(?1))
             AND u.record_token = ?2 AND u.status = 'success'
           GROUP BY u.user_id, u.plan, u.period_start
         ) AS c
         WHERE usage_periods.user_id = c.user_id AND usage_periods.plan = c.plan
           AND usage_periods.period_start = c.period_start`,
      )
      .bind(rows, token, now),
    db
      .prepare(
        `UPDATE sessions SET open = 0
         WHERE open = 1 AND session_id IN (
           SELECT id FROM session_usage
           WHERE id IN (SELECT value->>'$.session_id' FROM json_each(?1)) AND status = 'success')`,
      )
      .bind(rows),
    db
      .prepare(
        `SELECT u.id, u.user_id, u.plan, u.period_start, u.status, p.stripe_customer_id
         FROM session_usage u
         LEFT JOIN usage_periods p ON p.user_id = u.user_id AND p.plan = u.plan AND p.period_start = u.period_start
         WHERE u.id IN (SELECT value->>'$.session_id' FROM json_each(?1))`,
      )
      .bind(rows),
  ]);
  return rowsOf<StoredUsageRow>(results[4]);
}

// ---------------------------------------------------------------------------------------------
// Posting: the meter lock, the period row, the timestamp reservation and the commit.

export interface PeriodRef {
  user_id: string;
  plan: PaidPlanId;
  period_start: number;
}

export interface UsagePeriodRow extends PeriodRef {
  period_end: number;
  stripe_customer_id: string;
  billable_sessions: number;
  posted_total: number;
  last_meter_ts: number | null;
  posted_at: number | null;
  post_failures: number;
  closed_at: number | null;
}

const PERIOD_COLUMNS = `user_id, plan, period_start, period_end, stripe_customer_id, billable_sessions, posted_total,
  last_meter_ts, posted_at, post_failures, closed_at`;

/** Takes the customer's meter lock unless another holder's lease is still live. */
export function acquireLock(db: D1Database, customer: string, holder: string, now: number, ttlMs: number) {
  return db
    .prepare(
      `INSERT INTO meter_locks (stripe_customer_id, holder, locked_until) VALUES (?1, ?2, ?3)
       ON CONFLICT (stripe_customer_id) DO UPDATE SET holder = excluded.holder, locked_until = excluded.locked_until
       WHERE meter_locks.locked_until < ?4
       RETURNING holder`,
    )
    .bind(customer, holder, now + ttlMs, now);
}

export function releaseLock(db: D1Database, customer: string, holder: string) {
  return db
    .prepare("DELETE FROM meter_locks WHERE stripe_customer_id = ?1 AND holder = ?2")
    .bind(customer, holder);
}

export function selectPeriod(db: D1Database, ref: PeriodRef) {
  return db
    .prepare(
      `SELECT ${PERIOD_COLUMNS} FROM usage_periods
       WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3 AND stripe_customer_id IS NOT NULL`,
    )
    .bind(ref.user_id, ref.plan, ref.period_start);
}

/**
 * Reserves `ts` as the period's latest meter timestamp before the Stripe call, guarded by the
 * value read under the lock; returns the total to post (read now, never carried in a message).
 */
export function reserveTimestamp(
  db: D1Database,
  ref: PeriodRef,
  ts: number,
  prevTs: number | null,
  now: number,
) {
  return db
    .prepare(
      `UPDATE usage_periods SET last_meter_ts = ?4, updated_at = ?6
       WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3 AND last_meter_ts IS ?5
       RETURNING billable_sessions`,
    )
    .bind(ref.user_id, ref.plan, ref.period_start, ts, prevTs, now);
}

export function commitPosted(db: D1Database, ref: PeriodRef, value: number, now: number) {
  return db
    .prepare(
      `UPDATE usage_periods SET posted_total = max(posted_total, ?4), posted_at = ?5, post_failures = 0,
         post_error = NULL, next_post_at = NULL, updated_at = ?5
       WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3`,
    )
    .bind(ref.user_id, ref.plan, ref.period_start, value, now);
}

export function recordPostFailure(
  db: D1Database,
  ref: PeriodRef,
  error: string,
  retryAt: number,
  now: number,
) {
  return db
    .prepare(
      `UPDATE usage_periods SET post_failures = post_failures + 1, post_error = ?4, next_post_at = ?5, updated_at = ?6
       WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3`,
    )
    .bind(ref.user_id, ref.plan, ref.period_start, error.slice(0, 500), retryAt, now);
}

// ---------------------------------------------------------------------------------------------
// Sweep and period close.

/** Paid periods whose total Stripe has not confirmed, due for a post (idx_usage_periods_unposted). */
export async function unpostedPeriods(db: D1Database, now: number, limit: number): Promise<UsagePeriodRow[]> {
  const { results } = await db
    .prepare(
      `SELECT ${PERIOD_COLUMNS} FROM usage_periods
       WHERE stripe_customer_id IS NOT NULL AND billable_sessions > posted_total
         AND (next_post_at IS NULL OR next_post_at <= ?1)
       ORDER BY period_start LIMIT ?2`,
    )
    .bind(now, limit)
    .all<UsagePeriodRow>();
  return results;
}

/** Closes ended paid periods whose final total Stripe confirmed, once they take no more usage. */
export async function closePeriods(
  db: D1Database,
  endedBefore: number,
  now: number,
): Promise<UsagePeriodRow[]> {
  const { results } = await db
    .prepare(
      `UPDATE usage_periods SET closed_at = ?2, updated_at = ?2
       WHERE stripe_customer_id IS NOT NULL AND closed_at IS NULL AND period_end <= ?1
         AND billable_sessions <= posted_total
       RETURNING ${PERIOD_COLUMNS}`,
    )
    .bind(endedBefore, now)
    .all<UsagePeriodRow>();
  return results;
}

/** Ended paid periods still not confirmed after `endedBefore` (their invoice may miss usage). */
export async function overduePeriods(db: D1Database, endedBefore: number): Promise<UsagePeriodRow[]> {
  const { results } = await db
    .prepare(
      `SELECT ${PERIOD_COLUMNS} FROM usage_periods
       WHERE stripe_customer_id IS NOT NULL AND closed_at IS NULL AND period_end <= ?1
         AND billable_sessions > posted_total
       ORDER BY period_end LIMIT 100`,
    )
    .bind(endedBefore)
    .all<UsagePeriodRow>();
  return results;
}

// ---------------------------------------------------------------------------------------------
// Reconciliation.

/**
 * Recent paid periods, least recently reconciled first, except that periods in Stripe's invoice
 * grace window (ended less than `graceMs` ago: the last chance to repair) come before all others
 * unless they were checked after they ended and after their last post.
 */
export async function periodsToReconcile(
  db: D1Database,
  endedAfter: number,
  now: number,
  graceMs: number,
  limit: number,
): Promise<UsagePeriodRow[]> {
  const { results } = await db
    .prepare(
      `SELECT ${PERIOD_COLUMNS} FROM usage_periods
       WHERE stripe_customer_id IS NOT NULL AND period_end > ?1 AND period_start <= ?2
       ORDER BY CASE WHEN period_end <= ?2 AND period_end > ?2 - ?3
           AND coalesce(reconciled_at, 0) < max(period_end, coalesce(posted_at, 0)) THEN 0 ELSE 1 END,
         coalesce(reconciled_at, 0), period_end DESC
       LIMIT ?4`,
    )
    .bind(endedAfter, now, graceMs, limit)
    .all<UsagePeriodRow>();
  return results;
}

export function markReconciled(db: D1Database, refs: PeriodRef[], now: number) {
  return db
    .prepare(
      `UPDATE usage_periods SET reconciled_at = ?2
       WHERE (user_id, plan, period_start) IN (
         SELECT value->>'$.user_id', value->>'$.plan', value->>'$.period_start' FROM json_each(?1))`,
    )
    .bind(JSON.stringify(refs), now);
}

export function insertReconciliationRun(db: D1Database, id: string, startedAt: number) {
  return db.prepare("INSERT INTO reconciliation_runs (id, started_at) VALUES (?1, ?2)").bind(id, startedAt);
}

export function finishReconciliationRun(
  db: D1Database,
  run: {
    id: string;
    finishedAt: number;
    checked: number;
    mismatches: number;
    repaired: number;
    report: unknown[];
  },
) {
  return db
    .prepare(
      `UPDATE reconciliation_runs SET finished_at = ?2, periods_checked = ?3, mismatches = ?4, repaired = ?5, report = ?6
       WHERE id = ?1`,
    )
    .bind(run.id, run.finishedAt, run.checked, run.mismatches, run.repaired, JSON.stringify(run.report));
}

// ---------------------------------------------------------------------------------------------
// Dead letters.
