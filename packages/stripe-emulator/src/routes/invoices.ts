/**
 * /v1/invoices: create (one-off, from pending invoice items), retrieve, list (customer,
 * subscription, status), lines, finalize and pay.
 */
import { type App, type Ctx, requestInfo, send } from "../context";
import { invalidRequest, missingReference, notFound } from "../errors";
import {
  announce,
  attemptPayment,
  createInvoice,
  Emission,
  finalizeInvoice,
  pendingItems,
} from "../invoicing";
import { createdFilter, newestFirst, paginate } from "../list";
import type { Params } from "../params";
import { DAY, type InvoiceRec } from "../state";
import { invoiceView } from "../views";

export function getInvoice(ctx: Ctx, id: string): InvoiceRec {
  const rec = ctx.state.invoices.get(id);
  if (!rec) throw notFound("invoice", id);
  return rec;
}

/**
 * POST /v1/invoices: a draft for a customer. `pending_invoice_items_behavior` "Defaults to `exclude`";
 * with `include` it takes the customer's pending items that belong to no subscription (or, with
 * `subscription`, "only ... pending invoice items for that subscription"). `auto_advance` "Defaults
 * to false"; when true, the draft finalizes after the grace period ("If you don't pass in a value
 * for automatically_finalizes_at when enabling automatic invoice advancement in the API, Stripe
 * calculates and sets the time according to the configurable grace period").
 */
function createOneOff(ctx: Ctx, p: Params, em: Emission): InvoiceRec {
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
  const behavior = p.optEnum("pending_invoice_items_behavior", ["exclude", "include"] as const) ?? "exclude";
  const collectionMethod =
    p.optEnum("collection_method", ["charge_automatically", "send_invoice"] as const) ??
    "charge_automatically";
  const now = state.nowFor(customer);
  const daysUntilDue = p.optInt("days_until_due", { min: 0, max: 1825 });
  const dueDate = p.optInt("due_date");
  if ((daysUntilDue !== undefined || dueDate !== undefined) && collectionMethod !== "send_invoice") {
    throw invalidRequest(
      "`days_until_due` and `due_date` are only valid for invoices where `collection_method=send_invoice`.",
      undefined,
      daysUntilDue !== undefined ? "days_until_due" : "due_date",
    );
  }
  const items =
    behavior === "include"
      ? pendingItems(ctx, (ii) => ii.customer === customer && ii.subscription === (sub?.id ?? null))
      : [];
  const currencies = new Set(items.map((ii) => ii.currency));
  const currency = (p.optString("currency") ?? [...currencies][0] ?? sub?.currency ?? "usd").toLowerCase();
  if ([...currencies].some((c) => c !== currency)) {
    throw invalidRequest(
      "The pending invoice items must all be in the invoice's currency.",
      undefined,
      "currency",
    );
  }
  const autoAdvance = p.optBool("auto_advance") ?? false;
  // "Settings for automatic tax lookup for this invoice."
  const automaticTax = p.optObject("automatic_tax")?.optBool("enabled") ?? false;
  const finalizesAt = p.optInt("automatically_finalizes_at", { min: now });
  const inv = createInvoice(ctx, {
    customer,
    currency,
    subscription: null,
    reason: "manual",
    periodStart: now,
    periodEnd: now,
    lines: [],
    items,
    collectionMethod,
    autoAdvance,
    description: p.optString("description") ?? null,
    dueDate: dueDate ?? (daysUntilDue !== undefined ? now + daysUntilDue * DAY : null),
    metadata: p.metadata(),
    automaticTax,
  });
  if (sub) inv.subscription = sub.id;
  if (finalizesAt !== undefined && autoAdvance) {
    em.emit("invoice.created", invoiceView(state, inv));
    inv.automaticallyFinalizesAt = finalizesAt;
  } else {
    announce(ctx, inv, em, "after_grace");
  }
  return inv;
}

export function invoiceRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;
  const view = (i: InvoiceRec) => invoiceView(state, i);

  app.post("/v1/invoices", (c) =>
    send(c, ctx, view(createOneOff(ctx, c.get("params"), new Emission(ctx, requestInfo(c))))),
  );

  app.get("/v1/invoices/:id", (c) => send(c, ctx, view(getInvoice(ctx, c.req.param("id")))));

  app.get("/v1/invoices/:id/lines", (c) => {
    const inv = getInvoice(ctx, c.req.param("id"));
    const lines = view(inv).lines.data;
    return send(
      c,
      ctx,
      paginate(lines, c.get("params"), `/v1/invoices/${inv.id}/lines`, (l) => l),
    );
  });

  /** "if you'd like to finalize a draft invoice manually, you can do so using this method." */
  app.post("/v1/invoices/:id/finalize", (c) => {
    const inv = getInvoice(ctx, c.req.param("id"));
    const autoAdvance = c.get("params").optBool("auto_advance");
    if (inv.status !== "draft") {
      throw invalidRequest(
        `This invoice is already finalized (status: ${inv.status}).`,
        "invoice_not_editable",
      );
    }
    if (autoAdvance !== undefined) inv.autoAdvance = autoAdvance;
    finalizeInvoice(ctx, inv, new Emission(ctx, requestInfo(c)));
    return send(c, ctx, view(inv));
  });

  /** Like Stripe's "pay" endpoint: attempts payment of an open invoice (fails if the customer is flagged). */
  app.post("/v1/invoices/:id/pay", (c) => {
    const inv = getInvoice(ctx, c.req.param("id"));
    attemptPayment(ctx, inv, new Emission(ctx, requestInfo(c)));
    return send(c, ctx, view(inv));
  });

  app.get("/v1/invoices", (c) => {
    const p = c.get("params");
    const customer = p.optString("customer");
    const subscription = p.optString("subscription");
    const status = p.optEnum("status", ["draft", "open", "paid", "uncollectible", "void"] as const);
    const createdMatches = createdFilter(p);
    const items = newestFirst(state.invoices.values()).filter(
      (i) =>
        createdMatches(i.created) &&
        (customer === undefined || i.customer === customer) &&
        (subscription === undefined || i.subscription === subscription) &&
        (status === undefined || i.status === status),
    );
    return send(c, ctx, paginate(items, p, "/v1/invoices", view));
  });
}
