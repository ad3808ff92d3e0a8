/**
 * The one rule for "which plan, and which usage series, at time t". Pure functions over the rows
 * the webhooks worker (and the api's own plan changes) keep in D1: plan_history (with the metered
 * price and meter of each paid interval) and billing_periods (Stripe's item periods). The
 * classifier attributes each judged session with it, the biller re-attributes with it when the
 * history changes, and the account status (admission, usage API) reads the current series with it.
 *
 * A series is (user, plan, window): the usage one `last` meter series bills. Free usage is counted
 * per calendar month (UTC) and never sent to Stripe. A paid window is the intersection of Stripe's
 * billing period containing t with the interval during which the plan-history row in force at t
 * applies, so two plans, or two prices of one plan, never share a window.
 */
import { addMonths, calendarMonth, type Period } from "./periods";
import type { PlanId } from "./plans";

/** A plan-history row: the plan (and, when paid, its metered price and meter) from `effective_from` on. */
export interface PlanHistoryEntry {
  effective_from: number;
  plan: PlanId;
  stripe_subscription_id: string | null;
  stripe_price_id: string | null;
  meter_event_name: string | null;
}

/** A billing period Stripe reported on a subscription's items ([start, end), ms). */
export interface BillingPeriodEntry {
  period_start: number;
  period_end: number;
}

export interface SubscriptionEntry {
  stripe_subscription_id: string;
  stripe_customer_id: string;
  /** When it ended (Stripe's ended_at), null while live. */
  ended_at: number | null;
  /** When Stripe will end it (cancel_at / period end with cancel_at_period_end), null if not scheduled. */
  cancel_at: number | null;
}

/** What attribution knows about one user. */
export interface AccountHistory {
  /** Ascending by effective_from. */
  history: PlanHistoryEntry[];
  /** Reported periods per subscription, ascending by period_start. */
  periods: Map<string, BillingPeriodEntry[]>;
  subscriptions: Map<string, SubscriptionEntry>;
  /** The user's attribution epoch when this was read (attribution_epochs; 0 before any change). */
  epoch?: number;
}

export interface Series {
  plan: PlanId;
  /** The series' window [start, end); `start` is its key (with user and plan). */
  start: number;
  end: number;
  /** Paid series only. */
  stripeCustomerId: string | null;
  subscriptionId: string | null;
  priceId: string | null;
  meterEventName: string | null;
  /** True when the window's end was extended by Stripe's monthly cycle, not reported by Stripe yet. */
  guessed: boolean;
}

export type Attribution = { ok: true; series: Series } | { ok: false; reason: string };

export function seriesKey(userId: string, plan: string, start: number): string {
  return `${userId}|${plan}|${start}`;
}

/** The history row in force at t (the latest with effective_from <= t; paid wins a tie), or null. */
export function entryAt(
  history: readonly PlanHistoryEntry[],
  t: number,
): { entry: PlanHistoryEntry; until: number } | null {
  let found: PlanHistoryEntry | null = null;
  let until = Number.POSITIVE_INFINITY;
  for (const row of history) {
    if (row.effective_from <= t) {
      if (
        found === null ||
        row.effective_from > found.effective_from ||
        (row.effective_from === found.effective_from && found.plan === "free" && row.plan !== "free")
      ) {
        found = row;
      }
    } else if (row.effective_from < until) {
      until = row.effective_from;
    }
  }
  return found === null ? null : { entry: found, until };
}

/** The plan in force at t: free when the user never subscribed. */
export function planAt(history: readonly PlanHistoryEntry[], t: number): PlanId {
  return entryAt(history, t)?.entry.plan ?? "free";
}

/**
 * The billing period of a subscription containing t: the reported one when t falls inside it,
 * otherwise Stripe's monthly cycle continued from the latest reported period (its renewal webhook
 * is late), never past the subscription's end. Null when t precedes every reported period or
 * falls after the end.
 */
export function periodAt(
  periods: readonly BillingPeriodEntry[],
  sub: Pick<SubscriptionEntry, "ended_at" | "cancel_at"> | undefined,
  t: number,
): { period: Period; guessed: boolean } | null {
  let latest: BillingPeriodEntry | undefined;
  for (const p of periods) {
    if (p.period_start <= t && (latest === undefined || p.period_start > latest.period_start)) latest = p;
  }
  if (!latest) return null;
  if (t < latest.period_end)
    return { period: { start: latest.period_start, end: latest.period_end }, guessed: false };
  const stop = Math.min(
    sub?.ended_at ?? Number.POSITIVE_INFINITY,
    sub?.cancel_at ?? Number.POSITIVE_INFINITY,
  );
  if (t >= stop) return null;
  // Continue the cycle anchored at the latest period's start (an anchor reset moved it there).
  let n = 1;
  let start = latest.period_end;
  let end = addMonths(latest.period_start, n + 1);
  while (end <= t && n < 1200) {
    n += 1;
    start = end;
    end = addMonths(latest.period_start, n + 1);
  }
  return { period: { start, end: Math.min(end, stop) }, guessed: true };
}

/** The series of a session billed at time t. */
export function attribute(account: AccountHistory, t: number): Attribution {
  const at = entryAt(account.history, t);
  if (at === null || at.entry.plan === "free") {
    const month = calendarMonth(t);
    return {
      ok: true,
      series: {
        plan: "free",
        start: month.start,
        end: month.end,
        stripeCustomerId: null,
        subscriptionId: null,
        priceId: null,
        meterEventName: null,
        guessed: false,
      },
    };
  }
  const { entry, until } = at;
  const subscriptionId = entry.stripe_subscription_id;
  if (subscriptionId === null) return { ok: false, reason: `plan ${entry.plan} at ${t} has no subscription` };
  const sub = account.subscriptions.get(subscriptionId);
  if (!sub) return { ok: false, reason: `subscription ${subscriptionId} is not recorded yet` };
  const found = periodAt(account.periods.get(subscriptionId) ?? [], sub, t);
  if (!found) return { ok: false, reason: `no billing period of ${subscriptionId} contains ${t}` };
  return {
    ok: true,
    series: {
      plan: entry.plan,
      start: Math.max(found.period.start, entry.effective_from),
      end: Math.min(found.period.end, until),
      stripeCustomerId: sub.stripe_customer_id,
      subscriptionId,
      priceId: entry.stripe_price_id,
      meterEventName: entry.meter_event_name,
      guessed: found.guessed,
    },
  };
}

/** Bound on how far a session's reported creation may precede what we observed of it. */
export const CREATION_SKEW_MS = 5 * 60_000;

/**
 * The time a session is billed at: the creation time the gateway reported, bounded by what we
 * observed. It cannot be later than the first receipt of its telemetry, nor earlier than its
 * admission (or, without one, its first receipt) by more than the allowed clock skew: a gateway
 * cannot move a session into an older plan or period by backdating it.
 */
export function billedAt(session: {
  created_at: number | null;
  first_seen_at: number;
  admitted_at: number | null;
}): number {
  const hi = session.first_seen_at;
  const lo = Math.min(session.admitted_at ?? hi, hi) - CREATION_SKEW_MS;
  const reported = session.created_at ?? hi;
  return Math.min(hi, Math.max(lo, reported));
}
