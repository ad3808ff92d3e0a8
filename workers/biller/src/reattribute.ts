/**
 * Re-attribution: when the plan history or the billing periods of a user change for times already
 * judged (a webhook arriving after sessions of the new plan were judged, a period Stripe ended
 * early, a subscription that ended), the user's sessions billed from that time on are moved to the
 * series the one attribution rule (shared/src/attribution.ts) gives now. Sessions judged before
 * their paid subscription was recorded are attributed here too.
 *
 * A session in a frozen series stays: Stripe has billed it there. Every move is one transaction
 * (the session and both series' counts), guarded by the attribution it was planned from, so a
 * crash or a concurrent run leaves nothing half-moved and nothing moved twice. The moved series'
 * totals are then posted (a total may go down: the later post wins on a `last` meter).
 *
 * `reattribute` works on the biller's shard (a user's sessions, series and plans are all on the
 * user's shard); the sweep runs it on every shard.
 */
import {
  attribute,
  ensureSeries,
  loadAccounts,
  PaidPlanId,
  PlanId,
  recordSpendCrossings,
  type SeriesRef,
  type SeriesToEnsure,
  seriesKey,
  seriesToEnsure,
} from "@aigate/shared";
import type { Biller } from "./config";
import { postTotals } from "./posting";
import {
  advanceReattribution,
  finishReattribution,
  moveSession,
  reattributionsDue,
  sessionsBilledFrom,
} from "./queries";

/** Users and sessions per run (each move is about 3 statements). */
export const REATTRIBUTE_USERS = 25;
export const REATTRIBUTE_SESSIONS = 500;
const MOVES_PER_BATCH = 30;

export interface ReattributeResult {
  users: number;
  moved: number;
  kept: number;
}

export async function reattribute(b: Biller, now: number): Promise<ReattributeResult> {
  const requests = await reattributionsDue(b.db, REATTRIBUTE_USERS);
  const result: ReattributeResult = { users: requests.length, moved: 0, kept: 0 };
  if (requests.length === 0) return result;
  const accounts = await loadAccounts(
    b.db,
    requests.map((r) => r.user_id),
  );
  const toPost = new Map<string, SeriesRef>();
  for (const request of requests) {
    const account = accounts.get(request.user_id);
    const sessions = await sessionsBilledFrom(b.db, request.user_id, request.from_ms, REATTRIBUTE_SESSIONS);
    const series = new Map<string, SeriesToEnsure>();
    const moves: { s: (typeof sessions)[number]; target: SeriesToEnsure }[] = [];
    for (const s of sessions) {
      const attributed = account ? attribute(account, s.billed_at) : null;
      if (!attributed?.ok) continue; // still not attributable: a later change asks again
      const target = seriesToEnsure(s.user_id, attributed.series);
      if (s.plan === target.plan && s.period_start === target.period_start) continue;
      if (s.frozen === 1) {
        result.kept += 1;
        b.log.warn("session stays in a series Stripe has billed", {
          session_id: s.session_id,
          series: seriesKey(s.user_id, s.plan ?? "none", s.period_start ?? 0),
          now_attributed_to: seriesKey(target.user_id, target.plan, target.period_start),
        });
        continue;
      }
      series.set(seriesKey(target.user_id, target.plan, target.period_start), target);
      moves.push({ s, target });
    }
    for (let i = 0; i < moves.length; i += MOVES_PER_BATCH) {
      const chunk = moves.slice(i, i + MOVES_PER_BATCH);
      await b.db.batch([
        ensureSeries(b.db, [...series.values()], now),
        ...chunk.flatMap(({ s, target }) =>
          moveSession(b.db, s, { plan: PlanId.parse(target.plan), period_start: target.period_start }, now),
        ),
        // a series that grew by the moves may have crossed a spend alert threshold
        recordSpendCrossings(
          b.db,
          chunk.map(({ target }) => target),
          now,
        ),
      ]);
      for (const { s, target } of chunk) {
        if (s.billable !== 1) continue;
        for (const [plan, start] of [
          [s.plan, s.period_start],
          [target.plan, target.period_start],
        ] as const) {
          const paid = PaidPlanId.safeParse(plan);
          if (paid.success && start !== null) {
            toPost.set(seriesKey(s.user_id, paid.data, start), {
              user_id: s.user_id,
              plan: paid.data,
              period_start: start,
            });
          }
        }
      }
    }
    result.moved += moves.length;
    const last = sessions.at(-1);
    const done =
      sessions.length < REATTRIBUTE_SESSIONS || last === undefined
        ? finishReattribution(b.db, request)
        : advanceReattribution(b.db, request, Math.max(last.billed_at, request.from_ms + 1));
    await done.run();
    if (moves.length > 0) {
      b.log.info("sessions re-attributed", {
        user_id: request.user_id,
        from_ms: request.from_ms,
        moved: moves.length,
      });
    }
  }
  if (toPost.size > 0) await postTotals(b, [...toPost.values()], { now });
  return result;
}
