/**
 * Judging sessions: the verdict is computed by the versioned rules (shared/src/rules.ts) from the
 * stored facts and recorded, final (guarded by `verdict_at IS NULL`), in one D1 batch with
 * everything it implies: the session's billing time and usage series (the one attribution rule,
 * shared/src/attribution.ts), its rank in the series, the series' count and the daily rollup. A
 * retried run changes nothing twice (its token matches only the rows it judged). Then the biller
 * is told which paid series grew, in one message per run; if that send is lost, the biller's
 * minute sweep posts the series anyway (their totals in D1 are the outbox).
 */
import {
  type AccountHistory,
  attribute,
  billedAt,
  chunkBySize,
  ensureSeries,
  judge,
  loadAccounts,
  recordSpendCrossings,
  requestReattributions,
  type SeriesRef,
  type SeriesToEnsure,
  type SessionFacts,
  seriesToEnsure,
  type UsageMessage,
} from "@aigate/shared";
import type { ClassifierConfig } from "./config";
import {
  addToDailyRollups,
  addToSeries,
  type DueEntry,
  type JudgedRow,
  type JudgeRow,
  readJudgeRows,
  reattributeIfAccountsMoved,
  recordVerdicts,
  type VerdictToRecord,
} from "./queries";
import { sendAll } from "./send";
import { judgeState } from "./timing";

export interface JudgeOutcome {
  /** Verdicts recorded by this run. */
  judged: number;
  /** Listed sessions already judged earlier (nothing to do). */
  resent: number;
  /** Judged sessions whose paid plan could not be attributed yet (left to the biller). */
  unattributed: number;
  /** Not due yet (settling, or live and not stale): listed in `notDue` for the agenda. */
  settling: number;
  /** Not judged: unknown to D1. */
  skipped: number;
}

export interface JudgeResult extends JudgeOutcome {
  /**
   * Listed sessions without a verdict that are not due yet, with when they are due as read: the
   * caller puts them on the agenda again (telemetry that moves a session's time later is followed
   * by another listing then; one that ended it lists it itself).
   */
  notDue: DueEntry[];
}

export function factsOfRow(row: JudgeRow): SessionFacts {
  return {
    connected: row.connected === 1,
    connectLatencyMs: row.connect_latency_ms,
    turnFailed: row.turn_failed === 1,
    upstreamError: row.upstream_error === 1,
    audioMs: row.audio_ms,
  };
}

/** The verdict of a row, the facts it rests on (the update applies only if they still hold) and its series. */
export function verdictToRecord(
  row: JudgeRow,
  account: AccountHistory | undefined,
): { record: VerdictToRecord; series: SeriesToEnsure | null; unattributed: boolean } {
  const verdict = judge(factsOfRow(row));
  const at = billedAt({
    created_at: row.reported_created_at,
    first_seen_at: row.first_seen_at,
    admitted_at: row.admitted_at,
  });
  const attributed = account ? attribute(account, at) : null;
  const series = attributed?.ok ? attributed.series : null;
  return {
    record: {
      session_id: row.session_id,
      billable: verdict.billable ? 1 : 0,
      reason: verdict.reason,
      rule_version: verdict.ruleVersion,
      connected: row.connected === 1 ? 1 : 0,
      connect_latency_ms: row.connect_latency_ms,
      turn_failed: row.turn_failed === 1 ? 1 : 0,
      upstream_error: row.upstream_error === 1 ? 1 : 0,
      audio_ms: row.audio_ms,
      billed_at: at,
      plan: series?.plan ?? null,
      period_start: series?.start ?? null,
    },
    series: series ? seriesToEnsure(row.user_id, series) : null,
    unattributed: series === null,
  };
}

/** Upper bound on re-reads when facts change between the read and the guarded verdict update. */
const MAX_PASSES = 4;
/** Sessions per verdict statement (keeps the JSON parameter small). */
const MAX_SESSIONS_PER_STATEMENT = 1000;
/** Series per usage message (ids are <= 200 characters: far below a message's 128 KB). */
const MAX_SERIES_PER_MESSAGE = 200;

/**
 * Judges the listed sessions that are due (those already judged are left alone), tells the biller
 * which paid series grew, and returns those not due yet. Throws on D1 or queue failure; a retry is
 * safe (a new judge token matches no row twice in the series and rollups; a lost usage message is
 * made up for by the biller's sweep, which posts every unposted series).
 */
export async function judgeSessions(
  db: D1Database,
  queues: { verdicts: Queue },
  sessionIds: readonly string[],
  now: number,
  settings: ClassifierConfig,
): Promise<JudgeResult> {
  const outcome: JudgeOutcome = { judged: 0, resent: 0, unattributed: 0, settling: 0, skipped: 0 };
  const grown = new Map<string, SeriesRef>();
  const notDue = new Map<string, number>();
  let toCheck = [...new Set(sessionIds)];

  for (let pass = 0; toCheck.length > 0; pass += 1) {
    if (pass === MAX_PASSES) throw new Error(`facts kept changing under the verdict update (${pass} passes)`);
    const rows = await readJudgeRows(db, toCheck);
    outcome.skipped += toCheck.length - rows.length;
    const due: JudgeRow[] = [];
    for (const row of rows) {
      const state = judgeState(row, now, settings.staleMs);
      if (state === "judged") {
        outcome.resent += 1;
      } else if (state === "due") {
        due.push(row);
      } else {
        notDue.set(row.session_id, row.settle_due_at ?? row.last_seen_at + settings.staleMs);
      }
    }
    if (due.length === 0) break;

    const accounts = await loadAccounts(db, [...new Set(due.map((r) => r.user_id))]);
    const planned = due.map((row) => ({ row, ...verdictToRecord(row, accounts.get(row.user_id)) }));
    const series = new Map<string, SeriesToEnsure>();
    for (const p of planned) {
      if (p.series) series.set(`${p.series.user_id}|${p.series.plan}|${p.series.period_start}`, p.series);
    }
    const unattributed = planned.filter((p) => p.unattributed);

    const token = crypto.randomUUID();
    const statements: D1PreparedStatement[] = [];
    const earliest = new Map<string, number>();
    for (const p of planned) {
      const at = earliest.get(p.row.user_id);
      if (at === undefined || p.record.billed_at < at) earliest.set(p.row.user_id, p.record.billed_at);
    }
    statements.push(
      reattributeIfAccountsMoved(
        db,
        [...earliest].map(([user_id, from_ms]) => ({
          user_id,
          from_ms,
          epoch: accounts.get(user_id)?.epoch ?? 0,
        })),
        now,
      ),
    );
    if (series.size > 0) statements.push(ensureSeries(db, [...series.values()], now));
    const verdictStatements: number[] = [];
    for (const chunk of chunkBySize(planned, MAX_SESSIONS_PER_STATEMENT, Number.MAX_SAFE_INTEGER, () => 1)) {
      verdictStatements.push(statements.length);
      statements.push(
        recordVerdicts(
          db,
          chunk.map((p) => p.record),
          token,
          now,
        ),
      );
      // the count right after the ranks it implies, so the next chunk ranks after it
      statements.push(
        addToSeries(
          db,
          chunk.map((p) => p.row.session_id),
          token,
          now,
        ),
      );
      statements.push(
        addToDailyRollups(
          db,
          chunk.map((p) => p.row.session_id),
          token,
        ),
      );
    }
    // the series that grew may have crossed a spend alert threshold: recorded with the counts
    if (series.size > 0) statements.push(recordSpendCrossings(db, [...series.values()], now));
    if (unattributed.length > 0) {
      statements.push(
        requestReattributions(
          db,
          unattributed.map((p) => ({ user_id: p.row.user_id, from_ms: p.record.billed_at })),
          now,
        ),
      );
    }
    const results = await db.batch<JudgedRow>(statements);
    const judged = new Set<string>();
    for (const index of verdictStatements) {
      for (const row of results[index]?.results ?? []) {
        judged.add(row.session_id);
        if (row.billable === 1 && row.plan !== null && row.plan !== "free" && row.period_start !== null) {
          const ref = {
            user_id: row.user_id,
            plan: row.plan as SeriesRef["plan"],
            period_start: row.period_start,
          };
          grown.set(`${ref.user_id}|${ref.plan}|${ref.period_start}`, ref);
        }
      }
    }
    outcome.judged += judged.size;
    outcome.unattributed += unattributed.filter((p) => judged.has(p.row.session_id)).length;
    // Not updated: judged by another run, or facts changed since the read. Look again.
    toCheck = due.map((r) => r.session_id).filter((id) => !judged.has(id));
  }

  if (grown.size > 0) {
    const messages: UsageMessage[] = chunkBySize(
      [...grown.values()],
      MAX_SERIES_PER_MESSAGE,
      Number.MAX_SAFE_INTEGER,
      () => 1,
    ).map((refs) => ({ v: 2, kind: "usage", series: refs, judged: outcome.judged, judged_at: now }));
    await sendAll(queues.verdicts, messages);
  }

  outcome.settling = notDue.size;
  return { ...outcome, notDue: [...notDue].map(([session_id, due_at]) => ({ session_id, due_at })) };
}
