/**
 * SQL of the api worker's billing routes. Every statement filters by the authenticated user's
 * id: a user can only ever read or change their own rows.
 */
import type { PlanId } from "@aigate/shared";
import type { Cursor } from "./cursor";

/** Billable sessions attributed to a plan in one period (usage_periods, kept by the biller). */
export async function billableSessions(db: D1Database, userId: string, plan: PlanId, periodStart: number) {
  const row = await db
    .prepare(
      "SELECT billable_sessions FROM usage_periods WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3",
    )
    .bind(userId, plan, periodStart)
    .first<{ billable_sessions: number }>();
  return row?.billable_sessions ?? 0;
}

/** Sessions judged unbillable among those created in [start, end) (session_usage). */
export async function failedSessions(db: D1Database, userId: string, start: number, end: number) {
  const row = await db
    .prepare(
      `SELECT count(*) AS n FROM session_usage
       WHERE user_id = ?1 AND created_at >= ?2 AND created_at < ?3 AND status = 'failed'`,
    )
    .bind(userId, start, end)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

/**
 * Live admission leases (docs/architecture.md): admitted, not ended, no verdict, and
 * max(admitted_at, last_seen_at) + LEASE_TTL in the future. Uses idx_sessions_user_leases.
 */
export async function activeLeases(db: D1Database, userId: string, now: number, leaseTtlMs: number) {
  const row = await db
    .prepare(
      `SELECT count(*) AS n FROM sessions
       WHERE user_id = ?1 AND admitted_at IS NOT NULL AND ended_at IS NULL AND verdict_at IS NULL
         AND max(admitted_at, last_seen_at) + ?2 > ?3`,
    )
    .bind(userId, leaseTtlMs, now)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

export interface SessionUsageRow {
  id: string;
  session_id: string;
  project_id: string;
  created_at: number;
  status: "success" | "failed";
  reason: string;
  duration_ms: number | null;
  charged: number;
  stripe_invoice_id: string | null;
}

/** One page of a user's sessions, newest first, strictly after `after` (idx_usage_user_created). */
export async function sessionsPage(db: D1Database, userId: string, after: Cursor | null, limit: number) {
  const { results } = await db
    .prepare(
      `SELECT id, session_id, project_id, created_at, status, reason, duration_ms, charged, stripe_invoice_id
       FROM session_usage
       WHERE user_id = ?1 AND (created_at < ?2 OR (created_at = ?2 AND id < ?3))
       ORDER BY created_at DESC, id DESC
       LIMIT ?4`,
    )
    .bind(userId, after?.createdAt ?? Number.MAX_SAFE_INTEGER, after?.id ?? "", limit)
    .all<SessionUsageRow>();
  return results;
}

export async function stripeCustomerOf(db: D1Database, userId: string): Promise<string | null> {
  const row = await db
    .prepare("SELECT stripe_customer_id FROM stripe_customers WHERE user_id = ?1")
    .bind(userId)
    .first<{ stripe_customer_id: string }>();
  return row?.stripe_customer_id ?? null;
}

/** Records a user's Stripe customer (on the free plan until the webhooks say otherwise); the first one recorded wins. */
export async function recordStripeCustomer(
  db: D1Database,
  userId: string,
  customerId: string,
  email: string,
  now: number,
) {
  await db
    .prepare(
      `INSERT INTO stripe_customers (user_id, stripe_customer_id, email, plan, created_at, updated_at)
       VALUES (?1, ?2, ?3, 'free', ?4, ?4) ON CONFLICT DO NOTHING`,
    )
    .bind(userId, customerId, email, now)
    .run();
  return stripeCustomerOf(db, userId);
}

/** A user's sessions of one UTC day and reason (daily_rollups, written by the classifier). */
export interface DailyRollupRow {
  day: string;
  reason: string;
  sessions: number;
  audio_ms: number;
}

export async function dailyRollups(
  db: D1Database,
  userId: string,
  fromDay: string,
  toDay: string,
): Promise<DailyRollupRow[]> {
  const { results } = await db
    .prepare(
      `SELECT day, reason, sessions, audio_ms FROM daily_rollups
       WHERE user_id = ?1 AND day >= ?2 AND day <= ?3 ORDER BY day, reason`,
    )
    .bind(userId, fromDay, toDay)
    .all<DailyRollupRow>();
  return results;
}
