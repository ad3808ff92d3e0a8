/**
 * /v1/checkout/sessions (subscription mode: create, retrieve, list, line_items) and the hosted
 * test page GET /checkout/{id} whose "Pay and subscribe" button completes the session.
 */
import { type CheckoutDetails, collectsAddress, completeCheckout, parseCheckoutDetails } from "../checkout";
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

/**
 * The tax parameters: `automatic_tax[enabled]`, `billing_address_collection`,
 * `tax_id_collection[enabled|required]` and `customer_update[address|name|shipping]`, with the
 * checks Stripe makes for an existing customer ("Controls what fields on Customer can be updated by
 * the Checkout Session. Can only be provided when `customer` is provided.").
 */
function parseTaxOptions(ctx: Ctx, p: Params, customerId: string | null) {
  const automaticTax = p.optObject("automatic_tax")?.optBool("enabled") ?? false;
  if (p.has("automatic_tax") && p.optObject("automatic_tax")?.optBool("enabled") === undefined) {
    throw missingParam("automatic_tax[enabled]");
  }
  const billingAddressCollection =
    p.optEnum("billing_address_collection", ["auto", "required"] as const) ?? null;
  const taxIds = p.optObject("tax_id_collection");
  const taxIdCollection = {
    enabled: taxIds ? (taxIds.optBool("enabled") ?? false) : false,
    required: taxIds?.optEnum("required", ["if_supported", "never"] as const) ?? ("never" as const),
  };
  if (taxIds && taxIds.optBool("enabled") === undefined) throw missingParam("tax_id_collection[enabled]");
  const update = p.optObject("customer_update");
  if (update && !customerId) {
    throw invalidRequest("`customer_update` can only be used with `customer`.", undefined, "customer_update");
  }
  const modes = ["auto", "never"] as const;
  const customerUpdate = {
    address: update?.optEnum("address", modes) ?? ("never" as const),
    name: update?.optEnum("name", modes) ?? ("never" as const),
    shipping: update?.optEnum("shipping", modes) ?? ("never" as const),
  };
  const customer = customerId ? ctx.state.customers.get(customerId) : undefined;
  if (
    automaticTax &&
    customer &&
    !customer.address?.country &&
    customerUpdate.address !== "auto" &&
    customerUpdate.shipping !== "auto"
  ) {
    // Stripe's answer, word for word (code customer_tax_location_invalid).
    throw invalidRequest(
      "Automatic tax calculation in Checkout requires a valid address on the Customer. Add a valid address to the Customer or set either `customer_update[address]` to 'auto' or `customer_update[shipping]` to 'auto' to save the address entered in Checkout to the Customer.",
      "customer_tax_location_invalid",
      "customer_update[address]",
    );
  }
  if (taxIdCollection.enabled && customer && customerUpdate.name !== "auto") {
    throw invalidRequest(
      "Tax ID collection requires updating business name on the customer. To enable tax ID collection for an existing customer, please set `customer_update[name]` to `auto`.",
      undefined,
      "customer_update[name]",
    );
  }
  return { automaticTax, billingAddressCollection, taxIdCollection, customerUpdate };
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
    ...parseTaxOptions(ctx, p, customer),
    details: null,
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
<p>Due today: <strong>${escapeHtml(total)}</strong>${s.automaticTax ? " plus tax, computed from your billing address" : ""}</p>
<form method="post" action="/checkout/${escapeHtml(s.id)}/pay">
${collectsAddress(s) ? addressFields : ""}
${s.taxIdCollection.enabled ? taxIdFields : ""}
<button type="submit">Pay and subscribe</button>
</form>
${cancel}`,
  );
}

/** The billing address fields (country prefilled with the emulator's default, the US). */
const addressFields = `<fieldset>
<legend>Billing address</legend>
<label>Name <input name="name" autocomplete="name"></label>
<label>Country (two letters) <input name="country" value="US" required pattern="[A-Za-z]{2}" maxlength="2" autocomplete="country"></label>
<label>Postal code <input name="postal_code" autocomplete="postal-code"></label>
</fieldset>`;

/** "Checkout displays fields for them to enter the tax ID and legal entity name for the business." */
const taxIdFields = `<fieldset>
<legend>Purchasing as a business (optional)</legend>
<label>Business name <input name="business_name" autocomplete="organization"></label>
<label>Tax ID type <select name="tax_id_type"><option value="eu_vat">EU VAT</option><option value="gb_vat">GB VAT</option><option value="us_ein">US EIN</option></select></label>
<label>Tax ID <input name="tax_id_value"></label>
</fieldset>`;

/** The page's form as the complete control's details (empty fields are left out). */
function formDetails(form: Record<string, unknown>): CheckoutDetails {
  const text = (key: string) => {
    const value = form[key];
    return typeof value === "string" && value.trim() !== "" ? value.trim() : undefined;
  };
  const country = text("country");
  const taxValue = text("tax_id_value");
  return parseCheckoutDetails({
    address: country ? { country, postal_code: text("postal_code") } : undefined,
    name: text("name"),
    business_name: text("business_name"),
    tax_id: taxValue ? { type: text("tax_id_type") ?? "eu_vat", value: taxValue } : undefined,
  });
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

  app.post("/checkout/:id/pay", async (c) => {
    const s = state.checkoutSessions.get(c.req.param("id"));
    if (!s) return htmlResponse(page("Checkout not found", "<h1>Checkout session not found</h1>"), 404);
    if (s.status !== "complete") {
      const form = await c.req.parseBody();
      try {
        completeCheckout(ctx, s.id, formDetails(form));
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
