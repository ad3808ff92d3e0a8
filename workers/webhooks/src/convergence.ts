/**
 * Pure decisions: the D1 rows that mirror what Stripe holds. Every time comes from Stripe's own
 * timestamps (never the time a webhook was received), so the rows are the same whatever order
 * or number of copies the events arrive in. Stripe seconds become epoch milliseconds here.
 */
import { type PaidPlanId, PaidPlanId as PaidPlanIds, PLANS } from "@aigate/shared";
import type { StripeInvoice, StripePrice, StripeSubscription } from "./stripeObjects";

const ms = (seconds: number) => seconds * 1000;

/** Stripe statuses under which a subscription's plan is in force (a failing payment keeps it, with grace). */
export const PLAN_GRANTING_STATUSES = ["active", "trialing", "past_due", "unpaid"] as const;
/** Statuses that say a payment is failing: the grace period runs from the failed invoice. */
const PAST_DUE_STATUSES = new Set(["past_due", "unpaid"]);

/**
 * The paid plan made of these price lookup keys: the plan all of whose keys are present, else
 * the plan sharing the most keys; null when no key belongs to a paid plan.
 */
export function planOfLookupKeys(keys: readonly (string | null | undefined)[]): PaidPlanId | null {
  const present = new Set(keys.filter((k): k is string => typeof k === "string"));
  let best: { plan: PaidPlanId; score: number } | null = null;
  for (const plan of PaidPlanIds.options) {
    const wanted = PLANS[plan].stripeLookupKeys;
    const matched = wanted.filter((k) => present.has(k)).length;
    if (matched === 0) continue;
    const score = matched === wanted.length ? 1000 + matched : matched;
    if (best === null || score > best.score) best = { plan, score };
  }
  return best?.plan ?? null;
}

export function planOfSubscription(sub: StripeSubscription): PaidPlanId | null {
  return planOfLookupKeys(sub.items.data.map((i) => i.price.lookup_key));
}

export interface SubscriptionRow {
  stripe_subscription_id: string;
  user_id: string;
  stripe_customer_id: string;
  plan: PaidPlanId;
  status: string;
  current_period_start: number | null;
  current_period_end: number | null;
  cancel_at_period_end: number;
  past_due_since: number | null;
  started_at: number;
  ended_at: number | null;
}

/** When the subscription's current plan took effect: its start, or when its items last changed. */
export function planEffectiveFrom(sub: StripeSubscription): number {
  const itemsCreated = sub.items.data.map((i) => i.created);
  const newest = itemsCreated.length > 0 ? Math.max(...itemsCreated) : sub.created;
  return newest <= sub.created ? ms(sub.start_date) : ms(newest);
}

/** The current period: the latest one among the subscription's items. */
export function currentPeriod(sub: StripeSubscription): { start: number; end: number } | null {
  let best: { start: number; end: number } | null = null;
  for (const item of sub.items.data) {
    const p = { start: ms(item.current_period_start), end: ms(item.current_period_end) };
    if (best === null || p.start > best.start) best = p;
  }
  return best;
}

export function endedAt(sub: StripeSubscription): number | null {
  if (sub.ended_at !== null && sub.ended_at !== undefined) return ms(sub.ended_at);
  if (sub.status === "canceled" || sub.status === "incomplete_expired") {
    return ms(sub.canceled_at ?? sub.created);
  }
  return null;
}

/**
 * The subscriptions row. `failedInvoiceAt` is when the failing invoice was finalized (null when
 * unknown): the start of the grace period while Stripe says past_due or unpaid.
 */
export function subscriptionRow(
  sub: StripeSubscription,
  userId: string,
  plan: PaidPlanId,
  failedInvoiceAt: number | null,
  now: number,
): SubscriptionRow {
  const period = currentPeriod(sub);
  return {
    stripe_subscription_id: sub.id,
    user_id: userId,
    stripe_customer_id: sub.customer,
    plan,
    status: sub.status,
    current_period_start: period?.start ?? null,
    current_period_end: period?.end ?? null,
    cancel_at_period_end: sub.cancel_at_period_end ? 1 : 0,
    past_due_since: PAST_DUE_STATUSES.has(sub.status) ? (failedInvoiceAt ?? now) : null,
    started_at: ms(sub.start_date),
    ended_at: endedAt(sub),
  };
}

export interface PlanHistoryRow {
  effective_from: number;
  plan: "free" | PaidPlanId;
  stripe_subscription_id: string | null;
}

/**
 * plan_history rows implied by one subscription: its plan from when it took effect, and free
 * from when it ended. A subscription that never became active (incomplete, incomplete_expired)
 * or ended before its plan took effect implies no paid row.
 */
export function planHistoryRows(sub: StripeSubscription, plan: PaidPlanId): PlanHistoryRow[] {
  const rows: PlanHistoryRow[] = [];
  const from = planEffectiveFrom(sub);
  const ended = endedAt(sub);
  const everGranted =
    (PLAN_GRANTING_STATUSES as readonly string[]).includes(sub.status) || sub.status === "canceled";
  if (everGranted && (ended === null || ended > from)) {
    rows.push({ effective_from: from, plan, stripe_subscription_id: sub.id });
  }
  if (ended !== null && rows.length > 0) {
    rows.push({ effective_from: ended, plan: "free", stripe_subscription_id: null });
  }
  return rows;
}

/** Every period reported on the subscription's items. */
export function billingPeriods(sub: StripeSubscription): { start: number; end: number }[] {
  const seen = new Map<number, number>();
  for (const item of sub.items.data) {
    const start = ms(item.current_period_start);
    const end = ms(item.current_period_end);
    seen.set(start, Math.min(end, seen.get(start) ?? end));
  }
  return [...seen].map(([start, end]) => ({ start, end }));
}

/** When the failing invoice's payment started failing: its finalization (or creation) time. */
export function failedInvoiceTime(invoice: StripeInvoice): number {
  return ms(invoice.status_transitions.finalized_at ?? invoice.created);
}

export interface InvoiceRow {
  stripe_invoice_id: string;
  user_id: string;
  stripe_customer_id: string;
  stripe_subscription_id: string | null;
  status: string;
  currency: string;
  subtotal_cents: number;
  total_cents: number;
  amount_paid_cents: number;
  period_start: number;
  period_end: number;
  usage_period_start: number | null;
  usage_period_end: number | null;
  finalized_at: number | null;
  paid_at: number | null;
  stripe_created: number;
  /** The paid plan the invoice bills (from its lines' prices), null when none is ours. */
  plan: PaidPlanId | null;
  billing_reason: string | null;
}

/**
 * The invoices row. `prices` describes the prices of the invoice's lines (by id): the usage
 * period is the period of the metered lines, the plan the one their lookup keys make up.
 */
export function invoiceRow(
  invoice: StripeInvoice,
  userId: string,
  subscriptionId: string | null,
  prices: ReadonlyMap<string, StripePrice>,
): InvoiceRow {
  let usageStart: number | null = null;
  let usageEnd: number | null = null;
  const keys: (string | null | undefined)[] = [];
  for (const line of invoice.lines.data) {
    const priceId = line.pricing?.price_details?.price;
    const price = priceId ? prices.get(priceId) : undefined;
    if (!price) continue;
    keys.push(price.lookup_key);
    if (price.recurring?.usage_type !== "metered") continue;
    usageStart = Math.min(usageStart ?? Number.POSITIVE_INFINITY, ms(line.period.start));
    usageEnd = Math.max(usageEnd ?? 0, ms(line.period.end));
  }
  return {
    stripe_invoice_id: invoice.id,
    user_id: userId,
    stripe_customer_id: invoice.customer,
    stripe_subscription_id: subscriptionId,
    status: invoice.status,
    currency: invoice.currency,
    subtotal_cents: invoice.subtotal,
    total_cents: invoice.total,
    amount_paid_cents: invoice.amount_paid,
    period_start: ms(invoice.period_start),
    period_end: ms(invoice.period_end),
    usage_period_start: usageStart,
    usage_period_end: usageEnd,
    finalized_at: invoice.status_transitions.finalized_at
      ? ms(invoice.status_transitions.finalized_at)
      : null,
    paid_at: invoice.status_transitions.paid_at ? ms(invoice.status_transitions.paid_at) : null,
    stripe_created: ms(invoice.created),
    plan: planOfLookupKeys(keys),
    billing_reason: invoice.billing_reason ?? null,
  };
}

/**
 * Which sessions an invoice charges: the successful sessions of its plan in its usage period.
 * Only finalized, non-void invoices charge anything, and a subscription's first invoice bills
 * no usage (its metered lines cover the period just opened, at zero: usage is billed in arrears).
 */
export function chargedUsage(row: InvoiceRow): { plan: PaidPlanId; periodStart: number } | null {
  if (row.finalized_at === null || row.status === "void" || row.status === "draft") return null;
  if (row.billing_reason === "subscription_create") return null;
  if (row.plan === null || row.usage_period_start === null) return null;
  return { plan: row.plan, periodStart: row.usage_period_start };
}
