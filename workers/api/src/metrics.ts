/**
 * The admin area's metrics for one calendar month (UTC), from D1 aggregates, by Stripe's Billing
 * analytics definitions. The SQL gathers counts (adminQueries.ts `metricsRows`, where a
 * subscription's paying span follows its Stripe status); this module turns them into money and
 * rates. Every definition, with its source, is written down in docs/operations.md ("Metrics");
 * keep the two in step.
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
  /** ARPU's denominator: customers paying at some time in the window, or billed in it. */
  arpu_customers: number;
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

/** The monthly fee of a paid plan, from the catalog (every plan is billed monthly); 0 for others. */
function monthlyFeeCents(plan: string): number {
  return plan === "payg" || plan === "pro" ? PLANS[plan].monthlyFeeCents : 0;
}

/** `cents / customers` rounded to the cent (halves up); 0 when there is no customer. */
export function perCustomer(cents: number, customers: number): number {
  return customers <= 0 ? 0 : Math.round(cents / customers);
}

export function metricsBody(month: string, window: MetricsWindow, rows: MetricsRows): MetricsBody {
  const paying: Record<PaidPlanId, number> = { payg: 0, pro: 0 };
  for (const r of rows.customersAtEnd) {
    if (r.plan === "payg" || r.plan === "pro") paying[r.plan] += r.n;
  }
  const payingCustomers = paying.payg + paying.pro;
  // Stripe's MRR: the monthly fees of the subscriptions paying at the end; metered usage excluded.
  let mrr = 0;
  for (const r of rows.subscriptionsAtEnd) mrr += r.n * monthlyFeeCents(r.plan);

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
    arpu_cents: perCustomer(rows.invoicedCents, rows.arpuCustomers),
    arpu_customers: rows.arpuCustomers,
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
