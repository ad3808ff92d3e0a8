/**
 * The biller's SQL. Tables: usage_periods (the usage series: posting state, freezing, adjustments),
 * meter_locks, usage_adjustments, reattributions, reconciliation_runs (written); sessions (read,
 * and moved between series by re-attribution). Bulk statements take one JSON parameter read with
 * json_each.
 */
import { billingHour, LISTED_SESSIONS, type PaidPlanId, type PlanId, type SeriesRef } from "@aigate/shared";

/** Rows of one statement of a mixed db.batch (our own tables: typed like `.all<Row>()`). */
export function rowsOf<Row>(result: D1Result<Record<string, unknown>> | undefined): Row[] {
  return (result?.results ?? []) as unknown as Row[];
}

// ---------------------------------------------------------------------------------------------
// Version 1 verdict messages: where a session's usage was recorded.

export interface SessionSeriesRow {
  session_id: string;
  user_id: string;
  billable: number | null;
  verdict_at: number | null;
  billed_at: number | null;
  plan: PlanId | null;
  period_start: number | null;
}

export async function seriesOfSessions(db: D1Database, ids: string[]): Promise<SessionSeriesRow[]> {
  const { results } = await db
    .prepare(
      `SELECT session_id, user_id, billable, verdict_at, billed_at, plan, period_start FROM sessions
       WHERE session_id IN (SELECT value FROM json_each(?1))`,
    )
    .bind(JSON.stringify(ids))
    .all<SessionSeriesRow>();
  return results;
}

// ---------------------------------------------------------------------------------------------
// Posting: the meter lock, the period row, the timestamp reservation and the commit.

export type PeriodRef = SeriesRef;

export interface UsagePeriodRow extends PeriodRef {
  period_end: number;
  stripe_customer_id: string;
  billable_sessions: number;
  posted_total: number;
  last_meter_ts: number | null;
  posted_at: number | null;
  post_failures: number;
  meter_event_name: string | null;
  frozen_at: number | null;
}

const PERIOD_COLUMNS = `user_id, plan, period_start, period_end, stripe_customer_id, billable_sessions, posted_total,
  last_meter_ts, posted_at, post_failures, meter_event_name, frozen_at`;

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
       WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3 AND last_meter_ts IS ?5 AND frozen_at IS NULL
       RETURNING billable_sessions`,
    )
    .bind(ref.user_id, ref.plan, ref.period_start, ts, prevTs, now);
}

/**
 * What Stripe acknowledged: the absolute total posted at timestamp `ts`. Only while `ts` is still the
 * series' latest reservation (a slower poster whose lock expired cannot overwrite a newer total).
 */
export function commitPosted(db: D1Database, ref: PeriodRef, value: number, ts: number, now: number) {
  return db
    .prepare(
      `UPDATE usage_periods SET posted_total = ?4, posted_at = ?5, post_failures = 0,
         post_error = NULL, next_post_at = NULL, updated_at = ?5
       WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3 AND last_meter_ts = ?6`,
    )
    .bind(ref.user_id, ref.plan, ref.period_start, value, now, ts);
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
// Sweep.

/**
 * Paid series whose total Stripe has not confirmed, due for a post: walks the live paid series
 * (idx_usage_periods_paid_live, a few per paying customer) in order of their start.
 */
export async function unpostedSeries(db: D1Database, now: number, limit: number): Promise<UsagePeriodRow[]> {
  const { results } = await db
    .prepare(
      `SELECT ${PERIOD_COLUMNS} FROM usage_periods
       WHERE stripe_customer_id IS NOT NULL AND frozen_at IS NULL AND billable_sessions <> posted_total
         AND (next_post_at IS NULL OR next_post_at <= ?1)
       ORDER BY period_start LIMIT ?2`,
    )
    .bind(now, limit)
    .all<UsagePeriodRow>();
  return results;
}

/** Ended paid series still not confirmed `lateMs` after their end (their invoice may miss usage). */
export async function overdueSeries(db: D1Database, endedBefore: number): Promise<UsagePeriodRow[]> {
  const { results } = await db
    .prepare(
      `SELECT ${PERIOD_COLUMNS} FROM usage_periods
       WHERE stripe_customer_id IS NOT NULL AND frozen_at IS NULL AND period_end <= ?1
         AND billable_sessions <> posted_total
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
       WHERE stripe_customer_id IS NOT NULL AND frozen_at IS NULL AND period_end > ?1 AND period_start <= ?2
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
// Adjustments: what a frozen series counted beyond (or short of) what Stripe billed.

export interface SeriesToAdjust {
  user_id: string;
  plan: PaidPlanId;
  period_start: number;
  period_end: number;
  stripe_customer_id: string;
  stripe_subscription_id: string | null;
  stripe_price_id: string | null;
  billable_sessions: number;
  seq_top: number;
  stripe_billed: number;
  billed_seq: number | null;
  adjusted: number;
  /** The rank after which the next adjustment starts: the last adjustment's end, else billed_seq. */
  last_to_seq: number | null;
}

/** Frozen paid series whose sessions differ from Stripe's billed quantity plus our adjustments. */
export async function seriesToAdjust(db: D1Database, limit: number): Promise<SeriesToAdjust[]> {
  const { results } = await db
    .prepare(
      `SELECT p.user_id, p.plan, p.period_start, p.period_end, p.stripe_customer_id, p.stripe_subscription_id,
         p.stripe_price_id, p.billable_sessions, p.seq_top, coalesce(p.stripe_billed, 0) AS stripe_billed, p.billed_seq,
         p.adjusted,
         (SELECT max(a.to_seq) FROM usage_adjustments a
          WHERE a.user_id = p.user_id AND a.plan = p.plan AND a.period_start = p.period_start) AS last_to_seq
       FROM usage_periods p
       WHERE p.stripe_customer_id IS NOT NULL AND p.frozen_at IS NOT NULL
         AND p.billable_sessions <> coalesce(p.stripe_billed, 0) + p.adjusted
       LIMIT ?1`,
    )
    .bind(limit)
    .all<SeriesToAdjust>();
  return results;
}

/**
 * The rank of the last session Stripe billed: the `billed`-th smallest rank among the series'
 * sessions (ranks can have holes where sessions were re-attributed away).
 */
export async function rankOfBilled(db: D1Database, s: SeriesToAdjust, billed: number): Promise<number> {
  if (billed <= 0) return 0;
  const row = await db
    .prepare(
      `SELECT s.seq FROM ${LISTED_SESSIONS}
       WHERE l.user_id = ?1 AND l.hour BETWEEN ?6 AND ?7
         AND s.billed_at >= ?2 AND s.billed_at < ?3 AND s.plan = ?4 AND s.period_start = ?2 AND s.seq IS NOT NULL
       ORDER BY s.seq LIMIT 1 OFFSET ?5`,
    )
    .bind(
      s.user_id,
      s.period_start,
      s.period_end,
      s.plan,
      billed - 1,
      billingHour(s.period_start),
      billingHour(s.period_end - 1),
    )
    .first<{ seq: number }>();
  return row?.seq ?? s.seq_top;
}

export interface AdjustmentReservation {
  id: string;
  user_id: string;
  plan: PaidPlanId;
  period_start: number;
  stripe_customer_id: string;
  sessions: number;
  from_seq: number;
  to_seq: number;
  amount_cents: number;
  currency: string;
}

/**
 * Reserves an adjustment: the row (pending) and the series' `adjusted` count, in one transaction,
 * guarded by the count it was computed from (a concurrent run reserves nothing twice).
 */
export function reserveAdjustment(
  db: D1Database,
  a: AdjustmentReservation,
  expectedAdjusted: number,
  billedSeq: number,
  now: number,
): D1PreparedStatement[] {
  return [
    db
      .prepare(
        `UPDATE usage_periods SET adjusted = adjusted + ?5, billed_seq = coalesce(billed_seq, ?6), updated_at = ?7
         WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3 AND adjusted = ?4 AND frozen_at IS NOT NULL`,
      )
      .bind(a.user_id, a.plan, a.period_start, expectedAdjusted, a.sessions, billedSeq, now),
    db
      .prepare(
        `INSERT INTO usage_adjustments (id, user_id, plan, period_start, stripe_customer_id, sessions, from_seq, to_seq,
           amount_cents, currency, state, attempts, next_attempt_at, created_at, updated_at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', 0, ?11, ?11, ?11 WHERE changes() > 0
         ON CONFLICT (id) DO NOTHING`,
      )
      .bind(
        a.id,
        a.user_id,
        a.plan,
        a.period_start,
        a.stripe_customer_id,
        a.sessions,
        a.from_seq,
        a.to_seq,
        a.amount_cents,
        a.currency,
        now,
      ),
  ];
}

export interface PendingAdjustment extends AdjustmentReservation {
  period_end: number;
  attempts: number;
  /** When the adjustment was reserved. */
  created_at: number;
  /** The customer's live subscription, if any, and its plan. */
  live_subscription_id: string | null;
  live_plan: PlanId | null;
}

export async function pendingAdjustments(
  db: D1Database,
  now: number,
  limit: number,
): Promise<PendingAdjustment[]> {
  const { results } = await db
    .prepare(
      `SELECT a.id, a.user_id, a.plan, a.period_start, a.stripe_customer_id, a.sessions, a.from_seq, a.to_seq,
         a.amount_cents, a.currency, a.attempts, a.created_at, coalesce(p.period_end, a.period_start) AS period_end,
         (SELECT s.stripe_subscription_id FROM subscriptions s
          WHERE s.stripe_customer_id = a.stripe_customer_id AND s.ended_at IS NULL
          ORDER BY s.started_at DESC LIMIT 1) AS live_subscription_id,
         (SELECT s.plan FROM subscriptions s
          WHERE s.stripe_customer_id = a.stripe_customer_id AND s.ended_at IS NULL
          ORDER BY s.started_at DESC LIMIT 1) AS live_plan
       FROM usage_adjustments a
       LEFT JOIN usage_periods p ON p.user_id = a.user_id AND p.plan = a.plan AND p.period_start = a.period_start
       WHERE a.state = 'pending' AND (a.next_attempt_at IS NULL OR a.next_attempt_at <= ?1)
       ORDER BY a.next_attempt_at LIMIT ?2`,
    )
    .bind(now, limit)
    .all<PendingAdjustment>();
  return results;
}

export function markAdjustmentCreated(db: D1Database, id: string, invoiceItemId: string, now: number) {
  return db
    .prepare(
      `UPDATE usage_adjustments SET state = 'created', stripe_invoice_item_id = ?2, error = NULL, updated_at = ?3,
         stripe_invoice_id = coalesce(stripe_invoice_id,
           (SELECT l.stripe_invoice_id FROM invoice_lines l WHERE l.stripe_invoice_item_id = ?2 LIMIT 1))
       WHERE id = ?1`,
    )
    .bind(id, invoiceItemId, now);
}

export function recordAdjustmentFailure(
  db: D1Database,
  id: string,
  error: string,
  retryAt: number,
  now: number,
) {
  return db
    .prepare(
      `UPDATE usage_adjustments SET attempts = attempts + 1, error = ?2, next_attempt_at = ?3, updated_at = ?4
       WHERE id = ?1`,
    )
    .bind(id, error.slice(0, 500), retryAt, now);
}

// ---------------------------------------------------------------------------------------------
// Re-attribution: sessions whose plan history or billing periods changed after they were judged.

export interface ReattributionRow {
  user_id: string;
  from_ms: number;
  requested_at: number;
}

export async function reattributionsDue(db: D1Database, limit: number): Promise<ReattributionRow[]> {
  const { results } = await db
    .prepare("SELECT user_id, from_ms, requested_at FROM reattributions ORDER BY requested_at LIMIT ?1")
    .bind(limit)
    .all<ReattributionRow>();
  return results;
}

export interface AttributedSessionRow {
  session_id: string;
  user_id: string;
  billed_at: number;
  billable: number;
  plan: PlanId | null;
  period_start: number | null;
  seq: number | null;
  /** Whether the session's current series is frozen (Stripe billed it: it stays). */
  frozen: number;
}

/** A user's judged sessions billed from `from` on, oldest first (through the user's session lists). */
export async function sessionsBilledFrom(
  db: D1Database,
  userId: string,
  from: number,
  limit: number,
): Promise<AttributedSessionRow[]> {
  const { results } = await db
    .prepare(
      `SELECT s.session_id, s.user_id, s.billed_at, s.billable, s.plan, s.period_start, s.seq,
         coalesce(p.frozen_at IS NOT NULL, 0) AS frozen
       FROM ${LISTED_SESSIONS}
       LEFT JOIN usage_periods p ON p.user_id = s.user_id AND p.plan = s.plan AND p.period_start = s.period_start
       WHERE l.user_id = ?1 AND l.hour >= ?4 AND s.billed_at >= ?2
       ORDER BY l.hour, s.billed_at, s.session_id LIMIT ?3`,
    )
    .bind(userId, from, limit, billingHour(from))
    .all<AttributedSessionRow>();
  return results;
}

/**
 * Moves one judged session to another series, in one transaction with its counts: out of its
 * current series (a billable one leaves a hole in the ranks, never reused) and into the target
 * (a billable one takes the next rank). Guarded by the attribution it was planned from.
 */
export function moveSession(
  db: D1Database,
  s: AttributedSessionRow,
  target: { plan: PlanId; period_start: number },
  now: number,
): D1PreparedStatement[] {
  const statements: D1PreparedStatement[] = [];
  const billable = s.billable === 1;
  if (billable && s.plan !== null && s.period_start !== null) {
    statements.push(
      db
        .prepare(
          `UPDATE usage_periods SET billable_sessions = billable_sessions - 1, updated_at = ?5
           WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3
             AND EXISTS (SELECT 1 FROM sessions WHERE session_id = ?4 AND plan IS ?2 AND period_start IS ?3)`,
        )
        .bind(s.user_id, s.plan, s.period_start, s.session_id, now),
    );
  }
  statements.push(
    db
      .prepare(
        `UPDATE sessions SET plan = ?2, period_start = ?3,
           seq = CASE WHEN billable = 1 THEN
             (SELECT seq_top + 1 FROM usage_periods WHERE user_id = sessions.user_id AND plan = ?2 AND period_start = ?3)
           END
         WHERE session_id = ?1 AND plan IS ?4 AND period_start IS ?5`,
      )
      .bind(s.session_id, target.plan, target.period_start, s.plan, s.period_start),
  );
  if (billable) {
    statements.push(
      db
        .prepare(
          `UPDATE usage_periods SET billable_sessions = billable_sessions + 1, seq_top = seq_top + 1, updated_at = ?4
           WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3 AND changes() > 0`,
        )
        .bind(s.user_id, target.plan, target.period_start, now),
    );
  }
  return statements;
}

/** Done with a user's re-attribution, unless a newer request came meanwhile. */
export function finishReattribution(db: D1Database, r: ReattributionRow) {
  return db
    .prepare("DELETE FROM reattributions WHERE user_id = ?1 AND requested_at = ?2 AND from_ms = ?3")
    .bind(r.user_id, r.requested_at, r.from_ms);
}

/** Moves a user's remaining work forward (more sessions than one run takes). */
export function advanceReattribution(db: D1Database, r: ReattributionRow, from: number) {
  return db
    .prepare(
      "UPDATE reattributions SET from_ms = ?4 WHERE user_id = ?1 AND requested_at = ?2 AND from_ms = ?3",
    )
    .bind(r.user_id, r.requested_at, r.from_ms, from);
}
