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
import { CATALOG, type CatalogTier, describeTiers, type PricingCatalog, type TiersMode } from "./catalog";
import { type PaidPlanId, PaidPlanId as PaidPlanIds, plansOf } from "./plans";

export const DEFAULT_METER_PREFIX = "aigate";

/** The event name of a plan's meter: `aigate_payg_sessions`, `aigate_pro_sessions`. */
export function meterEventName(plan: PaidPlanId, prefix = DEFAULT_METER_PREFIX): string {
  return `${prefix}_${plan}_sessions`;
}

/** Marks the portal configuration this catalog manages. */
export const PORTAL_CONFIGURATION_METADATA = { aigate_portal: "v1" } as const;

export interface StripeCatalog {
  meters: Record<PaidPlanId, { id: string; eventName: string }>;
  /** Price ids by lookup key (every key of the catalog). */
  prices: Record<string, string>;
  portalConfigurationId: string;
}

/** The id of the price holding `lookupKey` in a set-up catalog; throws for a key the catalog lacks. */
export function catalogPrice(catalog: StripeCatalog, lookupKey: string): string {
  const id = catalog.prices[lookupKey];
  if (id === undefined) throw new Error(`no price with lookup key ${lookupKey} in the Stripe catalog`);
  return id;
}

type PriceSpec = Omit<Stripe.PriceCreateParams, "product" | "lookup_key" | "recurring"> & {
  lookup_key: string;
  product: PaidPlanId;
  recurring: { interval: "month"; usage_type: "metered" | "licensed" };
};

/** Stripe's tiers for catalog tiers: `up_to: "inf"` for the unbounded last tier. */
export function stripeTiers(tiers: readonly CatalogTier[]): Stripe.PriceCreateParams.Tier[] {
  return tiers.map((t) => ({ up_to: t.up_to ?? "inf", unit_amount: t.unit_amount_cents }));
}

/**
 * The recurring price of per-session tiers: one unbounded tier is a per-unit price, several a
 * tiered one (`billing_scheme: tiered` with the catalog's `tiers_mode`).
 */
export function sessionPriceParams(
  mode: TiersMode,
  tiers: readonly CatalogTier[],
): Pick<Stripe.PriceCreateParams, "unit_amount" | "billing_scheme" | "tiers_mode" | "tiers"> {
  const [only] = tiers;
  if (tiers.length === 1 && only) return { unit_amount: only.unit_amount_cents };
  return { billing_scheme: "tiered", tiers_mode: mode, tiers: stripeTiers(tiers) };
}

function priceSpecs(catalog: PricingCatalog): PriceSpec[] {
  return PaidPlanIds.options.flatMap((plan): PriceSpec[] => {
    const p = catalog.plans[plan];
    const fee: PriceSpec[] =
      p.fee_lookup_key === null
        ? []
        : [
            {
              lookup_key: p.fee_lookup_key,
              product: plan,
              currency: catalog.currency,
              unit_amount: p.monthly_fee_cents,
              recurring: { interval: "month", usage_type: "licensed" },
            },
          ];
    return [
      ...fee,
      {
        lookup_key: p.session_lookup_key,
        product: plan,
        currency: catalog.currency,
        ...sessionPriceParams(p.tiers_mode, p.tiers),
        recurring: { interval: "month", usage_type: "metered" },
      },
    ];
  });
}

/** A plan's product as first created (later catalog edits make new prices, not new products). */
function productParams(catalog: PricingCatalog, plan: PaidPlanId): Stripe.ProductCreateParams {
  const p = plansOf(catalog)[plan];
  const sessions = describeTiers(p.tiersMode, p.tiers);
  const fee = p.monthlyFeeCents > 0 ? `$${(p.monthlyFeeCents / 100).toFixed(0)}/month, ` : "";
  return {
    name: `AI Gate ${p.name}`,
    description: `${fee}${sessions}`,
    metadata: {
      plan,
      ...(p.includedSessions > 0
        ? { included_sessions: String(p.includedSessions), overage_price: String(p.perSessionCents) }
        : { success_only: "true" }),
    },
  };
}

async function ensureMeter(
  stripe: Stripe,
  eventName: string,
  planName: string,
): Promise<Stripe.Billing.Meter> {
  for await (const meter of stripe.billing.meters.list({ status: "active", limit: 100 })) {
    if (meter.event_name === eventName) return meter;
  }
  return stripe.billing.meters.create(
    {
      display_name: `AI Gate ${planName} successful sessions`,
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
  catalog: PricingCatalog,
  plan: PaidPlanId,
  existing: Stripe.Price[],
): Promise<string> {
  const keys = plansOf(catalog)[plan].stripeLookupKeys;
  const fromPrice = existing.find((p) => p.metadata?.plan === plan || keys.includes(p.lookup_key ?? ""));
  if (fromPrice) return typeof fromPrice.product === "string" ? fromPrice.product : fromPrice.product.id;
  for await (const product of stripe.products.list({ active: true, limit: 100 })) {
    if (product.metadata?.plan === plan) return product.id;
  }
  const created = await stripe.products.create(productParams(catalog, plan), {
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
      p.billing_scheme === "tiered" &&
      p.tiers_mode === spec.tiers_mode &&
      tiers.length === spec.tiers?.length &&
      tiers.every((t, i) => {
        const s = spec.tiers?.[i];
        return (
          s !== undefined && (t.up_to ?? "inf") === s.up_to && (t.unit_amount ?? 0) === (s.unit_amount ?? 0)
        );
      })
    );
  }
  return p.billing_scheme !== "tiered" && p.unit_amount === spec.unit_amount;
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

/**
 * Creates the meters, products, prices and portal configuration that are missing; returns their
 * ids. A price whose catalog entry changed gets a new version that takes over its lookup key.
 */
export async function ensureStripeCatalog(
  stripe: Stripe,
  meterPrefix = DEFAULT_METER_PREFIX,
  catalog: PricingCatalog = CATALOG,
): Promise<StripeCatalog> {
  const payg = await ensureMeter(stripe, meterEventName("payg", meterPrefix), catalog.plans.payg.name);
  const pro = await ensureMeter(stripe, meterEventName("pro", meterPrefix), catalog.plans.pro.name);
  const meters = {
    payg: { id: payg.id, eventName: payg.event_name },
    pro: { id: pro.id, eventName: pro.event_name },
  };
  const specs = priceSpecs(catalog);
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
    const product = await ensureProduct(stripe, catalog, spec.product, existing);
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
    prices,
    portalConfigurationId: await ensurePortalConfiguration(stripe),
  };
}
