/**
 * Changing a subscription's items mid-period, as `POST /v1/subscriptions/{id}` and schedule phase
 * transitions do: which items stay, change or go; what that bills (prorations of licensed items,
 * unbilled usage of metered items per billing mode); an optional billing cycle anchor reset; and the
 * invoice created at once. Planning is pure, so a payment that must not fail
 * (`payment_behavior=error_if_incomplete`) is checked before anything changes.
 *
 * Sources: https://docs.stripe.com/billing/subscriptions/prorations,
 * https://docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup,
 * https://docs.stripe.com/billing/subscriptions/billing-mode/compare,
 * https://docs.stripe.com/billing/subscriptions/billing-cycle.
 */
import type { Ctx } from "./context";
import { ApiError, invalidRequest, missingParam, missingReference } from "./errors";
import {
  announce,
  createInvoice,
  createInvoiceItem,
  type Emission,
  isMetered,
  licensedLine,
  meteredLine,
  type NewInvoiceItem,
  pendingForSubscription,
  priceOf,
  productName,
  usageOf,
} from "./invoicing";
import { intervalOf, newItem, periodOf } from "./items";
import type { Params } from "./params";
import { addInterval, amountDue, amountFor, formatDate, prorate } from "./pricing";
import type {
  InvoiceItemRec,
  InvoiceLineRec,
  InvoiceRec,
  ItemRec,
  Metadata,
  PriceRec,
  ProrationBehavior,
  SubscriptionRec,
} from "./state";

/** One item of the subscription after the change. */
export interface NextItem {
  item: ItemRec;
  isNew: boolean;
  price: PriceRec;
  quantity: number | null;
  metadata: Metadata;
}

export interface ItemPlan {
  next: NextItem[];
  removed: ItemRec[];
}

export type PaymentBehavior =
  | "allow_incomplete"
  | "default_incomplete"
  | "error_if_incomplete"
  | "pending_if_incomplete";

export interface ChangeOptions {
  /** When the change happens (the customer's "now", or a phase start). */
  at: number;
  prorationBehavior: ProrationBehavior;
  /** `billing_cycle_anchor: {type: "now"}`: every item's period restarts at `at`. */
  resetAnchor: boolean;
  /** A new `cancel_at` before the period end credits the licensed time after it. */
  cancelAt?: number | null;
  source: "api" | "phase";
  paymentBehavior: PaymentBehavior;
}

function unchanged(sub: SubscriptionRec, ctx: Ctx): ItemPlan {
  return {
    next: sub.items.map((item) => ({
      item,
      isNew: false,
      price: priceOf(ctx, item.price),
      quantity: item.quantity,
      metadata: item.metadata,
    })),
    removed: [],
  };
}

function assertSameInterval(ctx: Ctx, sub: SubscriptionRec, price: PriceRec, param: string): void {
  const { interval, intervalCount } = intervalOf(ctx, sub);
  const r = price.recurring;
  if (!r || r.interval !== interval || r.intervalCount !== intervalCount) {
    throw invalidRequest(
      "All prices on a subscription must have the same recurring interval.",
      undefined,
      param,
    );
  }
  if (price.currency !== sub.currency) {
    throw invalidRequest(
      `The price must be in the subscription's currency (${sub.currency}).`,
      undefined,
      param,
    );
  }
}

function assertDistinctPrices(plan: ItemPlan): void {
  const seen = new Set<string>();
  for (const n of plan.next) {
    if (seen.has(n.price.id)) {
      throw invalidRequest(
        `Cannot add multiple subscription items with the same price: ${n.price.id}.`,
        undefined,
        "items",
      );
    }
    seen.add(n.price.id);
  }
  if (plan.next.length === 0)
    throw invalidRequest("A subscription needs at least one item.", undefined, "items");
}

/** `items[i][id|price|quantity|deleted|metadata]` applied to the current items (no side effects). */
export function planFromParams(ctx: Ctx, sub: SubscriptionRec, changes: Params[]): ItemPlan {
  const plan = unchanged(sub, ctx);
  const period = periodOf(sub);
  for (const change of changes) {
    const id = change.optString("id");
    const index = id === undefined ? -1 : plan.next.findIndex((n) => n.item.id === id);
    if (id !== undefined && index < 0) throw missingReference("subscription item", id, change.name("id"));
    const existing = plan.next[index];
    if (existing && change.optBool("deleted")) {
      plan.next.splice(index, 1);
      if (!existing.isNew) plan.removed.push(existing.item);
      continue;
    }
    const priceId = change.optString("price") ?? existing?.price.id;
    if (!priceId) throw missingParam(change.name("price"));
    const price = ctx.state.prices.get(priceId);
    if (!price) throw missingReference("price", priceId, change.name("price"));
    if (!price.active && price.id !== existing?.price.id) {
      throw invalidRequest(`The price ${price.id} is not active.`, undefined, change.name("price"));
    }
    assertSameInterval(ctx, sub, price, change.name("price"));
    const quantity = change.optInt("quantity", { min: 0 });
    if (quantity !== undefined && isMetered(price)) {
      throw invalidRequest(
        "Quantity should not be specified where usage_type is `metered`.",
        undefined,
        change.name("quantity"),
      );
    }
    const metadata = change.metadata(existing?.metadata ?? {});
    const keepQuantity = existing && existing.price.id === price.id ? existing.quantity : null;
    const next: NextItem = {
      item: existing?.item ?? newItem(ctx, sub.customer, price, quantity ?? 1, period, period.start),
      isNew: existing?.isNew ?? true,
      price,
      quantity: isMetered(price) ? null : (quantity ?? keepQuantity ?? 1),
      metadata,
    };
    if (existing) plan.next[index] = next;
    else plan.next.push(next);
  }
  assertDistinctPrices(plan);
  return plan;
}

/**
 * A schedule phase's items against the current ones: an item whose price is in the phase stays
 * (with the phase's quantity), other items go, and the phase's other prices become new items.
 */
export function planFromPhase(
  ctx: Ctx,
  sub: SubscriptionRec,
  items: { price: string; quantity: number | null; metadata: Metadata }[],
): ItemPlan {
  const period = periodOf(sub);
  const current = [...sub.items];
  const next: NextItem[] = items.map((target) => {
    const price = priceOf(ctx, target.price);
    const match = current.findIndex((i) => i.price === price.id);
    const quantity = isMetered(price) ? null : (target.quantity ?? 1);
    if (match >= 0) {
      const [item] = current.splice(match, 1);
      if (item) return { item, isNew: false, price, quantity, metadata: { ...target.metadata } };
    }
    return {
      item: newItem(ctx, sub.customer, price, quantity, period, period.start, target.metadata),
      isNew: true,
      price,
      quantity,
      metadata: { ...target.metadata },
    };
  });
  const plan = { next, removed: current };
  assertDistinctPrices(plan);
  return plan;
}

function label(ctx: Ctx, price: PriceRec, quantity: number | null): string {
  const name = productName(ctx, price);
  return quantity !== null && quantity !== 1 ? `${quantity} × ${name}` : name;
}

/** Credits for the unused licensed time [t, period end) of an item. */
function credits(ctx: Ctx, sub: SubscriptionRec, item: ItemRec, t: number): NewInvoiceItem[] {
  const { start, end } = periodOf(sub);
  const price = priceOf(ctx, item.price);
  const base = {
    customer: sub.customer,
    currency: sub.currency,
    quantity: item.quantity ?? 1,
    description: `Unused time on ${label(ctx, price, item.quantity)} after ${formatDate(t)}`,
    price,
    periodStart: t,
    periodEnd: end,
    proration: true,
    subscription: sub.id,
    subscriptionItem: item.id,
  };
  if (sub.billingMode.type === "flexible") {
    // "these prorations use the original debited amount instead of current subscription values.
    // If the time period being credited was originally billed across multiple debits, Stripe
    // generates multiple credit prorations: one for each corresponding original debit."
    return item.debits
      .filter((d) => d.activeUntil > t)
      .map((d) => ({ ...base, amount: -prorate(d.amount, d.activeUntil - t, d.end - d.start) }))
      .filter((s) => s.amount !== 0);
  }
  // classic: "calculated based on the value of the subscription item's current price, tax,
  // quantity, and the last discounts used"
  const amount = -prorate(amountFor(price, item.quantity ?? 1), end - t, end - start);
  return amount === 0 ? [] : [{ ...base, amount }];
}

/** The debit for the remaining time [t, period end) of an item at its new price and quantity. */
function debit(ctx: Ctx, sub: SubscriptionRec, n: NextItem, t: number): NewInvoiceItem | null {
  const { start, end } = periodOf(sub);
  const amount = prorate(amountFor(n.price, n.quantity ?? 1), end - t, end - start);
  if (amount === 0) return null;
  return {
    customer: sub.customer,
    currency: sub.currency,
    amount,
    quantity: n.quantity ?? 1,
    description: `Remaining time on ${label(ctx, n.price, n.quantity)} after ${formatDate(t)}`,
    price: n.price,
    periodStart: t,
    periodEnd: end,
    proration: true,
    subscription: sub.id,
    subscriptionItem: n.item.id,
  };
}

/** Everything a change bills, computed before anything is changed. */
interface Effects {
  /** Invoice items to create (prorations; flexible: unbilled usage of metered items leaving). */
  items: NewInvoiceItem[];
  /** Licensed items whose current debits are credited, and from when. */
  credited: Map<string, number>;
  /** Debits of the new licensed configuration for the rest of the period, by item id. */
  debits: Map<string, number>;
  /** Lines of the invoice created at once, besides invoice items. */
  lines: InvoiceLineRec[];
  /** Classic phase transitions: a separate invoice for unbilled usage of removed metered items. */
  classicUsageLines: InvoiceLineRec[];
  /** Whether an invoice is created at once, and which pending items it takes. */
  invoice: "none" | "all_pending" | "own_items";
  newPeriod: { start: number; end: number } | null;
}

function effectsOf(ctx: Ctx, sub: SubscriptionRec, plan: ItemPlan, o: ChangeOptions): Effects {
  const t = o.at;
  const { end } = periodOf(sub);
  const flexible = sub.billingMode.type === "flexible";
  const prorating = o.prorationBehavior !== "none" && t < end;
  const fx: Effects = {
    items: [],
    credited: new Map(),
    debits: new Map(),
    lines: [],
    classicUsageLines: [],
    invoice: "none",
    newPeriod: null,
  };
  const kept = plan.next.filter((n) => !n.isNew);
  const priceChanged = (n: NextItem) => n.item.price !== n.price.id;
  const leavingMetered = [
    ...plan.removed.filter((i) => isMetered(priceOf(ctx, i.price))),
    ...kept.filter((n) => priceChanged(n) && isMetered(priceOf(ctx, n.item.price))).map((n) => n.item),
  ];
  for (const item of leavingMetered) {
    const old = priceOf(ctx, item.price);
    if (flexible) {
      // "we create an invoice item that bills for previously reported metered usage when you
      // remove a metered price ... If you want to remove a metered price without billing for it,
      // set proration_behavior to none."
      if (o.prorationBehavior === "none") continue;
      const quantity = usageOf(ctx, sub.customer, old.recurring?.meter ?? null, item.usageStart, t);
      if (quantity === 0) continue;
      const line = meteredLine(ctx, sub, item, item.usageStart, t, old);
      fx.items.push({
        customer: sub.customer,
        currency: sub.currency,
        amount: amountFor(old, quantity),
        quantity,
        unitAmountDecimal: line.unitAmountDecimal ?? undefined,
        description: line.description,
        price: old,
        periodStart: item.usageStart,
        periodEnd: t,
        subscription: sub.id,
        subscriptionItem: item.id,
      });
    } else if (o.resetAnchor) {
      // classic: "Reset the billing_cycle_anchor parameter to now, applying the old price to
      // previously reported usage."
      fx.lines.push(meteredLine(ctx, sub, item, item.usageStart, t, old));
    } else if (o.source === "phase") {
      // classic phase transition: "An invoice (but no invoice item) is generated for unbilled usage"
      fx.classicUsageLines.push(meteredLine(ctx, sub, item, item.usageStart, t, old));
    }
    // classic API update: "Usage from January 1 to January 16 isn't billed."
  }
  const licensed = (i: ItemRec) => !isMetered(priceOf(ctx, i.price));
  if (prorating) {
    const creditedItems = o.resetAnchor
      ? [...plan.removed, ...kept.map((n) => n.item)].filter(licensed)
      : [
          ...plan.removed.filter(licensed),
          ...kept
            .filter((n) => licensed(n.item) && (priceChanged(n) || n.quantity !== n.item.quantity))
            .map((n) => n.item),
        ];
    for (const item of creditedItems) {
      fx.items.push(...credits(ctx, sub, item, t));
      fx.credited.set(item.id, t);
    }
    if (!o.resetAnchor) {
      const debited = plan.next.filter(
        (n) => !isMetered(n.price) && (n.isNew || priceChanged(n) || n.quantity !== n.item.quantity),
      );
      for (const n of debited) {
        const spec = debit(ctx, sub, n, t);
        if (spec) fx.items.push(spec);
        fx.debits.set(n.item.id, spec?.amount ?? 0);
      }
    }
  }
  // cancel_at before the period end: "this will cause a proration if prorations have been enabled
  // using proration_behavior" (credit for the licensed time after the cancellation).
  if (o.cancelAt != null && o.cancelAt < end && o.prorationBehavior !== "none" && !o.resetAnchor) {
    for (const n of plan.next) {
      if (isMetered(n.price) || fx.credited.has(n.item.id)) continue;
      fx.items.push(...credits(ctx, sub, n.item, o.cancelAt));
      fx.credited.set(n.item.id, o.cancelAt);
    }
  }
  if (o.resetAnchor) {
    const { interval, intervalCount } = intervalOf(ctx, sub);
    fx.newPeriod = { start: t, end: addInterval(t, interval, intervalCount) };
    // "When changing the billing period results in ending a subscription's service period early,
    // you charge the customer for the usage accrued during the shortened billing period."
    for (const n of kept) {
      if (isMetered(n.price) && !priceChanged(n)) {
        fx.lines.push(meteredLine(ctx, sub, n.item, n.item.usageStart, t));
      }
    }
    // Classic: "Billing cycle anchor reset invoices include pending items only when proration
    // behavior isn't always_invoice." Flexible: "Pending invoice items are always included on all
    // invoices a subscription generates."
    fx.invoice = !flexible && o.prorationBehavior === "always_invoice" ? "own_items" : "all_pending";
  } else if (o.prorationBehavior === "always_invoice" && fx.items.length > 0) {
    // "To bill a customer immediately for a change to a subscription on the same billing period,
    // set proration_behavior to always_invoice ... This calculates the proration, then immediately
    // generates an invoice."
    fx.invoice = "all_pending";
  }
  return fx;
}

/** Licensed lines for the new period of a billing cycle anchor reset (the items as they will be). */
function advanceLines(
  ctx: Ctx,
  sub: SubscriptionRec,
  plan: ItemPlan,
  period: { start: number; end: number },
) {
  return plan.next
    .filter((n) => !isMetered(n.price))
    .map((n) => {
      const line = licensedLine(
        ctx,
        sub,
        { ...n.item, price: n.price.id, quantity: n.quantity },
        period.start,
        period.end,
      );
      return { itemId: n.item.id, line };
    });
}

function cardDeclined(): ApiError {
  return new ApiError(402, "card_error", "Your card was declined.", "card_declined");
}

/**
 * Applies a plan: creates its invoice items, changes the items (and the period on an anchor
 * reset), sends customer.subscription.updated, and creates the invoice that is due at once. That
 * invoice is finalized and paid at once, as `payment_behavior` ("Controls how Stripe handles
 * payment when a subscription update requires payment") implies. Returns it, if any.
 */
export function applyPlan(
  ctx: Ctx,
  sub: SubscriptionRec,
  plan: ItemPlan,
  o: ChangeOptions,
  em: Emission,
  extra: () => void = () => {},
): InvoiceRec | null {
  const fx = effectsOf(ctx, sub, plan, o);
  const advance = fx.newPeriod ? advanceLines(ctx, sub, plan, fx.newPeriod) : [];
  if (fx.invoice !== "none") checkPayment(ctx, sub, fx, advance, o);
  const created: InvoiceItemRec[] = fx.items.map((spec) => createInvoiceItem(ctx, spec, em));
  em.updateSubscription(sub, () => {
    for (const item of sub.items) {
      const from = fx.credited.get(item.id);
      if (from === undefined) continue;
      for (const d of item.debits) d.activeUntil = Math.min(d.activeUntil, from);
    }
    sub.items = plan.next.map((n) => {
      const item = n.item;
      const swapped = n.isNew || item.price !== n.price.id;
      if (swapped && isMetered(n.price)) item.usageStart = o.at;
      const amount = fx.debits.get(item.id);
      if (amount !== undefined) {
        const { end } = periodOf(sub);
        item.debits = [
          ...item.debits.filter((d) => d.activeUntil > d.start),
          { amount, start: o.at, end, activeUntil: end },
        ];
      }
      item.price = n.price.id;
      item.quantity = n.quantity;
      item.metadata = n.metadata;
      return item;
    });
    if (fx.newPeriod) {
      const period = fx.newPeriod;
      sub.billingCycleAnchor = period.start;
      for (const item of sub.items) {
        item.periodStart = period.start;
        item.periodEnd = period.end;
        item.usageStart = period.start;
        const adv = advance.find((a) => a.itemId === item.id);
        item.debits = adv
          ? [{ amount: adv.line.amount, start: period.start, end: period.end, activeUntil: period.end }]
          : [];
      }
    }
    extra();
  });
  if (fx.classicUsageLines.length > 0) {
    const inv = createInvoice(ctx, {
      customer: sub.customer,
      currency: sub.currency,
      subscription: sub,
      reason: "subscription_update",
      periodStart: Math.min(...fx.classicUsageLines.map((l) => l.periodStart)),
      periodEnd: o.at,
      lines: fx.classicUsageLines,
    });
    announce(ctx, inv, em, "after_grace");
  }
  if (fx.invoice === "none") return null;
  const items = fx.invoice === "own_items" ? created : pendingForSubscription(ctx, sub);
  const inv = createInvoice(ctx, {
    customer: sub.customer,
    currency: sub.currency,
    subscription: sub,
    reason: "subscription_update",
    periodStart: o.at,
    periodEnd: fx.newPeriod?.end ?? o.at,
    lines: [...advance.map((a) => a.line), ...fx.lines],
    items,
  });
  if (o.source === "phase") {
    announce(ctx, inv, em, "after_grace");
    return inv;
  }
  if (o.paymentBehavior === "default_incomplete") {
    inv.autoAdvance = false;
    announce(ctx, inv, em, "now");
    inv.autoAdvance = true;
    if (inv.status === "open" && sub.status === "active")
      em.updateSubscription(sub, () => (sub.status = "past_due"));
    return inv;
  }
  announce(ctx, inv, em, "now");
  return inv;
}

/** `error_if_incomplete`: "return an HTTP 402 status code if a subscription's invoice cannot be paid". */
function checkPayment(
  ctx: Ctx,
  sub: SubscriptionRec,
  fx: Effects,
  advance: { line: InvoiceLineRec }[],
  o: ChangeOptions,
): void {
  if (o.paymentBehavior !== "error_if_incomplete") return;
  const customer = ctx.state.customers.get(sub.customer);
  if (!customer?.failNextPayment) return;
  const pending = fx.invoice === "own_items" ? [] : pendingForSubscription(ctx, sub);
  const lines = [...advance.map((a) => a.line), ...fx.lines, ...fx.items, ...pending];
  if (amountDue({ lines, startingBalance: customer.balance }) > 0) {
    customer.failNextPayment = false;
    throw cardDeclined();
  }
}
