/**
 * The plans as the product uses them, derived from the pricing catalog (catalog.ts,
 * shared/catalog/pricing.json): nothing here holds a number of its own. Money is integer cents.
 */
import { z } from "zod";
import {
  CATALOG,
  type CatalogTier,
  includedSessionsOf,
  maxSessionCentsOf,
  type PricingCatalog,
  type TiersMode,
  tiersPrice,
} from "./catalog";
import { amountFor, type MeteredPrice } from "./pricing";

export const PlanId = z.enum(["free", "payg", "pro"]);
export type PlanId = z.infer<typeof PlanId>;
export const PaidPlanId = z.enum(["payg", "pro"]);
export type PaidPlanId = z.infer<typeof PaidPlanId>;

export interface Plan {
  id: PlanId;
  name: string;
  /** Flat monthly fee in cents. */
  monthlyFeeCents: number;
  /** Successful sessions included in each billing period before per-session pricing applies. */
  includedSessions: number;
  /**
   * Price per successful session beyond the included ones, in cents: the highest tier's when the
   * catalog has several paid tiers (what spend caps count with, so a cap is never overrun).
   */
  perSessionCents: number;
  /** Hard monthly cap on successful sessions (free plan only), null = unlimited. */
  monthlyQuota: number | null;
  /** Concurrent session limit, null = unlimited. */
  concurrentLimit: number | null;
  /** How the per-session tiers price a period (paid plans; "graduated" for free). */
  tiersMode: TiersMode;
  /** The per-session tiers (empty for free). */
  tiers: CatalogTier[];
  /** Stripe price lookup keys making up this plan's subscription: the fee's (if any), then the sessions'. */
  stripeLookupKeys: string[];
}

/** The plans a catalog describes. */
export function plansOf(catalog: PricingCatalog): Record<PlanId, Plan> {
  const free = catalog.plans.free;
  const paid = (id: PaidPlanId): Plan => {
    const p = catalog.plans[id];
    return {
      id,
      name: p.name,
      monthlyFeeCents: p.monthly_fee_cents,
      includedSessions: includedSessionsOf(p.tiers_mode, p.tiers),
      perSessionCents: maxSessionCentsOf(p.tiers),
      monthlyQuota: null,
      concurrentLimit: p.concurrent_limit,
      tiersMode: p.tiers_mode,
      tiers: p.tiers.map((t) => ({ ...t })),
      stripeLookupKeys: [...(p.fee_lookup_key === null ? [] : [p.fee_lookup_key]), p.session_lookup_key],
    };
  };
  return {
    free: {
      id: "free",
      name: free.name,
      monthlyFeeCents: 0,
      includedSessions: free.monthly_quota,
      perSessionCents: 0,
      monthlyQuota: free.monthly_quota,
      concurrentLimit: free.concurrent_limit,
      tiersMode: "graduated",
      tiers: [],
      stripeLookupKeys: [],
    },
    payg: paid("payg"),
    pro: paid("pro"),
  };
}

export const PLANS: Record<PlanId, Plan> = plansOf(CATALOG);

/** The lookup keys of the catalog's prices, by role (`proMonthly` is "" should pro have no fee). */
export const PRICE_LOOKUP_KEYS = {
  paygSession: CATALOG.plans.payg.session_lookup_key,
  proMonthly: CATALOG.plans.pro.fee_lookup_key ?? "",
  proSession: CATALOG.plans.pro.session_lookup_key,
} as const;

/**
 * A paid plan's metered price as the catalog defines it (per unit for one tier, else the catalog's
 * tiers_mode). Stripe's own price object is used whenever a series names one.
 */
export function catalogMeteredPrice(plan: PaidPlanId): MeteredPrice {
  const p = PLANS[plan];
  return tiersPrice(p.tiersMode, p.tiers);
}

/** The quota shown to users: the free cap, pro's included sessions, none for payg. */
export function displayedQuota(plan: PlanId): number | null {
  if (plan === "free") return PLANS.free.monthlyQuota;
  if (plan === "pro") return PLANS.pro.includedSessions;
  return null;
}

/** Estimated charge in cents for `sessions` billable sessions in one period of `plan`. */
export function estimateCostCents(plan: PlanId, sessions: number): number {
  if (!Number.isInteger(sessions) || sessions < 0)
    throw new RangeError("sessions must be a non-negative integer");
  if (plan === "free") return 0;
  return PLANS[plan].monthlyFeeCents + amountFor(catalogMeteredPrice(plan), sessions);
}

/** Cents to a dollar amount for display (exact for integer cents). */
export function centsToDollars(cents: number): number {
  return Math.round(cents) / 100;
}

/** True when usage has reached the warning threshold (85 %) of a quota. */
export function quotaWarning(used: number, quota: number | null): boolean {
  return quota !== null && quota > 0 && used * 100 >= quota * 85;
}
