/** Subscription items: creation, the shared billing period, and the subscription's interval. */
import type { Ctx } from "./context";
import { isMetered } from "./invoicing";
import { type ItemRec, type Metadata, newId, type PriceRec, type SubscriptionRec } from "./state";

export function recurringOf(price: PriceRec): NonNullable<PriceRec["recurring"]> {
  if (!price.recurring) throw new Error(`emulator invariant: ${price.id} is not recurring`);
  return price.recurring;
}

/** The recurring interval every item of the subscription shares. */
export function intervalOf(ctx: Ctx, sub: SubscriptionRec): NonNullable<PriceRec["recurring"]> {
  const first = sub.items[0];
  const price = first && ctx.state.prices.get(first.price);
  if (!price) throw new Error(`emulator invariant: ${sub.id} has no priced item`);
  return recurringOf(price);
}

/** The current billing period, which all items share. */
export function periodOf(sub: SubscriptionRec): { start: number; end: number } {
  const first = sub.items[0];
  if (!first) throw new Error(`emulator invariant: ${sub.id} has no items`);
  return { start: first.periodStart, end: first.periodEnd };
}

export function newItem(
  ctx: Ctx,
  customer: string,
  price: PriceRec,
  quantity: number | null,
  period: { start: number; end: number },
  usageStart: number,
  metadata: Metadata = {},
): ItemRec {
  return {
    id: newId("si"),
    created: ctx.state.nowFor(customer),
    price: price.id,
    quantity: isMetered(price) ? null : (quantity ?? 1),
    metadata: { ...metadata },
    periodStart: period.start,
    periodEnd: period.end,
    usageStart,
    debits: [],
  };
}
