/**
 * The pricing catalog as data: `shared/catalog/pricing.json`, validated with `PricingCatalog` when
 * this module loads (a bad edit fails every worker's start and every test, not a bill). Plans,
 * fees, included sessions, per-session tiers, quotas and the Stripe lookup keys all come from it:
 * `PLANS` (plans.ts), the Stripe setup (stripeCatalog.ts), the usage estimate and the dashboard
 * derive from the one parsed catalog. docs/billing.md "The pricing catalog" explains each field.
 */
import { z } from "zod";
import raw from "../catalog/pricing.json";
import type { MeteredPrice } from "./pricing";

/** A Stripe lookup key: lower-case letters, digits and underscores. */
const LookupKey = z.string().regex(/^[a-z0-9_]{3,100}$/, "lookup keys are 3-100 of a-z, 0-9 and _");

/** The largest price accepted for one session, $100 (a guard against a misplaced decimal point). */
export const MAX_SESSION_CENTS = 10_000;

/** One tier: sessions up to `up_to` (inclusive, null = no bound) cost `unit_amount_cents` each. */
export const CatalogTier = z
  .object({
    up_to: z.int().min(1).max(1_000_000_000).nullable(),
    unit_amount_cents: z.int().min(0).max(MAX_SESSION_CENTS),
  })
  .strict();
export type CatalogTier = z.infer<typeof CatalogTier>;

/**
 * Tiers as Stripe accepts them: at least one, `up_to` strictly ascending, only the last one
 * unbounded (Stripe: "the last tier's `up_to` must be `inf`").
 */
export const CatalogTiers = z
  .array(CatalogTier)
  .min(1)
  .max(10)
  .superRefine((tiers, ctx) => {
    tiers.forEach((t, i) => {
      const last = i === tiers.length - 1;
      if (last && t.up_to !== null)
        ctx.addIssue({ code: "custom", path: [i, "up_to"], message: "the last tier must have up_to null" });
      if (!last && t.up_to === null)
        ctx.addIssue({
          code: "custom",
          path: [i, "up_to"],
          message: "only the last tier may have up_to null",
        });
      const before = tiers[i - 1]?.up_to;
      if (i > 0 && t.up_to !== null && before != null && t.up_to <= before)
        ctx.addIssue({
          code: "custom",
          path: [i, "up_to"],
          message: "tiers' up_to must be strictly ascending",
        });
    });
  });

/**
 * How the tiers price a period's sessions (Stripe's `tiers_mode`): `graduated` prices each session
 * at its own tier (the first 1,000 at one price, the next ones at another); `volume` prices every
 * session of the period at the tier the period's total falls in.
 */
export const TiersMode = z.enum(["graduated", "volume"]);
export type TiersMode = z.infer<typeof TiersMode>;

export const CatalogPaidPlan = z
  .object({
    name: z.string().min(1).max(60),
    /** Flat fee billed in advance each period (0 = none). */
    monthly_fee_cents: z.int().min(0).max(10_000_000),
    /** Lookup key of the fee's licensed price; null exactly when there is no fee. */
    fee_lookup_key: LookupKey.nullable(),
    /** Lookup key of the metered per-session price. */
    session_lookup_key: LookupKey,
    tiers_mode: TiersMode,
    tiers: CatalogTiers,
    concurrent_limit: z.int().min(1).nullable(),
  })
  .strict()
  .refine((p) => p.monthly_fee_cents > 0 === (p.fee_lookup_key !== null), {
    message: "fee_lookup_key is set exactly when monthly_fee_cents > 0",
    path: ["fee_lookup_key"],
  });
export type CatalogPaidPlan = z.infer<typeof CatalogPaidPlan>;

export const CatalogFreePlan = z
  .object({
    name: z.string().min(1).max(60),
    /** Successful sessions per calendar month; also the sessions the dashboard shows as included. */
    monthly_quota: z.int().min(0),
    concurrent_limit: z.int().min(1).nullable(),
  })
  .strict();
export type CatalogFreePlan = z.infer<typeof CatalogFreePlan>;

export const PricingCatalog = z
  .object({
    currency: z.literal("usd"),
    plans: z.object({ free: CatalogFreePlan, payg: CatalogPaidPlan, pro: CatalogPaidPlan }).strict(),
  })
  .strict()
  .refine(
    (c) => {
      const keys = [c.plans.payg, c.plans.pro].flatMap((p) =>
        [p.session_lookup_key, p.fee_lookup_key ?? []].flat(),
      );
      return new Set(keys).size === keys.length;
    },
    { message: "lookup keys must be unique across the catalog", path: ["plans"] },
  );
export type PricingCatalog = z.infer<typeof PricingCatalog>;

/** Parses a catalog, throwing one readable error naming each problem's path. */
export function parseCatalog(input: unknown): PricingCatalog {
  const parsed = PricingCatalog.safeParse(input);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`);
  throw new Error(`invalid pricing catalog: ${problems.join("; ")}`);
}

/** The catalog in force: shared/catalog/pricing.json. */
export const CATALOG: PricingCatalog = parseCatalog(raw);

/**
 * The metered price that tiers describe, in the pricing maths' terms: one unbounded tier is a
 * per-unit price (Stripe `billing_scheme: per_unit`), several are tiered (`billing_scheme: tiered`).
 */
export function tiersPrice(mode: TiersMode, tiers: readonly CatalogTier[], currency = "usd"): MeteredPrice {
  const [only] = tiers;
  if (tiers.length === 1 && only) return { kind: "per_unit", unit_amount: only.unit_amount_cents, currency };
  return {
    kind: mode,
    currency,
    tiers: tiers.map((t) => ({ up_to: t.up_to, unit_amount: t.unit_amount_cents, flat_amount: 0 })),
  };
}

/**
 * Sessions a period includes at no charge: the first tier's bound when it is free and graduated
 * (a free first tier of a volume price is not "included": past it, every session is charged).
 */
export function includedSessionsOf(mode: TiersMode, tiers: readonly CatalogTier[]): number {
  const [first] = tiers;
  return mode === "graduated" && first && first.unit_amount_cents === 0 && first.up_to !== null
    ? first.up_to
    : 0;
}

/** The highest price of one session under these tiers. */
export function maxSessionCentsOf(tiers: readonly CatalogTier[]): number {
  return Math.max(0, ...tiers.map((t) => t.unit_amount_cents));
}

function dollars(cents: number): string {
  return `$${(cents / 100).toFixed(2)}`;
}

/**
 * A sentence for the per-session price: "$0.10 per successful session", "400 successful sessions
 * included, then $0.07 each", "$0.10 per successful session up to 1,000, then $0.08 each".
 */
export function describeTiers(mode: TiersMode, tiers: readonly CatalogTier[]): string {
  const included = includedSessionsOf(mode, tiers);
  const paid = included > 0 ? tiers.slice(1) : tiers;
  const parts = paid.map((t, i) => {
    const bound = t.up_to === null ? "" : ` up to ${t.up_to.toLocaleString("en-US")}`;
    if (i === 0 && included === 0) return `${dollars(t.unit_amount_cents)} per successful session${bound}`;
    return `${dollars(t.unit_amount_cents)} each${bound}`;
  });
  const head = included > 0 ? [`${included.toLocaleString("en-US")} successful sessions included`] : [];
  const text = [...head, ...parts].join(", then ");
  return mode === "volume" && tiers.length > 1
    ? `${text} (every session of a period at its total's tier)`
    : text;
}
