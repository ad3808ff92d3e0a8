/**
 * The Stripe side of the plan catalog: one Billing Meter for successful sessions and the prices
 * of each paid plan, found by lookup key. `ensureStripeCatalog` creates what is missing and is
 * safe to run any number of times (used by `npm run stripe:setup`, dev and tests).
 */
import type Stripe from "stripe";
import { PLANS, PRICE_LOOKUP_KEYS } from "./plans";

export const DEFAULT_METER_EVENT_NAME = "aigate_successful_sessions";

export interface StripeCatalog {
  meterId: string;
  meterEventName: string;
  prices: Record<(typeof PRICE_LOOKUP_KEYS)[keyof typeof PRICE_LOOKUP_KEYS], string>;
}

type PriceSpec = Omit<Stripe.PriceCreateParams, "product" | "lookup_key" | "recurring"> & {
  lookup_key: string;
  product: "payg" | "pro";
  recurring: { interval: "month"; usage_type: "metered" | "licensed" };
};

function priceSpecs(): PriceSpec[] {
  return [
    {
      lookup_key: PRICE_LOOKUP_KEYS.paygSession,
      product: "payg",
      currency: "usd",
      unit_amount: PLANS.payg.perSessionCents,
      recurring: { interval: "month", usage_type: "metered" },
    },
    {
      lookup_key: PRICE_LOOKUP_KEYS.proMonthly,
      product: "pro",
      currency: "usd",
      unit_amount: PLANS.pro.monthlyFeeCents,
      recurring: { interval: "month", usage_type: "licensed" },
    },
    {
      lookup_key: PRICE_LOOKUP_KEYS.proSession,
      product: "pro",
      currency: "usd",
      billing_scheme: "tiered",
      tiers_mode: "graduated",
      tiers: [
        { up_to: PLANS.pro.includedSessions, unit_amount: 0 },
        { up_to: "inf", unit_amount: PLANS.pro.perSessionCents },
      ],
      recurring: { interval: "month", usage_type: "metered" },
    },
  ];
}

const PRODUCTS = {
  payg: {
    name: "AI Gate Pay-as-you-go",
    description: "$0.10 per successful session",
    metadata: { plan: "payg", success_only: "true" },
  },
  pro: {
    name: "AI Gate Pro",
    description: "$29/month, 400 successful sessions included, then $0.07 each",
    metadata: { plan: "pro", included_sessions: "400", overage_price: "7" },
  },
} as const;

async function ensureMeter(stripe: Stripe, eventName: string): Promise<Stripe.Billing.Meter> {
  for await (const meter of stripe.billing.meters.list({ status: "active", limit: 100 })) {
    if (meter.event_name === eventName) return meter;
  }
  return stripe.billing.meters.create(
    {
      display_name: "AI Gate successful sessions",
      event_name: eventName,
      // absolute, only-growing totals per customer and period: re-sending a total never double-charges
      default_aggregation: { formula: "last" },
      customer_mapping: { type: "by_id", event_payload_key: "stripe_customer_id" },
      value_settings: { event_payload_key: "value" },
    },
    { idempotencyKey: `aigate-meter-${eventName}` },
  );
}

async function ensureProduct(
  stripe: Stripe,
  plan: "payg" | "pro",
  existing: Stripe.Price[],
): Promise<string> {
  const fromPrice = existing.find(
    (p) => p.metadata?.plan === plan || PLANS[plan].stripeLookupKeys.includes(p.lookup_key ?? ""),
  );
  if (fromPrice) return typeof fromPrice.product === "string" ? fromPrice.product : fromPrice.product.id;
  for await (const product of stripe.products.list({ active: true, limit: 100 })) {
    if (product.metadata?.plan === plan) return product.id;
  }
  const created = await stripe.products.create(PRODUCTS[plan], {
    idempotencyKey: `aigate-product-${plan}-v1`,
  });
  return created.id;
}

function samePrice(p: Stripe.Price, spec: PriceSpec, meterId: string): boolean {
  if (p.currency !== spec.currency || p.recurring?.usage_type !== spec.recurring.usage_type) return false;
  if (spec.recurring.usage_type === "metered" && p.recurring?.meter !== meterId) return false;
  if (spec.billing_scheme === "tiered") {
    const tiers = p.tiers ?? [];
    return (
      p.tiers_mode === "graduated" &&
      tiers.length === spec.tiers?.length &&
      tiers.every((t, i) => {
        const s = spec.tiers?.[i];
        return (
          s !== undefined && (t.up_to ?? "inf") === s.up_to && (t.unit_amount ?? 0) === (s.unit_amount ?? 0)
        );
      })
    );
  }
  return p.unit_amount === spec.unit_amount;
}

/** Creates the meter, products and prices that are missing; returns their ids. */
export async function ensureStripeCatalog(
  stripe: Stripe,
  meterEventName = DEFAULT_METER_EVENT_NAME,
): Promise<StripeCatalog> {
  const meter = await ensureMeter(stripe, meterEventName);
  const specs = priceSpecs();
  const existing = (
    await stripe.prices.list({
      lookup_keys: specs.map((s) => s.lookup_key),
      active: true,
      expand: ["data.tiers"],
      limit: 100,
    })
  ).data;
  const prices: Record<string, string> = {};
  for (const spec of specs) {
    const current = existing.find((p) => p.lookup_key === spec.lookup_key);
    if (current && samePrice(current, spec, meter.id)) {
      prices[spec.lookup_key] = current.id;
      continue;
    }
    const product = await ensureProduct(stripe, spec.product, existing);
    const { product: _plan, recurring, ...rest } = spec;
    const created = await stripe.prices.create({
      ...rest,
      product,
      recurring: { ...recurring, ...(recurring.usage_type === "metered" ? { meter: meter.id } : {}) },
      metadata: { plan: spec.product },
      transfer_lookup_key: current !== undefined,
    });
    prices[spec.lookup_key] = created.id;
  }
  return {
    meterId: meter.id,
    meterEventName,
    prices: prices as StripeCatalog["prices"],
  };
}
