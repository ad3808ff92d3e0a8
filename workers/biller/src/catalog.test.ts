import { env } from "cloudflare:test";
import { PRICE_LOOKUP_KEYS } from "@aigate/shared";
import { ensureStripeCatalog } from "@aigate/shared/stripeCatalog";
import type Stripe from "stripe";
import { expect, it } from "vitest";
import { callMark, emulator, stripe } from "./test/support";

it("creates the last-aggregated meter, products and prices once, whatever the number of runs", async () => {
  const first = await ensureStripeCatalog(stripe(), env.STRIPE_METER_EVENT_NAME);
  const mark = await callMark();
  const second = await ensureStripeCatalog(stripe(), env.STRIPE_METER_EVENT_NAME);
  expect(second).toEqual(first);
  const writes = (await emulator().calls()).slice(mark).filter((c) => c.method === "POST");
  expect(writes).toEqual([]);

  const meter = await stripe().billing.meters.retrieve(first.meterId);
  expect(meter).toMatchObject({
    event_name: env.STRIPE_METER_EVENT_NAME,
    default_aggregation: { formula: "last" },
    customer_mapping: { event_payload_key: "stripe_customer_id", type: "by_id" },
    value_settings: { event_payload_key: "value" },
    status: "active",
  });
  const meters = await stripe().billing.meters.list({ status: "active", limit: 100 });
  expect(meters.data.filter((m) => m.event_name === env.STRIPE_METER_EVENT_NAME)).toHaveLength(1);

  const prices = await stripe().prices.list({
    lookup_keys: Object.values(PRICE_LOOKUP_KEYS),
    active: true,
    expand: ["data.tiers"],
  });
  expect(prices.data).toHaveLength(3);
  const byKey: Record<string, Stripe.Price> = Object.fromEntries(
    prices.data.map((p) => [p.lookup_key ?? p.id, p]),
  );
  expect(byKey[PRICE_LOOKUP_KEYS.paygSession]).toMatchObject({
    id: first.prices.aigate_payg_session,
    currency: "usd",
    unit_amount: 10,
    recurring: { interval: "month", usage_type: "metered", meter: first.meterId },
  });
  expect(byKey[PRICE_LOOKUP_KEYS.proMonthly]).toMatchObject({
    id: first.prices.aigate_pro_monthly,
    unit_amount: 2900,
    recurring: { interval: "month", usage_type: "licensed" },
  });
  const proSession = byKey[PRICE_LOOKUP_KEYS.proSession];
  expect(proSession).toMatchObject({
    id: first.prices.aigate_pro_session,
    billing_scheme: "tiered",
    tiers_mode: "graduated",
    recurring: { interval: "month", usage_type: "metered", meter: first.meterId },
  });
  expect(proSession?.tiers?.map((t) => [t.up_to, t.unit_amount])).toEqual([
    [400, 0],
    [null, 7],
  ]);
  // both paid plans' prices hang off one product per plan
  expect(byKey[PRICE_LOOKUP_KEYS.proMonthly]?.product).toBe(proSession?.product);
  expect(byKey[PRICE_LOOKUP_KEYS.paygSession]?.product).not.toBe(proSession?.product);
});
