/**
 * Adjustments: sessions a frozen series counted that Stripe did not bill (verdicts that came after
 * its invoice was finalized, sessions in flight when a plan changed at once, a removed metered item
 * whose usage Stripe dropped), or that Stripe billed without our count (then a credit). Stripe's
 * billed quantity is read from the finalized invoice lines (the webhooks worker freezes the
 * series); the difference is billed exactly, with the series' own price (tiers included), as an
 * invoice item on the customer's next invoice, or on a one-off invoice when they have no live
 * subscription. Sessions are never billed twice: the reservation (the adjustment row and the
 * series' adjusted count) is one transaction before any Stripe call, and the call is idempotent
 * (its idempotency key, and after Stripe's 24 h the item found by its metadata).
 *
 * Which invoice: while the customer stays on the series' plan, the item rides on the subscription's
 * next invoice (late sessions of a renewed period). When the plan changed or ended (a change or
 * cancellation at once: the old plan's usage so far, sessions in flight), it is invoiced at once.
 *
 * `adjust` works on the biller's shard (its users' series and adjustments); the sweep runs it on
 * every shard.
 */
import { backoff, catalogMeteredPrice, rangeAmount, seriesKey } from "@aigate/shared";
import { meteredPriceOf } from "@aigate/shared/stripeSync/convergence";
import { retrievePrice } from "@aigate/shared/stripeSync/sync";
import type Stripe from "stripe";
import type { Biller } from "./config";
import { classifyStripeError } from "./meter";
import {
  markAdjustmentCreated,
  type PendingAdjustment,
  pendingAdjustments,
  rankOfBilled,
  recordAdjustmentFailure,
  reserveAdjustment,
  type SeriesToAdjust,
  seriesToAdjust,
} from "./queries";

export const ADJUST_LIMIT = 50;

export interface AdjustResult {
  reserved: number;
  created: number;
  failed: number;
}

const DATE = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export async function adjust(b: Biller, now: number): Promise<AdjustResult> {
  const result: AdjustResult = { reserved: 0, created: 0, failed: 0 };
  for (const s of await seriesToAdjust(b.db, ADJUST_LIMIT)) {
    try {
      if (await reserve(b, s, now)) result.reserved += 1;
    } catch (err) {
      b.log.warn("adjustment not reserved", {
        series: seriesKey(s.user_id, s.plan, s.period_start),
        error: String(err),
      });
    }
  }
  for (const a of await pendingAdjustments(b.db, now, ADJUST_LIMIT)) {
    if (await bill(b, a, now)) result.created += 1;
    else result.failed += 1;
  }
  if (result.reserved + result.created + result.failed > 0) b.log.info("adjustments done", { ...result });
  return result;
}

/** Reserves the difference between a frozen series' sessions and what is billed for it so far. */
async function reserve(b: Biller, s: SeriesToAdjust, now: number): Promise<boolean> {
  const covered = s.stripe_billed + s.adjusted;
  const sessions = s.billable_sessions - covered;
  if (sessions === 0) return false;
  const price = s.stripe_price_id
    ? meteredPriceOf(await retrievePrice(b.stripe, s.stripe_price_id))
    : catalogMeteredPrice(s.plan);
  const billedSeq = s.billed_seq ?? (await rankOfBilled(b.db, s, s.stripe_billed));
  const fromSeq = s.last_to_seq ?? billedSeq;
  const id = `${seriesKey(s.user_id, s.plan, s.period_start)}|${covered}|${s.billable_sessions}`;
  const [updated] = await b.db.batch(
    reserveAdjustment(
      b.db,
      {
        id,
        user_id: s.user_id,
        plan: s.plan,
        period_start: s.period_start,
        stripe_customer_id: s.stripe_customer_id,
        sessions,
        from_seq: fromSeq,
        to_seq: sessions > 0 ? s.seq_top : fromSeq,
        amount_cents: rangeAmount(price, covered, s.billable_sessions),
        currency: price.currency,
      },
      s.adjusted,
      billedSeq,
      now,
    ),
  );
  return (updated?.meta.changes ?? 0) > 0;
}

function describe(a: PendingAdjustment): string {
  const plan = a.plan === "pro" ? "Pro" : "Pay-as-you-go";
  const period = `${DATE(a.period_start)} to ${DATE(a.period_end)}`;
  return a.sessions > 0
    ? `AI Gate ${plan}: ${a.sessions} successful session(s) of ${period} recorded after that period was invoiced`
    : `AI Gate ${plan}: credit for ${-a.sessions} session(s) of ${period} invoiced beyond the sessions recorded`;
}

/** Stripe keeps an idempotency key for at least 24 hours; past that, an earlier attempt's item is looked up. */
const IDEMPOTENCY_KEY_LIFE_MS = 23 * 3600_000;

/** Finds an invoice item created by an earlier attempt (after the idempotency key's 24 h). */
async function existingItem(stripe: Stripe, a: PendingAdjustment): Promise<string | null> {
  for await (const item of stripe.invoiceItems.list({ customer: a.stripe_customer_id, limit: 100 })) {
    if (item.metadata?.aigate_adjustment === a.id) return item.id;
  }
  return null;
}

async function bill(b: Biller, a: PendingAdjustment, now: number): Promise<boolean> {
  const key = `adjustment:${a.id}`;
  try {
    // an earlier attempt may have created the item and died before recording anything (not even
    // its failure): within the key's life the key answers with that item, later only a lookup does
    const keyForgotten = now - a.created_at > IDEMPOTENCY_KEY_LIFE_MS;
    let itemId = a.attempts > 0 || keyForgotten ? await existingItem(b.stripe, a) : null;
    if (a.amount_cents === 0) {
      // sessions that cost nothing (pro's included ones): nothing to bill
      await markAdjustmentCreated(b.db, a.id, "none", now).run();
      return true;
    }
    if (itemId === null) {
      const item = await b.stripe.invoiceItems.create(
        {
          customer: a.stripe_customer_id,
          amount: a.amount_cents,
          currency: a.currency,
          description: describe(a),
          period: { start: Math.floor(a.period_start / 1000), end: Math.floor(a.period_end / 1000) },
          metadata: {
            aigate_adjustment: a.id,
            user_id: a.user_id,
            plan: a.plan,
            period_start: String(a.period_start),
            sessions: String(a.sessions),
            from_seq: String(a.from_seq),
            to_seq: String(a.to_seq),
          },
          ...(a.live_subscription_id ? { subscription: a.live_subscription_id } : {}),
        },
        { idempotencyKey: key.slice(0, 255) },
      );
      itemId = item.id;
    }
    if (a.live_subscription_id === null || a.live_plan !== a.plan) {
      // the plan ended: invoiced now (Stripe finalizes the invoice itself)
      await b.stripe.invoices.create(
        {
          customer: a.stripe_customer_id,
          ...(a.live_subscription_id ? { subscription: a.live_subscription_id } : {}),
          pending_invoice_items_behavior: "include",
          // taxed like the subscription's own invoices (Checkout collected the customer's address)
          ...(b.config.stripeTax ? { automatic_tax: { enabled: true } } : {}),
          auto_advance: true,
          collection_method: "charge_automatically",
          description: "AI Gate: sessions recorded after their period was invoiced",
          metadata: { aigate_adjustment: a.id },
        },
        { idempotencyKey: `${key}:invoice`.slice(0, 255) },
      );
    }
    await markAdjustmentCreated(b.db, a.id, itemId, now).run();
    b.log.info("adjustment billed", { id: a.id, invoice_item: itemId, amount_cents: a.amount_cents });
    return true;
  } catch (err) {
    const failure = classifyStripeError(err);
    const message = failure.kind === "duplicate" ? "duplicate" : failure.message;
    b.log.warn("adjustment not billed yet", { id: a.id, error: message });
    const retryAt = now + backoff(a.attempts + 1, { base: 60_000, max: 3_600_000, maxDoublings: 10 });
    await recordAdjustmentFailure(b.db, a.id, message, retryAt, now)
      .run()
      .catch(() => undefined);
    return false;
  }
}
