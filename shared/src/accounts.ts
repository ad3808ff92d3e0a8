/**
 * Reading a user's plan, written by the webhooks worker (and the api's own plan changes) and read
 * by the classifier (attribution), the biller (re-attribution), ingest (admission) and the api
 * (usage). Tables: stripe_customers, subscriptions, plan_history, billing_periods (see
 * migrations/). The decisions themselves are the pure rule of attribution.ts.
 */
import {
  type AccountHistory,
  attribute,
  type BillingPeriodEntry,
  type PlanHistoryEntry,
  planAt,
  type Series,
  type SubscriptionEntry,
} from "./attribution";
import { calendarMonth, type Period } from "./periods";
import type { PaidPlanId, PlanId } from "./plans";

const DAY_MS = 24 * 60 * 60 * 1000;

function rowsOf<Row>(result: D1Result<Record<string, unknown>> | undefined): Row[] {
  return (result?.results ?? []) as unknown as Row[];
}

interface HistoryRow extends PlanHistoryEntry {
  user_id: string;
}
interface PeriodRow extends BillingPeriodEntry {
  stripe_subscription_id: string;
}
interface SubscriptionRow extends SubscriptionEntry {
  user_id: string;
}

/** The statements that load the accounts of some users (one round trip with the caller's batch). */
export function accountStatements(db: D1Database, userIds: readonly string[]): D1PreparedStatement[] {
  const users = JSON.stringify(userIds);
  return [
    db
      .prepare(
        `SELECT user_id, effective_from, plan, stripe_subscription_id, stripe_price_id, meter_event_name
         FROM plan_history WHERE user_id IN (SELECT value FROM json_each(?1)) ORDER BY user_id, effective_from`,
      )
      .bind(users),
    db
      .prepare(
        `SELECT stripe_subscription_id, period_start, period_end FROM billing_periods
         WHERE stripe_subscription_id IN (
           SELECT stripe_subscription_id FROM subscriptions WHERE user_id IN (SELECT value FROM json_each(?1)))
         ORDER BY stripe_subscription_id, period_start`,
      )
      .bind(users),
    db
      .prepare(
        `SELECT user_id, stripe_subscription_id, stripe_customer_id, ended_at,
           CASE WHEN ended_at IS NULL THEN cancel_at END AS cancel_at
         FROM subscriptions WHERE user_id IN (SELECT value FROM json_each(?1))`,
      )
      .bind(users),
    db
      .prepare(
        "SELECT user_id, epoch FROM attribution_epochs WHERE user_id IN (SELECT value FROM json_each(?1))",
      )
      .bind(users),
  ];
}

/** The accounts of `userIds` from the results of accountStatements (in order). */
export function accountsFrom(
  userIds: readonly string[],
  results: readonly (D1Result<Record<string, unknown>> | undefined)[],
): Map<string, AccountHistory> {
  const accounts = new Map<string, AccountHistory>();
  for (const id of userIds)
    accounts.set(id, { history: [], periods: new Map(), subscriptions: new Map(), epoch: 0 });
  const periods = new Map<string, BillingPeriodEntry[]>();
  for (const row of rowsOf<PeriodRow>(results[1])) {
    const list = periods.get(row.stripe_subscription_id) ?? [];
    list.push({ period_start: row.period_start, period_end: row.period_end });
    periods.set(row.stripe_subscription_id, list);
  }
  for (const row of rowsOf<HistoryRow>(results[0])) {
    const { user_id, ...entry } = row;
    accounts.get(user_id)?.history.push(entry);
  }
  for (const row of rowsOf<SubscriptionRow>(results[2])) {
    const account = accounts.get(row.user_id);
    if (!account) continue;
    const { user_id: _user, ...sub } = row;
    account.subscriptions.set(sub.stripe_subscription_id, sub);
    account.periods.set(sub.stripe_subscription_id, periods.get(sub.stripe_subscription_id) ?? []);
  }
  for (const row of rowsOf<{ user_id: string; epoch: number }>(results[3])) {
    const account = accounts.get(row.user_id);
    if (account) account.epoch = row.epoch;
  }
  return accounts;
}

export async function loadAccounts(
  db: D1Database,
  userIds: readonly string[],
): Promise<Map<string, AccountHistory>> {
  if (userIds.length === 0) return new Map();
  return accountsFrom(userIds, await db.batch(accountStatements(db, userIds)));
}

export interface PlanAt {
  plan: PlanId;
  subscriptionId: string | null;
}

/** The plan in force at time `t` (plan_history), free when the user never subscribed. */
export async function planInForce(db: D1Database, userId: string, t: number): Promise<PlanAt> {
  const account = (await loadAccounts(db, [userId])).get(userId);
  const history = account?.history ?? [];
  const plan = planAt(history, t);
  const entry = [...history].reverse().find((r) => r.effective_from <= t && r.plan === plan);
  return { plan, subscriptionId: plan === "free" ? null : (entry?.stripe_subscription_id ?? null) };
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
  /** The window usage is counted in now: the current series (calendar month on free). */
  currentPeriod: Period;
  /** The series now (null on free). */
  series: Series | null;
  /** What Stripe has scheduled: the plan taking over at the period end, and when. */
  pendingPlan: PlanId | null;
  pendingEffectiveAt: number | null;
  billingMode: string | null;
}

interface StatusRow {
  stripe_customer_id: string;
  plan: PlanId;
  stripe_subscription_id: string | null;
  status: string | null;
  past_due_since: number | null;
  pending_plan: PlanId | null;
  pending_effective_at: number | null;
  billing_mode: string | null;
  current_period_start: number | null;
  current_period_end: number | null;
}

/** What limits apply to a user now, and the window their usage is counted in. */
export async function accountStatus(
  db: D1Database,
  userId: string,
  now: number,
  graceDays: number,
): Promise<AccountStatus> {
  const results = await db.batch<Record<string, unknown>>([
    db
      .prepare(
        `SELECT c.stripe_customer_id, c.plan, s.stripe_subscription_id, s.status, s.past_due_since,
                s.pending_plan, s.pending_effective_at, s.billing_mode, s.current_period_start, s.current_period_end
         FROM stripe_customers c
         LEFT JOIN subscriptions s ON s.user_id = c.user_id AND s.plan = c.plan AND s.ended_at IS NULL
         WHERE c.user_id = ?1
         ORDER BY s.started_at DESC LIMIT 1`,
      )
      .bind(userId),
    ...accountStatements(db, [userId]),
  ]);
  const row = rowsOf<StatusRow>(results[0])[0];
  const account = accountsFrom([userId], results.slice(1)).get(userId);
  const month = calendarMonth(now);
  if (!row || row.plan === "free" || row.stripe_subscription_id === null || !account) {
    return {
      userId,
      plan: "free",
      limitsPlan: "free",
      status: row?.status ?? null,
      pastDueSince: null,
      stripeCustomerId: row?.stripe_customer_id ?? null,
      subscriptionId: null,
      currentPeriod: month,
      series: null,
      pendingPlan: null,
      pendingEffectiveAt: null,
      billingMode: null,
    };
  }
  const overdue = row.past_due_since !== null && now - row.past_due_since > graceDays * DAY_MS;
  const attributed = attribute(account, now);
  const series = attributed.ok && attributed.series.plan !== "free" ? attributed.series : null;
  return {
    userId,
    plan: row.plan,
    limitsPlan: overdue ? "free" : row.plan,
    status: row.status,
    pastDueSince: row.past_due_since,
    stripeCustomerId: row.stripe_customer_id,
    subscriptionId: row.stripe_subscription_id,
    // before the webhooks recorded its history, the subscription's own current period
    currentPeriod: series
      ? { start: series.start, end: series.end }
      : row.current_period_start !== null && row.current_period_end !== null
        ? { start: row.current_period_start, end: row.current_period_end }
        : month,
    series,
    pendingPlan: row.pending_plan,
    pendingEffectiveAt: row.pending_effective_at,
    billingMode: row.billing_mode,
  };
}

export function isPaidPlan(plan: PlanId): plan is PaidPlanId {
  return plan !== "free";
}
