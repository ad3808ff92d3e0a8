import { CATALOG, parseCatalog } from "@aigate/shared/catalog";
import { PRICE_LOOKUP_KEYS } from "@aigate/shared/plans";
import { createStripe } from "@aigate/shared/stripe";
import { DEFAULT_METER_PREFIX, PORTAL_CONFIGURATION_METADATA } from "@aigate/shared/stripeCatalog";
import { type StripeEmulator, startStripeEmulator } from "@aigate/stripe-emulator";
import { EmulatorClient } from "@aigate/stripe-emulator/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EMULATOR_API_BASE, EMULATOR_SECRET_KEY, resolveStripeTarget, runStripeSetup } from "./stripeSetup";

// The CLI's settings against an emulator of its own, as `npm run stripe:setup` runs next to `npm run dev`.
let server: StripeEmulator;
const env = { STRIPE_API_BASE: "", STRIPE_SECRET_KEY: EMULATOR_SECRET_KEY };
const emulator = () => new EmulatorClient(env.STRIPE_API_BASE);
const stripe = () => createStripe(env);
const callMark = async () => (await emulator().calls()).length;

beforeAll(async () => {
  server = await startStripeEmulator({ port: 0 });
  env.STRIPE_API_BASE = server.url;
});
afterAll(() => server.close());

describe("resolveStripeTarget", () => {
  it("defaults to the local emulator, its key and the default meter prefix", () => {
    expect(DEFAULT_METER_PREFIX).toBe("aigate");
    expect(resolveStripeTarget({})).toEqual({
      apiBase: EMULATOR_API_BASE,
      secretKey: "sk_test_emulator",
      meterPrefix: "aigate",
    });
    expect(resolveStripeTarget({}, "http://127.0.0.1:4000").apiBase).toBe("http://127.0.0.1:4000");
  });

  it("takes the meter prefix from STRIPE_METER_PREFIX (blank means the default)", () => {
    expect(resolveStripeTarget({ STRIPE_METER_PREFIX: "acme" }).meterPrefix).toBe("acme");
    expect(resolveStripeTarget({ STRIPE_METER_PREFIX: "  " }).meterPrefix).toBe("aigate");
  });

  it("targets real Stripe when STRIPE_API_BASE is empty or a real key is given without it", () => {
    expect(resolveStripeTarget({ STRIPE_API_BASE: "", STRIPE_SECRET_KEY: "sk_live_abc" }).apiBase).toBe("");
    expect(resolveStripeTarget({ STRIPE_SECRET_KEY: "sk_test_realaccount" }).apiBase).toBe("");
    expect(() => resolveStripeTarget({ STRIPE_API_BASE: "" })).toThrow(/STRIPE_SECRET_KEY is required/);
    expect(() => resolveStripeTarget({ STRIPE_API_BASE: "127.0.0.1:12111" })).toThrow(/must be an origin/);
    expect(() => resolveStripeTarget({ STRIPE_SECRET_KEY: "not-a-key" })).toThrow(/does not look like/);
  });
});

describe("runStripeSetup", () => {
  it("sets up one `last` meter per plan, the prices on their plan's meter and the portal, idempotently", async () => {
    const vars = { STRIPE_API_BASE: env.STRIPE_API_BASE, STRIPE_METER_PREFIX: "setuptest" };
    const first = await runStripeSetup(vars);
    const { meters, prices, portalConfigurationId } = first.catalog;
    expect(meters.payg.eventName).toBe("setuptest_payg_sessions");
    expect(meters.pro.eventName).toBe("setuptest_pro_sessions");
    expect(meters.payg.id).not.toBe(meters.pro.id);

    // run again: the same ids, and nothing created
    const mark = await callMark();
    const second = await runStripeSetup(vars);
    expect(second.catalog).toEqual(first.catalog);
    const writes = (await emulator().calls()).slice(mark).filter((c) => c.method === "POST");
    // the portal configuration is the only object written again (its features re-asserted in place)
    expect(writes.map((c) => c.path)).toEqual([`/v1/billing_portal/configurations/${portalConfigurationId}`]);

    for (const plan of ["payg", "pro"] as const) {
      const meter = await stripe().billing.meters.retrieve(meters[plan].id);
      expect(meter).toMatchObject({
        event_name: meters[plan].eventName,
        status: "active",
        default_aggregation: { formula: "last" },
        customer_mapping: { type: "by_id", event_payload_key: "stripe_customer_id" },
        value_settings: { event_payload_key: "value" },
      });
    }

    // every lookup key has a price carrying its plan; metered prices read their own plan's meter
    expect(Object.keys(prices).sort()).toEqual(Object.values(PRICE_LOOKUP_KEYS).sort());
    const expected: Record<string, { plan: string; usage: string; meter: string | null }> = {
      [PRICE_LOOKUP_KEYS.paygSession]: { plan: "payg", usage: "metered", meter: meters.payg.id },
      [PRICE_LOOKUP_KEYS.proSession]: { plan: "pro", usage: "metered", meter: meters.pro.id },
      [PRICE_LOOKUP_KEYS.proMonthly]: { plan: "pro", usage: "licensed", meter: null },
    };
    for (const [lookupKey, id] of Object.entries(prices)) {
      const price = await stripe().prices.retrieve(id);
      const want = expected[lookupKey];
      expect(price.lookup_key).toBe(lookupKey);
      expect(price.metadata.plan).toBe(want?.plan);
      expect(price.recurring?.usage_type).toBe(want?.usage);
      expect(price.recurring?.meter ?? null).toBe(want?.meter);
    }
    const paygPrice = await stripe().prices.retrieve(prices[PRICE_LOOKUP_KEYS.paygSession] ?? "");
    expect(paygPrice.unit_amount).toBe(10);
    const proSession = await stripe().prices.retrieve(prices[PRICE_LOOKUP_KEYS.proSession] ?? "", {
      expand: ["tiers"],
    });
    expect(proSession.tiers?.map((t) => [t.up_to, t.unit_amount])).toEqual([
      [400, 0],
      [null, 7],
    ]);

    // the portal: cancellation at the period end, no plan updates (those go through our API)
    const portal = await stripe().billingPortal.configurations.retrieve(portalConfigurationId);
    expect(portal.metadata).toEqual({ ...PORTAL_CONFIGURATION_METADATA });
    expect(portal.features).toMatchObject({
      subscription_cancel: { enabled: true, mode: "at_period_end", proration_behavior: "none" },
      subscription_update: { enabled: false },
      payment_method_update: { enabled: true },
      invoice_history: { enabled: true },
      customer_update: { enabled: true },
    });
    expect([...(portal.features.customer_update.allowed_updates ?? [])].sort()).toEqual([
      "address",
      "email",
      "tax_id",
    ]);

    const text = first.lines.join("\n");
    for (const plan of ["payg", "pro"] as const)
      expect(text).toContain(
        `meter   ${meters[plan].id}  event_name=${meters[plan].eventName}  aggregation=last`,
      );
    for (const [key, id] of Object.entries(prices))
      expect(text).toContain(`price   ${id}  lookup_key=${key}`);
    expect(text).toContain(`portal  ${portalConfigurationId}`);
    expect(text).toContain(`STRIPE_API_BASE=${env.STRIPE_API_BASE}`);
    expect(text).not.toContain("STRIPE_METER_EVENT_NAME");
  });

  it("gives other prefixes meters of their own", async () => {
    const a = await runStripeSetup({ STRIPE_API_BASE: env.STRIPE_API_BASE, STRIPE_METER_PREFIX: "prefa" });
    const b = await runStripeSetup({ STRIPE_API_BASE: env.STRIPE_API_BASE, STRIPE_METER_PREFIX: "prefb" });
    expect(b.catalog.meters.payg.eventName).toBe("prefb_payg_sessions");
    expect(b.catalog.meters.payg.id).not.toBe(a.catalog.meters.payg.id);
    expect(b.catalog.meters.pro.id).not.toBe(a.catalog.meters.pro.id);
  });

  it("publishes an edited catalog (payg $0.10 up to 1,000 sessions, then $0.08) as a new payg price version", async () => {
    const vars = { STRIPE_API_BASE: env.STRIPE_API_BASE };
    const before = await runStripeSetup(vars);
    const edited = parseCatalog({
      ...CATALOG,
      plans: {
        ...CATALOG.plans,
        payg: {
          ...CATALOG.plans.payg,
          tiers: [
            { up_to: 1000, unit_amount_cents: 10 },
            { up_to: null, unit_amount_cents: 8 },
          ],
        },
      },
    });
    const after = await runStripeSetup(vars, undefined, edited);
    const key = PRICE_LOOKUP_KEYS.paygSession;
    const moved = after.catalog.prices[key] ?? "";
    expect(moved).not.toBe(before.catalog.prices[key]);
    expect(after.lines).toContain(`  price   ${moved}  lookup_key=${key}`);
    const price = await stripe().prices.retrieve(moved, { expand: ["tiers"] });
    expect(price).toMatchObject({ lookup_key: key, billing_scheme: "tiered", tiers_mode: "graduated" });
    expect(price.tiers?.map((t) => [t.up_to, t.unit_amount])).toEqual([
      [1000, 10],
      [null, 8],
    ]);
    // pro untouched, the old payg version kept for its subscribers, and a rerun changes nothing
    expect(after.catalog.prices[PRICE_LOOKUP_KEYS.proSession]).toBe(
      before.catalog.prices[PRICE_LOOKUP_KEYS.proSession],
    );
    expect(await stripe().prices.retrieve(before.catalog.prices[key] ?? "")).toMatchObject({
      active: true,
      lookup_key: null,
    });
    expect((await runStripeSetup(vars, undefined, edited)).catalog.prices).toEqual(after.catalog.prices);
  });
});
