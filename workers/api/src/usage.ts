/**
 * The body of GET /api/billing/usage, built from the account's state with the one plan catalog.
 * Pure: the route gathers the numbers, this decides what they mean.
 */
import {
  centsToDollars,
  displayedQuota,
  estimateCostCents,
  type Period,
  PLANS,
  type PlanId,
  quotaWarning,
} from "@aigate/shared";

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
}

export function usageBody(u: UsageInput): UsageBody {
  const quota = displayedQuota(u.plan);
  const cents = estimateCostCents(u.plan, u.billableSessions);
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
  };
}
