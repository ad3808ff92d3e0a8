/**
 * Attribution of a verdict to a plan and a billing period. Pure functions over rows loaded once
 * per consumed batch (see queries.ts `loadAccounts`); they mirror `planInForce` and
 * `paidPeriodFor` of @aigate/shared/accounts (a test checks they agree).
 */
import {
  calendarMonth,
  monthlyPeriodContaining,
  type PaidPlanId,
  type Period,
  type PlanId,
} from "@aigate/shared";

export interface PlanHistoryRow {
  user_id: string;
  effective_from: number;
  plan: PlanId;
  stripe_subscription_id: string | null;
}

export interface BillingPeriodRow {
  stripe_subscription_id: string;
  period_start: number;
  period_end: number;
}

/** Everything attribution needs about the users of one batch. */
export interface AccountSnapshot {
  /** Plan history per user, ascending by effective_from. */
  history: Map<string, PlanHistoryRow[]>;
  /** Stripe customer id per user. */
  customers: Map<string, string>;
  /** Reported billing periods per subscription, ascending by period_start. */
  periods: Map<string, BillingPeriodRow[]>;
  /** Closed usage periods, as periodKey(user, plan, period_start). */
  closed: Set<string>;
}

export function periodKey(userId: string, plan: PlanId, periodStart: number): string {
  return `${userId}|${plan}|${periodStart}`;
}

/** The plan in force at `t`: the latest history row with effective_from <= t, else free. */
export function planAt(
  history: readonly PlanHistoryRow[],
  t: number,
): { plan: PlanId; subscriptionId: string | null } {
  let found: PlanHistoryRow | undefined;
  for (const row of history) {
    if (row.effective_from <= t && (found === undefined || row.effective_from >= found.effective_from))
      found = row;
  }
  return found
    ? { plan: found.plan, subscriptionId: found.stripe_subscription_id }
    : { plan: "free", subscriptionId: null };
}

/**
 * The subscription period containing `t`: the reported one when `t` falls inside it, otherwise
 * extended monthly from the first reported period. Null when `t` precedes every reported period.
 */
export function paidPeriodAt(periods: readonly BillingPeriodRow[], t: number): Period | null {
  let latest: BillingPeriodRow | undefined;
  let anchor = Number.POSITIVE_INFINITY;
  for (const p of periods) {
    anchor = Math.min(anchor, p.period_start);
    if (p.period_start <= t && (latest === undefined || p.period_start > latest.period_start)) latest = p;
  }
  if (!latest) return null;
  if (t < latest.period_end) return { start: latest.period_start, end: latest.period_end };
  return monthlyPeriodContaining(anchor, t);
}

/**
 * Until when a paid period takes late sessions: the first half of Stripe's invoice grace window
 * (Stripe finalizes the period's invoice `graceMs` after its end). The second half is left for
 * the sweep to post the final total before the invoice is finalized.
 */
export function acceptsUsageUntil(periodEnd: number, graceMs: number): number {
  return periodEnd + Math.floor(graceMs / 2);
}

export interface Attributed {
  plan: PlanId;
  period: Period;
  /** Start of the period the session belonged to, when it was moved to a later one. */
  adjustedFrom: number | null;
  /** Set for paid plans only (free usage never goes to Stripe). */
  stripeCustomerId: string | null;
  subscriptionId: string | null;
}

export type Attribution = { ok: true; usage: Attributed } | { ok: false; reason: string };

const MAX_PERIODS_FORWARD = 240;

/**
 * Plan in force at the session's creation; the calendar month on free, the subscription period
 * on paid plans. A paid period that is closed, or past the point where Stripe still takes usage
 * for its invoice, hands the session to the next open period (an adjustment).
 */
export function attribute(
  verdict: { user_id: string; created_at: number },
  snapshot: AccountSnapshot,
  now: number,
  graceMs: number,
): Attribution {
  const t = verdict.created_at;
  const { plan, subscriptionId } = planAt(snapshot.history.get(verdict.user_id) ?? [], t);
  if (plan === "free") {
    return {
      ok: true,
      usage: {
        plan,
        period: calendarMonth(t),
        adjustedFrom: null,
        stripeCustomerId: null,
        subscriptionId: null,
      },
    };
  }
  if (subscriptionId === null)
    return { ok: false, reason: `plan ${plan} in force at ${t} has no subscription id` };
  const customer = snapshot.customers.get(verdict.user_id);
  if (customer === undefined) return { ok: false, reason: `user on plan ${plan} has no Stripe customer yet` };
  const periods = snapshot.periods.get(subscriptionId) ?? [];
  const first = paidPeriodAt(periods, t);
  if (!first) return { ok: false, reason: `no billing period known for ${subscriptionId} at ${t}` };
  const target = openPaidPeriod(first, periods, (p) => {
    return (
      snapshot.closed.has(periodKey(verdict.user_id, plan, p.start)) ||
      now >= acceptsUsageUntil(p.end, graceMs)
    );
  });
  if (!target)
    return { ok: false, reason: `no open billing period found for ${subscriptionId} after ${first.start}` };
  return {
    ok: true,
    usage: {
      plan,
      period: target,
      adjustedFrom: target.start === first.start ? null : first.start,
      stripeCustomerId: customer,
      subscriptionId,
    },
  };
}

/** `first`, or the first later period of the subscription that is not closed. */
function openPaidPeriod(
  first: Period,
  periods: readonly BillingPeriodRow[],
  isClosed: (p: Period) => boolean,
): Period | null {
  let p = first;
  for (let i = 0; i < MAX_PERIODS_FORWARD; i++) {
    if (!isClosed(p)) return p;
    const next = paidPeriodAt(periods, p.end);
    if (!next || next.start <= p.start) return null;
    p = next;
  }
  return null;
}

export function isPaid(plan: PlanId): plan is PaidPlanId {
  return plan !== "free";
}
