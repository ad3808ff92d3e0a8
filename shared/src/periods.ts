/**
 * Period arithmetic, all in UTC epoch milliseconds. Pure functions.
 */

export interface Period {
  start: number;
  end: number; // exclusive
}

/** The calendar month (UTC) containing `t`: the free plan's billing period. */
export function calendarMonth(t: number): Period {
  const d = new Date(t);
  const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
  const end = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
  return { start, end };
}

/**
 * The earliest year a month name may have: no billing data predates it, and it keeps clear of
 * Date.UTC reading years 0-99 as 1900-1999 ("0050-06" would otherwise mean June 1950).
 */
export const FIRST_MONTH_YEAR = 2000;

/** The calendar month named "YYYY-MM" (from FIRST_MONTH_YEAR on), or null when malformed or earlier. */
export function parseMonth(month: string): Period | null {
  const m = /^(\d{4})-(0[1-9]|1[0-2])$/.exec(month);
  if (!m) return null;
  const year = Number(m[1]);
  if (year < FIRST_MONTH_YEAR) return null;
  const start = Date.UTC(year, Number(m[2]) - 1, 1);
  return calendarMonth(start);
}

export function formatMonth(t: number): string {
  return new Date(t).toISOString().slice(0, 7);
}

/** "YYYY-MM-DD" (UTC) of `t`. */
export function utcDay(t: number): string {
  return new Date(t).toISOString().slice(0, 10);
}

/**
 * `anchor` moved by `months` calendar months, the way Stripe moves a monthly billing cycle:
 * same day of month and time of day, clamped to the month's last day (Jan 31 -> Feb 28).
 */
export function addMonths(anchor: number, months: number): number {
  const d = new Date(anchor);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth() + months;
  const lastDay = new Date(Date.UTC(y, m + 1, 0)).getUTCDate();
  const day = Math.min(d.getUTCDate(), lastDay);
  return Date.UTC(y, m, day, d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds(), d.getUTCMilliseconds());
}

/**
 * The monthly period of a subscription anchored at `anchor` that contains `t` (t >= anchor).
 * Used when Stripe has not reported the period yet (its renewal webhook is late).
 */
export function monthlyPeriodContaining(anchor: number, t: number): Period {
  if (t < anchor) throw new RangeError("time precedes the billing cycle anchor");
  const a = new Date(anchor);
  const b = new Date(t);
  let n = (b.getUTCFullYear() - a.getUTCFullYear()) * 12 + (b.getUTCMonth() - a.getUTCMonth());
  if (addMonths(anchor, n) > t) n -= 1;
  while (addMonths(anchor, n + 1) <= t) n += 1;
  return { start: addMonths(anchor, n), end: addMonths(anchor, n + 1) };
}

export function contains(p: Period, t: number): boolean {
  return t >= p.start && t < p.end;
}
