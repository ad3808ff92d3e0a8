/** Price maths (per unit, graduated and volume tiers) and billing period arithmetic. */
import type { Interval, PriceRec, Tier } from "./state";

/** Amount in minor units for `quantity` units of a price. Negative usage bills as 0 (like Stripe). */
export function amountFor(price: PriceRec, quantity: number): number {
  const qty = Math.max(0, quantity);
  if (price.billingScheme === "per_unit") return qty * (price.unitAmount ?? 0);
  const tiers = price.tiers ?? [];
  return price.tiersMode === "volume" ? volumeAmount(tiers, qty) : graduatedAmount(tiers, qty);
}

/** Graduated: each tier prices the units that fall into it; a tier's flat fee applies once it is entered. */
export function graduatedAmount(tiers: Tier[], quantity: number): number {
  let total = 0;
  let floor = 0;
  for (const tier of tiers) {
    if (quantity <= floor) break;
    const ceiling = tier.upTo ?? Number.POSITIVE_INFINITY;
    const units = Math.min(quantity, ceiling) - floor;
    total += units * (tier.unitAmount ?? 0) + (tier.flatAmount ?? 0);
    floor = ceiling;
  }
  return total;
}

/** Volume: the tier holding the total quantity prices every unit. */
export function volumeAmount(tiers: Tier[], quantity: number): number {
  if (quantity === 0) return 0;
  const tier = tiers.find((t) => t.upTo === null || quantity <= t.upTo) ?? tiers[tiers.length - 1];
  if (!tier) return 0;
  return quantity * (tier.unitAmount ?? 0) + (tier.flatAmount ?? 0);
}

/**
 * The `n`th period boundary after `anchor`, keeping the anchor's day of month and clamping to
 * the month's last day (Jan 31 -> Feb 28 -> Mar 31), in UTC, like Stripe's billing cycle anchor.
 */
export function addInterval(anchor: number, interval: Interval, count: number): number {
  const d = new Date(anchor * 1000);
  if (interval === "day") return anchor + count * 86_400;
  if (interval === "week") return anchor + count * 7 * 86_400;
  const months = interval === "year" ? count * 12 : count;
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth() + months;
  const lastDay = new Date(Date.UTC(y, m + 1, 0)).getUTCDate();
  const day = Math.min(d.getUTCDate(), lastDay);
  return Date.UTC(y, m, day, d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()) / 1000;
}

/** End of the period that starts at `start`, counting whole intervals from `anchor`. */
export function periodEndAfter(
  anchor: number,
  start: number,
  interval: Interval,
  intervalCount: number,
): number {
  let n = 1;
  let end = addInterval(anchor, interval, intervalCount);
  while (end <= start) {
    n += 1;
    end = addInterval(anchor, interval, intervalCount * n);
  }
  return end;
}

export function formatMoney(amount: number, currency: string): string {
  const value = (amount / 100).toFixed(2);
  return currency === "usd" ? `$${value}` : `${value} ${currency.toUpperCase()}`;
}

/**
 * `amount × part / whole`, rounded to the nearest cent (halves away from zero), in exact integer
 * arithmetic: the time-proportional share of a charge, as prorations use it.
 */
export function prorate(amount: number, part: number, whole: number): number {
  if (whole <= 0 || part <= 0) return 0;
  const sign = amount < 0 ? -1 : 1;
  const n = BigInt(Math.abs(amount)) * BigInt(Math.min(part, whole));
  const d = BigInt(whole);
  return sign * Number((2n * n + d) / (2n * d));
}

/** "16 Jan 2026" (UTC), as Stripe writes dates in proration descriptions. */
export function formatDate(unix: number): string {
  const d = new Date(unix * 1000);
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  return `${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()}`;
}

/** The sum of an invoice's lines. */
export function linesTotal(lines: readonly { amount: number }[]): number {
  return lines.reduce((sum, l) => sum + l.amount, 0);
}

/** What the customer owes on a finalized invoice: its total after the credit balance applied. */
export function amountDue(inv: { lines: readonly { amount: number }[]; startingBalance: number }): number {
  return Math.max(0, linesTotal(inv.lines) + inv.startingBalance);
}
