/**
 * Money of metered prices, exact in integer cents: what a quantity costs under a per-unit or
 * tiered Stripe price, what a range of sessions within a series costs (adjustments), and the price
 * of one session at its rank (invoice session lists). Pure.
 */

export interface PriceTier {
  /** Inclusive upper bound of the tier, null for the last ("inf"). */
  up_to: number | null;
  unit_amount: number;
  flat_amount: number;
}

export type MeteredPrice =
  | { kind: "per_unit"; unit_amount: number; currency: string }
  | { kind: "graduated" | "volume"; tiers: PriceTier[]; currency: string };

function checkQuantity(q: number): void {
  if (!Number.isInteger(q) || q < 0) throw new RangeError(`quantity must be a non-negative integer: ${q}`);
}

/** What `quantity` units cost in one period (Stripe's graduated and volume tier rules). */
export function amountFor(price: MeteredPrice, quantity: number): number {
  checkQuantity(quantity);
  if (price.kind === "per_unit") return price.unit_amount * quantity;
  if (quantity === 0) return 0;
  if (price.kind === "volume") {
    const tier = price.tiers.find((t) => t.up_to === null || quantity <= t.up_to) ?? price.tiers.at(-1);
    if (!tier) return 0;
    return tier.flat_amount + tier.unit_amount * quantity;
  }
  let total = 0;
  let below = 0;
  for (const tier of price.tiers) {
    if (below >= quantity) break;
    const top = tier.up_to === null ? quantity : Math.min(quantity, tier.up_to);
    if (top > below) total += tier.flat_amount + tier.unit_amount * (top - below);
    below = tier.up_to ?? quantity;
  }
  return total;
}

/**
 * What the sessions ranked (from, to] of a period add to its bill: amountFor(to) - amountFor(from).
 * Negative when to < from (a credit).
 */
export function rangeAmount(price: MeteredPrice, from: number, to: number): number {
  return amountFor(price, to) - amountFor(price, from);
}

/**
 * The price of the session of rank `rank` (1-based) in a period billed for `total` sessions, such
 * that the prices of ranks 1..total add up to amountFor(total). Graduated and per-unit prices price
 * a session by its own rank; volume prices spread the period's amount, the remainder on the first
 * ranks.
 */
export function sessionPrice(price: MeteredPrice, rank: number, total: number): number {
  if (!Number.isInteger(rank) || rank < 1 || rank > total)
    throw new RangeError(`rank ${rank} outside 1..${total}`);
  if (price.kind !== "volume") return rangeAmount(price, rank - 1, rank);
  const amount = amountFor(price, total);
  const base = Math.floor(amount / total);
  return base + (rank <= amount - base * total ? 1 : 0);
}

/**
 * Sessions a period includes at no charge under a price: the first tier's bound when the price is
 * graduated and that tier costs nothing (pro's 400); 0 otherwise.
 */
export function includedUnits(price: MeteredPrice): number {
  if (price.kind !== "graduated") return 0;
  const [first] = price.tiers;
  return first && first.up_to !== null && first.unit_amount === 0 && first.flat_amount === 0
    ? first.up_to
    : 0;
}
