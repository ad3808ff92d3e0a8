/**
 * SQL of Stripe convergence (the webhooks worker, and the api after its own plan changes). Every
 * write is an idempotent upsert, so a state can be written any number of times. The statements of
 * one event about a user run in one db.batch() (a transaction) on the user's shard; the event's
 * dedupe row and the customer directory live in the home database (written after the user's
 * shard, in the same batch when the user lives on home). See customers.ts.
 */
import type { InvoiceLineRow, InvoiceRow, PlanHistoryRow, SubscriptionRow } from "./convergence";
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

/**
 * The user a Stripe customer belongs to, from the customer directory (in the home database:
 * `home`), or null when the directory does not know the customer.
 */
export async function userOfCustomer(home: D1Database, customerId: string): Promise<string | null> {
  const row = await home
    .prepare("SELECT user_id FROM customer_directory WHERE stripe_customer_id = ?1")
    .bind(customerId)
    .first<{ user_id: string }>();
  return row?.user_id ?? null;
}

/** A user's recorded customer: what a batch reads back after insertCustomer. */
export interface RecordedCustomer {
  stripe_customer_id: string;
  created_at: number;
}

/** Reads back the customer recorded for the user (none: no row). */
export function recordedCustomer(db: D1Database, userId: string): D1PreparedStatement {
  return db
    .prepare("SELECT stripe_customer_id, created_at FROM stripe_customers WHERE user_id = ?1")
    .bind(userId);
}

/**
 * The directory row of a customer recorded on another database (the user's shard): written only
 * when that shard's stripe_customers row records this very customer, with its creation time.
 */
export function insertDirectoryEntry(
  home: D1Database,
  userId: string,
  recorded: RecordedCustomer,
): D1PreparedStatement {
  return home
    .prepare(
      `INSERT INTO customer_directory (stripe_customer_id, user_id, created_at) VALUES (?1, ?2, ?3)
       ON CONFLICT DO NOTHING`,
    )
    .bind(recorded.stripe_customer_id, userId, recorded.created_at);
}

/**
 * The directory row of a customer recorded in the same database (the user lives on home): copied
 * from the stripe_customers row when it records this customer (as migration 0016 filled it), in
 * the batch that records it.
 */
export function directoryFromCustomers(db: D1Database, customerId: string): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO customer_directory (stripe_customer_id, user_id, created_at)
       SELECT stripe_customer_id, user_id, created_at FROM stripe_customers WHERE stripe_customer_id = ?1
       ON CONFLICT DO NOTHING`,
    )
    .bind(customerId);
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
         current_period_start, current_period_end, cancel_at_period_end, past_due_since, started_at, ended_at, updated_at,
         billing_mode, cancel_at, schedule_id, pending_plan, pending_effective_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
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
         updated_at = excluded.updated_at,
         billing_mode = excluded.billing_mode,
         cancel_at = excluded.cancel_at,
         schedule_id = excluded.schedule_id,
         pending_plan = excluded.pending_plan,
         pending_effective_at = excluded.pending_effective_at
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
      r.billing_mode,
      r.cancel_at,
      r.schedule_id,
      r.pending_plan,
      r.pending_effective_at,
    );
}

/**
 * A plan-history row, converged to Stripe: a paid row is written as Stripe holds it; a free row
 * (a subscription's end) never replaces a paid one at the same instant (order-independent).
 * Only an actual change counts as one (changes() > 0), so re-applying the same state asks for no
 * re-attribution.
 */
export function upsertPlanHistory(
  db: D1Database,
  userId: string,
  r: PlanHistoryRow,
  now: number,
): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at, stripe_price_id,
         meter_event_name)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
       ON CONFLICT (user_id, effective_from) DO UPDATE SET
         plan = excluded.plan, stripe_subscription_id = excluded.stripe_subscription_id,
         stripe_price_id = excluded.stripe_price_id, meter_event_name = excluded.meter_event_name,
         recorded_at = excluded.recorded_at
       WHERE (excluded.plan <> 'free' OR plan_history.plan = 'free')
         AND (plan_history.plan, plan_history.stripe_subscription_id, plan_history.stripe_price_id,
              plan_history.meter_event_name)
             IS NOT (excluded.plan, excluded.stripe_subscription_id, excluded.stripe_price_id,
                     excluded.meter_event_name)`,
    )
    .bind(
      userId,
      r.effective_from,
      r.plan,
      r.stripe_subscription_id,
      now,
      r.stripe_price_id,
      r.meter_event_name,
    );
}

/**
 * Asks the biller to re-attribute the user's sessions billed from `fromMs` on, if the statement
 * just before these in the same batch changed anything (SQLite's changes()), and moves the user's
 * attribution epoch on (the classifier's guard against attributing by accounts read before the
 * change). Two statements, in this order: the second sees the first's changes().
 */
export function reattributeIfChanged(
  db: D1Database,
  userId: string,
  fromMs: number,
  now: number,
): D1PreparedStatement[] {
  return [
    db
      .prepare(
        `INSERT INTO reattributions (user_id, from_ms, requested_at) SELECT ?1, ?2, ?3 WHERE changes() > 0
         ON CONFLICT (user_id) DO UPDATE SET from_ms = min(reattributions.from_ms, excluded.from_ms),
           requested_at = excluded.requested_at`,
      )
      .bind(userId, fromMs, now),
    db
      .prepare(
        `INSERT INTO attribution_epochs (user_id, epoch) SELECT ?1, 1 WHERE changes() > 0
         ON CONFLICT (user_id) DO UPDATE SET epoch = attribution_epochs.epoch + 1`,
      )
      .bind(userId),
  ];
}

/** A billing period; if Stripe closed it early (an anchor reset, a cancellation), the shorter end wins. */
export function upsertBillingPeriod(
  db: D1Database,
  subscriptionId: string,
  p: { start: number; end: number },
): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO billing_periods (stripe_subscription_id, period_start, period_end) VALUES (?1, ?2, ?3)
       ON CONFLICT (stripe_subscription_id, period_start) DO UPDATE SET period_end = excluded.period_end
       WHERE excluded.period_end < billing_periods.period_end`,
    )
    .bind(subscriptionId, p.start, p.end);
}

/**
 * The usage series of a subscription follow its periods: a series inside [start, end) whose window
 * reaches past `end` ends there (sessions billed after it are re-attributed). Frozen series (Stripe
 * already billed them) keep their window.
 */
export function shortenSeries(
  db: D1Database,
  subscriptionId: string,
  p: { start: number; end: number },
): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE usage_periods SET period_end = ?3
       WHERE stripe_subscription_id = ?1 AND period_start >= ?2 AND period_start < ?3 AND period_end > ?3
         AND frozen_at IS NULL`,
    )
    .bind(subscriptionId, p.start, p.end);
}

/**
 * A subscription's plan (or price) changed at `from`: its series that were still running then end
 * there (sessions billed after it are re-attributed to the new plan's series).
 */
export function endSeriesAt(db: D1Database, subscriptionId: string, from: number): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE usage_periods SET period_end = ?2
       WHERE stripe_subscription_id = ?1 AND period_start < ?2 AND period_end > ?2 AND frozen_at IS NULL`,
    )
    .bind(subscriptionId, from);
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
         finalized_at, paid_at, stripe_created, updated_at, billing_reason, number, hosted_invoice_url, invoice_pdf,
         tax_cents)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)
       ON CONFLICT (stripe_invoice_id) DO UPDATE SET
         status = excluded.status,
         subtotal_cents = excluded.subtotal_cents,
         tax_cents = coalesce(excluded.tax_cents, invoices.tax_cents),
         total_cents = excluded.total_cents,
         amount_paid_cents = excluded.amount_paid_cents,
         period_start = excluded.period_start,
         period_end = excluded.period_end,
         usage_period_start = excluded.usage_period_start,
         usage_period_end = excluded.usage_period_end,
         finalized_at = coalesce(excluded.finalized_at, invoices.finalized_at),
         paid_at = coalesce(excluded.paid_at, invoices.paid_at),
         billing_reason = excluded.billing_reason,
         number = coalesce(excluded.number, invoices.number),
         hosted_invoice_url = coalesce(excluded.hosted_invoice_url, invoices.hosted_invoice_url),
         invoice_pdf = coalesce(excluded.invoice_pdf, invoices.invoice_pdf),
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
      r.billing_reason,
      r.number,
      r.hosted_invoice_url,
      r.invoice_pdf,
      r.tax_cents,
    );
}

/** The lines of a finalized invoice (they no longer change). */
export function upsertInvoiceLines(db: D1Database, rows: InvoiceLineRow[]): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO invoice_lines (stripe_invoice_id, line_id, stripe_subscription_id, stripe_price_id, plan, metered,
         stripe_invoice_item_id, period_start, period_end, quantity, amount_cents, description)
       SELECT l.value->>'$.stripe_invoice_id', l.value->>'$.line_id', l.value->>'$.stripe_subscription_id',
         l.value->>'$.stripe_price_id', l.value->>'$.plan', l.value->>'$.metered', l.value->>'$.stripe_invoice_item_id',
         l.value->>'$.period_start', l.value->>'$.period_end', l.value->>'$.quantity', l.value->>'$.amount_cents',
         l.value->>'$.description'
       FROM json_each(?1) l WHERE true
       ON CONFLICT (stripe_invoice_id, line_id) DO NOTHING`,
    )
    .bind(JSON.stringify(rows));
}

/** Sessions Stripe billed for a series: its plan's metered lines inside its window, on final invoices. */
const BILLED = `(SELECT coalesce(sum(l.quantity), 0) FROM invoice_lines l
  WHERE l.stripe_subscription_id = usage_periods.stripe_subscription_id AND l.plan = usage_periods.plan
    AND l.metered = 1 AND l.period_start >= usage_periods.period_start AND l.period_end <= usage_periods.period_end)`;

/**
 * Freezes the series Stripe has billed: those of the subscription whose window ended by the time
 * a finalized invoice of it was created, or by the end of the period a renewal closes
 * (`coversUntilMs`, convergence.ts invoiceCoversUntil): that invoice took their usage, or their
 * item was gone by then. Their billed quantity is read from the invoice lines, never assumed.
 *
 * Except those a draft invoice of the subscription will still bill: `latestDraftMs`, the creation
 * time of its latest draft (null: none). A draft created at or after a series' end (the renewal
 * closing that period, a draft during Stripe's finalization grace) may bill its usage, so an
 * invoice finalized meanwhile (an anchor reset's, final at once) must not freeze it.
 */
export function freezeBilledSeries(
  db: D1Database,
  subscriptionId: string,
  invoice: { id: string; coversUntilMs: number },
  now: number,
  latestDraftMs: number | null,
): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE usage_periods SET frozen_at = ?4, stripe_billed = ${BILLED}, stripe_invoice_id = ?2, updated_at = ?4
       WHERE stripe_subscription_id = ?1 AND frozen_at IS NULL AND period_end <= ?3
         AND (?5 IS NULL OR period_end > ?5)`,
    )
    .bind(subscriptionId, invoice.id, invoice.coversUntilMs, now, latestDraftMs);
}

/**
 * Freezes the remaining series of a subscription that ended and has no draft invoice left: no
 * invoice will bill them any more.
 */
/**
 * Records that Stripe said the ended subscription has no draft invoice left (asked in the same
 * sync): only then may the biller's cron freeze its series from what D1 holds (freezeCoveredSeries).
 */
export function markDraftsSettled(db: D1Database, subscriptionId: string, now: number): D1PreparedStatement {
  return db
    .prepare(
      "UPDATE subscriptions SET drafts_settled_at = ?2 WHERE stripe_subscription_id = ?1 AND drafts_settled_at IS NULL",
    )
    .bind(subscriptionId, now);
}

export function freezeEndedSeries(
  db: D1Database,
  subscriptionId: string,
  endedAt: number,
  now: number,
): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE usage_periods SET frozen_at = ?3, stripe_billed = ${BILLED}, updated_at = ?3
       WHERE stripe_subscription_id = ?1 AND frozen_at IS NULL AND period_start < ?2`,
    )
    .bind(subscriptionId, endedAt, now);
}

/** invoiceCoversUntil (convergence.ts) of an invoices row aliased `i`. */
const COVERS_UNTIL = `CASE WHEN i.billing_reason = 'subscription_cycle' THEN max(i.stripe_created, i.period_end)
  ELSE i.stripe_created END`;

/** Which series freezeCoveredSeries freezes (`?1` = now). */
const COVERED_WHERE = `stripe_subscription_id IS NOT NULL AND frozen_at IS NULL AND period_end <= ?1
         AND NOT EXISTS (SELECT 1 FROM invoices d
           WHERE d.stripe_subscription_id = usage_periods.stripe_subscription_id AND d.status = 'draft'
             AND d.stripe_created >= usage_periods.period_end)
         AND (EXISTS (SELECT 1 FROM invoices i
                WHERE i.stripe_subscription_id = usage_periods.stripe_subscription_id AND i.finalized_at IS NOT NULL
                  AND ${COVERS_UNTIL} >= usage_periods.period_end)
           OR (EXISTS (SELECT 1 FROM subscriptions s
                 WHERE s.stripe_subscription_id = usage_periods.stripe_subscription_id AND s.ended_at IS NOT NULL
                   AND s.ended_at <= usage_periods.period_end AND s.drafts_settled_at IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM invoices d
                 WHERE d.stripe_subscription_id = usage_periods.stripe_subscription_id AND d.status = 'draft')))`;

/** The candidates of freezeCoveredSeries, by what D1 knows: subscriptions and their oldest candidate. */
export function coveredSeriesCandidates(db: D1Database, now: number, limit: number): D1PreparedStatement {
  return db
    .prepare(
      `SELECT stripe_subscription_id, min(period_start) AS since FROM usage_periods
       WHERE ${COVERED_WHERE}
       GROUP BY stripe_subscription_id ORDER BY since LIMIT ?2`,
    )
    .bind(now, limit);
}

/**
 * Freezes, from what D1 already knows, the series no webhook froze (a series created after its
 * invoice was finalized: a session judged late): covered by a finalized invoice of their
 * subscription, or of a subscription that ended with no draft invoice left (as Stripe said in a
 * sync: drafts_settled_at; D1 alone may not know the final invoice's draft yet when the
 * subscription's deletion is applied before the invoice's events); never while a draft
 * invoice of the subscription created at or after the series' end may still bill it (as
 * freezeBilledSeries). The biller's minute cron runs it, restricted to `subscriptions` whose
 * invoices it just read from Stripe and stores in the same batch (and which Stripe holds no draft
 * for): the billed quantity never comes from D1's partial copy.
 */
export function freezeCoveredSeries(
  db: D1Database,
  now: number,
  subscriptions?: readonly string[],
): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE usage_periods SET frozen_at = ?1, stripe_billed = ${BILLED}, updated_at = ?1,
         stripe_invoice_id = (SELECT i.stripe_invoice_id FROM invoices i
           WHERE i.stripe_subscription_id = usage_periods.stripe_subscription_id AND i.finalized_at IS NOT NULL
             AND ${COVERS_UNTIL} >= usage_periods.period_end
           ORDER BY i.stripe_created LIMIT 1)
       WHERE ${COVERED_WHERE}
         AND (?2 IS NULL OR stripe_subscription_id IN (SELECT value FROM json_each(?2)))`,
    )
    .bind(now, subscriptions === undefined ? null : JSON.stringify(subscriptions));
}

/** Records which invoice carries our adjustment invoice items. */
export function linkAdjustments(
  db: D1Database,
  invoiceId: string,
  invoiceItemIds: string[],
): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE usage_adjustments SET stripe_invoice_id = ?1
       WHERE stripe_invoice_item_id IN (SELECT value FROM json_each(?2)) AND stripe_invoice_id IS NOT ?1`,
    )
    .bind(invoiceId, JSON.stringify(invoiceItemIds));
}
