/**
 * Invoices for subscriptions: line building (licensed in advance, metered in arrears from the
 * meter aggregation), the draft -> open -> paid lifecycle, and payment attempts (which can be
 * made to fail once per customer), each step emitting the events Stripe sends.
 */
import type { Ctx } from "./context";
import { diff } from "./diff";
import { invalidRequest } from "./errors";
import { aggregate } from "./meters";
import { amountFor, formatMoney } from "./pricing";
import {
  type BillingReason,
  DAY,
  type InvoiceLineRec,
  type InvoiceRec,
  type ItemRec,
  newId,
  type PriceRec,
  type SubscriptionRec,
} from "./state";
import { invoiceView, subscriptionView } from "./views";
import type { RequestInfo } from "./webhooks";

/** Emits events for one operation and remembers their ids. */
export class Emission {
  readonly ids: string[] = [];

  constructor(
    private readonly ctx: Ctx,
    private readonly request: RequestInfo,
  ) {}

  emit(type: string, object: unknown, previousAttributes?: Record<string, unknown>): void {
    this.ids.push(this.ctx.webhooks.emit(type, object, this.request, previousAttributes).id);
  }

  /** Runs `change` on a subscription and emits customer.subscription.updated if anything changed. */
  updateSubscription(sub: SubscriptionRec, change: () => void): void {
    const before = subscriptionView(this.ctx.state, sub);
    change();
    const after = subscriptionView(this.ctx.state, sub);
    const prev = diff(before, after);
    if (Object.keys(prev).length > 0) this.emit("customer.subscription.updated", after, prev);
  }
}

function priceOf(ctx: Ctx, id: string): PriceRec {
  const price = ctx.state.prices.get(id);
  if (!price) throw new Error(`emulator invariant: unknown price ${id}`);
  return price;
}

export function isMetered(price: PriceRec): boolean {
  return price.recurring?.usageType === "metered";
}

function line(
  ctx: Ctx,
  item: ItemRec,
  quantity: number,
  periodStart: number,
  periodEnd: number,
): InvoiceLineRec {
  const price = priceOf(ctx, item.price);
  const product = ctx.state.products.get(price.product);
  const name = product?.name ?? price.product;
  const every = price.recurring ? ` / ${price.recurring.interval}` : "";
  const at =
    price.billingScheme === "tiered"
      ? `${price.tiersMode} tiers`
      : `at ${formatMoney(price.unitAmount ?? 0, price.currency)}${every}`;
  return {
    id: newId("il", 24),
    amount: amountFor(price, quantity),
    quantity: Math.max(0, quantity),
    unitAmountDecimal: price.billingScheme === "per_unit" ? String(price.unitAmount ?? 0) : null,
    description: `${Math.max(0, quantity)} × ${name} (${at})`,
    price: price.id,
    product: price.product,
    subscriptionItem: item.id,
    periodStart,
    periodEnd,
  };
}

/** A licensed item billed in advance for [start, end). */
export function licensedLine(ctx: Ctx, item: ItemRec, start: number, end: number): InvoiceLineRec {
  return line(ctx, item, item.quantity ?? 1, start, end);
}

/** A metered item billed in arrears from the customer's meter aggregation over [start, end). */
export function meteredLine(
  ctx: Ctx,
  sub: SubscriptionRec,
  item: ItemRec,
  start: number,
  end: number,
): InvoiceLineRec {
  const price = priceOf(ctx, item.price);
  const meter = price.recurring?.meter ? ctx.state.meters.get(price.recurring.meter) : undefined;
  const usage = meter ? aggregate(ctx.state, meter, sub.customer, start, end) : 0;
  return line(ctx, item, usage, start, end);
}

export function createInvoice(
  ctx: Ctx,
  sub: SubscriptionRec,
  reason: BillingReason,
  periodStart: number,
  periodEnd: number,
  lines: InvoiceLineRec[],
): InvoiceRec {
  const inv: InvoiceRec = {
    id: newId("in", 24),
    created: ctx.state.now(),
    customer: sub.customer,
    subscription: sub.id,
    status: "draft",
    billingReason: reason,
    currency: sub.currency,
    periodStart,
    periodEnd,
    lines,
    number: null,
    attemptCount: 0,
    finalizedAt: null,
    paidAt: null,
    nextPaymentAttempt: null,
    metadata: {},
  };
  ctx.state.invoices.set(inv.id, inv);
  sub.latestInvoice = inv.id;
  return inv;
}

function invoiceTotal(inv: InvoiceRec): number {
  return inv.lines.reduce((sum, l) => sum + l.amount, 0);
}

/** invoice.created (draft), invoice.finalized (open), then a payment attempt. */
export function finalizeAndPay(ctx: Ctx, inv: InvoiceRec, em: Emission): void {
  em.emit("invoice.created", invoiceView(ctx.state, inv));
  const customer = ctx.state.customers.get(inv.customer);
  inv.status = "open";
  inv.finalizedAt = ctx.state.now();
  if (customer) {
    inv.number = `${customer.invoicePrefix}-${String(customer.nextInvoiceSequence).padStart(4, "0")}`;
    customer.nextInvoiceSequence += 1;
  }
  em.emit("invoice.finalized", invoiceView(ctx.state, inv));
  attemptPayment(ctx, inv, em);
}

/**
 * Pays an open invoice, unless the customer was flagged to fail its next payment: then
 * invoice.payment_failed and the subscription goes past_due. $0 invoices need no payment
 * and never consume the flag. Returns whether the invoice is paid.
 */
export function attemptPayment(ctx: Ctx, inv: InvoiceRec, em: Emission): boolean {
  if (inv.status !== "open") {
    throw invalidRequest(
      `Invoice ${inv.id} is ${inv.status}; only open invoices can be paid.`,
      "invoice_not_open",
    );
  }
  const { state } = ctx;
  const now = state.now();
  const customer = state.customers.get(inv.customer);
  const sub = state.subscriptions.get(inv.subscription);
  const total = invoiceTotal(inv);
  if (total > 0) inv.attemptCount += 1;
  if (total > 0 && customer?.failNextPayment) {
    customer.failNextPayment = false;
    inv.nextPaymentAttempt = now + 3 * DAY;
    em.emit("invoice.payment_failed", invoiceView(state, inv));
    if (sub && sub.status === "active") em.updateSubscription(sub, () => (sub.status = "past_due"));
    return false;
  }
  inv.status = "paid";
  inv.paidAt = now;
  inv.nextPaymentAttempt = null;
  em.emit("invoice.paid", invoiceView(state, inv));
  em.emit("invoice.payment_succeeded", invoiceView(state, inv));
  if (sub?.status === "past_due") {
    const stillOpen = [...state.invoices.values()].some(
      (i) => i.subscription === sub.id && i.status === "open",
    );
    if (!stillOpen) em.updateSubscription(sub, () => (sub.status = "active"));
  }
  return true;
}
