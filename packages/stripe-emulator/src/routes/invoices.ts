/** /v1/invoices: retrieve, list (customer, subscription, status), lines, and pay. */
import { type App, type Ctx, requestInfo, send } from "../context";
import { notFound } from "../errors";
import { attemptPayment, Emission } from "../invoicing";
import { newestFirst, paginate } from "../list";
import type { InvoiceRec } from "../state";
import { invoiceView } from "../views";

export function getInvoice(ctx: Ctx, id: string): InvoiceRec {
  const rec = ctx.state.invoices.get(id);
  if (!rec) throw notFound("invoice", id);
  return rec;
}

export function invoiceRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;
  const view = (i: InvoiceRec) => invoiceView(state, i);

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
    const items = newestFirst(state.invoices.values()).filter(
      (i) =>
        (customer === undefined || i.customer === customer) &&
        (subscription === undefined || i.subscription === subscription) &&
        (status === undefined || i.status === status),
    );
    return send(c, ctx, paginate(items, p, "/v1/invoices", view));
  });
}
