/**
 * Subscription lifecycle: start (from a completed checkout), the end of a billing period (renewal
 * or final invoice, optionally entering a schedule phase), scheduled and immediate cancellation,
 * and `POST /v1/subscriptions/{id}` (see updates.ts for item changes).
 */
import type { Ctx } from "./context";
import { ApiError, invalidRequest } from "./errors";
import {
  announce,
  createInvoice,
  createInvoiceItem,
  type Emission,
  isMetered,
  licensedLine,
  meteredLine,
  pendingForSubscription,
  pendingItems,
  priceOf,
} from "./invoicing";
import { intervalOf, newItem, periodOf, recurringOf } from "./items";
import type { Params } from "./params";
import { addInterval, formatDate, periodEndAfter, prorate } from "./pricing";
import type {
  BillingModeRec,
  InvoiceLineRec,
  InvoiceRec,
  PriceRec,
  ProrationBehavior,
  SubscriptionRec,
} from "./state";
import { newId } from "./state";
import { applyPlan, type ItemPlan, type PaymentBehavior, planFromParams } from "./updates";
import { invoiceItemView, scheduleView, subscriptionView } from "./views";

/** An active subscription whose first period is [now, now + interval). */
export function startSubscription(
  ctx: Ctx,
  customer: string,
  lines: { price: PriceRec; quantity: number | null }[],
  metadata: Record<string, string>,
  billingMode: BillingModeRec,
  automaticTax = false,
): SubscriptionRec {
  const now = ctx.state.nowFor(customer);
  const first = lines[0];
  if (!first) throw new Error("emulator invariant: a subscription needs items");
  const recurring = recurringOf(first.price);
  const period = { start: now, end: addInterval(now, recurring.interval, recurring.intervalCount) };
  const sub: SubscriptionRec = {
    id: newId("sub", 24),
    created: now,
    customer,
    currency: first.price.currency,
    status: "active",
    metadata: { ...metadata },
    billingMode: { ...billingMode },
    startDate: now,
    billingCycleAnchor: now,
    cancelAtPeriodEnd: false,
    cancelAt: null,
    canceledAt: null,
    endedAt: null,
    cancellation: { comment: null, feedback: null, reason: null },
    latestInvoice: null,
    schedule: null,
    items: lines.map((l) => newItem(ctx, customer, l.price, l.quantity, period, now)),
    automaticTax,
  };
  ctx.state.subscriptions.set(sub.id, sub);
  return sub;
}

/** The first invoice (draft): licensed items for the first period, metered items at 0. */
export function firstInvoice(ctx: Ctx, sub: SubscriptionRec): InvoiceRec {
  const lines = sub.items.map((item) => {
    const price = priceOf(ctx, item.price);
    if (isMetered(price))
      return {
        ...meteredLine(ctx, sub, item, item.periodStart, item.periodStart),
        periodEnd: item.periodEnd,
      };
    const line = licensedLine(ctx, sub, item, item.periodStart, item.periodEnd);
    item.debits = [
      { amount: line.amount, start: item.periodStart, end: item.periodEnd, activeUntil: item.periodEnd },
    ];
    return line;
  });
  return createInvoice(ctx, {
    customer: sub.customer,
    currency: sub.currency,
    subscription: sub,
    reason: "subscription_create",
    periodStart: sub.startDate,
    periodEnd: sub.startDate,
    lines,
    items: pendingForSubscription(ctx, sub),
  });
}

/** Ends a subscription at `at`: canceled, customer.subscription.deleted. */
export function endSubscription(ctx: Ctx, sub: SubscriptionRec, at: number, em: Emission): void {
  sub.status = "canceled";
  sub.endedAt = at;
  sub.canceledAt ??= ctx.state.nowFor(sub.customer);
  sub.cancellation.reason ??= "cancellation_requested";
  em.emit("customer.subscription.deleted", subscriptionView(ctx.state, sub));
  settleSchedule(ctx, sub, at, em);
}

/**
 * The schedule of a subscription that ended: completed when it ended at the end of the last phase
 * of an `end_behavior=cancel` schedule, canceled otherwise ("Canceling a subscription schedule
 * cancels the subscription as well"; subscription_schedule.canceled "Occurs whenever a
 * subscription schedule is canceled").
 */
function settleSchedule(ctx: Ctx, sub: SubscriptionRec, at: number, em: Emission): void {
  const sc = sub.schedule ? ctx.state.schedules.get(sub.schedule) : undefined;
  if (sc?.status !== "active") return;
  const last = sc.phases[sc.phases.length - 1];
  if (sc.endBehavior === "cancel" && sc.current === sc.phases.length - 1 && last?.end === at) {
    sc.status = "completed";
    sc.completedAt = at;
    em.emit("subscription_schedule.completed", scheduleView(ctx.state, sc));
  } else {
    sc.status = "canceled";
    sc.canceledAt = ctx.state.nowFor(sc.customer);
    em.emit("subscription_schedule.canceled", scheduleView(ctx.state, sc));
  }
}

/** The period's usage lines of the metered items: [usageStart, end) at each item's price. */
function usageLines(
  ctx: Ctx,
  sub: SubscriptionRec,
  end: number,
  only?: (itemId: string) => boolean,
): InvoiceLineRec[] {
  return sub.items
    .filter((item) => isMetered(priceOf(ctx, item.price)) && (!only || only(item.id)))
    .map((item) => meteredLine(ctx, sub, item, item.usageStart, end));
}

export interface CycleOptions {
  /** Close early at this time (the `close_period` control), moving the billing cycle anchor. */
  at?: number;
  /** `now` for the close_period control; Stripe's own renewals wait for the grace period. */
  finalize: "now" | "after_grace";
  /** A schedule phase that starts at this period end: the items the next period has. */
  phase?: ItemPlan;
  /** Runs inside the customer.subscription.updated change when the subscription renews. */
  onRenew?: () => void;
}

/**
 * Ends the current period [start, end): one invoice with the period's metered usage in arrears and,
 * unless the subscription ends here, the next period's licensed items in advance, plus the
 * subscription's pending invoice items. Then the items move to the next period (entering `phase` if
 * given), or the subscription ends (cancel_at_period_end, or cancel_at at this period end: "the final
 * invoice at the end of the period includes metered usage from the last billing period").
 */
export function cycle(ctx: Ctx, sub: SubscriptionRec, em: Emission, o: CycleOptions): InvoiceRec {
  if (sub.status === "canceled") {
    throw new ApiError(
      409,
      "invalid_request_error",
      `Subscription ${sub.id} is canceled.`,
      "subscription_canceled",
    );
  }
  const { start, end: scheduledEnd } = periodOf(sub);
  if (o.at !== undefined && (o.at <= start || o.at > scheduledEnd)) {
    throw invalidRequest(`at must be within (${start}, ${scheduledEnd}].`, undefined, "at");
  }
  const end = o.at ?? scheduledEnd;
  const { interval, intervalCount } = intervalOf(ctx, sub);
  const anchor = o.at ?? sub.billingCycleAnchor;
  const nextEnd = periodEndAfter(anchor, end, interval, intervalCount);
  const ending = sub.cancelAtPeriodEnd || (sub.cancelAt !== null && sub.cancelAt <= end);
  const next =
    o.phase?.next.map((n) => ({ ...n.item, price: n.price.id, quantity: n.quantity })) ?? sub.items;
  const staying = new Set(
    o.phase
      ? o.phase.next.filter((n) => !n.isNew && n.item.price === n.price.id).map((n) => n.item.id)
      : sub.items.map((i) => i.id),
  );
  // Classic billing mode: "Two invoices are generated" when a phase transition removes usage-based
  // items; flexible: "A single consolidated invoice is generated."
  const separate = o.phase !== undefined && sub.billingMode.type === "classic";
  const usage = usageLines(ctx, sub, end, separate ? (id) => staying.has(id) : undefined);
  const leaving = separate ? usageLines(ctx, sub, end, (id) => !staying.has(id)) : [];
  if (leaving.length > 0) {
    const inv = createInvoice(ctx, {
      customer: sub.customer,
      currency: sub.currency,
      subscription: sub,
      reason: "subscription_cycle",
      periodStart: start,
      periodEnd: end,
      lines: leaving,
    });
    announce(ctx, inv, em, o.finalize);
  }
  // "If set during a future period, this will always cause a proration for that period."
  const cutoff = sub.cancelAt !== null && sub.cancelAt > end && sub.cancelAt < nextEnd ? sub.cancelAt : null;
  const advance = ending
    ? []
    : next
        .filter((item) => !isMetered(priceOf(ctx, item.price)))
        .map((item) => {
          const line = licensedLine(ctx, sub, item, end, nextEnd);
          if (cutoff === null) return line;
          return {
            ...line,
            amount: prorate(line.amount, cutoff - end, nextEnd - end),
            periodEnd: cutoff,
            proration: true,
          };
        });
  // Lines in item order: the current items, then the phase's new ones.
  const order = [...sub.items.map((i) => i.id), ...next.map((i) => i.id)];
  const rank = (l: InvoiceLineRec) => order.indexOf(l.subscriptionItem ?? "");
  const invoice = createInvoice(ctx, {
    customer: sub.customer,
    currency: sub.currency,
    subscription: sub,
    reason: "subscription_cycle",
    periodStart: start,
    periodEnd: end,
    lines: [...usage, ...advance].sort((a, b) => rank(a) - rank(b)),
    items: pendingForSubscription(ctx, sub),
  });
  announce(ctx, invoice, em, o.finalize);
  if (ending) {
    endSubscription(ctx, sub, end, em);
    return invoice;
  }
  em.updateSubscription(sub, () => {
    sub.billingCycleAnchor = anchor;
    if (o.phase) {
      sub.items = o.phase.next.map((n) => {
        n.item.price = n.price.id;
        n.item.quantity = n.quantity;
        n.item.metadata = n.metadata;
        return n.item;
      });
    }
    for (const item of sub.items) {
      item.periodStart = end;
      item.periodEnd = nextEnd;
      item.usageStart = end;
      const line = advance.find((l) => l.subscriptionItem === item.id);
      item.debits = line
        ? [{ amount: line.amount, start: end, end: line.periodEnd, activeUntil: line.periodEnd }]
        : [];
    }
    o.onRenew?.();
  });
  return invoice;
}

/**
 * `cancel_at` reached before the period end: a final invoice with the metered usage up to then and
 * the subscription's pending items, and the subscription ends.
 */
export function cancelAtReached(ctx: Ctx, sub: SubscriptionRec, em: Emission): InvoiceRec {
  const at = sub.cancelAt ?? ctx.state.nowFor(sub.customer);
  const { start } = periodOf(sub);
  const invoice = createInvoice(ctx, {
    customer: sub.customer,
    currency: sub.currency,
    subscription: sub,
    reason: "subscription_cycle",
    periodStart: start,
    periodEnd: at,
    lines: usageLines(ctx, sub, at),
    items: pendingForSubscription(ctx, sub),
  });
  announce(ctx, invoice, em, "after_grace");
  endSubscription(ctx, sub, at, em);
  return invoice;
}

export interface CancelOptions {
  /** "Will generate a final invoice that invoices for any un-invoiced metered usage and new/pending proration invoice items. Defaults to `false`." */
  invoiceNow: boolean;
  /** "Will generate a proration invoice item that credits remaining unused time until the subscription period end. Defaults to `false`." */
  prorate: boolean;
  comment?: string | null;
  feedback?: string | null;
}

/** DELETE /v1/subscriptions/{id} (and the portal's immediate cancellation). */
export function cancelNow(ctx: Ctx, sub: SubscriptionRec, o: CancelOptions, em: Emission): InvoiceRec | null {
  if (sub.status === "canceled") {
    throw invalidRequest(
      `This subscription has already been canceled: ${sub.id}.`,
      undefined,
      "subscription",
    );
  }
  const now = ctx.state.nowFor(sub.customer);
  const { start, end } = periodOf(sub);
  if (o.prorate && now < end) {
    const flexible = sub.billingMode.type === "flexible";
    for (const item of sub.items) {
      const price = priceOf(ctx, item.price);
      if (isMetered(price)) continue;
      const amounts = flexible
        ? item.debits
            .filter((d) => d.activeUntil > now)
            .map((d) => prorate(d.amount, d.activeUntil - now, d.end - d.start))
        : [prorate(licensedLine(ctx, sub, item, start, end).amount, end - now, end - start)];
      for (const amount of amounts) {
        if (amount === 0) continue;
        createInvoiceItem(
          ctx,
          {
            customer: sub.customer,
            currency: sub.currency,
            amount: -amount,
            quantity: item.quantity ?? 1,
            description: `Unused time on ${ctx.state.products.get(price.product)?.name ?? price.product} after ${formatDate(now)}`,
            price,
            periodStart: now,
            periodEnd: end,
            proration: true,
            subscription: sub.id,
            subscriptionItem: item.id,
          },
          em,
        );
      }
      for (const d of item.debits) d.activeUntil = Math.min(d.activeUntil, now);
    }
  }
  sub.status = "canceled";
  sub.canceledAt = now;
  sub.endedAt = now;
  sub.cancellation = {
    comment: o.comment ?? sub.cancellation.comment,
    feedback: o.feedback ?? sub.cancellation.feedback,
    reason: "cancellation_requested",
  };
  em.emit("customer.subscription.deleted", subscriptionView(ctx.state, sub));
  settleSchedule(ctx, sub, now, em);
  if (o.invoiceNow) {
    const lines = usageLines(ctx, sub, now);
    const items = pendingItems(ctx, (ii) => ii.subscription === sub.id);
    if (lines.length === 0 && items.length === 0) return null;
    const invoice = createInvoice(ctx, {
      customer: sub.customer,
      currency: sub.currency,
      subscription: sub,
      reason: "subscription_cycle",
      periodStart: start,
      periodEnd: now,
      lines,
      items,
    });
    announce(ctx, invoice, em, "after_grace");
    return invoice;
  }
  if (!o.prorate) {
    // "if the subscription is set to cancel immediately, pending prorations are removed if
    // invoice_now and prorate are both set to false."
    for (const ii of pendingItems(ctx, (i) => i.subscription === sub.id && i.proration)) {
      ctx.state.invoiceItems.delete(ii.id);
      em.emit("invoiceitem.deleted", invoiceItemView(ctx.state, ii));
    }
  }
  return null;
}

/** DELETE /v1/subscriptions/{id}: `invoice_now` and `prorate` both default to false. */
export function cancelSubscription(ctx: Ctx, sub: SubscriptionRec, p: Params, em: Emission): void {
  const details = p.optObject("cancellation_details");
  cancelNow(
    ctx,
    sub,
    {
      invoiceNow: p.optBool("invoice_now") ?? false,
      prorate: p.optBool("prorate") ?? false,
      comment: details?.optNullableString("comment"),
      feedback: details?.optNullableString("feedback"),
    },
    em,
  );
}

const PRORATION_BEHAVIORS = ["always_invoice", "create_prorations", "none"] as const;
const PAYMENT_BEHAVIORS = [
  "allow_incomplete",
  "default_incomplete",
  "error_if_incomplete",
  "pending_if_incomplete",
] as const;

/** `cancel_at`: a timestamp, `min_period_end` or `max_period_end` (resolved now), or "" to clear. */
function parseCancelAt(sub: SubscriptionRec, p: Params, now: number): number | null | undefined {
  const raw = p.optString("cancel_at");
  if (raw === undefined) return undefined;
  if (raw === "") return null;
  const ends = sub.items.map((i) => i.periodEnd);
  // https://docs.stripe.com/changelog/basil/2025-07-30/cancel-at-enums: "these values resolve to
  // timestamps immediately and further changes to items.data.current_period_end don't affect them."
  if (raw === "min_period_end") return Math.min(...ends);
  if (raw === "max_period_end") return Math.max(...ends);
  if (raw === "max_billed_until") {
    throw invalidRequest(
      "The emulator does not model prebilling; use `max_period_end`.",
      undefined,
      "cancel_at",
    );
  }
  const at = p.optInt("cancel_at");
  if (at === undefined || at <= now) {
    throw invalidRequest("cancel_at must be a time in the future.", "parameter_invalid_integer", "cancel_at");
  }
  return at;
}

/**
 * POST /v1/subscriptions/{id}: metadata, cancel_at_period_end, cancel_at, cancellation_details,
 * items (with proration_behavior), billing_cycle_anchor ({type: now|unchanged}) and
 * payment_behavior.
 */
export function updateSubscription(ctx: Ctx, sub: SubscriptionRec, p: Params, em: Emission): void {
  const allowedWhenCanceled = new Set(["metadata", "cancellation_details", "expand"]);
  const details = p.optObject("cancellation_details");
  const setDetails = () => {
    if (!details) return;
    sub.cancellation.comment = details.optNullableString("comment") ?? sub.cancellation.comment;
    sub.cancellation.feedback = details.optNullableString("feedback") ?? sub.cancellation.feedback;
  };
  if (sub.status === "canceled") {
    if (Object.keys(p.raw).some((k) => !allowedWhenCanceled.has(k))) {
      // "You can't reactivate canceled subscriptions."
      throw invalidRequest("A canceled subscription can only update its cancellation_details and metadata.");
    }
    const metadata = p.metadata(sub.metadata);
    em.updateSubscription(sub, () => {
      sub.metadata = metadata;
      setDetails();
    });
    return;
  }
  const now = ctx.state.nowFor(sub.customer);
  const metadata = p.metadata(sub.metadata);
  const cancelAtPeriodEnd = p.optBool("cancel_at_period_end");
  const cancelAt = parseCancelAt(sub, p, now);
  if (cancelAtPeriodEnd === true && cancelAt != null) {
    throw invalidRequest(
      "You may only specify one of these parameters: cancel_at, cancel_at_period_end.",
      undefined,
      "cancel_at",
    );
  }
  const prorationBehavior: ProrationBehavior =
    p.optEnum("proration_behavior", PRORATION_BEHAVIORS) ?? "create_prorations";
  const paymentBehavior: PaymentBehavior =
    p.optEnum("payment_behavior", PAYMENT_BEHAVIORS) ?? "allow_incomplete";
  if (paymentBehavior === "pending_if_incomplete") {
    throw invalidRequest(
      "The emulator does not model pending updates (`payment_behavior=pending_if_incomplete`).",
      undefined,
      "payment_behavior",
    );
  }
  const anchor = p.optObject("billing_cycle_anchor")?.enumOf("type", ["now", "unchanged"] as const);
  const plan = p.has("items") ? planFromParams(ctx, sub, p.list("items")) : planFromParams(ctx, sub, []);
  applyPlan(
    ctx,
    sub,
    plan,
    {
      at: now,
      prorationBehavior,
      resetAnchor: anchor === "now",
      cancelAt: cancelAt ?? undefined,
      source: "api",
      paymentBehavior,
    },
    em,
    () => {
      sub.metadata = metadata;
      if (cancelAtPeriodEnd !== undefined) {
        sub.cancelAtPeriodEnd = cancelAtPeriodEnd;
        if (cancelAtPeriodEnd) sub.cancelAt = null;
      }
      if (cancelAt !== undefined) {
        sub.cancelAt = cancelAt;
        if (cancelAt !== null) sub.cancelAtPeriodEnd = false;
      }
      setDetails();
    },
  );
}
