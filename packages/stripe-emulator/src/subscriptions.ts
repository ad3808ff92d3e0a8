/**
 * Subscription lifecycle: start (from a completed checkout), period close (invoice + advance),
 * cancel, and updates (metadata, cancel_at_period_end, item changes without prorations).
 */
import type { Ctx } from "./context";
import { ApiError, invalidRequest, missingParam, missingReference } from "./errors";
import {
  createInvoice,
  type Emission,
  finalizeAndPay,
  isMetered,
  licensedLine,
  meteredLine,
} from "./invoicing";
import type { Params } from "./params";
import { addInterval, periodEndAfter } from "./pricing";
import { type BillingModeRec, type ItemRec, newId, type PriceRec, type SubscriptionRec } from "./state";
import { subscriptionView } from "./views";

function recurringOf(price: PriceRec): NonNullable<PriceRec["recurring"]> {
  if (!price.recurring) throw new Error(`emulator invariant: ${price.id} is not recurring`);
  return price.recurring;
}

function intervalOf(ctx: Ctx, sub: SubscriptionRec): NonNullable<PriceRec["recurring"]> {
  const first = sub.items[0];
  const price = first && ctx.state.prices.get(first.price);
  if (!price) throw new Error(`emulator invariant: ${sub.id} has no priced item`);
  return recurringOf(price);
}

export function newItem(
  ctx: Ctx,
  price: PriceRec,
  quantity: number | null,
  start: number,
  end: number,
): ItemRec {
  return {
    id: newId("si"),
    created: ctx.state.now(),
    price: price.id,
    quantity: isMetered(price) ? null : (quantity ?? 1),
    metadata: {},
    periodStart: start,
    periodEnd: end,
  };
}

/** An active subscription whose first period is [now, now + interval), with its first invoice (draft). */
export function startSubscription(
  ctx: Ctx,
  customer: string,
  lines: { price: PriceRec; quantity: number | null }[],
  metadata: Record<string, string>,
  billingMode: BillingModeRec,
): SubscriptionRec {
  const now = ctx.state.now();
  const first = lines[0];
  if (!first) throw new Error("emulator invariant: a subscription needs items");
  const recurring = recurringOf(first.price);
  const end = addInterval(now, recurring.interval, recurring.intervalCount);
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
    canceledAt: null,
    endedAt: null,
    cancellation: { comment: null, feedback: null, reason: null },
    latestInvoice: null,
    items: lines.map((l) => newItem(ctx, l.price, l.quantity, now, end)),
  };
  ctx.state.subscriptions.set(sub.id, sub);
  return sub;
}

/** The first invoice: licensed items for the first period, metered items at 0. */
export function firstInvoice(ctx: Ctx, sub: SubscriptionRec) {
  const lines = sub.items.map((item) => {
    const price = ctx.state.prices.get(item.price);
    const l =
      price && isMetered(price)
        ? meteredLine(ctx, sub, item, item.periodStart, item.periodStart)
        : licensedLine(ctx, item, item.periodStart, item.periodEnd);
    return { ...l, periodEnd: item.periodEnd };
  });
  return createInvoice(ctx, sub, "subscription_create", sub.startDate, sub.startDate, lines);
}

/**
 * Closes the current period [start, end) (or [start, at) when `at` is given, which also moves the
 * billing cycle anchor to `at`): invoices metered usage for it and licensed items for the next
 * period, tries to pay, then advances the items (or ends the subscription if it was set to cancel
 * at period end).
 */
export function closePeriod(ctx: Ctx, sub: SubscriptionRec, at: number | undefined, em: Emission) {
  if (sub.status === "canceled") {
    throw new ApiError(
      409,
      "invalid_request_error",
      `Subscription ${sub.id} is canceled.`,
      "subscription_canceled",
    );
  }
  const first = sub.items[0];
  if (!first) throw new Error(`emulator invariant: ${sub.id} has no items`);
  const start = first.periodStart;
  const scheduledEnd = first.periodEnd;
  if (at !== undefined && (at <= start || at > scheduledEnd)) {
    throw invalidRequest(`at must be within (${start}, ${scheduledEnd}].`, undefined, "at");
  }
  const end = at ?? scheduledEnd;
  const { interval, intervalCount } = intervalOf(ctx, sub);
  const anchor = at ?? sub.billingCycleAnchor;
  const nextEnd = periodEndAfter(anchor, end, interval, intervalCount);
  const ending = sub.cancelAtPeriodEnd;
  const lines = sub.items.flatMap((item) => {
    const price = ctx.state.prices.get(item.price);
    if (price && isMetered(price)) return [meteredLine(ctx, sub, item, start, end)];
    return ending ? [] : [licensedLine(ctx, item, end, nextEnd)];
  });
  const invoice = createInvoice(ctx, sub, "subscription_cycle", start, end, lines);
  finalizeAndPay(ctx, invoice, em);
  if (ending) {
    sub.status = "canceled";
    sub.endedAt = end;
    sub.canceledAt ??= ctx.state.now();
    sub.cancellation.reason ??= "cancellation_requested";
    em.emit("customer.subscription.deleted", subscriptionView(ctx.state, sub));
  } else {
    em.updateSubscription(sub, () => {
      sub.billingCycleAnchor = anchor;
      for (const item of sub.items) {
        item.periodStart = end;
        item.periodEnd = nextEnd;
      }
    });
  }
  return invoice;
}

/** DELETE /v1/subscriptions/{id}: ends it now; `invoice_now` bills metered usage so far. */
export function cancelSubscription(ctx: Ctx, sub: SubscriptionRec, p: Params, em: Emission): void {
  if (sub.status === "canceled") {
    throw invalidRequest(
      `This subscription has already been canceled: ${sub.id}.`,
      undefined,
      "subscription",
    );
  }
  const invoiceNow = p.optBool("invoice_now") ?? false;
  const details = p.optObject("cancellation_details");
  const now = ctx.state.now();
  sub.status = "canceled";
  sub.canceledAt = now;
  sub.endedAt = now;
  sub.cancellation = {
    comment: details?.optNullableString("comment") ?? sub.cancellation.comment,
    feedback: details?.optNullableString("feedback") ?? sub.cancellation.feedback,
    reason: "cancellation_requested",
  };
  em.emit("customer.subscription.deleted", subscriptionView(ctx.state, sub));
  if (invoiceNow) {
    const start = sub.items[0]?.periodStart ?? now;
    const lines = sub.items.flatMap((item) => {
      const price = ctx.state.prices.get(item.price);
      return price && isMetered(price) ? [meteredLine(ctx, sub, item, start, now)] : [];
    });
    if (lines.length > 0)
      finalizeAndPay(ctx, createInvoice(ctx, sub, "subscription_cycle", start, now, lines), em);
  }
}

function applyItemChanges(ctx: Ctx, sub: SubscriptionRec, p: Params): ItemRec[] {
  const items = [...sub.items];
  const { interval, intervalCount } = intervalOf(ctx, sub);
  const current = sub.items[0];
  for (const change of p.list("items")) {
    const id = change.optString("id");
    const existing = id === undefined ? undefined : items.find((i) => i.id === id);
    if (id !== undefined && !existing) throw missingReference("subscription item", id, change.name("id"));
    if (existing && change.optBool("deleted")) {
      items.splice(items.indexOf(existing), 1);
      continue;
    }
    const priceId = change.optString("price") ?? existing?.price;
    if (!priceId) throw missingParam(change.name("price"));
    const price = ctx.state.prices.get(priceId);
    if (!price) throw missingReference("price", priceId, change.name("price"));
    const recurring = price.recurring;
    if (!recurring || recurring.interval !== interval || recurring.intervalCount !== intervalCount) {
      throw invalidRequest(
        "All prices on a subscription must have the same recurring interval.",
        undefined,
        change.name("price"),
      );
    }
    const quantity = change.optInt("quantity", { min: 0 });
    if (quantity !== undefined && isMetered(price)) {
      throw invalidRequest(
        "Quantity should not be specified where usage_type is `metered`.",
        undefined,
        change.name("quantity"),
      );
    }
    const metadata = change.metadata(existing?.metadata ?? {});
    const base =
      existing ?? newItem(ctx, price, quantity ?? 1, current?.periodStart ?? 0, current?.periodEnd ?? 0);
    const updated: ItemRec = {
      ...base,
      price: price.id,
      quantity: isMetered(price) ? null : (quantity ?? base.quantity ?? 1),
      metadata,
    };
    if (existing) items[items.indexOf(existing)] = updated;
    else items.push(updated);
  }
  if (items.length === 0) throw invalidRequest("A subscription needs at least one item.", undefined, "items");
  return items;
}

/** POST /v1/subscriptions/{id}: metadata, cancel_at_period_end, cancellation_details, items. */
export function updateSubscription(ctx: Ctx, sub: SubscriptionRec, p: Params, em: Emission): void {
  const canceled = sub.status === "canceled";
  const allowedWhenCanceled = new Set(["metadata", "cancellation_details", "expand"]);
  if (canceled && Object.keys(p.raw).some((k) => !allowedWhenCanceled.has(k))) {
    throw invalidRequest("A canceled subscription can only update its cancellation_details and metadata.");
  }
  const metadata = p.metadata(sub.metadata);
  const cancelAtPeriodEnd = p.optBool("cancel_at_period_end");
  const details = p.optObject("cancellation_details");
  const items = p.has("items") ? applyItemChanges(ctx, sub, p) : sub.items;
  em.updateSubscription(sub, () => {
    sub.metadata = metadata;
    if (cancelAtPeriodEnd !== undefined) sub.cancelAtPeriodEnd = cancelAtPeriodEnd;
    if (details) {
      sub.cancellation.comment = details.optNullableString("comment") ?? sub.cancellation.comment;
      sub.cancellation.feedback = details.optNullableString("feedback") ?? sub.cancellation.feedback;
    }
    sub.items = items;
  });
}
