/**
 * SQL of the api worker's billing routes. Every statement filters by the authenticated user's
 * id: a user can only ever read or change their own rows.
 */
import {
  billingHour,
  LIST_HOUR_MS,
  LISTED_SESSIONS,
  type PaidPlanId,
  type PlanId,
  type Shards,
} from "@aigate/shared";
import { writeForUser } from "@aigate/shared/stripeSync/customers";
import { insertCustomer } from "@aigate/shared/stripeSync/queries";
import type { Cursor } from "./cursor";

/** Billable sessions of one usage series (usage_periods, counted with each verdict). */
export async function billableSessions(db: D1Database, userId: string, plan: PlanId, periodStart: number) {
  return (await currentSeries(db, userId, plan, periodStart)).billable_sessions;
}

/** A series' billable sessions and the Stripe price it bills (null before the series exists or names one). */
export async function currentSeries(db: D1Database, userId: string, plan: PlanId, periodStart: number) {
  const row = await db
    .prepare(
      `SELECT billable_sessions, stripe_price_id FROM usage_periods
       WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3`,
    )
    .bind(userId, plan, periodStart)
    .first<{ billable_sessions: number; stripe_price_id: string | null }>();
  return { billable_sessions: row?.billable_sessions ?? 0, stripe_price_id: row?.stripe_price_id ?? null };
}

/** Sessions judged unbillable among those billed at a time in [start, end) (the user's session lists). */
export async function failedSessions(db: D1Database, userId: string, start: number, end: number) {
  const row = await db
    .prepare(
      `SELECT count(*) AS n FROM ${LISTED_SESSIONS}
       WHERE l.user_id = ?1 AND l.hour BETWEEN ?4 AND ?5 AND s.billed_at >= ?2 AND s.billed_at < ?3 AND s.billable = 0`,
    )
    .bind(userId, start, end, billingHour(start), billingHour(end - 1))
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

export interface SessionRow {
  session_id: string;
  project_id: string;
  /** The billing time: the session's creation as we bound it. */
  billed_at: number;
  billable: number;
  reason: string;
  audio_ms: number;
  plan: PlanId | null;
  /** The invoice that charges the session, once finalized (its series' invoice, or an adjustment's). */
  invoice_id: string | null;
}

/**
 * Where a billable session of a paid series is charged: the series' invoice when Stripe billed it
 * (its rank within what Stripe billed), else the adjustment whose ranks hold it. Null until then.
 * Once an adjustment was reserved, billed_seq is the last rank on the series' invoice (after a
 * credit, the last rank recorded then: sessions recorded after the credit are its adjustments').
 */
const CHARGING_INVOICE = `CASE WHEN s.billable = 1 AND s.seq IS NOT NULL AND p.frozen_at IS NOT NULL THEN
    CASE WHEN (p.billed_seq IS NULL AND p.billable_sessions <= coalesce(p.stripe_billed, 0))
           OR s.seq <= coalesce(p.billed_seq, p.stripe_billed, 0) THEN p.stripe_invoice_id
         ELSE (SELECT a.stripe_invoice_id FROM usage_adjustments a
               WHERE a.user_id = s.user_id AND a.plan = s.plan AND a.period_start = s.period_start
                 AND a.sessions > 0 AND s.seq > a.from_seq AND s.seq <= a.to_seq
               ORDER BY a.to_seq LIMIT 1) END
  END`;

/**
 * One page of a user's judged sessions, newest first, strictly after `after`: the page is chosen
 * through the user's session lists (newest hour first, sorted an hour at a time), and only its
 * rows are then read whole with where they are charged.
 */
export async function sessionsPage(db: D1Database, userId: string, after: Cursor | null, limit: number) {
  const { results } = await db
    .prepare(
      `WITH page AS (
         SELECT s.session_id FROM ${LISTED_SESSIONS}
         WHERE l.user_id = ?1 AND l.hour <= ?5
           AND (s.billed_at < ?2 OR (s.billed_at = ?2 AND s.session_id < ?3))
         ORDER BY l.hour DESC, s.billed_at DESC, s.session_id DESC
         LIMIT ?4
       )
       SELECT s.session_id, s.project_id, s.billed_at, s.billable, s.reason, s.audio_ms, s.plan,
         ${CHARGING_INVOICE} AS invoice_id
       FROM page JOIN sessions s ON s.session_id = page.session_id
       LEFT JOIN usage_periods p ON p.user_id = s.user_id AND p.plan = s.plan AND p.period_start = s.period_start
       ORDER BY s.billed_at DESC, s.session_id DESC`,
    )
    .bind(
      userId,
      after?.createdAt ?? Number.MAX_SAFE_INTEGER,
      after?.id ?? "",
      limit,
      after ? billingHour(after.createdAt) : Number.MAX_SAFE_INTEGER,
    )
    .all<SessionRow>();
  return results;
}

export async function stripeCustomerOf(db: D1Database, userId: string): Promise<string | null> {
  const row = await db
    .prepare("SELECT stripe_customer_id FROM stripe_customers WHERE user_id = ?1")
    .bind(userId)
    .first<{ stripe_customer_id: string }>();
  return row?.stripe_customer_id ?? null;
}

/**
 * Records a user's Stripe customer (on the free plan until the webhooks say otherwise; the first
 * one recorded wins) on the user's shard, then its customer directory row in home (one batch when
 * the user lives on home). Returns the customer recorded for the user.
 */
export async function recordStripeCustomer(
  shards: Shards,
  userId: string,
  customerId: string,
  email: string,
  now: number,
) {
  return writeForUser(shards, {
    userId,
    user: [insertCustomer(shards.of(userId), userId, customerId, email, now)],
    home: [],
    customerId,
  });
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

export interface InvoiceRow {
  stripe_invoice_id: string;
  number: string | null;
  status: string;
  billing_reason: string | null;
  currency: string;
  subtotal_cents: number;
  /** The invoice's tax (Stripe's `total_taxes`); null for invoices recorded before it was kept. */
  tax_cents: number | null;
  total_cents: number;
  amount_paid_cents: number;
  period_start: number;
  period_end: number;
  stripe_created: number;
  finalized_at: number | null;
  paid_at: number | null;
  hosted_invoice_url: string | null;
  invoice_pdf: string | null;
}

/** One page of a user's finalized invoices, newest first, strictly after `after`. */
export async function invoicesPage(db: D1Database, userId: string, after: Cursor | null, limit: number) {
  const { results } = await db
    .prepare(
      `SELECT stripe_invoice_id, number, status, billing_reason, currency, subtotal_cents, tax_cents, total_cents,
         amount_paid_cents, period_start,
         period_end, stripe_created, finalized_at, paid_at, hosted_invoice_url, invoice_pdf
       FROM invoices
       WHERE user_id = ?1 AND status <> 'draft'
         AND (stripe_created < ?2 OR (stripe_created = ?2 AND stripe_invoice_id < ?3))
       ORDER BY stripe_created DESC, stripe_invoice_id DESC
       LIMIT ?4`,
    )
    .bind(userId, after?.createdAt ?? Number.MAX_SAFE_INTEGER, after?.id ?? "", limit)
    .all<InvoiceRow>();
  return results;
}

export interface InvoiceLineRow {
  stripe_invoice_id: string;
  description: string;
  quantity: number;
  amount_cents: number;
  plan: string | null;
  metered: number;
  period_start: number;
  period_end: number;
}

/** The lines of some invoices (what Stripe billed), in Stripe's order. */
export async function invoiceLines(db: D1Database, invoiceIds: string[]): Promise<InvoiceLineRow[]> {
  if (invoiceIds.length === 0) return [];
  const { results } = await db
    .prepare(
      `SELECT stripe_invoice_id, description, quantity, amount_cents, plan, metered, period_start, period_end
       FROM invoice_lines WHERE stripe_invoice_id IN (SELECT value FROM json_each(?1)) ORDER BY stripe_invoice_id, line_id`,
    )
    .bind(JSON.stringify(invoiceIds))
    .all<InvoiceLineRow>();
  return results;
}

/** A user's invoice (not a draft): null when it does not exist or is another user's. */
export async function userInvoice(db: D1Database, userId: string, invoiceId: string) {
  return db
    .prepare(
      "SELECT stripe_invoice_id, number FROM invoices WHERE user_id = ?1 AND stripe_invoice_id = ?2 AND status <> 'draft'",
    )
    .bind(userId, invoiceId)
    .first<{ stripe_invoice_id: string; number: string | null }>();
}

export interface InvoiceSessionRow {
  session_id: string;
  project_id: string;
  billed_at: number;
  created_at: number | null;
  first_event_at: number | null;
  ended_at: number | null;
  last_event_at: number | null;
  audio_ms: number;
  plan: PaidPlanId;
  period_start: number;
  stripe_price_id: string | null;
  /** Its position (1-based) among its series' billable sessions, by rank: what prices it. */
  position: number;
  /** The first and last positions of its series that the invoice charges. */
  first_position: number;
  last_position: number;
}

/**
 * One page of the sessions an invoice charges (the same rule as the sessions list's `invoice_id`,
 * CHARGING_INVOICE), oldest first, strictly after `after`. Only the series the invoice billed or
 * adjusted are read (through the user's session lists); positions are counted over the whole series.
 */
export async function invoiceSessionsPage(
  db: D1Database,
  userId: string,
  invoiceId: string,
  after: Cursor | null,
  limit: number,
) {
  const { results } = await db
    .prepare(
      `WITH series AS (
         SELECT plan, period_start FROM usage_periods WHERE user_id = ?1 AND stripe_invoice_id = ?2
         UNION
         SELECT plan, period_start FROM usage_adjustments WHERE user_id = ?1 AND stripe_invoice_id = ?2
       ),
       ranked AS (
         SELECT s.session_id, s.user_id, s.project_id, s.billed_at, s.created_at, s.first_event_at, s.ended_at,
           s.last_event_at, s.audio_ms, s.billable, s.plan, s.period_start, s.seq,
           row_number() OVER (PARTITION BY s.plan, s.period_start ORDER BY s.seq) AS position
         FROM series x, ${LISTED_SESSIONS}
         WHERE l.user_id = ?1 AND l.hour >= x.period_start / ${LIST_HOUR_MS}
           AND s.billed_at >= x.period_start AND s.plan = x.plan AND s.period_start = x.period_start
           AND s.billable = 1 AND s.seq IS NOT NULL
       ),
       charged AS (
         SELECT s.session_id, s.project_id, s.billed_at, s.created_at, s.first_event_at, s.ended_at, s.last_event_at,
           s.audio_ms, s.plan, s.period_start, p.stripe_price_id, s.position,
           min(s.position) OVER w AS first_position, max(s.position) OVER w AS last_position
         FROM ranked s
         JOIN usage_periods p ON p.user_id = s.user_id AND p.plan = s.plan AND p.period_start = s.period_start
         WHERE (${CHARGING_INVOICE}) = ?2
         WINDOW w AS (PARTITION BY s.plan, s.period_start)
       )
       SELECT * FROM charged
       WHERE billed_at > ?3 OR (billed_at = ?3 AND session_id > ?4)
       ORDER BY billed_at, session_id
       LIMIT ?5`,
    )
    .bind(userId, invoiceId, after?.createdAt ?? -1, after?.id ?? "", limit)
    .all<InvoiceSessionRow>();
  return results;
}
