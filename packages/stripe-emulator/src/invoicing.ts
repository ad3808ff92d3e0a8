/**
 * Invoices: line building (licensed in advance, metered in arrears from the meter aggregation,
 * invoice items), pending invoice items, the draft -> open -> paid lifecycle with the
 * finalization grace period, the customer credit balance, and payment attempts (which can be
 * made to fail once per customer), each step emitting the events Stripe sends.
 */
import type { Ctx } from "./context";
import { diff } from "./diff";
import { invalidRequest } from "./errors";
import { aggregate } from "./meters";
import { amountFor, formatMoney } from "./pricing";
import {
  type BillingReason,
  type CollectionMethod,
  DAY,
  type InvoiceItemRec,
  type InvoiceLineRec,
  type InvoiceRec,
  type ItemRec,
  type Metadata,
  newId,
  type PriceRec,
  type SubscriptionRec,
  type UsageWindow,
} from "./state";
import { amountDueOf, invoiceTotals, taxFor } from "./tax";
import { invoiceItemView, invoiceView, subscriptionView } from "./views";
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

export function priceOf(ctx: Ctx, id: string): PriceRec {
  const price = ctx.state.prices.get(id);
  if (!price) throw new Error(`emulator invariant: unknown price ${id}`);
  return price;
}

export function isMetered(price: PriceRec): boolean {
  return price.recurring?.usageType === "metered";
}

export function productName(ctx: Ctx, price: PriceRec): string {
  return ctx.state.products.get(price.product)?.name ?? price.product;
}

function describe(ctx: Ctx, price: PriceRec, quantity: number): string {
  const every = price.recurring ? ` / ${price.recurring.interval}` : "";
  const at =
    price.billingScheme === "tiered"
      ? `${price.tiersMode} tiers`
      : `at ${formatMoney(price.unitAmount ?? 0, price.currency)}${every}`;
  return `${Math.max(0, quantity)} × ${productName(ctx, price)} (${at})`;
}

/** Usage of a metered price's meter for a customer over [start, end) (0 for an empty window). */
export function usageOf(
  ctx: Ctx,
  customer: string,
  meterId: string | null,
  start: number,
  end: number,
): number {
  const meter = meterId ? ctx.state.meters.get(meterId) : undefined;
  return meter && end > start ? aggregate(ctx.state, meter, customer, start, end) : 0;
}

/** A line for a subscription item's price. `usage` makes it a metered line re-priced at finalization. */
function itemLine(
  ctx: Ctx,
  sub: SubscriptionRec,
  item: ItemRec,
  price: PriceRec,
  quantity: number,
  start: number,
  end: number,
  usage: UsageWindow | null,
): InvoiceLineRec {
  return {
    id: newId("il", 24),
    amount: amountFor(price, quantity),
    quantity: Math.max(0, quantity),
    unitAmountDecimal: price.billingScheme === "per_unit" ? String(price.unitAmount ?? 0) : null,
    description: describe(ctx, price, quantity),
    price: price.id,
    product: price.product,
    subscription: sub.id,
    subscriptionItem: item.id,
    invoiceItem: null,
    proration: false,
    periodStart: start,
    periodEnd: end,
    usage,
  };
}

/** A licensed item billed in advance for [start, end). */
export function licensedLine(
  ctx: Ctx,
  sub: SubscriptionRec,
  item: ItemRec,
  start: number,
  end: number,
): InvoiceLineRec {
  return itemLine(ctx, sub, item, priceOf(ctx, item.price), item.quantity ?? 1, start, end, null);
}

/**
 * A metered item billed in arrears over [start, end) from the customer's meter aggregation, with
 * `price` (the item's price unless given). The quantity shown now is the usage so far; it is
 * computed again when the invoice is finalized.
 */
export function meteredLine(
  ctx: Ctx,
  sub: SubscriptionRec,
  item: ItemRec,
  start: number,
  end: number,
  price: PriceRec = priceOf(ctx, item.price),
): InvoiceLineRec {
  const meter = price.recurring?.meter ?? null;
  const quantity = usageOf(ctx, sub.customer, meter, start, end);
  return itemLine(ctx, sub, item, price, quantity, start, end, { meter, start, end });
}

/** The line an invoice item becomes on an invoice (`parent.invoice_item_details`). */
export function invoiceItemLine(ctx: Ctx, ii: InvoiceItemRec): InvoiceLineRec {
  const price = ii.price ? ctx.state.prices.get(ii.price) : undefined;
  return {
    id: newId("il", 24),
    amount: ii.amount,
    quantity: ii.quantity,
    unitAmountDecimal: ii.unitAmountDecimal,
    description: ii.description ?? (price ? productName(ctx, price) : "Invoice item"),
    price: ii.price,
    product: ii.product,
    subscription: ii.subscription,
    subscriptionItem: null,
    invoiceItem: ii.id,
    proration: ii.proration,
    periodStart: ii.periodStart,
    periodEnd: ii.periodEnd,
    usage: null,
  };
}

export interface NewInvoiceItem {
  customer: string;
  currency: string;
  amount: number;
  quantity?: number;
  unitAmountDecimal?: string;
  description: string | null;
  price?: PriceRec;
  periodStart: number;
  periodEnd: number;
  proration?: boolean;
  subscription?: string | null;
  subscriptionItem?: string | null;
  discountable?: boolean;
  metadata?: Metadata;
}

/** Creates a pending invoice item (its amount is fixed now) and emits invoiceitem.created. */
export function createInvoiceItem(ctx: Ctx, spec: NewInvoiceItem, em: Emission): InvoiceItemRec {
  const quantity = spec.quantity ?? 1;
  const rec: InvoiceItemRec = {
    id: newId("ii", 24),
    created: ctx.state.nowFor(spec.customer),
    customer: spec.customer,
    currency: spec.currency,
    amount: spec.amount,
    quantity,
    unitAmountDecimal: spec.unitAmountDecimal ?? decimalQuotient(spec.amount, quantity),
    description: spec.description,
    price: spec.price?.id ?? null,
    product: spec.price?.product ?? null,
    periodStart: spec.periodStart,
    periodEnd: spec.periodEnd,
    proration: spec.proration ?? false,
    subscription: spec.subscription ?? null,
    subscriptionItem: spec.subscriptionItem ?? null,
    invoice: null,
    discountable: spec.discountable ?? !(spec.proration ?? false),
    metadata: { ...(spec.metadata ?? {}) },
  };
  ctx.state.invoiceItems.set(rec.id, rec);
  em.emit("invoiceitem.created", invoiceItemView(ctx.state, rec));
  return rec;
}

/** `amount / quantity` as Stripe's decimal string (up to 12 decimals, no trailing zeros). */
export function decimalQuotient(amount: number, quantity: number): string {
  if (quantity === 0) return "0";
  if (amount % quantity === 0) return String(amount / quantity);
  return (amount / quantity).toFixed(12).replace(/0+$/, "");
}

/** Pending invoice items (not on an invoice yet) that match `filter`, oldest first. */
export function pendingItems(ctx: Ctx, filter: (ii: InvoiceItemRec) => boolean): InvoiceItemRec[] {
  return [...ctx.state.invoiceItems.values()].filter((ii) => ii.invoice === null && filter(ii));
}

/**
 * Which pending items a subscription's invoice pulls in: the subscription's own, and the
 * customer's items that belong to no subscription ("If no invoice is specified, the item will be
 * on the next invoice created for the customer specified").
 */
export function pendingForSubscription(ctx: Ctx, sub: SubscriptionRec): InvoiceItemRec[] {
  return pendingItems(
    ctx,
    (ii) => ii.subscription === sub.id || (ii.subscription === null && ii.customer === sub.customer),
  );
}

export interface NewInvoice {
  customer: string;
  currency: string;
  subscription: SubscriptionRec | null;
  reason: BillingReason;
  periodStart: number;
  periodEnd: number;
  lines: InvoiceLineRec[];
  /** Pending invoice items to add as lines (they are marked as invoiced). */
  items?: InvoiceItemRec[];
  collectionMethod?: CollectionMethod;
  autoAdvance?: boolean;
  description?: string | null;
  dueDate?: number | null;
  metadata?: Metadata;
  /** `automatic_tax[enabled]`; a subscription's invoices follow the subscription's setting. */
  automaticTax?: boolean;
}

/** A draft invoice (no events yet: see `announce`). */
export function createInvoice(ctx: Ctx, spec: NewInvoice): InvoiceRec {
  const inv: InvoiceRec = {
    id: newId("in", 24),
    created: ctx.state.nowFor(spec.customer),
    customer: spec.customer,
    subscription: spec.subscription?.id ?? null,
    status: "draft",
    billingReason: spec.reason,
    collectionMethod: spec.collectionMethod ?? "charge_automatically",
    autoAdvance: spec.autoAdvance ?? true,
    automaticallyFinalizesAt: null,
    currency: spec.currency,
    description: spec.description ?? null,
    dueDate: spec.dueDate ?? null,
    periodStart: spec.periodStart,
    periodEnd: spec.periodEnd,
    lines: [...spec.lines],
    number: null,
    startingBalance: 0,
    endingBalance: null,
    attemptCount: 0,
    finalizedAt: null,
    paidAt: null,
    nextPaymentAttempt: null,
    metadata: { ...(spec.metadata ?? {}) },
    automaticTax: spec.automaticTax ?? spec.subscription?.automaticTax ?? false,
    tax: null,
    taxDisabledReason: null,
  };
  for (const ii of spec.items ?? []) addItemToInvoice(ctx, inv, ii);
  ctx.state.invoices.set(inv.id, inv);
  if (spec.subscription) spec.subscription.latestInvoice = inv.id;
  return inv;
}

/** Puts a pending invoice item on a draft invoice. */
export function addItemToInvoice(ctx: Ctx, inv: InvoiceRec, ii: InvoiceItemRec): void {
  ii.invoice = inv.id;
  inv.lines.push(invoiceItemLine(ctx, ii));
}

/**
 * Sends invoice.created for a new draft, then either finalizes it at once (`now`: a
 * subscription's first invoice) or lets it wait for the finalization grace period, during which
 * late usage for its period is still counted ("All invoices have a default finalization grace
 * period of 1 hour. During the finalization grace period, you can continue to report usage for the
 * previous billing period.").
 */
export function announce(ctx: Ctx, inv: InvoiceRec, em: Emission, finalize: "now" | "after_grace"): void {
  em.emit("invoice.created", invoiceView(ctx.state, inv));
  const grace = ctx.state.finalizationGraceSeconds;
  if (finalize === "now" || (inv.autoAdvance && grace === 0)) {
    finalizeInvoice(ctx, inv, em);
    return;
  }
  if (inv.autoAdvance) inv.automaticallyFinalizesAt = inv.created + grace;
}

/**
 * draft -> open: usage lines take the usage reported by now for their windows, the customer's
 * balance is applied (a negative total becomes credit), a number is assigned, invoice.finalized is
 * sent, and with automatic collection a payment is attempted.
 */
export function finalizeInvoice(ctx: Ctx, inv: InvoiceRec, em: Emission): void {
  if (inv.status !== "draft") {
    throw invalidRequest(`Invoice ${inv.id} is already finalized.`, "invoice_not_editable");
  }
  const { state } = ctx;
  for (const line of inv.lines) {
    if (!line.usage || !line.price) continue;
    const price = priceOf(ctx, line.price);
    const quantity = usageOf(ctx, inv.customer, line.usage.meter, line.usage.start, line.usage.end);
    line.quantity = Math.max(0, quantity);
    line.amount = amountFor(price, quantity);
    line.description = describe(ctx, price, quantity);
  }
  const customer = state.customers.get(inv.customer);
  if (inv.automaticTax) {
    // "Stripe calculates the tax at the published rate at the time of invoice finalization";
    // without a customer location there is nothing to compute it from.
    const country = customer?.address?.country;
    if (country) inv.tax = taxFor(state, country);
    else inv.taxDisabledReason = "finalization_requires_location_inputs";
  }
  const balance = customer?.balance ?? 0;
  const net = invoiceTotals(state, inv).total + balance;
  inv.startingBalance = balance;
  inv.endingBalance = Math.min(0, net);
  if (customer) customer.balance = Math.min(0, net);
  inv.status = "open";
  inv.finalizedAt = state.nowFor(inv.customer);
  inv.automaticallyFinalizesAt = null;
  if (customer) {
    inv.number = `${customer.invoicePrefix}-${String(customer.nextInvoiceSequence).padStart(4, "0")}`;
    customer.nextInvoiceSequence += 1;
  }
  em.emit("invoice.finalized", invoiceView(state, inv));
  if (inv.autoAdvance && inv.collectionMethod === "charge_automatically") attemptPayment(ctx, inv, em);
  else if (amountDueOf(state, inv) === 0) markPaid(ctx, inv, em);
}

/** Finalizes and pays at once (invoice.created, invoice.finalized, payment). */
export function finalizeAndPay(ctx: Ctx, inv: InvoiceRec, em: Emission): void {
  announce(ctx, inv, em, "now");
}

function markPaid(ctx: Ctx, inv: InvoiceRec, em: Emission): void {
  const { state } = ctx;
  inv.status = "paid";
  inv.paidAt = state.nowFor(inv.customer);
  inv.nextPaymentAttempt = null;
  em.emit("invoice.paid", invoiceView(state, inv));
  em.emit("invoice.payment_succeeded", invoiceView(state, inv));
  const sub = inv.subscription ? state.subscriptions.get(inv.subscription) : undefined;
  if (sub?.status === "past_due") {
    const stillOpen = [...state.invoices.values()].some(
      (i) => i.subscription === sub.id && i.status === "open",
    );
    if (!stillOpen) em.updateSubscription(sub, () => (sub.status = "active"));
  }
}

/**
 * Pays an open invoice, unless the customer was flagged to fail its next payment: then
 * invoice.payment_failed and the subscription goes past_due. Invoices with nothing due need no
 * payment and never consume the flag. Returns whether the invoice is paid.
 */
export function attemptPayment(ctx: Ctx, inv: InvoiceRec, em: Emission): boolean {
  if (inv.status !== "open") {
    throw invalidRequest(
      `Invoice ${inv.id} is ${inv.status}; only open invoices can be paid.`,
      "invoice_not_open",
    );
  }
  const { state } = ctx;
  const customer = state.customers.get(inv.customer);
  const sub = inv.subscription ? state.subscriptions.get(inv.subscription) : undefined;
  const due = amountDueOf(state, inv);
  if (due > 0) inv.attemptCount += 1;
  if (due > 0 && customer?.failNextPayment) {
    customer.failNextPayment = false;
    inv.nextPaymentAttempt = state.nowFor(inv.customer) + 3 * DAY;
    em.emit("invoice.payment_failed", invoiceView(state, inv));
    if (sub && sub.status === "active") em.updateSubscription(sub, () => (sub.status = "past_due"));
    return false;
  }
  markPaid(ctx, inv, em);
  return true;
}
