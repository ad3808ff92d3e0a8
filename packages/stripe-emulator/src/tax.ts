/**
 * Stripe Tax, simplified. Stripe's real computation (jurisdictions, product tax codes, thresholds)
 * is out of reach, so the emulator applies one flat rate per customer country, configured with
 * `POST /_emulator/tax_rates` or the `taxRates` start option, as if the account were registered
 * there; countries without a rate are not taxed (`taxability_reason: not_collecting`).
 *
 * What follows Stripe's docs: tax is computed "for each line item" of an invoice ("To calculate
 * these for each line item, Stripe uses ... The customer's tax settings and location"), "at the
 * published rate at the time of invoice finalization", from the customer's address ("Customers
 * outside of the US require at least a country-level address"); every price is tax-exclusive
 * (the account's default tax behavior, "When you set tax behavior to exclusive, it adds tax onto
 * the subtotal amount"), and each line's tax is rounded to the cent on its own (Stripe's support
 * article on rounding rules shows line taxes of $0.0645 and $0.7265 rounded to $0.06 and $0.73
 * before they are added up; halves round away from zero, as Stripe rounds fees, 0.025 -> 0.03).
 */
import { invalidRequest } from "./errors";
import { linesTotal } from "./pricing";
import {
  type AppliedTax,
  type EmulatorState,
  type InvoiceLineRec,
  type InvoiceRec,
  newId,
  type TaxRateRec,
} from "./state";

const COUNTRY = /^[A-Z]{2}$/;
const PERCENTAGE = /^(?:100(?:\.0{1,4})?|\d{1,2}(?:\.\d{1,4})?)$/;

/** Validates a `{country: percent}` table (percent 0..100, up to 4 decimals, as number or string). */
export function parseTaxRates(input: unknown): Map<string, string> {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw invalidRequest("rates must be an object of country code to percentage.", undefined, "rates");
  }
  const rates = new Map<string, string>();
  for (const [country, value] of Object.entries(input)) {
    if (!COUNTRY.test(country)) {
      throw invalidRequest(
        `${country} is not a two-letter country code (ISO 3166-1 alpha-2, upper case).`,
        undefined,
        `rates[${country}]`,
      );
    }
    const text = typeof value === "number" ? String(value) : value;
    if (typeof text !== "string" || !PERCENTAGE.test(text)) {
      throw invalidRequest(
        `The rate of ${country} must be a percentage from 0 to 100 with at most 4 decimals.`,
        undefined,
        `rates[${country}]`,
      );
    }
    rates.set(country, String(Number(text)));
  }
  return rates;
}

/** The configured table as JSON numbers, countries sorted. */
export function taxRatesView(state: EmulatorState): Record<string, number> {
  return Object.fromEntries(
    [...state.taxRates].sort(([a], [b]) => a.localeCompare(b)).map(([c, p]) => [c, Number(p)]),
  );
}

/**
 * `amount × percentage / 100` rounded to the cent, halves away from zero, in exact integer
 * arithmetic (the percentage has at most 4 decimals).
 */
export function taxOn(amount: number, percentage: string): number {
  const [whole = "0", fraction = ""] = percentage.split(".");
  const scaled = BigInt(whole) * 10_000n + BigInt(fraction.padEnd(4, "0") || "0");
  const n = BigInt(Math.abs(amount)) * scaled;
  const d = 1_000_000n;
  const rounded = Number((2n * n + d) / (2n * d));
  return amount < 0 ? -rounded : rounded;
}

/** The tax rate object for a country and percentage, created on first use (ids stay stable). */
function rateObject(state: EmulatorState, country: string, percentage: string): TaxRateRec {
  for (const rate of state.taxRateObjects.values()) {
    if (rate.country === country && rate.percentage === percentage) return rate;
  }
  const rate: TaxRateRec = { id: newId("txr", 24), created: state.now(), country, percentage };
  state.taxRateObjects.set(rate.id, rate);
  return rate;
}

/** The tax for a customer in `country` under the configured table. */
export function taxFor(state: EmulatorState, country: string): AppliedTax {
  const configured = state.taxRates.get(country);
  const percentage = configured ?? "0";
  const reason =
    configured === undefined ? "not_collecting" : Number(configured) === 0 ? "zero_rated" : "standard_rated";
  return { country, rate: rateObject(state, country, percentage), taxabilityReason: reason };
}

/**
 * The tax an invoice carries: fixed at finalization; on a draft with automatic tax, what the
 * customer's address gives now (null without one: Stripe needs a location).
 */
export function invoiceTax(state: EmulatorState, inv: InvoiceRec): AppliedTax | null {
  if (inv.tax || !inv.automaticTax || inv.status !== "draft") return inv.tax;
  const country = state.customers.get(inv.customer)?.address?.country;
  return country ? taxFor(state, country) : null;
}

/** A line's tax under `tax` (0 without tax or when not collecting). */
export function lineTax(line: Pick<InvoiceLineRec, "amount">, tax: AppliedTax | null): number {
  return tax ? taxOn(line.amount, tax.rate.percentage) : 0;
}

export interface InvoiceTotals {
  subtotal: number;
  tax: number;
  total: number;
}

/** Subtotal (the lines), tax (the lines' taxes) and total = subtotal + tax. */
export function invoiceTotals(state: EmulatorState, inv: InvoiceRec): InvoiceTotals {
  const applied = invoiceTax(state, inv);
  const subtotal = linesTotal(inv.lines);
  const tax = inv.lines.reduce((sum, l) => sum + lineTax(l, applied), 0);
  return { subtotal, tax, total: subtotal + tax };
}

/** What the customer owes on a finalized invoice: its total (tax included) after the credit balance. */
export function amountDueOf(state: EmulatorState, inv: InvoiceRec): number {
  return Math.max(0, invoiceTotals(state, inv).total + inv.startingBalance);
}
