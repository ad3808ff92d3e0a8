/**
 * `npm run stripe:setup` (scripts/stripe-setup.ts): creates the Billing Meters (one per paid plan),
 * the products, the prices by lookup key and the Customer Portal configuration (idempotent,
 * ensureStripeCatalog) against the emulator or real Stripe, and prints what the workers must be
 * configured with. Logic here, so it is tested.
 */
import { CATALOG, type PricingCatalog } from "@aigate/shared/catalog";
import { createStripe } from "@aigate/shared/stripe";
import { DEFAULT_METER_PREFIX, ensureStripeCatalog, type StripeCatalog } from "@aigate/shared/stripeCatalog";
import { DEV_SECRETS } from "../dev/credentials";

export const EMULATOR_API_BASE = "http://127.0.0.1:12111";
export const EMULATOR_SECRET_KEY = DEV_SECRETS.STRIPE_SECRET_KEY;

export interface StripeTarget {
  /** Empty for real Stripe. */
  apiBase: string;
  secretKey: string;
  /** Meters are named <prefix>_<plan>_sessions. */
  meterPrefix: string;
}

/**
 * Where to set up. STRIPE_API_BASE wins when set (empty = real Stripe); otherwise the local
 * emulator at `emulatorApiBase`, unless STRIPE_SECRET_KEY is a real key (then real Stripe).
 */
export function resolveStripeTarget(
  vars: Record<string, string | undefined>,
  emulatorApiBase = EMULATOR_API_BASE,
): StripeTarget {
  const key = vars.STRIPE_SECRET_KEY?.trim() || undefined;
  const base = vars.STRIPE_API_BASE?.trim();
  const apiBase =
    base !== undefined ? base : key === undefined || key === EMULATOR_SECRET_KEY ? emulatorApiBase : "";
  if (apiBase !== "" && !/^https?:\/\/[^/]+\/?$/.test(apiBase)) {
    throw new Error(`STRIPE_API_BASE must be an origin like ${EMULATOR_API_BASE}, got ${apiBase}`);
  }
  const secretKey = key ?? (apiBase === "" ? undefined : EMULATOR_SECRET_KEY);
  if (secretKey === undefined) throw new Error("STRIPE_SECRET_KEY is required to set up real Stripe");
  if (!/^(sk|rk)_(test|live)_\w+$/.test(secretKey))
    throw new Error("STRIPE_SECRET_KEY does not look like a Stripe key");
  return {
    apiBase: apiBase.replace(/\/$/, ""),
    secretKey,
    meterPrefix: vars.STRIPE_METER_PREFIX?.trim() || DEFAULT_METER_PREFIX,
  };
}

/** The report printed for the operator: ids, and the settings the workers need. */
export function formatSetup(target: StripeTarget, catalog: StripeCatalog): string[] {
  const where =
    target.apiBase === "" ? "Stripe (api.stripe.com)" : `the Stripe emulator at ${target.apiBase}`;
  const mode = target.secretKey.includes("_live_") ? "live mode" : "test mode";
  return [
    `Stripe catalog ready on ${where}, ${mode}:`,
    ...Object.entries(catalog.meters).map(
      ([plan, m]) => `  meter   ${m.id}  event_name=${m.eventName}  aggregation=last  (${plan})`,
    ),
    ...Object.entries(catalog.prices).map(([lookupKey, id]) => `  price   ${id}  lookup_key=${lookupKey}`),
    `  portal  ${catalog.portalConfigurationId}  (cancel at period end; payment methods, invoices)`,
    "",
    "Worker settings (wrangler.jsonc vars, or .dev.vars locally):",
    `  biller, webhooks, api: STRIPE_API_BASE=${target.apiBase}`,
    "Secrets (wrangler secret put): STRIPE_SECRET_KEY for biller, webhooks and api.",
    "Prices are found by lookup key, meters through the prices: no id needs configuring.",
  ];
}

/** Sets up Stripe for `pricing` (the catalog in force, shared/catalog/pricing.json, unless given). */
export async function runStripeSetup(
  vars: Record<string, string | undefined>,
  emulatorApiBase?: string,
  pricing: PricingCatalog = CATALOG,
) {
  const target = resolveStripeTarget(vars, emulatorApiBase);
  const stripe = createStripe({ STRIPE_SECRET_KEY: target.secretKey, STRIPE_API_BASE: target.apiBase });
  const catalog = await ensureStripeCatalog(stripe, target.meterPrefix, pricing);
  return { target, catalog, lines: formatSetup(target, catalog) };
}
