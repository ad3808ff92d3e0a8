/**
 * /v1/invoiceitems: create, retrieve, list (customer, pending, invoice), delete. A pending item
 * ("If no invoice is specified, the item will be on the next invoice created for the customer
 * specified") is pulled into the next invoice of its subscription, or of the customer when it
 * belongs to no subscription.
 */
import { type App, type Ctx, requestInfo, send } from "../context";
import { invalidRequest, missingParam, missingReference, notFound } from "../errors";
import { addItemToInvoice, createInvoiceItem, decimalQuotient, Emission, isMetered } from "../invoicing";
import { newestFirst, paginate } from "../list";
import type { Params } from "../params";
import type { InvoiceItemRec, PriceRec } from "../state";
import { invoiceItemView, invoiceView } from "../views";

export function getInvoiceItem(ctx: Ctx, id: string): InvoiceItemRec {
  const rec = ctx.state.invoiceItems.get(id);
  if (!rec) throw notFound("invoiceitem", id);
  return rec;
}

/** `unit_amount_decimal` in whole cents (the emulator keeps money in integer cents). */
function wholeCents(raw: string, param: string): number {
  if (!/^-?\d+(\.0+)?$/.test(raw)) {
    throw invalidRequest(
      `The emulator keeps money in whole cents; ${param} must be a whole number.`,
      "parameter_invalid_integer",
      param,
    );
  }
  return Number.parseInt(raw, 10);
}

function createItem(ctx: Ctx, p: Params, em: Emission): InvoiceItemRec {
  const { state } = ctx;
  const customer = p.string("customer");
  if (!state.customers.has(customer)) throw missingReference("customer", customer, "customer");
  const subscriptionId = p.optString("subscription");
  const sub = subscriptionId ? state.subscriptions.get(subscriptionId) : undefined;
  if (subscriptionId && !sub) throw missingReference("subscription", subscriptionId, "subscription");
  if (sub && sub.customer !== customer) {
    throw invalidRequest(
      `Subscription ${sub.id} does not belong to customer ${customer}.`,
      undefined,
      "subscription",
    );
  }
  const invoiceId = p.optString("invoice");
  const invoice = invoiceId ? state.invoices.get(invoiceId) : undefined;
  if (invoiceId && !invoice) throw missingReference("invoice", invoiceId, "invoice");
  if (invoice && invoice.status !== "draft") {
    throw invalidRequest(
      `Invoice ${invoice.id} is not a draft; items can only be added to drafts.`,
      "invoice_not_editable",
      "invoice",
    );
  }
  if (invoice && invoice.customer !== customer) {
    throw invalidRequest(
      `Invoice ${invoice.id} does not belong to customer ${customer}.`,
      undefined,
      "invoice",
    );
  }
  const priceId = p.optObject("pricing")?.optString("price");
  let price: PriceRec | undefined;
  if (priceId !== undefined) {
    price = state.prices.get(priceId);
    if (!price) throw missingReference("price", priceId, "pricing[price]");
    if (isMetered(price)) {
      throw invalidRequest("Invoice items cannot use metered prices.", undefined, "pricing[price]");
    }
  }
  const amountParam = p.optInt("amount");
  const unitParam = p.optString("unit_amount_decimal");
  const given = [amountParam !== undefined, unitParam !== undefined, price !== undefined].filter(
    Boolean,
  ).length;
  if (given === 0) throw missingParam("amount");
  if (given > 1) {
    throw invalidRequest(
      "You may only specify one of these parameters: amount, pricing[price], unit_amount_decimal.",
      undefined,
      "amount",
    );
  }
  if (amountParam !== undefined && p.has("quantity")) {
    throw invalidRequest("`quantity` cannot be used with `amount`.", undefined, "quantity");
  }
  const quantity = p.optInt("quantity", { min: 0 }) ?? 1;
  const unit = price
    ? (price.unitAmount ?? 0)
    : unitParam !== undefined
      ? wholeCents(unitParam, "unit_amount_decimal")
      : null;
  if (price && price.billingScheme !== "per_unit") {
    throw invalidRequest("Invoice items can only use per-unit prices.", undefined, "pricing[price]");
  }
  const amount = amountParam ?? (unit ?? 0) * quantity;
  const currency = (
    p.optString("currency") ??
    price?.currency ??
    invoice?.currency ??
    sub?.currency
  )?.toLowerCase();
  if (!currency) throw missingParam("currency");
  if (!/^[a-z]{3}$/.test(currency))
    throw invalidRequest(`Invalid currency: ${currency}.`, undefined, "currency");
  if (sub && sub.currency !== currency) {
    throw invalidRequest(
      `The currency must match the subscription's (${sub.currency}).`,
      undefined,
      "currency",
    );
  }
  const now = state.nowFor(customer);
  const period = p.optObject("period");
  const start = period?.int("start") ?? now;
  const end = period?.int("end") ?? now;
  if (end < start)
    throw invalidRequest("period[end] must not be before period[start].", undefined, "period[end]");
  const rec = createInvoiceItem(
    ctx,
    {
      customer,
      currency,
      amount,
      quantity,
      unitAmountDecimal: unit === null ? decimalQuotient(amount, quantity) : String(unit),
      description: p.optString("description") ?? null,
      ...(price ? { price } : {}),
      periodStart: start,
      periodEnd: end,
      subscription: sub?.id ?? null,
      discountable: p.optBool("discountable") ?? true,
      metadata: p.metadata(),
    },
    em,
  );
  if (invoice) addItemToInvoice(ctx, invoice, rec);
  return rec;
}

export function invoiceItemRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;
  const view = (ii: InvoiceItemRec) => invoiceItemView(state, ii);

  app.post("/v1/invoiceitems", (c) =>
    send(c, ctx, view(createItem(ctx, c.get("params"), new Emission(ctx, requestInfo(c))))),
  );

  app.get("/v1/invoiceitems/:id", (c) => send(c, ctx, view(getInvoiceItem(ctx, c.req.param("id")))));

  /** "Deleting invoice items is only possible when they're not attached to invoices, or if it's attached to a draft invoice." */
  app.delete("/v1/invoiceitems/:id", (c) => {
    const ii = getInvoiceItem(ctx, c.req.param("id"));
    const invoice = ii.invoice ? state.invoices.get(ii.invoice) : undefined;
    if (invoice && invoice.status !== "draft") {
      throw invalidRequest(
        `Invoice item ${ii.id} is on a finalized invoice and cannot be deleted.`,
        "invoice_not_editable",
      );
    }
    const em = new Emission(ctx, requestInfo(c));
    if (invoice) {
      invoice.lines = invoice.lines.filter((l) => l.invoiceItem !== ii.id);
      em.emit("invoice.updated", invoiceView(state, invoice));
    }
    state.invoiceItems.delete(ii.id);
    em.emit("invoiceitem.deleted", view(ii));
    return send(c, ctx, { id: ii.id, object: "invoiceitem", deleted: true });
  });

  app.get("/v1/invoiceitems", (c) => {
    const p = c.get("params");
    const customer = p.optString("customer");
    const invoice = p.optString("invoice");
    const pending = p.optBool("pending");
    const items = newestFirst(state.invoiceItems.values()).filter(
      (ii) =>
        (customer === undefined || ii.customer === customer) &&
        (invoice === undefined || ii.invoice === invoice) &&
        (pending === undefined || (ii.invoice === null) === pending),
    );
    return send(c, ctx, paginate(items, p, "/v1/invoiceitems", view));
  });
}
