/**
 * The Stripe side of the plan catalog: one Billing Meter per paid plan (`last` aggregation), the
 * prices of each paid plan found by lookup key, and the Customer Portal configuration that
 * matches our plan-change policy. `ensureStripeCatalog` creates what is missing and is safe to run
 * any number of times (used by `npm run stripe:setup`, dev and tests).
 *
 * Each plan reads its own meter: Stripe meters aggregate per customer, not per subscription item,
 * so two prices reading one meter would bill the same usage twice. Prices of one plan (price
 * versions) share the plan's meter; a subscription never holds two of them at once. Every price
 * and product carries `metadata.plan`, which is how the webhooks recognise a plan whatever the
 * price version (lookup keys move to the newest version).
 */
import type Stripe from "stripe";
import { type PaidPlanId, PLANS, PRICE_LOOKUP_KEYS } from "./plans";

export const DEFAULT_METER_PREFIX = "aigate";

/** The event name of a plan's meter: `aigate_payg_sessions`, `aigate_pro_sessions`. */
export function meterEventName(plan: PaidPlanId, prefix = DEFAULT_METER_PREFIX): string {
  return `${prefix}_${plan}_sessions`;
}

/** Marks the portal configuration this catalog manages. */
export const PORTAL_CONFIGURATION_METADATA = { aigate_portal: "v1" } as const;

export interface StripeCatalog {
  meters: Record<PaidPlanId, { id: string; eventName: string }>;
  prices: Record<(typeof PRICE_LOOKUP_KEYS)[keyof typeof PRICE_LOOKUP_KEYS], string>;
  portalConfigurationId: string;
}

type PriceSpec = Omit<Stripe.PriceCreateParams, "product" | "lookup_key" | "recurring"> & {
  lookup_key: string;
  product: PaidPlanId;
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

async function ensureMeter(
  stripe: Stripe,
  plan: PaidPlanId,
  eventName: string,
): Promise<Stripe.Billing.Meter> {
  for await (const meter of stripe.billing.meters.list({ status: "active", limit: 100 })) {
    if (meter.event_name === eventName) return meter;
  }
  return stripe.billing.meters.create(
    {
      display_name: `AI Gate ${PLANS[plan].name} successful sessions`,
      event_name: eventName,
      // absolute, only-growing totals per customer and period: re-sending a total never double-charges
      default_aggregation: { formula: "last" },
      customer_mapping: { type: "by_id", event_payload_key: "stripe_customer_id" },
      value_settings: { event_payload_key: "value" },
    },
    { idempotencyKey: `aigate-meter-${eventName}` },
  );
}

async function ensureProduct(stripe: Stripe, plan: PaidPlanId, existing: Stripe.Price[]): Promise<string> {
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
  if (p.metadata?.plan !== spec.product) return false;
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

/**
 * The portal matches the plan-change policy: plan changes go through our API (Stripe's portal
 * cannot update subscriptions with usage-based prices), cancellation happens at the period end
 * (its final invoice carries the period's usage), and payment methods and invoices are managed
 * there.
 */
export const PORTAL_FEATURES: Stripe.BillingPortal.ConfigurationCreateParams.Features = {
  subscription_cancel: { enabled: true, mode: "at_period_end", proration_behavior: "none" },
  subscription_update: { enabled: false },
  payment_method_update: { enabled: true },
  invoice_history: { enabled: true },
  customer_update: { enabled: true, allowed_updates: ["email", "address", "tax_id"] },
};

/** Finds the portal configuration marked as ours (the api uses it for portal sessions). */
export async function findPortalConfiguration(stripe: Stripe): Promise<string | null> {
  for await (const conf of stripe.billingPortal.configurations.list({ active: true, limit: 100 })) {
    if (conf.metadata?.aigate_portal === PORTAL_CONFIGURATION_METADATA.aigate_portal) return conf.id;
  }
  return null;
}

async function ensurePortalConfiguration(stripe: Stripe): Promise<string> {
  const found = await findPortalConfiguration(stripe);
  if (found) {
    await stripe.billingPortal.configurations.update(found, { features: PORTAL_FEATURES });
    return found;
  }
  const created = await stripe.billingPortal.configurations.create(
    {
      features: PORTAL_FEATURES,
      metadata: { ...PORTAL_CONFIGURATION_METADATA },
      business_profile: { headline: "AI Gate: manage payment methods, invoices and cancellation" },
    },
    { idempotencyKey: `aigate-portal-configuration-${PORTAL_CONFIGURATION_METADATA.aigate_portal}` },
  );
  return created.id;
}

/** Creates the meters, products, prices and portal configuration that are missing; returns their ids. */
export async function ensureStripeCatalog(
  stripe: Stripe,
  meterPrefix = DEFAULT_METER_PREFIX,
): Promise<StripeCatalog> {
  const payg = await ensureMeter(stripe, "payg", meterEventName("payg", meterPrefix));
  const pro = await ensureMeter(stripe, "pro", meterEventName("pro", meterPrefix));
  const meters = {
    payg: { id: payg.id, eventName: payg.event_name },
    pro: { id: pro.id, eventName: pro.event_name },
  };
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
    const meterId = meters[spec.product].id;
    if (current && samePrice(current, spec, meterId)) {
      prices[spec.lookup_key] = current.id;
      continue;
    }
    const product = await ensureProduct(stripe, spec.product, existing);
    const { product: _plan, recurring, ...rest } = spec;
    const created = await stripe.prices.create({
      ...rest,
      product,
      recurring: { ...recurring, ...(recurring.usage_type === "metered" ? { meter: meterId } : {}) },
      metadata: { plan: spec.product },
      // the lookup key moves to the new version; subscribers of the old one keep it
      transfer_lookup_key: current !== undefined,
    });
    prices[spec.lookup_key] = created.id;
  }
  return {
    meters,
    prices: prices as StripeCatalog["prices"],
    portalConfigurationId: await ensurePortalConfiguration(stripe),
  };
}
