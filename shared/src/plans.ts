/**
 * The one plan catalog. Every price, quota and limit in the product comes from here.
 * Money is integer cents.
 */
import { z } from "zod";
import type { MeteredPrice } from "./pricing";

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
  /** Price per successful session beyond the included ones, in cents. */
  perSessionCents: number;
  /** Hard monthly cap on successful sessions (free plan only), null = unlimited. */
  monthlyQuota: number | null;
  /** Concurrent session limit, null = unlimited. */
  concurrentLimit: number | null;
  /** Stripe price lookup keys making up this plan's subscription. */
  stripeLookupKeys: string[];
}

export const PRICE_LOOKUP_KEYS = {
  paygSession: "aigate_payg_session",
  proMonthly: "aigate_pro_monthly",
  proSession: "aigate_pro_session",
} as const;

export const PLANS: Record<PlanId, Plan> = {
  free: {
    id: "free",
    name: "Free",
    monthlyFeeCents: 0,
    includedSessions: 100,
    perSessionCents: 0,
    monthlyQuota: 100,
    concurrentLimit: 5,
    stripeLookupKeys: [],
  },
  payg: {
    id: "payg",
    name: "Pay-as-you-go",
    monthlyFeeCents: 0,
    includedSessions: 0,
    perSessionCents: 10,
    monthlyQuota: null,
    concurrentLimit: null,
    stripeLookupKeys: [PRICE_LOOKUP_KEYS.paygSession],
  },
  pro: {
    id: "pro",
    name: "Pro",
    monthlyFeeCents: 2900,
    includedSessions: 400,
    perSessionCents: 7,
    monthlyQuota: null,
    concurrentLimit: null,
    stripeLookupKeys: [PRICE_LOOKUP_KEYS.proMonthly, PRICE_LOOKUP_KEYS.proSession],
  },
};

/**
 * A paid plan's metered price as the catalog defines it (graduated tiers for pro's included
 * sessions). Stripe's own price object is used whenever a series names one.
 */
export function catalogMeteredPrice(plan: PaidPlanId): MeteredPrice {
  const p = PLANS[plan];
  if (p.includedSessions === 0) return { kind: "per_unit", unit_amount: p.perSessionCents, currency: "usd" };
  return {
    kind: "graduated",
    currency: "usd",
    tiers: [
      { up_to: p.includedSessions, unit_amount: 0, flat_amount: 0 },
      { up_to: null, unit_amount: p.perSessionCents, flat_amount: 0 },
    ],
  };
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
  const p = PLANS[plan];
  if (plan === "free") return 0;
  return p.monthlyFeeCents + p.perSessionCents * Math.max(0, sessions - p.includedSessions);
}

/** Cents to a dollar amount for display (exact for integer cents). */
export function centsToDollars(cents: number): number {
  return Math.round(cents) / 100;
}

/** True when usage has reached the warning threshold (85 %) of a quota. */
export function quotaWarning(used: number, quota: number | null): boolean {
  return quota !== null && quota > 0 && used * 100 >= quota * 85;
}
