/**
 * /v1/billing_portal/configurations (create, retrieve, update, list), /v1/billing_portal/sessions
 * (create) and the hosted test page GET /portal/{id}, where a customer can cancel and, for licensed
 * plans, switch price as the session's configuration allows, and see their invoices.
 */
import type { Context } from "hono";
import { type App, type Ctx, requestInfo, send } from "../context";
import { ApiError, invalidRequest, missingReference, notFound } from "../errors";
import { escapeHtml, htmlResponse, page } from "../html";
import { Emission, productName } from "../invoicing";
import { newestFirst, paginate } from "../list";
import {
  applyConfiguration,
  createConfiguration,
  defaultConfiguration,
  portalCancel,
  portalCanUpdate,
  portalPriceChoices,
  portalSwitch,
} from "../portal";
import { formatDate, formatMoney } from "../pricing";
import { newId, type PortalConfigurationRec, type PortalSessionRec, type SubscriptionRec } from "../state";
import { invoiceTotals } from "../tax";
import { describePrice, portalConfigurationView, portalSessionView } from "../views";
import { NO_REQUEST } from "../webhooks";

export function getConfiguration(ctx: Ctx, id: string): PortalConfigurationRec {
  const rec = ctx.state.portalConfigurations.get(id);
  if (!rec) throw notFound("billing_portal.configuration", id);
  return rec;
}

const UPDATE_LIMITATION =
  "We have detected that this plan is not one that is supported by the portal for updates (see limitations). " +
  "As a result, we can only support cancellation for this subscription.";

function subscriptionRow(
  ctx: Ctx,
  s: PortalSessionRec,
  config: PortalConfigurationRec,
  sub: SubscriptionRec,
): string {
  const { state } = ctx;
  const names = sub.items
    .map((i) => {
      const price = state.prices.get(i.price);
      return price ? `${productName(ctx, price)} (${describePrice(price)})` : i.price;
    })
    .join(", ");
  const base = `/portal/${escapeHtml(s.id)}/subscriptions/${escapeHtml(sub.id)}`;
  const parts = [`<strong>${escapeHtml(names)}</strong>: ${escapeHtml(sub.status)}`];
  const ends = sub.cancelAt ?? (sub.cancelAtPeriodEnd ? sub.items[0]?.periodEnd : undefined);
  if (sub.status !== "canceled" && ends !== undefined)
    parts.push(`(cancels on ${escapeHtml(formatDate(ends))})`);
  const live = sub.status !== "canceled";
  const c = config.subscriptionCancel;
  if (live && c.enabled && ends === undefined) {
    const reasons = c.cancellationReason.enabled
      ? `<label>Reason <select name="reason"><option value="">Choose a reason</option>${c.cancellationReason.options
          .map((o) => `<option value="${escapeHtml(o)}">${escapeHtml(o.replaceAll("_", " "))}</option>`)
          .join("")}</select></label> `
      : "";
    const label = c.mode === "immediately" ? "Cancel now" : "Cancel at the end of the period";
    parts.push(
      `<form method="post" action="${base}/cancel">${reasons}<button type="submit">${label}</button></form>`,
    );
  }
  if (live && config.subscriptionUpdate.enabled) {
    if (portalCanUpdate(ctx, config, sub)) {
      const options = portalPriceChoices(ctx, config, sub)
        .map((id) => {
          const price = state.prices.get(id);
          const label = price ? `${productName(ctx, price)}: ${describePrice(price)}` : id;
          return `<option value="${escapeHtml(id)}">${escapeHtml(label)}</option>`;
        })
        .join("");
      parts.push(
        `<form method="post" action="${base}/update"><label>New plan <select name="price">${options}</select></label> <button type="submit">Update plan</button></form>`,
      );
    } else {
      parts.push(`<p class="note">${escapeHtml(UPDATE_LIMITATION)}</p>`);
    }
  }
  return `<li>${parts.join(" ")}</li>`;
}

function portalPage(ctx: Ctx, s: PortalSessionRec, message?: string): string {
  const { state } = ctx;
  const config = getConfiguration(ctx, s.configuration);
  const customer = state.customers.get(s.customer);
  const subs = [...state.subscriptions.values()].filter((sub) => sub.customer === s.customer);
  const subRows = subs.map((sub) => subscriptionRow(ctx, s, config, sub)).join("\n");
  const invoices = config.invoiceHistory.enabled
    ? `<h2>Invoices</h2>
<ul>${
        [...state.invoices.values()]
          .filter((inv) => inv.customer === s.customer && inv.status !== "draft")
          .map(
            (inv) =>
              `<li>${escapeHtml(inv.number ?? inv.id)}: ${escapeHtml(formatMoney(invoiceTotals(ctx.state, inv).total, inv.currency))}, ${escapeHtml(inv.status)}</li>`,
          )
          .join("\n") || "<li>None</li>"
      }</ul>`
    : "";
  const returnUrl = s.returnUrl ?? config.defaultReturnUrl;
  const back = returnUrl ? `<p><a href="${escapeHtml(returnUrl)}">Return to AI Gate</a></p>` : "";
  const note = message ? `<p role="status">${escapeHtml(message)}</p>` : "";
  return page(
    "AI Gate test billing portal",
    `<h1>AI Gate test billing portal</h1>
<p class="note">Stripe emulator: a stand-in for the Customer Portal, following its configuration.</p>
${note}
<p>Customer: <strong>${escapeHtml(customer?.email ?? s.customer)}</strong></p>
<h2>Subscriptions</h2>
<ul>${subRows || "<li>None</li>"}</ul>
${invoices}
${back}`,
  );
}

type PortalAction = (
  ctx: Ctx,
  config: PortalConfigurationRec,
  sub: SubscriptionRec,
  form: Record<string, unknown>,
) => void;

async function portalPost(c: Context, ctx: Ctx, action: PortalAction): Promise<Response> {
  const s = ctx.state.portalSessions.get(c.req.param("id") ?? "");
  const sub = ctx.state.subscriptions.get(c.req.param("sub") ?? "");
  if (!s || !sub || sub.customer !== s.customer) {
    return htmlResponse(page("Not found", "<h1>Portal session or subscription not found</h1>"), 404);
  }
  const form = await c.req.parseBody();
  try {
    action(ctx, getConfiguration(ctx, s.configuration), sub, form);
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    return htmlResponse(portalPage(ctx, s, err.message), 400);
  }
  return c.redirect(`/portal/${s.id}`, 303);
}

export function portalRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;

  app.post("/v1/billing_portal/configurations", (c) => {
    const rec = createConfiguration(ctx, c.get("params"));
    const view = portalConfigurationView(rec);
    new Emission(ctx, requestInfo(c)).emit("billing_portal.configuration.created", view);
    return send(c, ctx, view);
  });

  app.get("/v1/billing_portal/configurations/:id", (c) =>
    send(c, ctx, portalConfigurationView(getConfiguration(ctx, c.req.param("id")))),
  );

  app.post("/v1/billing_portal/configurations/:id", (c) => {
    const rec = getConfiguration(ctx, c.req.param("id"));
    const draft = structuredClone(rec);
    applyConfiguration(ctx, draft, c.get("params"), false);
    Object.assign(rec, draft);
    const view = portalConfigurationView(rec);
    new Emission(ctx, requestInfo(c)).emit("billing_portal.configuration.updated", view);
    return send(c, ctx, view);
  });

  app.get("/v1/billing_portal/configurations", (c) => {
    const p = c.get("params");
    defaultConfiguration(ctx);
    const active = p.optBool("active");
    const isDefault = p.optBool("is_default");
    const items = newestFirst(state.portalConfigurations.values()).filter(
      (r) =>
        (active === undefined || r.active === active) &&
        (isDefault === undefined || r.isDefault === isDefault),
    );
    return send(c, ctx, paginate(items, p, "/v1/billing_portal/configurations", portalConfigurationView));
  });

  /** `configuration`: "If not specified, the session uses the default configuration." */
  app.post("/v1/billing_portal/sessions", (c) => {
    const p = c.get("params");
    const customer = p.string("customer");
    if (!state.customers.has(customer)) throw missingReference("customer", customer, "customer");
    const configId = p.optString("configuration");
    const config = configId ? state.portalConfigurations.get(configId) : defaultConfiguration(ctx);
    if (!config) throw missingReference("billing_portal.configuration", configId ?? "", "configuration");
    if (!config.active) {
      throw invalidRequest(`The configuration ${config.id} is not active.`, undefined, "configuration");
    }
    const rec: PortalSessionRec = {
      id: newId("bps"),
      created: state.now(),
      customer,
      configuration: config.id,
      returnUrl: p.optString("return_url") ?? config.defaultReturnUrl,
    };
    state.portalSessions.set(rec.id, rec);
    return send(c, ctx, portalSessionView(rec, ctx.baseUrl()));
  });

  app.get("/portal/:id", (c) => {
    const s = state.portalSessions.get(c.req.param("id"));
    if (!s) return htmlResponse(page("Portal session not found", "<h1>Portal session not found</h1>"), 404);
    return htmlResponse(portalPage(ctx, s));
  });

  app.post("/portal/:id/subscriptions/:sub/cancel", (c) =>
    portalPost(c, ctx, (cx, config, sub, form) => {
      const reason = typeof form.reason === "string" && form.reason !== "" ? form.reason : undefined;
      portalCancel(cx, config, sub, reason, new Emission(cx, NO_REQUEST));
    }),
  );

  app.post("/portal/:id/subscriptions/:sub/update", (c) =>
    portalPost(c, ctx, (cx, config, sub, form) => {
      const price = typeof form.price === "string" ? form.price : "";
      portalSwitch(cx, config, sub, price, new Emission(cx, NO_REQUEST));
    }),
  );
}
