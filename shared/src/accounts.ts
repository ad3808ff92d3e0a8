/**
 * Reading a user's plan, written by the webhooks worker and read by ingest (admission), the
 * biller (attribution) and the api (usage). Tables: stripe_customers, subscriptions,
 * plan_history, billing_periods (see migrations/).
 */
import { calendarMonth, monthlyPeriodContaining, type Period } from "./periods";
import type { PlanId } from "./plans";

const DAY_MS = 24 * 60 * 60 * 1000;

export interface PlanAt {
  plan: PlanId;
  subscriptionId: string | null;
}

/** The plan in force at time `t` (plan_history), free when the user never subscribed. */
export async function planInForce(db: D1Database, userId: string, t: number): Promise<PlanAt> {
  const row = await db
    .prepare(
      `SELECT plan, stripe_subscription_id FROM plan_history
       WHERE user_id = ?1 AND effective_from <= ?2 ORDER BY effective_from DESC LIMIT 1`,
    )
    .bind(userId, t)
    .first<{ plan: PlanId; stripe_subscription_id: string | null }>();
  return row
    ? { plan: row.plan, subscriptionId: row.stripe_subscription_id }
    : { plan: "free", subscriptionId: null };
}

export interface AccountStatus {
  userId: string;
  /** The plan the user subscribes to. */
  plan: PlanId;
  /** The plan whose limits apply now: free once a payment has been failing beyond the grace period. */
  limitsPlan: PlanId;
  status: string | null;
  pastDueSince: number | null;
  stripeCustomerId: string | null;
  subscriptionId: string | null;
  currentPeriod: Period;
}

/** What limits apply to a user now, and the period their usage is counted in. */
export async function accountStatus(
  db: D1Database,
  userId: string,
  now: number,
  graceDays: number,
): Promise<AccountStatus> {
  const row = await db
    .prepare(
      `SELECT c.stripe_customer_id, c.plan, s.stripe_subscription_id, s.status, s.past_due_since,
              s.current_period_start, s.current_period_end
       FROM stripe_customers c
       LEFT JOIN subscriptions s ON s.user_id = c.user_id AND s.plan = c.plan AND s.ended_at IS NULL
       WHERE c.user_id = ?1
       ORDER BY s.started_at DESC LIMIT 1`,
    )
    .bind(userId)
    .first<{
      stripe_customer_id: string;
      plan: PlanId;
      stripe_subscription_id: string | null;
      status: string | null;
      past_due_since: number | null;
      current_period_start: number | null;
      current_period_end: number | null;
    }>();
  const month = calendarMonth(now);
  if (!row || row.plan === "free" || row.stripe_subscription_id === null) {
    return {
      userId,
      plan: "free",
      limitsPlan: "free",
      status: row?.status ?? null,
      pastDueSince: null,
      stripeCustomerId: row?.stripe_customer_id ?? null,
      subscriptionId: null,
      currentPeriod: month,
    };
  }
  const overdue = row.past_due_since !== null && now - row.past_due_since > graceDays * DAY_MS;
  const period =
    row.current_period_start !== null && row.current_period_end !== null
      ? ((await paidPeriodFor(db, row.stripe_subscription_id, now)) ?? {
          start: row.current_period_start,
          end: row.current_period_end,
        })
      : month;
  return {
    userId,
    plan: row.plan,
    limitsPlan: overdue ? "free" : row.plan,
    status: row.status,
    pastDueSince: row.past_due_since,
    stripeCustomerId: row.stripe_customer_id,
    subscriptionId: row.stripe_subscription_id,
    currentPeriod: period,
  };
}

/**
 * The billing period of a subscription containing `t`: as Stripe reported it when known,
 * otherwise extended monthly from the first reported period (Stripe's own cycle rule).
 * Null when the subscription has no reported period at all, or `t` precedes it.
 */
export async function paidPeriodFor(
  db: D1Database,
  subscriptionId: string,
  t: number,
): Promise<Period | null> {
  const row = await db
    .prepare(
      `SELECT p.period_start, p.period_end,
              (SELECT min(period_start) FROM billing_periods WHERE stripe_subscription_id = ?1) AS anchor
       FROM billing_periods p WHERE p.stripe_subscription_id = ?1 AND p.period_start <= ?2
       ORDER BY p.period_start DESC LIMIT 1`,
    )
    .bind(subscriptionId, t)
    .first<{ period_start: number; period_end: number; anchor: number }>();
  if (!row) return null;
  if (t < row.period_end) return { start: row.period_start, end: row.period_end };
  return monthlyPeriodContaining(row.anchor, t);
}
