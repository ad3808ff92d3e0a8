/**
 * /v1/checkout/sessions (subscription mode: create, retrieve, list, line_items) and the hosted
 * test page GET /checkout/{id} whose "Pay and subscribe" button completes the session.
 */
import { completeCheckout } from "../checkout";
import { type App, type Ctx, send } from "../context";
import { ApiError, invalidRequest, missingParam, missingReference, notFound } from "../errors";
import { escapeHtml, htmlResponse, page } from "../html";
import { isMetered } from "../invoicing";
import { newestFirst, paginate } from "../list";
import type { Params } from "../params";
import { formatMoney } from "../pricing";
import { type BillingModeRec, type CheckoutLineRec, type CheckoutSessionRec, DAY, newId } from "../state";
import { checkoutLineView, checkoutSessionView, describePrice } from "../views";

function parseLines(ctx: Ctx, p: Params): CheckoutLineRec[] {
  const items = p.list("line_items");
  if (items.length === 0) throw missingParam("line_items");
  if (items.length > 20) throw invalidRequest("At most 20 line items are allowed.", undefined, "line_items");
  const shapes = new Set<string>();
  return items.map((item) => {
    const priceId = item.string("price");
    const price = ctx.state.prices.get(priceId);
    if (!price) throw missingReference("price", priceId, item.name("price"));
    if (!price.active)
      throw invalidRequest(`The price ${priceId} is not active.`, undefined, item.name("price"));
    if (!price.recurring) {
      throw invalidRequest(
        "You must provide at least one recurring price in `subscription` mode when using prices.",
        undefined,
        item.name("price"),
      );
    }
    shapes.add(`${price.currency} ${price.recurring.intervalCount} ${price.recurring.interval}`);
    if (shapes.size > 1) {
      throw invalidRequest(
        "All prices in a subscription must share the same currency and recurring interval.",
        undefined,
        item.name("price"),
      );
    }
    const quantity = item.optInt("quantity", { min: 1 });
    if (isMetered(price)) {
      if (quantity !== undefined) {
        throw invalidRequest(
          "Quantity should not be specified where usage_type is `metered`. Remove quantity from `line_items`.",
          undefined,
          item.name("quantity"),
        );
      }
      return { id: newId("li"), price: priceId, quantity: null };
    }
    if (quantity === undefined) throw missingParam(item.name("quantity"));
    return { id: newId("li"), price: priceId, quantity };
  });
}

/**
 * `subscription_data[billing_mode]`: "If no value is passed, the default is `flexible`" (API
 * reference, Checkout Sessions create; and since 2025-09-30.clover for every API-created
 * subscription).
 */
export function parseBillingMode(p: Params | undefined): BillingModeRec {
  const mode = p?.optObject("billing_mode");
  if (!mode) return { type: "flexible", prorationDiscounts: null };
  const type = mode.enumOf("type", ["classic", "flexible"] as const);
  const flexible = mode.optObject("flexible");
  if (flexible && type !== "flexible") {
    throw invalidRequest(
      "`billing_mode[flexible]` can only be set when `billing_mode[type]` is `flexible`.",
      undefined,
      mode.name("flexible"),
    );
  }
  const prorationDiscounts = flexible?.optEnum("proration_discounts", ["included", "itemized"] as const);
  return { type, prorationDiscounts: prorationDiscounts ?? null };
}

function createSession(ctx: Ctx, p: Params): CheckoutSessionRec {
  const mode = p.enumOf("mode", ["payment", "setup", "subscription"] as const);
  if (mode !== "subscription") {
    throw invalidRequest("The emulator only supports `mode=subscription`.", undefined, "mode");
  }
  const customer = p.optString("customer") ?? null;
  const customerEmail = p.optString("customer_email") ?? null;
  if (customer && customerEmail) {
    throw invalidRequest(
      "You may only specify one of these parameters: customer, customer_email.",
      undefined,
      "customer",
    );
  }
  if (customer && !ctx.state.customers.has(customer))
    throw missingReference("customer", customer, "customer");
  const now = ctx.state.now();
  const expiresAt = p.optInt("expires_at", { min: now + 1800, max: now + DAY }) ?? now + DAY;
  const rec: CheckoutSessionRec = {
    id: newId("cs_test", 58),
    created: now,
    expiresAt,
    mode,
    status: "open",
    customer,
    customerEmail,
    clientReferenceId: p.optString("client_reference_id") ?? null,
    successUrl: p.optString("success_url") ?? null,
    cancelUrl: p.optString("cancel_url") ?? null,
    metadata: p.metadata(),
    subscriptionMetadata: p.optObject("subscription_data")?.metadata() ?? {},
    billingMode: parseBillingMode(p.optObject("subscription_data")),
    lines: parseLines(ctx, p),
    subscription: null,
    invoice: null,
  };
  ctx.state.checkoutSessions.set(rec.id, rec);
  return rec;
}

function getSession(ctx: Ctx, id: string): CheckoutSessionRec {
  const rec = ctx.state.checkoutSessions.get(id);
  if (!rec) throw notFound("checkout.session", id);
  return rec;
}

function checkoutPage(ctx: Ctx, s: CheckoutSessionRec): string {
  const rows = s.lines
    .map((line) => {
      const item = checkoutLineView(ctx.state, line);
      const price = ctx.state.prices.get(line.price);
      const description = price ? describePrice(price) : "";
      const quantity = line.quantity === null ? "usage based" : String(line.quantity);
      return `<tr><td>${escapeHtml(item.description ?? "")}</td><td>${escapeHtml(description)}</td><td>${escapeHtml(quantity)}</td></tr>`;
    })
    .join("\n");
  const view = checkoutSessionView(ctx.state, s, ctx.baseUrl());
  const total = formatMoney(view.amount_total ?? 0, view.currency ?? "usd");
  const email = view.customer_email ?? (s.customer ? ctx.state.customers.get(s.customer)?.email : null);
  const cancel = s.cancelUrl ? `<p><a href="${escapeHtml(s.cancelUrl)}">Cancel and go back</a></p>` : "";
  return page(
    "AI Gate test checkout",
    `<h1>AI Gate test checkout</h1>
<p class="note">Stripe emulator: no card is needed and no money moves.</p>
${email ? `<p>Subscribing as <strong>${escapeHtml(email)}</strong></p>` : ""}
<table>
<caption>Your subscription</caption>
<thead><tr><th scope="col">Product</th><th scope="col">Price</th><th scope="col">Quantity</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
<p>Due today: <strong>${escapeHtml(total)}</strong></p>
<form method="post" action="/checkout/${escapeHtml(s.id)}/pay">
<button type="submit">Pay and subscribe</button>
</form>
${cancel}`,
  );
}

function successTarget(s: CheckoutSessionRec): string | null {
  return s.successUrl ? s.successUrl.replaceAll("{CHECKOUT_SESSION_ID}", s.id) : null;
}

export function checkoutRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;
  const view = (s: CheckoutSessionRec) => checkoutSessionView(state, s, ctx.baseUrl());

  app.post("/v1/checkout/sessions", (c) => send(c, ctx, view(createSession(ctx, c.get("params")))));

  app.get("/v1/checkout/sessions/:id", (c) => send(c, ctx, view(getSession(ctx, c.req.param("id")))));

  app.get("/v1/checkout/sessions/:id/line_items", (c) => {
    const s = getSession(ctx, c.req.param("id"));
    const url = `/v1/checkout/sessions/${s.id}/line_items`;
    return send(
      c,
      ctx,
      paginate(s.lines, c.get("params"), url, (l) => checkoutLineView(state, l)),
    );
  });

  app.get("/v1/checkout/sessions", (c) => {
    const p = c.get("params");
    const customer = p.optString("customer");
    const subscription = p.optString("subscription");
    const status = p.optEnum("status", ["open", "complete", "expired"] as const);
    const items = newestFirst(state.checkoutSessions.values()).filter(
      (s) =>
        (customer === undefined || s.customer === customer) &&
        (subscription === undefined || s.subscription === subscription) &&
        (status === undefined || view(s).status === status),
    );
    return send(c, ctx, paginate(items, p, "/v1/checkout/sessions", view));
  });

  app.get("/checkout/:id", (c) => {
    const s = state.checkoutSessions.get(c.req.param("id"));
    if (!s) return htmlResponse(page("Checkout not found", "<h1>Checkout session not found</h1>"), 404);
    if (s.status === "complete") {
      const target = successTarget(s);
      const link = target ? `<p><a href="${escapeHtml(target)}">Continue</a></p>` : "";
      return htmlResponse(page("AI Gate test checkout", `<h1>This checkout is complete</h1>${link}`));
    }
    return htmlResponse(checkoutPage(ctx, s));
  });

  app.post("/checkout/:id/pay", (c) => {
    const s = state.checkoutSessions.get(c.req.param("id"));
    if (!s) return htmlResponse(page("Checkout not found", "<h1>Checkout session not found</h1>"), 404);
    if (s.status !== "complete") {
      try {
        completeCheckout(ctx, s.id);
      } catch (err) {
        const message = err instanceof ApiError ? err.message : "Checkout failed.";
        return htmlResponse(
          page("Checkout failed", `<h1>Checkout failed</h1><p>${escapeHtml(message)}</p>`),
          400,
        );
      }
    }
    const target = successTarget(s);
    if (target) return c.redirect(target, 303);
    return htmlResponse(page("AI Gate test checkout", "<h1>Thanks, you are subscribed</h1>"));
  });
}
