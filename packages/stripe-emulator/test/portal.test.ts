import type Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { createCatalog, useEmulator } from "./testkit";

const h = useEmulator();
const DAY = 86_400;
const JAN_1 = Date.UTC(2026, 0, 1) / 1000;
const JAN_16 = JAN_1 + 15 * DAY;
const FEB_1 = JAN_1 + 31 * DAY;

async function subscribeTo(
  items: Stripe.Checkout.SessionCreateParams.LineItem[],
  mode: "classic" | "flexible",
) {
  const session = await h.stripe.checkout.sessions.create({
    mode: "subscription",
    customer_email: `${mode}@example.com`,
    line_items: items,
    success_url: "http://app.test/ok",
    subscription_data: { billing_mode: { type: mode } },
  });
  return (await h.control.completeCheckout(session.id)).subscription;
}

/** Submits a form on the hosted portal page like a browser (urlencoded POST, redirect not followed). */
async function submit(url: string, form: Record<string, string> = {}) {
  return fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form).toString(),
    redirect: "manual",
  });
}

function cancelConfig(
  mode: "at_period_end" | "immediately",
  prorationBehavior: "none" | "create_prorations" = "none",
) {
  return h.stripe.billingPortal.configurations.create({
    features: {
      subscription_cancel: {
        enabled: true,
        mode,
        proration_behavior: prorationBehavior,
        cancellation_reason: { enabled: true, options: ["too_expensive", "unused"] },
      },
      invoice_history: { enabled: true },
    },
    default_return_url: "http://app.test/billing",
    metadata: { purpose: "test" },
  });
}

describe("customer portal configurations", () => {
  // API reference `BillingPortal.Configuration`, `subscription_cancel.proration_behavior`:
  // "Possible values are `none` and `create_prorations`, which is only compatible with
  // `mode=immediately`. Passing `always_invoice` will result in an error."
  it("creates, retrieves, updates and lists configurations with Stripe's feature rules", async () => {
    const config = await cancelConfig("immediately", "create_prorations");
    expect(config.id).toMatch(/^bpc_/);
    expect(config).toMatchObject({
      object: "billing_portal.configuration",
      active: true,
      is_default: false,
      default_return_url: "http://app.test/billing",
      metadata: { purpose: "test" },
      features: {
        subscription_cancel: {
          enabled: true,
          mode: "immediately",
          proration_behavior: "create_prorations",
          cancellation_reason: { enabled: true, options: ["too_expensive", "unused"] },
        },
        invoice_history: { enabled: true },
        subscription_update: { enabled: false, default_allowed_updates: [] },
        customer_update: { enabled: false },
      },
    });
    expect((await h.stripe.billingPortal.configurations.retrieve(config.id)).id).toBe(config.id);
    const updated = await h.stripe.billingPortal.configurations.update(config.id, {
      features: { invoice_history: { enabled: false } },
      name: "Usage plans",
    });
    expect(updated).toMatchObject({
      name: "Usage plans",
      features: { invoice_history: { enabled: false }, subscription_cancel: { mode: "immediately" } },
    });
    const list = await h.stripe.billingPortal.configurations.list({ is_default: false });
    expect(list.data.map((c) => c.id)).toEqual([config.id]);
    // is_default: "portal sessions will use this configuration unless it is overriden when creating the session"
    const defaults = await h.stripe.billingPortal.configurations.list({ is_default: true });
    expect(defaults.data).toHaveLength(1);

    await expect(
      h.stripe.billingPortal.configurations.create({
        features: {
          subscription_cancel: { enabled: true, mode: "immediately", proration_behavior: "always_invoice" },
        },
      }),
    ).rejects.toMatchObject({ statusCode: 400, param: "features[subscription_cancel][proration_behavior]" });
    await expect(
      h.stripe.billingPortal.configurations.create({
        features: {
          subscription_cancel: {
            enabled: true,
            mode: "at_period_end",
            proration_behavior: "create_prorations",
          },
        },
      }),
    ).rejects.toMatchObject({ param: "features[subscription_cancel][proration_behavior]" });
    await expect(
      h.stripe.billingPortal.configurations.create({} as Stripe.BillingPortal.ConfigurationCreateParams),
    ).rejects.toMatchObject({ code: "parameter_missing", param: "features" });
  });

  // Sessions API, `configuration`: "The ID of an existing configuration to use for this session ...
  // If not specified, the session uses the default configuration."
  it("uses the session's configuration, or the default one; inactive configurations are refused", async () => {
    const customer = await h.stripe.customers.create({});
    const config = await cancelConfig("at_period_end");
    const withConfig = await h.stripe.billingPortal.sessions.create({
      customer: customer.id,
      configuration: config.id,
    });
    expect(withConfig).toMatchObject({ configuration: config.id, return_url: "http://app.test/billing" });
    const plain = await h.stripe.billingPortal.sessions.create({ customer: customer.id });
    const [def] = (await h.stripe.billingPortal.configurations.list({ is_default: true })).data;
    expect(plain.configuration).toBe(def?.id);
    await h.stripe.billingPortal.configurations.update(config.id, { active: false });
    await expect(
      h.stripe.billingPortal.sessions.create({ customer: customer.id, configuration: config.id }),
    ).rejects.toMatchObject({ statusCode: 400, param: "configuration" });
  });
});

describe("the hosted portal page", () => {
  // https://docs.stripe.com/billing/subscriptions/billing-mode/compare — "Cancellations in the
  // Customer Portal": classic: "`cancel_at_period_end` is set to `true` and `cancel_at` is set to
  // the `current_period_end` timestamp." flexible: "`cancel_at_period_end` is set to `false` and
  // `cancel_at` is set to the maximum `current_period_end` across all subscription items."
  it.each([
    ["classic", true],
    ["flexible", false],
  ] as const)("%s: cancels at the period end as the configuration says", async (mode, atPeriodEnd) => {
    await h.control.setClock(JAN_1, { frozen: true });
    const catalog = await createCatalog(h.stripe);
    const sub = await subscribeTo(
      [{ price: catalog.proMonthly.id, quantity: 1 }, { price: catalog.proSessions.id }],
      mode,
    );
    const config = await cancelConfig("at_period_end");
    const session = await h.stripe.billingPortal.sessions.create({
      customer: sub.customer,
      configuration: config.id,
    });
    const html = await (await fetch(session.url)).text();
    expect(html).toContain("Cancel at the end of the period</button>");
    expect(html).toContain('<option value="too_expensive">too expensive</option>');
    const res = await submit(`${session.url}/subscriptions/${sub.id}/cancel`, { reason: "too_expensive" });
    expect(res.status).toBe(303);
    const after = await h.stripe.subscriptions.retrieve(sub.id);
    expect(after).toMatchObject({
      status: "active",
      cancel_at_period_end: atPeriodEnd,
      cancel_at: FEB_1,
      cancellation_details: { feedback: "too_expensive" },
    });
    const update = (await h.control.events("customer.subscription.updated")).at(-1);
    expect(update?.request.id).toBeNull();
    expect(await (await fetch(session.url)).text()).toContain("cancels on 1 Feb 2026");
  });

  it("cancels now with a proration when configured `immediately` + `create_prorations`", async () => {
    await h.control.setClock(JAN_1, { frozen: true });
    const catalog = await createCatalog(h.stripe);
    const sub = await subscribeTo([{ price: catalog.proMonthly.id, quantity: 1 }], "flexible");
    const config = await cancelConfig("immediately", "create_prorations");
    const session = await h.stripe.billingPortal.sessions.create({
      customer: sub.customer,
      configuration: config.id,
    });
    await h.control.setClock(JAN_16, { frozen: true });
    expect((await submit(`${session.url}/subscriptions/${sub.id}/cancel`)).status).toBe(303);
    expect(await h.stripe.subscriptions.retrieve(sub.id)).toMatchObject({
      status: "canceled",
      ended_at: JAN_16,
    });
    const [credit] = (await h.stripe.invoiceItems.list({ customer: sub.customer, pending: true })).data;
    expect(credit).toMatchObject({ proration: true, amount: -Math.round((2900 * 16) / 31) });
  });

  // https://support.stripe.com/questions/billing-customer-portal: "We have detected that this plan is
  // not one that is supported by the portal for updates (see limitations). As a result, we can only
  // support cancellation for this subscription."
  it("offers plan changes only for subscriptions without metered prices", async () => {
    await h.control.setClock(JAN_1, { frozen: true });
    const catalog = await createCatalog(h.stripe);
    const premium = await h.stripe.prices.create({
      currency: "usd",
      unit_amount: 4900,
      recurring: { interval: "month" },
      product:
        typeof catalog.proMonthly.product === "string"
          ? catalog.proMonthly.product
          : catalog.proMonthly.product.id,
    });
    const product =
      typeof catalog.proMonthly.product === "string"
        ? catalog.proMonthly.product
        : catalog.proMonthly.product.id;
    const config = await h.stripe.billingPortal.configurations.create({
      features: {
        subscription_update: {
          enabled: true,
          default_allowed_updates: ["price"],
          products: [{ product, prices: [catalog.proMonthly.id, premium.id] }],
          proration_behavior: "none",
        },
        subscription_cancel: { enabled: false },
        invoice_history: { enabled: false },
      },
    });
    const metered = await subscribeTo(
      [{ price: catalog.proMonthly.id, quantity: 1 }, { price: catalog.proSessions.id }],
      "flexible",
    );
    const meteredSession = await h.stripe.billingPortal.sessions.create({
      customer: metered.customer,
      configuration: config.id,
    });
    const meteredHtml = await (await fetch(meteredSession.url)).text();
    expect(meteredHtml).toContain("we can only support cancellation for this subscription.");
    expect(meteredHtml).not.toContain("Update plan");
    expect(meteredHtml).not.toContain("<h2>Invoices</h2>");
    expect(
      (await submit(`${meteredSession.url}/subscriptions/${metered.id}/update`, { price: premium.id }))
        .status,
    ).toBe(400);
    expect((await submit(`${meteredSession.url}/subscriptions/${metered.id}/cancel`)).status).toBe(400);

    const licensed = await subscribeTo([{ price: catalog.proMonthly.id, quantity: 1 }], "classic");
    const session = await h.stripe.billingPortal.sessions.create({
      customer: licensed.customer,
      configuration: config.id,
    });
    const html = await (await fetch(session.url)).text();
    expect(html).toContain(`<option value="${premium.id}">`);
    expect(html).toContain("Update plan</button>");
    expect(
      (await submit(`${session.url}/subscriptions/${licensed.id}/update`, { price: premium.id })).status,
    ).toBe(303);
    const switched = await h.stripe.subscriptions.retrieve(licensed.id);
    expect(switched.items.data.map((i) => i.price.id)).toEqual([premium.id]);
    expect((await h.stripe.invoiceItems.list({ customer: licensed.customer })).data).toEqual([]);
  });

  it("lists invoices when invoice history is enabled", async () => {
    const catalog = await createCatalog(h.stripe);
    const sub = await subscribeTo([{ price: catalog.proMonthly.id, quantity: 1 }], "flexible");
    const session = await h.stripe.billingPortal.sessions.create({ customer: sub.customer });
    const html = await (await fetch(session.url)).text();
    expect(html).toContain("<h2>Invoices</h2>");
    expect(html).toContain("$29.00, paid");
  });
});
