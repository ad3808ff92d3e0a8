import { PaidPlanId, PLANS, PRICE_LOOKUP_KEYS } from "@aigate/shared";
import {
  catalogPrice,
  ensureStripeCatalog,
  findPortalConfiguration,
  meterEventName,
  PORTAL_CONFIGURATION_METADATA,
} from "@aigate/shared/stripeCatalog";
import type Stripe from "stripe";
import { expect, it } from "vitest";
import { callMark, emulator, stripe } from "./test/support";

it("creates one last-aggregated meter per paid plan, the products, the prices and the portal configuration once", async () => {
  const first = await ensureStripeCatalog(stripe());
  const mark = await callMark();
  const second = await ensureStripeCatalog(stripe());
  expect(second).toEqual(first);
  // run again, nothing is created: the only write re-applies the portal's features to our configuration
  const writes = (await emulator().calls()).slice(mark).filter((c) => c.method === "POST");
  expect(writes.map((w) => w.path)).toEqual([
    `/v1/billing_portal/configurations/${first.portalConfigurationId}`,
  ]);

  const active = await stripe().billing.meters.list({ status: "active", limit: 100 });
  for (const plan of PaidPlanId.options) {
    expect(first.meters[plan].eventName).toBe(meterEventName(plan));
    expect(meterEventName(plan)).toBe(`aigate_${plan}_sessions`);
    const meter = await stripe().billing.meters.retrieve(first.meters[plan].id);
    expect(meter).toMatchObject({
      event_name: `aigate_${plan}_sessions`,
      default_aggregation: { formula: "last" },
      customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
      value_settings: { event_payload_key: "value" },
      status: "active",
    });
    expect(active.data.filter((m) => m.event_name === meterEventName(plan))).toHaveLength(1);
  }
  expect(first.meters.payg.id).not.toBe(first.meters.pro.id);

  const prices = await stripe().prices.list({
    lookup_keys: Object.values(PRICE_LOOKUP_KEYS),
    active: true,
    expand: ["data.tiers"],
  });
  expect(prices.data).toHaveLength(3);
  const byKey: Record<string, Stripe.Price> = Object.fromEntries(
    prices.data.map((p) => [p.lookup_key ?? p.id, p]),
  );
  // each plan's metered price reads its own meter: a payg total and a pro total never share a series
  expect(byKey[PRICE_LOOKUP_KEYS.paygSession]).toMatchObject({
    id: first.prices.aigate_payg_session,
    currency: "usd",
    unit_amount: PLANS.payg.perSessionCents,
    recurring: { interval: "month", usage_type: "metered", meter: first.meters.payg.id },
    metadata: { plan: "payg" },
  });
  expect(byKey[PRICE_LOOKUP_KEYS.proMonthly]).toMatchObject({
    id: first.prices.aigate_pro_monthly,
    unit_amount: PLANS.pro.monthlyFeeCents,
    recurring: { interval: "month", usage_type: "licensed" },
    metadata: { plan: "pro" },
  });
  const proSession = byKey[PRICE_LOOKUP_KEYS.proSession];
  expect(proSession).toMatchObject({
    id: first.prices.aigate_pro_session,
    billing_scheme: "tiered",
    tiers_mode: "graduated",
    recurring: { interval: "month", usage_type: "metered", meter: first.meters.pro.id },
    metadata: { plan: "pro" },
  });
  expect(proSession?.tiers?.map((t) => [t.up_to, t.unit_amount])).toEqual([
    [400, 0],
    [null, 7],
  ]);
  // both pro prices hang off one product, payg's off another; products carry their plan
  expect(byKey[PRICE_LOOKUP_KEYS.proMonthly]?.product).toBe(proSession?.product);
  expect(byKey[PRICE_LOOKUP_KEYS.paygSession]?.product).not.toBe(proSession?.product);
  for (const plan of PaidPlanId.options) {
    const key = plan === "payg" ? PRICE_LOOKUP_KEYS.paygSession : PRICE_LOOKUP_KEYS.proSession;
    const product = await stripe().products.retrieve(String(byKey[key]?.product));
    expect(product.metadata).toMatchObject({ plan });
  }
});

it("sets up the portal for our plan-change policy: cancellation at the period end, no plan updates", async () => {
  const catalog = await ensureStripeCatalog(stripe());
  expect(await findPortalConfiguration(stripe())).toBe(catalog.portalConfigurationId);
  const conf = await stripe().billingPortal.configurations.retrieve(catalog.portalConfigurationId);
  expect(conf).toMatchObject({
    active: true,
    metadata: PORTAL_CONFIGURATION_METADATA,
    features: {
      subscription_cancel: { enabled: true, mode: "at_period_end", proration_behavior: "none" },
      subscription_update: { enabled: false },
      payment_method_update: { enabled: true },
      invoice_history: { enabled: true },
      customer_update: { enabled: true },
    },
  });
  expect([...(conf.features.customer_update.allowed_updates ?? [])].sort()).toEqual([
    "address",
    "email",
    "tax_id",
  ]);

  // changed in the Dashboard: the next run puts the policy back, on the same configuration
  await stripe().billingPortal.configurations.update(catalog.portalConfigurationId, {
    features: { subscription_cancel: { enabled: true, mode: "immediately", proration_behavior: "none" } },
  });
  const again = await ensureStripeCatalog(stripe());
  expect(again.portalConfigurationId).toBe(catalog.portalConfigurationId);
  const restored = await stripe().billingPortal.configurations.retrieve(catalog.portalConfigurationId);
  expect(restored.features.subscription_cancel).toMatchObject({ mode: "at_period_end" });
});

it("creates a changed price as a new version: the lookup key moves to it, the old version stays", async () => {
  const before = await ensureStripeCatalog(stripe());
  // someone made the payg price's lookup key point at a 12-cent price in the Dashboard
  const product = (await stripe().prices.retrieve(catalogPrice(before, "aigate_payg_session"))).product;
  const wrong = await stripe().prices.create({
    product: String(product),
    currency: "usd",
    unit_amount: 12,
    recurring: { interval: "month", usage_type: "metered", meter: before.meters.payg.id },
    lookup_key: PRICE_LOOKUP_KEYS.paygSession,
    transfer_lookup_key: true,
    metadata: { plan: "payg" },
  });
  const after = await ensureStripeCatalog(stripe());
  expect(catalogPrice(after, "aigate_payg_session")).not.toBe(wrong.id);
  expect(catalogPrice(after, "aigate_payg_session")).not.toBe(catalogPrice(before, "aigate_payg_session"));
  const current = await stripe().prices.retrieve(catalogPrice(after, "aigate_payg_session"));
  expect(current).toMatchObject({
    unit_amount: PLANS.payg.perSessionCents,
    lookup_key: PRICE_LOOKUP_KEYS.paygSession,
    product,
    recurring: { meter: before.meters.payg.id },
  });
  // subscribers of the older versions keep theirs
  expect(await stripe().prices.retrieve(wrong.id)).toMatchObject({ active: true, lookup_key: null });
  expect(after.prices.aigate_pro_session).toBe(before.prices.aigate_pro_session);
});
