/**
 * The admin area's metrics for one calendar month (UTC), from D1 aggregates. The SQL gathers counts
 * (adminQueries.ts `metricsRows`); this module decides what they mean. Every definition is written
 * down in docs/operations.md ("Metrics"); keep the two in step.
 */
import {
  FAILURE_REASONS,
  FIRST_MONTH_YEAR,
  formatMonth,
  type PaidPlanId,
  type Period,
  PLANS,
  parseMonth,
  utcDay,
} from "@aigate/shared";
import type { MetricsRows, MetricsWindow } from "./adminQueries";

export interface MetricsBody {
  month: string;
  /** End of the measured window (RFC 3339): the month's end, or now for the current month. */
  as_of: string;
  currency: "usd";
  mrr_cents: number;
  arpu_cents: number;
  paying_customers: number;
  paying_by_plan: Record<PaidPlanId, number>;
  churn_rate: number | null;
  conversion_rate: number | null;
  success_rate: number | null;
  sessions_total: number;
  sessions_billable: number;
  failed_by_reason: Record<string, number>;
  invoiced_cents: number;
}

export type MonthWindow =
  | { ok: true; month: string; period: Period; window: MetricsWindow }
  | { ok: false; message: string };

const MONTH_FORMAT = `month must be YYYY-MM, ${FIRST_MONTH_YEAR}-01 or later`;

/** The window measured for `month` ("YYYY-MM", default the current month) at time `now`. */
export function monthWindow(month: string | undefined, now: number): MonthWindow {
  const name = month ?? formatMonth(now);
  const period = parseMonth(name);
  if (!period) return { ok: false, message: MONTH_FORMAT };
  if (period.start > now) return { ok: false, message: "month is in the future" };
  const end = Math.min(period.end, now);
  return {
    ok: true,
    month: name,
    period,
    window: { start: period.start, end, startDay: utcDay(period.start), endDay: utcDay(period.end) },
  };
}

/** A fraction rounded to 4 decimal places; null when the denominator is 0 (undefined rate). */
export function rate(numerator: number, denominator: number): number | null {
  if (denominator <= 0) return null;
  return Math.round((numerator / denominator) * 10_000) / 10_000;
}

export function metricsBody(month: string, window: MetricsWindow, rows: MetricsRows): MetricsBody {
  const paying: Record<PaidPlanId, number> = { payg: 0, pro: 0 };
  for (const r of rows.payingAtEnd) {
    if (r.plan === "payg" || r.plan === "pro") paying[r.plan] += r.n;
  }
  const payingCustomers = paying.payg + paying.pro;
  // Stripe's MRR: the monthly fees of paid subscriptions in force; metered usage excluded.
  const mrr = paying.payg * PLANS.payg.monthlyFeeCents + paying.pro * PLANS.pro.monthlyFeeCents;

  const failedByReason: Record<string, number> = Object.fromEntries(FAILURE_REASONS.map((r) => [r, 0]));
  let total = 0;
  let billable = 0;
  for (const r of rows.sessions) {
    total += r.n;
    if (r.reason === "success") billable += r.n;
    else failedByReason[r.reason] = (failedByReason[r.reason] ?? 0) + r.n;
  }

  return {
    month,
    as_of: new Date(window.end).toISOString(),
    currency: "usd",
    mrr_cents: mrr,
    arpu_cents: payingCustomers === 0 ? 0 : Math.round(mrr / payingCustomers),
    paying_customers: payingCustomers,
    paying_by_plan: paying,
    churn_rate: rate(rows.churn.churned, rows.churn.paying_at_start),
    conversion_rate: rate(rows.conversion.converted, rows.conversion.free_active),
    success_rate: rate(billable, total),
    sessions_total: total,
    sessions_billable: billable,
    failed_by_reason: failedByReason,
    invoiced_cents: rows.invoicedCents,
  };
}
