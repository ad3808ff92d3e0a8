/**
 * Subscription schedules for plan changes at a future time, created `from_subscription` (the
 * emulator creates subscriptions only through Checkout). Phases are entered when a clock reaches
 * their start: at a period end in the renewal invoice ("A single consolidated invoice" in flexible
 * mode), mid-period as an item change with the incoming phase's `proration_behavior`.
 *
 * Source: https://docs.stripe.com/billing/subscriptions/subscription-schedules and
 * https://docs.stripe.com/billing/subscriptions/billing-mode/compare.
 */
import type { Ctx } from "./context";
import { invalidRequest, missingParam, missingReference } from "./errors";
import { type Emission, isMetered } from "./invoicing";
import { intervalOf, periodOf, recurringOf } from "./items";
import type { DueWork } from "./lifecycle";
import type { Params } from "./params";
import { addInterval } from "./pricing";
import {
  type Metadata,
  newId,
  type PhaseItemRec,
  type PhaseRec,
  type ProrationBehavior,
  type ScheduleRec,
  type SubscriptionRec,
} from "./state";
import { cancelNow, cycle } from "./subscriptions";
import { applyPlan, planFromPhase } from "./updates";
import { scheduleView } from "./views";

const PRORATION_BEHAVIORS = ["always_invoice", "create_prorations", "none"] as const;
const INTERVALS = ["day", "week", "month", "year"] as const;
export const MAX_PHASES = 10;

export function scheduleOf(ctx: Ctx, sub: SubscriptionRec): ScheduleRec | undefined {
  const sc = sub.schedule ? ctx.state.schedules.get(sub.schedule) : undefined;
  return sc?.status === "active" ? sc : undefined;
}

function subscriptionOf(ctx: Ctx, sc: ScheduleRec): SubscriptionRec {
  const sub = sc.subscription ? ctx.state.subscriptions.get(sc.subscription) : undefined;
  if (!sub) throw new Error(`emulator invariant: schedule ${sc.id} has no subscription`);
  return sub;
}

/**
 * `from_subscription`: "Passing the subscription IDs in this way creates a schedule with one phase
 * that's based on the current billing period of the subscription." "When using this parameter,
 * other parameters (such as phase values) cannot be set."
 */
export function createFromSubscription(ctx: Ctx, sub: SubscriptionRec, em: Emission): ScheduleRec {
  if (sub.status === "canceled") {
    throw invalidRequest(`Subscription ${sub.id} is canceled.`, undefined, "from_subscription");
  }
  if (sub.schedule && ctx.state.schedules.get(sub.schedule)?.status === "active") {
    throw invalidRequest(
      `Subscription ${sub.id} is already managed by the subscription schedule ${sub.schedule}.`,
      undefined,
      "from_subscription",
    );
  }
  const { start, end } = periodOf(sub);
  const sc: ScheduleRec = {
    id: newId("sub_sched", 24),
    created: ctx.state.nowFor(sub.customer),
    customer: sub.customer,
    subscription: sub.id,
    releasedSubscription: null,
    status: "active",
    endBehavior: "release",
    billingMode: { ...sub.billingMode },
    metadata: {},
    phases: [
      {
        start,
        end,
        items: sub.items.map((i) => ({ price: i.price, quantity: i.quantity, metadata: { ...i.metadata } })),
        prorationBehavior: "create_prorations",
        metadata: {},
      },
    ],
    current: 0,
    canceledAt: null,
    completedAt: null,
    releasedAt: null,
  };
  ctx.state.schedules.set(sc.id, sc);
  em.emit("subscription_schedule.created", scheduleView(ctx.state, sc));
  em.updateSubscription(sub, () => {
    sub.schedule = sc.id;
  });
  return sc;
}

/**
 * Phase metadata on entering a phase: non-empty values are added or updated, "Metadata from the
 * phase with empty values are used to unset the corresponding keys".
 */
function mergeMetadata(target: Metadata, phase: Metadata): Metadata {
  const out = { ...target };
  for (const [k, v] of Object.entries(phase)) {
    if (v === "") delete out[k];
    else out[k] = v;
  }
  return out;
}

/** What entering `phase` changes besides the items: metadata, and `cancel_at` for the final phase. */
function enteringChanges(sc: ScheduleRec, sub: SubscriptionRec, index: number): () => void {
  const phase = sc.phases[index];
  return () => {
    if (!phase) return;
    sub.metadata = mergeMetadata(sub.metadata, phase.metadata);
    // "The subscription's cancel_on_date isn't set until the subscription transitions into the
    // final phase."
    if (index === sc.phases.length - 1 && sc.endBehavior === "cancel") sub.cancelAt = phase.end;
  };
}

function entered(ctx: Ctx, sc: ScheduleRec, index: number, em: Emission): void {
  sc.current = index;
  em.emit("subscription_schedule.updated", scheduleView(ctx.state, sc));
}

/** The next phase, entered at a period end (with the renewal invoice) or mid-period. */
function transition(ctx: Ctx, sc: ScheduleRec, sub: SubscriptionRec, em: Emission): void {
  const index = sc.current + 1;
  const next = sc.phases[index];
  if (!next) return;
  const plan = planFromPhase(ctx, sub, next.items);
  if (next.start === periodOf(sub).end) {
    cycle(ctx, sub, em, { finalize: "after_grace", phase: plan, onRenew: enteringChanges(sc, sub, index) });
  } else {
    applyPlan(
      ctx,
      sub,
      plan,
      {
        at: next.start,
        prorationBehavior: next.prorationBehavior,
        resetAnchor: false,
        source: "phase",
        paymentBehavior: "allow_incomplete",
      },
      em,
      enteringChanges(sc, sub, index),
    );
  }
  if (sub.status !== "canceled") entered(ctx, sc, index, em);
}

/**
 * "Subscription schedules end after the last phase is complete. At this point, the subscription is
 * left in place and is no longer associated with the schedule." (With `end_behavior=cancel` the
 * subscription ends at the same time through its `cancel_at`, and the schedule completes then.)
 */
function complete(ctx: Ctx, sc: ScheduleRec, sub: SubscriptionRec, em: Emission): void {
  const phase = sc.phases[sc.current];
  sc.status = "completed";
  sc.completedAt = phase?.end ?? ctx.state.nowFor(sc.customer);
  em.emit("subscription_schedule.completed", scheduleView(ctx.state, sc));
  em.updateSubscription(sub, () => {
    sub.schedule = null;
  });
}

/**
 * Work a schedule has due for its subscription: the next phase (at the period end it is part of the
 * renewal, rank 1; mid-period, rank 2) or the end of the last phase (rank 3).
 */
export function scheduleWork(
  ctx: Ctx,
  sub: SubscriptionRec,
): { work: DueWork | undefined; replacesCycle: boolean } {
  const sc = scheduleOf(ctx, sub);
  const phase = sc?.phases[sc.current];
  if (!sc || !phase) return { work: undefined, replacesCycle: false };
  const { end } = periodOf(sub);
  const hasNext = sc.current + 1 < sc.phases.length;
  if (hasNext && phase.end === end) {
    return { work: { at: end, rank: 1, run: (em) => transition(ctx, sc, sub, em) }, replacesCycle: true };
  }
  if (hasNext && phase.end < end) {
    return {
      work: { at: phase.end, rank: 2, run: (em) => transition(ctx, sc, sub, em) },
      replacesCycle: false,
    };
  }
  if (!hasNext) {
    return {
      work: { at: phase.end, rank: 3, run: (em) => complete(ctx, sc, sub, em) },
      replacesCycle: false,
    };
  }
  return { work: undefined, replacesCycle: false };
}

function parsePhaseItems(ctx: Ctx, sub: SubscriptionRec, p: Params): PhaseItemRec[] {
  const list = p.list("items");
  if (list.length === 0) throw missingParam(p.name("items"));
  const { interval, intervalCount } = intervalOf(ctx, sub);
  const seen = new Set<string>();
  return list.map((it) => {
    const priceId = it.optString("price") ?? it.optString("plan");
    if (!priceId) throw missingParam(it.name("price"));
    const price = ctx.state.prices.get(priceId);
    if (!price) throw missingReference("price", priceId, it.name("price"));
    const r = price.recurring;
    if (
      !r ||
      r.interval !== interval ||
      r.intervalCount !== intervalCount ||
      price.currency !== sub.currency
    ) {
      throw invalidRequest(
        "All prices on a subscription must have the same currency and recurring interval.",
        undefined,
        it.name("price"),
      );
    }
    if (seen.has(price.id)) {
      throw invalidRequest(
        `A phase cannot have the same price twice: ${price.id}.`,
        undefined,
        it.name("price"),
      );
    }
    seen.add(price.id);
    const quantity = it.optInt("quantity", { min: 0 });
    if (quantity !== undefined && isMetered(price)) {
      throw invalidRequest(
        "Quantity should not be specified where usage_type is `metered`.",
        undefined,
        it.name("quantity"),
      );
    }
    return { price: price.id, quantity: isMetered(price) ? null : (quantity ?? 1), metadata: it.metadata() };
  });
}

function timeOrNow(p: Params, key: string, now: number): number | undefined {
  const raw = p.optString(key);
  if (raw === undefined) return undefined;
  return raw === "now" ? now : p.int(key);
}

/**
 * `phases`: "You need to pass in all current and future phases when you update a subscription
 * schedule." The first one is the current phase (its start cannot move); each next phase starts
 * when the previous one ends ("The `end_date` of one phase has to be the `start_date` for the next
 * phase"). A phase ends at `end_date` or after `duration`; without either it lasts one interval of
 * its first price.
 */
function parsePhases(
  ctx: Ctx,
  sc: ScheduleRec,
  sub: SubscriptionRec,
  list: Params[],
  now: number,
): PhaseRec[] {
  if (list.length === 0) throw missingParam("phases");
  if (list.length > MAX_PHASES) {
    throw invalidRequest(`You can have up to ${MAX_PHASES} current or future phases.`, undefined, "phases");
  }
  const current = sc.phases[sc.current];
  if (!current) throw new Error(`emulator invariant: schedule ${sc.id} has no current phase`);
  let previousEnd = current.start;
  return list.map((p, i) => {
    const start = timeOrNow(p, "start_date", now) ?? previousEnd;
    if (start !== previousEnd) {
      throw invalidRequest(
        i === 0
          ? `phases[0][start_date] must be the current phase's start (${current.start}).`
          : `phases[${i}][start_date] must be the end of the previous phase (${previousEnd}).`,
        undefined,
        p.name("start_date"),
      );
    }
    const items = parsePhaseItems(ctx, sub, p);
    const duration = p.optObject("duration");
    const endDate = timeOrNow(p, "end_date", now);
    if (duration && endDate !== undefined) {
      throw invalidRequest(
        "You may only specify one of these parameters: duration, end_date.",
        undefined,
        p.name("duration"),
      );
    }
    const first = items[0] ? ctx.state.prices.get(items[0].price) : undefined;
    const interval = first ? recurringOf(first) : intervalOf(ctx, sub);
    const end =
      endDate ??
      (duration
        ? addInterval(
            start,
            duration.enumOf("interval", INTERVALS),
            duration.optInt("interval_count", { min: 1 }) ?? 1,
          )
        : addInterval(start, interval.interval, interval.intervalCount));
    if (end <= start || (i === 0 && end < now)) {
      throw invalidRequest(
        `phases[${i}] must end after it starts and not in the past.`,
        undefined,
        p.name("end_date"),
      );
    }
    previousEnd = end;
    return {
      start,
      end,
      items,
      prorationBehavior: p.optEnum("proration_behavior", PRORATION_BEHAVIORS) ?? "create_prorations",
      metadata: p.metadata(),
    };
  });
}

function samePhaseItems(a: PhaseItemRec[], b: PhaseItemRec[]): boolean {
  const key = (x: PhaseItemRec[]) =>
    JSON.stringify(
      x.map((i) => [i.price, i.quantity]).sort((m, n) => String(m[0]).localeCompare(String(n[0]))),
    );
  return key(a) === key(b);
}

/** POST /v1/subscription_schedules/{id}: phases, end_behavior, metadata, proration_behavior. */
export function updateSchedule(ctx: Ctx, sc: ScheduleRec, p: Params, em: Emission): void {
  if (sc.status !== "active" && sc.status !== "not_started") {
    throw invalidRequest(
      `You cannot update a subscription schedule that is ${sc.status}.`,
      undefined,
      "schedule",
    );
  }
  const sub = subscriptionOf(ctx, sc);
  const now = ctx.state.nowFor(sc.customer);
  const endBehavior = p.optEnum("end_behavior", ["release", "cancel"] as const);
  const metadata = p.metadata(sc.metadata);
  const prorationBehavior: ProrationBehavior =
    p.optEnum("proration_behavior", PRORATION_BEHAVIORS) ?? "create_prorations";
  const phases = p.has("phases") ? parsePhases(ctx, sc, sub, p.list("phases"), now) : undefined;
  const current = sc.phases[sc.current];
  const lastEnd = sc.phases[sc.phases.length - 1]?.end;
  if (phases && current && phases[0] && !samePhaseItems(current.items, phases[0].items)) {
    // "Updating the active phase updates the underlying subscription as well."
    applyPlan(
      ctx,
      sub,
      planFromPhase(ctx, sub, phases[0].items),
      { at: now, prorationBehavior, resetAnchor: false, source: "api", paymentBehavior: "allow_incomplete" },
      em,
    );
  }
  if (phases) sc.phases = [...sc.phases.slice(0, sc.current), ...phases];
  if (endBehavior) sc.endBehavior = endBehavior;
  sc.metadata = metadata;
  // the cancellation of the final phase follows the schedule
  const isLast = sc.current === sc.phases.length - 1;
  const newLast = sc.phases[sc.phases.length - 1];
  em.updateSubscription(sub, () => {
    if (sub.cancelAt !== null && sub.cancelAt === lastEnd) sub.cancelAt = null;
    if (isLast && sc.endBehavior === "cancel" && newLast) sub.cancelAt = newLast.end;
  });
  em.emit("subscription_schedule.updated", scheduleView(ctx.state, sc));
  // "You can also end the current phase immediately and start a new phase."
  const phase = sc.phases[sc.current];
  if (phase && phase.end <= now && sc.current + 1 < sc.phases.length) transition(ctx, sc, sub, em);
}

/**
 * "Releases the subscription schedule immediately, which will stop scheduling of its phases, but
 * leave any existing subscription in place. ... releasing it will remove its subscription property
 * and set the subscription's ID to the released_subscription property."
 */
export function releaseSchedule(ctx: Ctx, sc: ScheduleRec, preserveCancelDate: boolean, em: Emission): void {
  if (sc.status !== "active" && sc.status !== "not_started") {
    throw invalidRequest(
      `You cannot release a subscription schedule that is ${sc.status}.`,
      undefined,
      "schedule",
    );
  }
  const sub = subscriptionOf(ctx, sc);
  const lastEnd = sc.phases[sc.phases.length - 1]?.end;
  sc.status = "released";
  sc.releasedAt = ctx.state.nowFor(sc.customer);
  sc.releasedSubscription = sub.id;
  sc.subscription = null;
  em.emit("subscription_schedule.released", scheduleView(ctx.state, sc));
  em.updateSubscription(sub, () => {
    sub.schedule = null;
    if (!preserveCancelDate && sc.endBehavior === "cancel" && sub.cancelAt === lastEnd) sub.cancelAt = null;
  });
}

/**
 * "Cancels a subscription schedule and its associated subscription immediately". `invoice_now` and
 * `prorate` both default to true here ("Defaults to `true`"), unlike canceling a subscription.
 */
export function cancelSchedule(
  ctx: Ctx,
  sc: ScheduleRec,
  o: { invoiceNow: boolean; prorate: boolean },
  em: Emission,
): void {
  if (sc.status !== "active" && sc.status !== "not_started") {
    throw invalidRequest(
      `You cannot cancel a subscription schedule that is ${sc.status}.`,
      undefined,
      "schedule",
    );
  }
  const sub = subscriptionOf(ctx, sc);
  cancelNow(ctx, sub, o, em);
}
