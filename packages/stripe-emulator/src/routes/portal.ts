/** /v1/billing_portal/sessions (create) and the hosted test page GET /portal/{id}. */
import { type App, type Ctx, send } from "../context";
import { missingReference } from "../errors";
import { escapeHtml, htmlResponse, page } from "../html";
import { formatMoney } from "../pricing";
import { newId, type PortalSessionRec } from "../state";
import { portalSessionView } from "../views";

function portalPage(ctx: Ctx, s: PortalSessionRec): string {
  const { state } = ctx;
  const customer = state.customers.get(s.customer);
  const subs = [...state.subscriptions.values()].filter((sub) => sub.customer === s.customer);
  const subRows = subs
    .map((sub) => {
      const names = sub.items
        .map((i) => {
          const price = state.prices.get(i.price);
          return (price && state.products.get(price.product)?.name) ?? i.price;
        })
        .join(", ");
      return `<li>${escapeHtml(names)}: ${escapeHtml(sub.status)}${sub.cancelAtPeriodEnd ? " (cancels at period end)" : ""}</li>`;
    })
    .join("\n");
  const invoiceRows = [...state.invoices.values()]
    .filter((inv) => inv.customer === s.customer)
    .map((inv) => {
      const total = inv.lines.reduce((sum, l) => sum + l.amount, 0);
      return `<li>${escapeHtml(inv.number ?? inv.id)}: ${escapeHtml(formatMoney(total, inv.currency))}, ${escapeHtml(inv.status)}</li>`;
    })
    .join("\n");
  const back = s.returnUrl ? `<p><a href="${escapeHtml(s.returnUrl)}">Return to AI Gate</a></p>` : "";
  return page(
    "AI Gate test billing portal",
    `<h1>AI Gate test billing portal</h1>
<p class="note">Stripe emulator: a read-only stand-in for the Customer Portal.</p>
<p>Customer: <strong>${escapeHtml(customer?.email ?? s.customer)}</strong></p>
<h2>Subscriptions</h2>
<ul>${subRows || "<li>None</li>"}</ul>
<h2>Invoices</h2>
<ul>${invoiceRows || "<li>None</li>"}</ul>
${back}`,
  );
}

export function portalRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;

  app.post("/v1/billing_portal/sessions", (c) => {
    const p = c.get("params");
    const customer = p.string("customer");
    if (!state.customers.has(customer)) throw missingReference("customer", customer, "customer");
    const rec: PortalSessionRec = {
      id: newId("bps"),
      created: state.now(),
      customer,
      configuration: "bpc_emulator_default",
      returnUrl: p.optString("return_url") ?? null,
    };
    state.portalSessions.set(rec.id, rec);
    return send(c, ctx, portalSessionView(rec, ctx.baseUrl()));
  });

  app.get("/portal/:id", (c) => {
    const s = state.portalSessions.get(c.req.param("id"));
    if (!s) return htmlResponse(page("Portal session not found", "<h1>Portal session not found</h1>"), 404);
    return htmlResponse(portalPage(ctx, s));
  });
}
