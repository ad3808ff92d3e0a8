/**
 * The sessions an invoice charges, each with its price in cents (GET
 * /api/billing/invoices/{id}/sessions, docs/api-billing.md). A session's price is what it adds to
 * its series' bill at its position among the series' billable sessions, under the series' own
 * price: so the sessions an invoice charges from one series add up, to the cent, to what the
 * invoice bills for them (its metered line, or its adjustment items).
 */
import { catalogMeteredPrice, type MeteredPrice, type PaidPlanId, rangeAmount } from "@aigate/shared";
import { meteredPriceOf } from "@aigate/shared/stripeSync/convergence";
import { retrievePrice } from "@aigate/shared/stripeSync/sync";
import { stringify } from "csv-stringify/sync";
import type Stripe from "stripe";
import type { InvoiceSessionRow } from "./queries";

/**
 * The price of the session at `position` (1-based) in its series, when the invoice charges the
 * series' positions first..last. Per-unit and graduated prices: what that position adds to the
 * series' bill (`rangeAmount(price, position - 1, position)`: pro's first 400 cost 0, then 7
 * each). Volume prices (one tier for the whole quantity) have no price per position: the amount
 * of the range is spread evenly, the remainder on its first positions.
 */
export function priceAtPosition(price: MeteredPrice, position: number, first: number, last: number): number {
  if (!Number.isInteger(position) || position < first || position > last || first < 1)
    throw new RangeError(`position ${position} outside ${first}..${last}`);
  if (price.kind !== "volume") return rangeAmount(price, position - 1, position);
  const count = last - first + 1;
  const amount = rangeAmount(price, first - 1, last);
  const base = Math.floor(amount / count);
  return base + (position - first < amount - base * count ? 1 : 0);
}

/**
 * The metered price of each series' stored price id (read from Stripe, with its tiers), or the
 * catalog's price of the plan for a series recorded without one. One Stripe read per price.
 */
export async function seriesPrices(
  stripe: () => Stripe,
  series: { plan: PaidPlanId; stripe_price_id: string | null }[],
): Promise<(s: { plan: PaidPlanId; stripe_price_id: string | null }) => MeteredPrice> {
  const byId = new Map<string, MeteredPrice>();
  for (const s of series) {
    if (s.stripe_price_id && !byId.has(s.stripe_price_id))
      byId.set(s.stripe_price_id, meteredPriceOf(await retrievePrice(stripe(), s.stripe_price_id)));
  }
  return (s) => (s.stripe_price_id ? byId.get(s.stripe_price_id) : undefined) ?? catalogMeteredPrice(s.plan);
}

export interface InvoiceSession {
  session_id: string;
  project_id: string;
  created_at: string;
  duration_ms: number | null;
  audio_ms: number;
  plan: PaidPlanId;
  price_cents: number;
}

/**
 * A session's duration: from its creation (as the gateway reported it, else its first event) to
 * its end (its `ended` event, else its last event for a session judged without one); null when
 * neither end is known.
 */
function durationMs(r: InvoiceSessionRow): number | null {
  const start = r.created_at ?? r.first_event_at;
  const end = r.ended_at ?? r.last_event_at;
  if (start === null || end === null) return null;
  return Math.max(0, end - start);
}

export function invoiceSession(r: InvoiceSessionRow, price: MeteredPrice): InvoiceSession {
  return {
    session_id: r.session_id,
    project_id: r.project_id,
    created_at: new Date(r.billed_at).toISOString(),
    duration_ms: durationMs(r),
    audio_ms: r.audio_ms,
    plan: r.plan,
    price_cents: priceAtPosition(price, r.position, r.first_position, r.last_position),
  };
}

export const CSV_COLUMNS = [
  "session_id",
  "project_id",
  "created_at",
  "duration_ms",
  "audio_ms",
  "price_cents",
] as const;

/**
 * RFC 4180 CSV (CRLF line ends, a header row, fields quoted when they hold a comma, a quote or a
 * line break). A text field starting with =, +, -, @, a tab or a carriage return is prefixed
 * with ' so that a spreadsheet shows it as text instead of running it as a formula.
 */
export function sessionsCsv(sessions: InvoiceSession[]): string {
  return stringify(
    sessions.map((s) => [s.session_id, s.project_id, s.created_at, s.duration_ms, s.audio_ms, s.price_cents]),
    { header: true, columns: [...CSV_COLUMNS], record_delimiter: "windows", escape_formulas: true },
  );
}
