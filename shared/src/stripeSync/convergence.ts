/**
 * Pure decisions: the D1 rows that mirror what Stripe holds. Every time comes from Stripe's own
 * timestamps (never the time a webhook was received), so the rows are the same whatever order
 * or number of copies the events arrive in. Stripe seconds become epoch milliseconds here.
 */
import { type PaidPlanId, PaidPlanId as PaidPlanIds, PLANS, type PlanId } from "../plans";
import type { MeteredPrice } from "../pricing";
import type {
  StripeInvoice,
  StripeInvoiceLine,
  StripePrice,
  StripeSchedule,
  StripeSubscription,
} from "./objects";
import { invoiceLineSubscriptionId } from "./objects";

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

function paidPlan(value: string | undefined): PaidPlanId | null {
  const parsed = PaidPlanIds.safeParse(value);
  return parsed.success ? parsed.data : null;
}

/**
 * The plan a price belongs to: its `metadata.plan`, else its product's, else its lookup key. The
 * metadata stays on every price version (lookup keys move to the newest), so subscribers of an
 * older version are recognised.
 */
export function planOfPrice(price: StripePrice): PaidPlanId | null {
  return (
    paidPlan(price.metadata.plan) ??
    paidPlan(price.product.metadata.plan) ??
    planOfLookupKeys([price.lookup_key])
  );
}

/** The subscription's metered item: the one whose usage a series bills. */
export function meteredItem(sub: StripeSubscription) {
  return sub.items.data.find((i) => i.price.recurring?.usage_type === "metered") ?? null;
}

/** The subscription's plan: the plan of its metered price (else of any price it holds). */
export function planOfSubscription(sub: StripeSubscription): PaidPlanId | null {
  const metered = meteredItem(sub);
  if (metered) {
    const plan = planOfPrice(metered.price);
    if (plan) return plan;
  }
  for (const item of sub.items.data) {
    const plan = planOfPrice(item.price);
    if (plan) return plan;
  }
  return null;
}

/** A metered price as the pricing maths reads it. */
export function meteredPriceOf(price: StripePrice): MeteredPrice {
  if (price.billing_scheme === "tiered") {
    if (!price.tiers || !price.tiers_mode)
      throw new Error(`price ${price.id} is tiered but its tiers were not read`);
    return {
      kind: price.tiers_mode,
      currency: price.currency,
      tiers: price.tiers.map((t) => ({
        up_to: t.up_to,
        unit_amount: t.unit_amount ?? 0,
        flat_amount: t.flat_amount ?? 0,
      })),
    };
  }
  return { kind: "per_unit", unit_amount: price.unit_amount ?? 0, currency: price.currency };
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
  cancel_at: number | null;
  past_due_since: number | null;
  started_at: number;
  ended_at: number | null;
  billing_mode: string | null;
  schedule_id: string | null;
  pending_plan: PlanId | null;
  pending_effective_at: number | null;
}

/** When the subscription's current plan took effect: its start, or when its metered item joined. */
export function planEffectiveFrom(sub: StripeSubscription): number {
  const metered = meteredItem(sub);
  const created = metered ? metered.created : Math.max(...sub.items.data.map((i) => i.created), sub.created);
  return created <= sub.created ? ms(sub.start_date) : ms(created);
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

/** When Stripe will end a live subscription: its cancel_at (set by cancel_at_period_end too). */
export function scheduledEnd(sub: StripeSubscription): number | null {
  if (endedAt(sub) !== null) return null;
  if (sub.cancel_at !== null && sub.cancel_at !== undefined) return ms(sub.cancel_at);
  if (sub.cancel_at_period_end) return currentPeriod(sub)?.end ?? null;
  return null;
}

export interface PendingChange {
  plan: PlanId;
  effectiveAt: number;
}

/**
 * What Stripe will change next: a cancellation (to free) or the plan of the schedule's next phase
 * when it differs from the subscription's plan (a phase that keeps the plan only swaps its price:
 * a custom price from the period end, not a plan change). `planOfPriceId` names the plan of a
 * price id (the phase items hold ids).
 */
export function pendingChange(
  sub: StripeSubscription,
  schedule: StripeSchedule | null,
  planOfPriceId: (id: string) => PaidPlanId | null,
): PendingChange | null {
  const end = scheduledEnd(sub);
  if (end !== null) return { plan: "free", effectiveAt: end };
  if (schedule?.status !== "active") return null;
  const currentStart = schedule.current_phase?.start_date;
  const next = schedule.phases
    .filter((p) => currentStart === undefined || p.start_date > currentStart)
    .sort((a, b) => a.start_date - b.start_date)[0];
  if (!next) return null;
  for (const item of next.items) {
    const plan = planOfPriceId(item.price);
    if (plan) return plan === planOfSubscription(sub) ? null : { plan, effectiveAt: ms(next.start_date) };
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
  pending: PendingChange | null,
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
    cancel_at: scheduledEnd(sub),
    past_due_since: PAST_DUE_STATUSES.has(sub.status) ? (failedInvoiceAt ?? now) : null,
    started_at: ms(sub.start_date),
    ended_at: endedAt(sub),
    billing_mode: sub.billing_mode?.type ?? null,
    schedule_id: sub.schedule ?? null,
    pending_plan: pending?.plan ?? null,
    pending_effective_at: pending?.effectiveAt ?? null,
  };
}

export interface PlanHistoryRow {
  effective_from: number;
  plan: "free" | PaidPlanId;
  stripe_subscription_id: string | null;
  stripe_price_id: string | null;
  meter_event_name: string | null;
}

/**
 * plan_history rows implied by one subscription: its plan (with the metered price and meter it
 * bills) from when it took effect, and free from when it ended. A subscription that never became
 * active (incomplete, incomplete_expired) or ended before its plan took effect implies no paid row.
 * Earlier plans of the same subscription stay as they were recorded.
 */
export function planHistoryRows(
  sub: StripeSubscription,
  plan: PaidPlanId,
  meterEventName: string | null,
): PlanHistoryRow[] {
  const rows: PlanHistoryRow[] = [];
  const from = planEffectiveFrom(sub);
  const ended = endedAt(sub);
  const everGranted =
    (PLAN_GRANTING_STATUSES as readonly string[]).includes(sub.status) || sub.status === "canceled";
  if (everGranted && (ended === null || ended > from)) {
    rows.push({
      effective_from: from,
      plan,
      stripe_subscription_id: sub.id,
      stripe_price_id: meteredItem(sub)?.price.id ?? null,
      meter_event_name: meterEventName,
    });
  }
  if (ended !== null && rows.length > 0) {
    rows.push({
      effective_from: ended,
      plan: "free",
      stripe_subscription_id: null,
      stripe_price_id: null,
      meter_event_name: null,
    });
  }
  return rows;
}

/** Every period reported on the subscription's items, cut at its end when it ended early. */
export function billingPeriods(sub: StripeSubscription): { start: number; end: number }[] {
  const ended = endedAt(sub);
  const seen = new Map<number, number>();
  for (const item of sub.items.data) {
    const start = ms(item.current_period_start);
    const end = Math.min(ms(item.current_period_end), ended ?? Number.POSITIVE_INFINITY);
    if (end <= start) continue;
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
  /** The sum of Stripe's `total_taxes` (null when Stripe sent none). */
  tax_cents: number | null;
  total_cents: number;
  amount_paid_cents: number;
  period_start: number;
  period_end: number;
  usage_period_start: number | null;
  usage_period_end: number | null;
  finalized_at: number | null;
  paid_at: number | null;
  stripe_created: number;
  billing_reason: string | null;
  number: string | null;
  hosted_invoice_url: string | null;
  invoice_pdf: string | null;
}

/** The invoices row; the usage period is the span of its metered lines. */
export function invoiceRow(
  invoice: StripeInvoice,
  userId: string,
  subscriptionId: string | null,
  prices: ReadonlyMap<string, StripePrice>,
): InvoiceRow {
  let usageStart: number | null = null;
  let usageEnd: number | null = null;
  for (const line of invoice.lines.data) {
    const priceId = line.pricing?.price_details?.price;
    const price = priceId ? prices.get(priceId) : undefined;
    if (price?.recurring?.usage_type !== "metered") continue;
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
    tax_cents: invoice.total_taxes ? invoice.total_taxes.reduce((sum, t) => sum + t.amount, 0) : null,
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
    billing_reason: invoice.billing_reason ?? null,
    number: invoice.number ?? null,
    hosted_invoice_url: invoice.hosted_invoice_url ?? null,
    invoice_pdf: invoice.invoice_pdf ?? null,
  };
}

export interface InvoiceLineRow {
  stripe_invoice_id: string;
  line_id: string;
  stripe_subscription_id: string | null;
  stripe_price_id: string | null;
  plan: PaidPlanId | null;
  metered: 0 | 1;
  stripe_invoice_item_id: string | null;
  period_start: number;
  period_end: number;
  quantity: number;
  amount_cents: number;
  description: string;
}

/** The lines of a finalized invoice, with the plan and meteredness of their prices. */
export function invoiceLineRows(
  invoice: StripeInvoice,
  prices: ReadonlyMap<string, StripePrice>,
): InvoiceLineRow[] {
  return invoice.lines.data.map((line: StripeInvoiceLine) => {
    const priceId = line.pricing?.price_details?.price ?? null;
    const price = priceId ? prices.get(priceId) : undefined;
    return {
      stripe_invoice_id: invoice.id,
      line_id: line.id,
      stripe_subscription_id: invoiceLineSubscriptionId(line),
      stripe_price_id: priceId,
      plan: price ? planOfPrice(price) : null,
      metered: price?.recurring?.usage_type === "metered" ? 1 : 0,
      stripe_invoice_item_id: line.parent?.invoice_item_details?.invoice_item ?? null,
      period_start: ms(line.period.start),
      period_end: ms(line.period.end),
      quantity: line.quantity ?? 0,
      amount_cents: line.amount,
      description: line.description ?? "",
    };
  });
}

/**
 * Until when (ms) an invoice took its subscription's usage: a renewal (`subscription_cycle`) bills
 * the period it closes, up to that period's end; any other invoice only what was reported before it
 * was created. An invoice made by a change that resets the anchor has the new period's end as its
 * `period_end` (the licensed items it bills in advance): it took none of that period's usage.
 */
export function invoiceCoversUntil(
  invoice: Pick<StripeInvoice, "created" | "period_end" | "billing_reason">,
): number {
  return invoice.billing_reason === "subscription_cycle"
    ? ms(Math.max(invoice.created, invoice.period_end))
    : ms(invoice.created);
}

/** Only finalized invoices bill anything (a draft's lines still change). */
export function isFinal(invoice: Pick<StripeInvoice, "status">): boolean {
  return invoice.status !== "draft";
}
