/**
 * The body of GET /api/billing/usage, built from the account's state: the period's sessions priced
 * with the subscriber's own metered price (the Stripe price their series bills: an older price
 * version or a custom price), the catalog's when none is known yet. Pure: the route gathers the
 * numbers and the price, this decides what they mean.
 */
import {
  amountFor,
  catalogMeteredPrice,
  centsToDollars,
  displayedQuota,
  includedUnits,
  isPaidPlan,
  type MeteredPrice,
  type Period,
  PLANS,
  type PlanId,
  quotaWarning,
} from "@aigate/shared";

/** The per-session price a subscriber pays, as the usage body shows it. */
export interface SessionPriceBody {
  /** `per_unit`: one price for every session; otherwise how the tiers price a period (Stripe's tiers_mode). */
  tiers_mode: "per_unit" | "graduated" | "volume";
  tiers: { up_to: number | null; unit_amount_cents: number }[];
  /** True when it is the catalog's current price; false for an older price version or a custom price. */
  catalog: boolean;
}

export interface UsageInput {
  /** The plan the user subscribes to. */
  plan: PlanId;
  /** The plan whose limits apply now (free once a failed payment is past its grace period). */
  limitsPlan: PlanId;
  period: Period;
  billableSessions: number;
  failedSessions: number;
  activeSessions: number;
  /** What Stripe has scheduled: the plan taking over at the period end, and when. */
  pendingPlan: PlanId | null;
  pendingEffectiveAt: number | null;
  /** The metered price the current series bills (read from Stripe); null = the catalog's. */
  seriesPrice?: MeteredPrice | null;
}

export interface UsageBody {
  plan: PlanId;
  period_start: string;
  period_end: string;
  sessions_this_month: number;
  failed_sessions: number;
  quota: number | null;
  estimated_cost: number;
  estimated_cost_cents: number;
  /** Always false: the estimate is before tax (Stripe computes tax from the customer's address). */
  estimated_cost_includes_tax: false;
  currency: "usd";
  warning: boolean;
  active_sessions: number;
  concurrent_limit: number | null;
  pending_plan: PlanId | null;
  pending_effective_at: string | null;
  /** The per-session price of a paid plan (null on free). */
  session_price: SessionPriceBody | null;
}

function samePrice(a: MeteredPrice, b: MeteredPrice): boolean {
  if (a.currency.toLowerCase() !== b.currency.toLowerCase()) return false;
  if (a.kind === "per_unit") return b.kind === "per_unit" && a.unit_amount === b.unit_amount;
  if (b.kind === "per_unit") return false;
  return (
    a.kind === b.kind &&
    a.tiers.length === b.tiers.length &&
    a.tiers.every((t, i) => {
      const u = b.tiers[i];
      return (
        u !== undefined &&
        t.up_to === u.up_to &&
        t.unit_amount === u.unit_amount &&
        t.flat_amount === u.flat_amount
      );
    })
  );
}

function sessionPriceBody(price: MeteredPrice, catalog: MeteredPrice): SessionPriceBody {
  return {
    tiers_mode: price.kind === "per_unit" ? "per_unit" : price.kind,
    tiers:
      price.kind === "per_unit"
        ? [{ up_to: null, unit_amount_cents: price.unit_amount }]
        : price.tiers.map((t) => ({ up_to: t.up_to, unit_amount_cents: t.unit_amount })),
    catalog: samePrice(price, catalog),
  };
}

export function usageBody(u: UsageInput): UsageBody {
  const paid = isPaidPlan(u.plan) ? u.plan : null;
  const catalog = paid ? catalogMeteredPrice(paid) : null;
  const price = paid ? (u.seriesPrice ?? catalog) : null;
  const included = price ? includedUnits(price) : 0;
  const quota = paid ? (included > 0 ? included : null) : displayedQuota(u.plan);
  const cents = paid && price ? PLANS[paid].monthlyFeeCents + amountFor(price, u.billableSessions) : 0;
  return {
    plan: u.plan,
    period_start: new Date(u.period.start).toISOString(),
    period_end: new Date(u.period.end).toISOString(),
    sessions_this_month: u.billableSessions,
    failed_sessions: u.failedSessions,
    quota,
    estimated_cost: centsToDollars(cents),
    estimated_cost_cents: cents,
    estimated_cost_includes_tax: false,
    currency: "usd",
    warning: quotaWarning(u.billableSessions, quota),
    active_sessions: u.activeSessions,
    concurrent_limit: PLANS[u.limitsPlan].concurrentLimit,
    pending_plan: u.pendingPlan,
    pending_effective_at: u.pendingEffectiveAt === null ? null : new Date(u.pendingEffectiveAt).toISOString(),
    session_price: price && catalog ? sessionPriceBody(price, catalog) : null,
  };
}
