/**
 * POST /api/billing/plan: a subscriber changes plan, cancels, or takes back a scheduled change.
 * The policy (docs/billing.md "Changing plans"):
 *
 * - payg -> pro: at once. The subscription's items are replaced and its billing cycle anchor reset
 *   to now: the pro period starts now, its $29 is invoiced at once, and (flexible billing mode)
 *   the payg usage reported so far is billed on that same invoice at $0.10.
 * - pro -> payg: at the period end by default (a subscription schedule's next phase: the $29 is
 *   paid, the 400 included sessions stay usable); "now" replaces the items at once with the anchor
 *   reset and no proration (no refund); the pro overage so far is then billed by adjustment.
 * - to free (cancel): at the period end by default (cancel_at_period_end: the final invoice bills
 *   the period's usage); "now" ends it with a final invoice of all accrued usage (invoice_now).
 * - resume: a scheduled change or cancellation is taken back (the schedule released,
 *   cancel_at_period_end cleared).
 *
 * Every change is applied to Stripe, then what Stripe holds is written to D1 at once, on the
 * user's shard (the same convergence as the webhooks), so sessions created after a change are
 * attributed to the new plan without waiting for the webhook; the webhook then changes nothing.
 */
import { ApiError, type PaidPlanId, type PlanId } from "@aigate/shared";
import { pendingChange, planOfPrice, planOfSubscription } from "@aigate/shared/stripeSync/convergence";
import type { StripeSubscription } from "@aigate/shared/stripeSync/objects";
import {
  retrievePrice,
  retrieveSubscription,
  type SyncDeps,
  syncFromStripe,
} from "@aigate/shared/stripeSync/sync";
import type Stripe from "stripe";
import { z } from "zod";
import { planLineItems } from "./checkout";

export const PlanChangeBody = z.union([
  z.object({ resume: z.literal(true) }).strict(),
  z
    .object({
      plan: z.enum(["free", "payg", "pro"]),
      when: z.enum(["now", "period_end"]).optional(),
    })
    .strict(),
]);
export type PlanChangeBody = z.infer<typeof PlanChangeBody>;

export interface PlanChangeResult {
  plan: PlanId;
  pending_plan: PlanId | null;
  effective_at: string | null;
}

/** When a change takes effect when the request does not say: upgrades now, everything else at the period end. */
export function defaultWhen(from: PaidPlanId, to: PlanId): "now" | "period_end" {
  return from === "payg" && to === "pro" ? "now" : "period_end";
}

/**
 * Whether a plan change is scheduled: a schedule whose next phase bills another plan. A phase that
 * keeps the plan only swaps its price (an operator's custom price from the period end,
 * docs/billing.md "Custom pricing"): the customer has nothing to take back there.
 */
async function isScheduled(stripe: Stripe, sub: StripeSubscription): Promise<boolean> {
  if (!sub.schedule) return false;
  const schedule = await stripe.subscriptionSchedules.retrieve(sub.schedule);
  const phases = schedule.phases.map((p) => ({
    start_date: p.start_date,
    end_date: p.end_date,
    items: p.items.map((i) => ({ price: typeof i.price === "string" ? i.price : i.price.id })),
  }));
  const plans = new Map<string, PaidPlanId | null>();
  for (const id of new Set(phases.flatMap((p) => p.items.map((i) => i.price))))
    plans.set(id, planOfPrice(await retrievePrice(stripe, id)));
  const view = {
    id: schedule.id,
    status: schedule.status,
    subscription: sub.id,
    current_phase: schedule.current_phase,
    phases,
  };
  return (
    pendingChange(
      { ...sub, cancel_at_period_end: false, cancel_at: null },
      view,
      (id) => plans.get(id) ?? null,
    ) !== null
  );
}

function isCanceling(sub: StripeSubscription): boolean {
  return sub.cancel_at_period_end || (sub.cancel_at !== null && sub.cancel_at !== undefined);
}

/**
 * Takes back what is scheduled: the schedule's next phases and a pending cancellation. A resume
 * (`planChangesOnly`) keeps a schedule that only swaps the plan's price; a change now releases any.
 */
async function clearScheduled(
  stripe: Stripe,
  sub: StripeSubscription,
  planChangesOnly = false,
): Promise<void> {
  if (sub.schedule && (!planChangesOnly || (await isScheduled(stripe, sub))))
    await stripe.subscriptionSchedules.release(sub.schedule);
  if (isCanceling(sub)) {
    await stripe.subscriptions.update(sub.id, { cancel_at_period_end: false, cancel_at: "" });
  }
}

/** The items that replace every current item with the plan's prices. */
async function replacementItems(stripe: Stripe, sub: StripeSubscription, plan: PaidPlanId) {
  const next = await planLineItems(stripe, plan);
  return [...sub.items.data.map((i) => ({ id: i.id, deleted: true as const })), ...next];
}

/** The plan's prices as the next phase of a schedule that starts at the current period's end. */
async function scheduleAtPeriodEnd(stripe: Stripe, sub: StripeSubscription, plan: PaidPlanId): Promise<void> {
  await scheduleNextPhase(stripe, sub, await planLineItems(stripe, plan));
}

/**
 * The subscription's items as a schedule phase lists them, a metered price swapped for
 * `meteredPrice` when given (a metered price carries no quantity).
 */
export function phaseItems(sub: StripeSubscription, meteredPrice?: string) {
  return sub.items.data.map((i) =>
    i.price.recurring?.usage_type === "metered"
      ? { price: meteredPrice ?? i.price.id }
      : { price: i.price.id, quantity: i.quantity ?? 1 },
  );
}

/**
 * Makes `next` the phase after the current one of the subscription's schedule (created from the
 * subscription when it has none), released at its end. Returns when it starts: the current
 * period's end (ms).
 */
export async function scheduleNextPhase(
  stripe: Stripe,
  sub: StripeSubscription,
  next: Stripe.SubscriptionScheduleUpdateParams.Phase.Item[],
): Promise<number> {
  const scheduleId =
    sub.schedule ?? (await stripe.subscriptionSchedules.create({ from_subscription: sub.id })).id;
  const schedule = await stripe.subscriptionSchedules.retrieve(scheduleId);
  const current = schedule.current_phase ?? schedule.phases[0];
  if (!current) throw new Error(`subscription schedule ${scheduleId} has no current phase`);
  await stripe.subscriptionSchedules.update(scheduleId, {
    end_behavior: "release",
    phases: [
      { items: phaseItems(sub), start_date: current.start_date, end_date: current.end_date },
      { items: next, proration_behavior: "none" },
    ],
  });
  return current.end_date * 1000;
}

export interface ChangeContext {
  /** Its shards: the user's rows are converged on `shards.of(userId)`. */
  deps: SyncDeps;
  userId: string;
  subscriptionId: string | null;
}

/** Applies a plan change for a user; answers the contract's 409s for impossible ones. */
export async function changePlan(ctx: ChangeContext, body: PlanChangeBody): Promise<void> {
  const { stripe } = ctx.deps;
  if (ctx.subscriptionId === null) {
    if ("resume" in body)
      throw new ApiError(409, "nothing_to_resume", "no plan change or cancellation is scheduled");
    if (body.plan === "free") throw new ApiError(409, "already_on_plan", "you are already on the free plan");
    throw new ApiError(
      409,
      "no_subscription",
      "you have no paid subscription yet: subscribe through checkout first",
    );
  }
  const sub = await retrieveSubscription(stripe, ctx.subscriptionId);
  const current = planOfSubscription(sub);
  if (current === null) throw new Error(`subscription ${sub.id} has no plan price`);
  let changedNow = false;

  if ("resume" in body) {
    if (!(await isScheduled(stripe, sub)) && !isCanceling(sub))
      throw new ApiError(409, "nothing_to_resume", "no plan change or cancellation is scheduled");
    await clearScheduled(stripe, sub, true);
  } else {
    const when = body.when ?? defaultWhen(current, body.plan);
    if (body.plan === current) {
      throw new ApiError(
        409,
        "already_on_plan",
        (await isScheduled(stripe, sub)) || isCanceling(sub)
          ? `you are on the ${current} plan with a change scheduled: resume to keep it`
          : `you are already on the ${current} plan`,
      );
    }
    if (body.plan === "free") {
      if (sub.schedule) await stripe.subscriptionSchedules.release(sub.schedule);
      if (when === "now") {
        await stripe.subscriptions.cancel(sub.id, { invoice_now: true, prorate: false });
        changedNow = true;
      } else {
        await stripe.subscriptions.update(sub.id, { cancel_at_period_end: true });
      }
    } else if (when === "now") {
      await clearScheduled(stripe, sub);
      await stripe.subscriptions.update(sub.id, {
        items: await replacementItems(stripe, sub, body.plan),
        billing_cycle_anchor: { type: "now" },
        // an upgrade bills the old plan's usage so far on the new period's invoice; a downgrade
        // refunds nothing (its overage so far is billed by adjustment)
        proration_behavior: body.plan === "pro" ? "create_prorations" : "none",
        metadata: { plan: body.plan },
      });
      changedNow = true;
    } else {
      if (isCanceling(sub)) await clearScheduled(stripe, sub);
      await scheduleAtPeriodEnd(stripe, sub, body.plan);
    }
  }
  const latest = changedNow ? (await retrieveSubscription(stripe, sub.id)).latest_invoice : null;
  await syncFromStripe(ctx.deps, {
    subscriptionId: sub.id,
    invoiceId: latest ?? null,
    userHints: [ctx.userId],
  });
}
