/**
 * The independent money model of the chaos suite: from the run's timeline (subscriptions, plan
 * changes, cancellations, resumptions, price versions published) it derives every user's billing
 * windows as docs/billing.md's policy says Stripe forms them, attributes each session by its
 * billing time, and prices each window. Written from the docs, not from the product's code: its
 * own month arithmetic (Stripe's monthly cycle, clamped to the month's end and kept on the anchor
 * day), its own tier maths. Pure.
 *
 * Policy (docs/billing.md "Changing plans"), as the model applies it:
 * - a subscription starts a period at once (Checkout), monthly from its anchor;
 * - a change "now" ends the current period at that instant and starts a new one anchored there
 *   (billing_cycle_anchor now), with the target plan's current price version; "now" to free ends
 *   the subscription;
 * - a change at the period end (schedule, cancel_at_period_end) takes effect at the period end,
 *   with the price version current when it was asked for; a resume takes back what was scheduled;
 * - a renewal keeps the plan and its price version (subscribers stay on their prices);
 * - every pro period is charged its fee in advance: the version's fee, once, with the period's start;
 * - without a paid plan, usage is free and counted per calendar month (UTC).
 */

export type PaidPlan = "payg" | "pro";
export type PlanName = "free" | PaidPlan;

export interface Tier {
  /** Inclusive upper bound, null for the last tier. */
  upTo: number | null;
  unit: number;
}

export type Metered = { kind: "per_unit"; unit: number } | { kind: "graduated"; tiers: Tier[] };

export interface PlanPrices {
  /** Licensed fee per period in advance (0: none). */
  fee: number;
  metered: Metered;
}

/** The prices a new subscriber (or a plan change) gets while this version is the current one. */
export type PriceVersion = Record<PaidPlan, PlanPrices>;

/** The catalog's prices (README.md "Plans": payg $0.10 a session; pro $29, 400 included, then $0.07). */
export const CATALOG: PriceVersion = {
  payg: { fee: 0, metered: { kind: "per_unit", unit: 10 } },
  pro: {
    fee: 2900,
    metered: {
      kind: "graduated",
      tiers: [
        { upTo: 400, unit: 0 },
        { upTo: null, unit: 7 },
      ],
    },
  },
};

/** What `n` sessions cost in one window under a metered price, in cents. */
export function meteredAmount(price: Metered, n: number): number {
  if (price.kind === "per_unit") return price.unit * n;
  let total = 0;
  let below = 0;
  for (const tier of price.tiers) {
    if (below >= n) break;
    const top = tier.upTo === null ? n : Math.min(n, tier.upTo);
    if (top > below) total += tier.unit * (top - below);
    below = tier.upTo ?? n;
  }
  return total;
}

/** Stripe's monthly cycle: the anchor's day and time of day, clamped to the month's last day. */
export function plusMonths(anchorMs: number, months: number): number {
  const d = new Date(anchorMs);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth() + months;
  const last = new Date(Date.UTC(y, m + 1, 0)).getUTCDate();
  return Date.UTC(
    y,
    m,
    Math.min(d.getUTCDate(), last),
    d.getUTCHours(),
    d.getUTCMinutes(),
    d.getUTCSeconds(),
    d.getUTCMilliseconds(),
  );
}

/** The UTC calendar month containing t (free usage). */
export function monthOf(t: number): { start: number; end: number } {
  const d = new Date(t);
  return {
    start: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1),
    end: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1),
  };
}

/**
 * What the harness did, when (Stripe's time, ms) and at which step of the run (`phase`: a counter
 * the harness increments at every action and every batch of completed sessions, so the model can
 * tell which verdicts came before which invoice).
 */
export type TimelineEvent = { at: number; phase: number } & (
  | { kind: "subscribe"; user: string; plan: PaidPlan }
  | { kind: "change"; user: string; to: PlanName; when: "now" | "period_end" }
  | { kind: "resume"; user: string }
  /** `npm run stripe:setup` published the next price version: new subscribers and changes get it. */
  | { kind: "publish" }
);

/**
 * How a window ended, which decides where Stripe bills its usage (docs/billing.md "Changing
 * plans"): at its period end (a renewal, a scheduled change, a cancellation at the period end:
 * the period-end invoice, after the finalization grace); a change now to pro (the anchor reset's
 * invoice, at once, bills the usage reported so far); a change now to payg from pro (Stripe drops
 * the usage under `proration_behavior: none`: all of it is billed by adjustment); a cancellation
 * now (`invoice_now`: a final invoice of the window's usage, a draft for the finalization grace
 * like a renewal, so usage reported until it is final is on it).
 */
export type Closing =
  | { kind: "period_end" }
  | { kind: "now_billed"; phase: number }
  | { kind: "now_dropped"; phase: number }
  | { kind: "canceled_now"; phase: number };

/** A paid billing window: one Stripe period of one subscription, one plan, one price version. */
export interface Window {
  user: string;
  /** The user's n-th subscription (0-based). */
  subscription: number;
  plan: PaidPlan;
  /** Index into the price versions. */
  version: number;
  start: number;
  end: number;
  /** Still running at the model's horizon (not invoiced yet). */
  open: boolean;
  /** How it ended (null while open). */
  closing: Closing | null;
}

interface Pending {
  plan: PlanName;
  version: number;
}

interface LiveSubscription {
  ordinal: number;
  plan: PaidPlan;
  version: number;
  anchor: number;
  periodStart: number;
  periodEnd: number;
  pending: Pending | null;
}

/** A user's state at the model's horizon. */
export interface FinalState {
  plan: PlanName;
  /** The live window, if any. */
  window: Window | null;
  pending: PlanName | null;
  pendingAt: number | null;
}

export interface Model {
  windows: Map<string, Window[]>;
  final: Map<string, FinalState>;
  versions: PriceVersion[];
}

function nextPeriodEnd(anchor: number, after: number): number {
  let n = 1;
  while (plusMonths(anchor, n) <= after) n += 1;
  return plusMonths(anchor, n);
}

/**
 * Plays the timeline (in the order the harness performed it, times non-decreasing) up to the
 * horizon. Period ends due at or before an event's time are applied before it (the harness moves
 * Stripe's clock to an instant before acting at it).
 */
export function buildModel(
  users: readonly string[],
  timeline: readonly TimelineEvent[],
  horizon: number,
  versions: readonly PriceVersion[] = [CATALOG],
): Model {
  const windows = new Map<string, Window[]>(users.map((u) => [u, []]));
  const live = new Map<string, LiveSubscription>();
  const ordinals = new Map<string, number>();
  let version = 0;

  const close = (user: string, sub: LiveSubscription, end: number, closing: Closing) => {
    windows.get(user)?.push({
      user,
      subscription: sub.ordinal,
      plan: sub.plan,
      version: sub.version,
      start: sub.periodStart,
      end,
      open: false,
      closing,
    });
  };
  const renewUntil = (t: number) => {
    for (;;) {
      let due: [string, LiveSubscription] | null = null;
      for (const entry of live) {
        if (entry[1].periodEnd <= t && (due === null || entry[1].periodEnd < due[1].periodEnd)) due = entry;
      }
      if (due === null) return;
      const [user, sub] = due;
      const end = sub.periodEnd;
      close(user, sub, end, { kind: "period_end" });
      const pending = sub.pending;
      if (pending?.plan === "free") {
        live.delete(user);
        continue;
      }
      if (pending) {
        sub.plan = pending.plan as PaidPlan;
        sub.version = pending.version;
      }
      sub.pending = null;
      sub.periodStart = end;
      sub.periodEnd = nextPeriodEnd(sub.anchor, end);
    }
  };
  const start = (user: string, plan: PaidPlan, at: number, ordinal: number) => {
    live.set(user, {
      ordinal,
      plan,
      version,
      anchor: at,
      periodStart: at,
      periodEnd: plusMonths(at, 1),
      pending: null,
    });
  };

  for (const e of timeline) {
    if (e.at > horizon) throw new Error(`timeline event at ${e.at} after the horizon ${horizon}`);
    renewUntil(e.at);
    if (e.kind === "publish") {
      version = Math.min(version + 1, versions.length - 1);
      continue;
    }
    if (!windows.has(e.user)) throw new Error(`timeline names unknown user ${e.user}`);
    const sub = live.get(e.user);
    if (e.kind === "subscribe") {
      if (sub) throw new Error(`${e.user} subscribes while subscribed`);
      const ordinal = ordinals.get(e.user) ?? 0;
      ordinals.set(e.user, ordinal + 1);
      start(e.user, e.plan, e.at, ordinal);
    } else if (e.kind === "resume") {
      if (!sub?.pending) throw new Error(`${e.user} resumes with nothing scheduled`);
      sub.pending = null;
    } else {
      if (!sub) throw new Error(`${e.user} changes plan without a subscription`);
      if (e.when === "period_end") {
        sub.pending = { plan: e.to, version };
      } else if (e.to === "free") {
        close(e.user, sub, e.at, { kind: "canceled_now", phase: e.phase });
        live.delete(e.user);
      } else {
        if (e.to === sub.plan) throw new Error(`${e.user} changes to the plan it is on`);
        // the policy's proration: create_prorations to pro (usage so far billed), none to payg (dropped)
        close(e.user, sub, e.at, {
          kind: e.to === "pro" ? "now_billed" : "now_dropped",
          phase: e.phase,
        });
        start(e.user, e.to, e.at, sub.ordinal);
      }
    }
  }
  renewUntil(horizon);
  const final = new Map<string, FinalState>();
  for (const user of users) {
    const sub = live.get(user);
    if (!sub) {
      final.set(user, { plan: "free", window: null, pending: null, pendingAt: null });
      continue;
    }
    const window: Window = {
      user,
      subscription: sub.ordinal,
      plan: sub.plan,
      version: sub.version,
      start: sub.periodStart,
      end: sub.periodEnd,
      open: true,
      closing: null,
    };
    windows.get(user)?.push(window);
    final.set(user, {
      plan: sub.plan,
      window,
      pending: sub.pending?.plan ?? null,
      pendingAt: sub.pending ? sub.periodEnd : null,
    });
  }
  return { windows, final, versions: [...versions] };
}

/** Where a session billed at t counts: a paid window, or the free calendar month. */
export type Attributed =
  | { plan: "free"; start: number; end: number; window: null }
  | (Window & { window: Window });

export function attributeAt(model: Model, user: string, t: number): Attributed {
  const w = model.windows.get(user)?.find((x) => x.start <= t && t < x.end);
  if (w) return { ...w, window: w };
  const month = monthOf(t);
  return { plan: "free", start: month.start, end: month.end, window: null };
}

export function windowPrices(model: Model, w: Window): PlanPrices {
  const v = model.versions[w.version];
  if (!v) throw new Error(`no price version ${w.version}`);
  return v[w.plan];
}
