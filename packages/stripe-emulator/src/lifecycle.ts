/**
 * Work that falls due as time passes, done in time order when a clock moves: drafts finalized after
 * the grace period (then paid), periods ending (renewal or final invoice), `cancel_at` reached,
 * and schedule phases starting or ending. A clock is the emulator clock (customers without a test
 * clock) or a test clock (its customers only).
 */
import type { Ctx } from "./context";
import { Emission, finalizeInvoice } from "./invoicing";
import { periodOf } from "./items";
import { scheduleWork } from "./schedules";
import { cancelAtReached, cycle } from "./subscriptions";
import { NO_REQUEST } from "./webhooks";

/** `null`: the emulator clock; otherwise a test clock id. */
export type ClockScope = string | null;

export interface DueWork {
  at: number;
  /** Order among work due at the same time: finalizations, then periods, then schedules. */
  rank: number;
  run: (em: Emission) => void;
}

function inScope(ctx: Ctx, customer: string, scope: ClockScope): boolean {
  return (ctx.state.customers.get(customer)?.testClock ?? null) === scope;
}

/** The next piece of work of every object in the scope. */
function dueWork(ctx: Ctx, scope: ClockScope): DueWork[] {
  const { state } = ctx;
  const work: DueWork[] = [];
  for (const inv of state.invoices.values()) {
    if (inv.status !== "draft" || inv.automaticallyFinalizesAt === null || !inv.autoAdvance) continue;
    if (!inScope(ctx, inv.customer, scope)) continue;
    work.push({ at: inv.automaticallyFinalizesAt, rank: 0, run: (em) => finalizeInvoice(ctx, inv, em) });
  }
  for (const sub of state.subscriptions.values()) {
    if (sub.status === "canceled" || !inScope(ctx, sub.customer, scope)) continue;
    const { end } = periodOf(sub);
    const schedule = scheduleWork(ctx, sub);
    if (schedule.work) work.push(schedule.work);
    if (sub.cancelAt !== null && sub.cancelAt < end) {
      work.push({ at: sub.cancelAt, rank: 1, run: (em) => cancelAtReached(ctx, sub, em) });
    } else if (!schedule.replacesCycle) {
      work.push({ at: end, rank: 1, run: (em) => cycle(ctx, sub, em, { finalize: "after_grace" }) });
    }
  }
  return work;
}

/**
 * Runs everything in the scope that is due up to `until`, earliest first, with the scope's clock
 * set to each piece's time while it runs (so invoices and events carry that time; work that was
 * already overdue at `from` runs at `from`). `setTime` moves the scope's clock. Returns the ids of
 * the events sent.
 */
export function processDue(
  ctx: Ctx,
  scope: ClockScope,
  from: number,
  until: number,
  setTime: (t: number) => void,
): string[] {
  const em = new Emission(ctx, NO_REQUEST);
  for (let guard = 0; guard < 100_000; guard++) {
    let next: DueWork | undefined;
    for (const w of dueWork(ctx, scope)) {
      if (w.at > until) continue;
      if (!next || w.at < next.at || (w.at === next.at && w.rank < next.rank)) next = w;
    }
    if (!next) break;
    setTime(Math.max(from, next.at));
    next.run(em);
  }
  setTime(until);
  return em.ids;
}
