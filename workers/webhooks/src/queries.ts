/**
 * SQL of the webhooks worker. Every write is an idempotent upsert, so a state can be written
 * any number of times; the statements of one event run in one db.batch() (a transaction)
 * together with the event's dedupe row.
 */
import type { InvoiceRow, PlanHistoryRow, SubscriptionRow } from "./convergence";
import { PLAN_GRANTING_STATUSES } from "./convergence";

const GRANTING = PLAN_GRANTING_STATUSES.map((s) => `'${s}'`).join(", ");

export async function isEventProcessed(db: D1Database, eventId: string): Promise<boolean> {
  const row = await db
    .prepare("SELECT 1 AS done FROM processed_stripe_events WHERE event_id = ?1")
    .bind(eventId)
    .first<{ done: number }>();
  return row !== null;
}

export function markEventProcessed(
  db: D1Database,
  e: { id: string; type: string; createdMs: number },
  now: number,
): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO processed_stripe_events (event_id, type, stripe_created, processed_at)
       VALUES (?1, ?2, ?3, ?4) ON CONFLICT (event_id) DO NOTHING`,
    )
    .bind(e.id, e.type, e.createdMs, now);
}

export async function userOfCustomer(db: D1Database, customerId: string): Promise<string | null> {
  const row = await db
    .prepare("SELECT user_id FROM stripe_customers WHERE stripe_customer_id = ?1")
    .bind(customerId)
    .first<{ user_id: string }>();
  return row?.user_id ?? null;
}

/** Records the customer of a user who has none yet (a user keeps the customer first recorded). */
export function insertCustomer(
  db: D1Database,
  userId: string,
  customerId: string,
  email: string,
  now: number,
): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO stripe_customers (user_id, stripe_customer_id, email, plan, created_at, updated_at)
       VALUES (?1, ?2, ?3, 'free', ?4, ?4) ON CONFLICT DO NOTHING`,
    )
    .bind(userId, customerId, email, now);
}

/**
 * The subscription as Stripe holds it now. An ended subscription never comes back to life, so a
 * concurrent handler holding an older copy cannot undo a cancellation. past_due_since keeps the
 * first failure time while the payment keeps failing and clears once Stripe says it is settled.
 */
export function upsertSubscription(db: D1Database, r: SubscriptionRow, now: number): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, plan, status,
         current_period_start, current_period_end, cancel_at_period_end, past_due_since, started_at, ended_at, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
       ON CONFLICT (stripe_subscription_id) DO UPDATE SET
         plan = excluded.plan,
         status = excluded.status,
         current_period_start = excluded.current_period_start,
         current_period_end = excluded.current_period_end,
         cancel_at_period_end = excluded.cancel_at_period_end,
         past_due_since = CASE WHEN excluded.past_due_since IS NULL THEN NULL
                               ELSE coalesce(subscriptions.past_due_since, excluded.past_due_since) END,
         started_at = excluded.started_at,
         ended_at = excluded.ended_at,
         updated_at = excluded.updated_at
       WHERE subscriptions.ended_at IS NULL OR excluded.ended_at IS NOT NULL`,
    )
    .bind(
      r.stripe_subscription_id,
      r.user_id,
      r.stripe_customer_id,
      r.plan,
      r.status,
      r.current_period_start,
      r.current_period_end,
      r.cancel_at_period_end,
      r.past_due_since,
      r.started_at,
      r.ended_at,
      now,
    );
}

/** A plan-history row; at the same instant a paid plan wins over free (order-independent). */
export function upsertPlanHistory(
  db: D1Database,
  userId: string,
  r: PlanHistoryRow,
  now: number,
): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at)
       VALUES (?1, ?2, ?3, ?4, ?5)
       ON CONFLICT (user_id, effective_from) DO UPDATE SET
         plan = excluded.plan, stripe_subscription_id = excluded.stripe_subscription_id, recorded_at = excluded.recorded_at
       WHERE plan_history.plan = 'free' AND excluded.plan <> 'free'`,
    )
    .bind(userId, r.effective_from, r.plan, r.stripe_subscription_id, now);
}

/** A billing period; if Stripe closed it early (a cancellation), the shorter end wins. */
export function upsertBillingPeriod(
  db: D1Database,
  subscriptionId: string,
  p: { start: number; end: number },
): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO billing_periods (stripe_subscription_id, period_start, period_end) VALUES (?1, ?2, ?3)
       ON CONFLICT (stripe_subscription_id, period_start) DO UPDATE SET period_end = min(period_end, excluded.period_end)`,
    )
    .bind(subscriptionId, p.start, p.end);
}

/** stripe_customers.plan = the plan of the user's newest live subscription, free without one. */
export function refreshCustomerPlan(db: D1Database, userId: string, now: number): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE stripe_customers SET
         plan = coalesce((SELECT plan FROM subscriptions
                          WHERE user_id = ?1 AND ended_at IS NULL AND status IN (${GRANTING})
                          ORDER BY started_at DESC LIMIT 1), 'free'),
         updated_at = ?2
       WHERE user_id = ?1`,
    )
    .bind(userId, now);
}

const INVOICE_STATUS_RANK = `CASE %s WHEN 'draft' THEN 0 WHEN 'open' THEN 1 WHEN 'uncollectible' THEN 2 ELSE 3 END`;
const rank = (col: string) => INVOICE_STATUS_RANK.replace("%s", col);

/** The invoice as Stripe holds it; a status never moves back (draft < open < uncollectible < paid/void). */
export function upsertInvoice(db: D1Database, r: InvoiceRow, now: number): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO invoices (stripe_invoice_id, user_id, stripe_customer_id, stripe_subscription_id, status, currency,
         subtotal_cents, total_cents, amount_paid_cents, period_start, period_end, usage_period_start, usage_period_end,
         finalized_at, paid_at, stripe_created, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
       ON CONFLICT (stripe_invoice_id) DO UPDATE SET
         status = excluded.status,
         subtotal_cents = excluded.subtotal_cents,
         total_cents = excluded.total_cents,
         amount_paid_cents = excluded.amount_paid_cents,
         period_start = excluded.period_start,
         period_end = excluded.period_end,
         usage_period_start = excluded.usage_period_start,
         usage_period_end = excluded.usage_period_end,
         finalized_at = coalesce(excluded.finalized_at, invoices.finalized_at),
         paid_at = coalesce(excluded.paid_at, invoices.paid_at),
         updated_at = excluded.updated_at
       WHERE ${rank("excluded.status")} >= ${rank("invoices.status")}`,
    )
    .bind(
      r.stripe_invoice_id,
      r.user_id,
      r.stripe_customer_id,
      r.stripe_subscription_id,
      r.status,
      r.currency,
      r.subtotal_cents,
      r.total_cents,
      r.amount_paid_cents,
      r.period_start,
      r.period_end,
      r.usage_period_start,
      r.usage_period_end,
      r.finalized_at,
      r.paid_at,
      r.stripe_created,
      now,
    );
}

/** Traces the successful sessions of a paid period to the invoice that charges them. */
export function markSessionsCharged(
  db: D1Database,
  invoiceId: string,
  userId: string,
  plan: string,
  periodStart: number,
): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE session_usage SET stripe_invoice_id = ?1, charged = 1
       WHERE user_id = ?2 AND plan = ?3 AND period_start = ?4 AND status = 'success'
         AND (stripe_invoice_id IS NULL OR stripe_invoice_id <> ?1 OR charged = 0)`,
    )
    .bind(invoiceId, userId, plan, periodStart);
}
