/**
 * Judging sessions: the verdict is computed by the versioned rules (shared/src/rules.ts) from the
 * stored facts and recorded, final (guarded by `verdict_at IS NULL`), in one D1 batch with
 * everything it implies: the session's billing time and usage series (the one attribution rule,
 * shared/src/attribution.ts), its rank in the series, the series' count and the daily rollup,
 * all of a pass's verdicts or none (a session that moved since the read fails the batch). A
 * retried run changes nothing twice (verdicts are final, and a pass's counts commit with them).
 * Then the biller is told which paid series grew, in one message per run; if that send is lost,
 * the biller's minute sweep posts the series anyway (their totals in D1 are the outbox).
 */
import {
  type AccountHistory,
  attribute,
  billedAt,
  chunkBySize,
  ensureSeries,
  judge,
  listedVerdictToken,
  listSessions,
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
  type JudgeRow,
  type RollupCount,
  readJudgeRows,
  reattributeIfAccountsMoved,
  recordVerdicts,
  type SeriesCount,
  VERDICT_MOVED,
  type VerdictToRecord,
  type VerdictWithRank,
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
  /** Verdict batches that failed whole because a session moved under them (each read again). */
  moved: number;
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

/** What a verdict rests on, as a key: a session whose key changed since it was read has moved. */
function verdictInputs(row: JudgeRow): string {
  return JSON.stringify([
    row.verdict_at,
    row.connected,
    row.connect_latency_ms,
    row.turn_failed,
    row.upstream_error,
    row.audio_ms,
  ]);
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

/**
 * A session that moves under this many failed verdict batches of a run (telemetry keeps arriving
 * for it) waits for the next run, so the others are not held up by it. Every failed batch has a
 * session that moved, so a run ends after a bounded number of them.
 */
const MAX_MOVES = 2;
/** Sessions per verdict statement (keeps the JSON parameter small). */
const MAX_SESSIONS_PER_STATEMENT = 1000;
/** Series per usage message (ids are <= 200 characters: far below a message's 128 KB). */
const MAX_SERIES_PER_MESSAGE = 200;

type Planned = {
  row: JudgeRow;
  record: VerdictToRecord;
  series: SeriesToEnsure | null;
  unattributed: boolean;
};

const seriesKey = (s: { user_id: string; plan: string; period_start: number }) =>
  `${s.user_id}|${s.plan}|${s.period_start}`;

/** The billable sessions of a series, the ones that count in it and are told to the biller. */
function countsInSeries(p: Planned): boolean {
  return p.record.billable === 1 && p.record.plan !== null && p.record.period_start !== null;
}

/**
 * A verdict statement's sessions with their ranks in their series (in session id order, as
 * sessions are recorded), and what they add to the series' counts and to the daily rollups.
 */
function verdictChunk(chunk: readonly Planned[]): {
  verdicts: VerdictWithRank[];
  series: SeriesCount[];
  rollups: RollupCount[];
} {
  const series = new Map<string, SeriesCount>();
  const rollups = new Map<string, RollupCount>();
  const ranked = new Map<string, number>();
  for (const p of [...chunk].sort((a, b) => (a.row.session_id < b.row.session_id ? -1 : 1))) {
    const { record } = p;
    if (countsInSeries(p) && record.plan !== null && record.period_start !== null) {
      const ref = { user_id: p.row.user_id, plan: record.plan, period_start: record.period_start };
      const count = series.get(seriesKey(ref)) ?? { ...ref, n: 0 };
      count.n += 1;
      series.set(seriesKey(ref), count);
      ranked.set(record.session_id, count.n);
    }
    const day = new Date(record.billed_at).toISOString().slice(0, 10);
    const key = `${p.row.user_id}|${day}|${record.reason}`;
    const rollup = rollups.get(key) ?? {
      user_id: p.row.user_id,
      day,
      reason: record.reason,
      sessions: 0,
      audio_ms: 0,
    };
    rollup.sessions += 1;
    rollup.audio_ms += record.audio_ms;
    rollups.set(key, rollup);
  }
  return {
    verdicts: chunk.map((p) => ({ ...p.record, rank: ranked.get(p.record.session_id) ?? null })),
    series: [...series.values()],
    rollups: [...rollups.values()],
  };
}

/**
 * Judges the listed sessions that are due (those already judged are left alone), tells the biller
 * which paid series grew, and returns those not due yet. The verdicts of a pass are recorded all
 * or none, with everything they imply, in one batch; a session that moved since the read fails
 * the batch (VERDICT_MOVED) and the pass reads again. Throws on D1 or queue failure; a retry is
 * safe (verdicts are final: a committed pass finds its sessions judged; a lost usage message is
 * made up for by the biller's sweep, which posts every unposted series).
 */
export async function judgeSessions(
  db: D1Database,
  queues: { verdicts: Queue },
  sessionIds: readonly string[],
  now: number,
  settings: ClassifierConfig,
): Promise<JudgeResult> {
  const outcome: JudgeOutcome = { judged: 0, resent: 0, unattributed: 0, settling: 0, skipped: 0, moved: 0 };
  const grown = new Map<string, SeriesRef>();
  const notDue = new Map<string, number>();
  const toCheck = [...new Set(sessionIds)];
  /** How often each session moved under a failed verdict batch (at the second, it waits a run). */
  const moves = new Map<string, number>();
  /** The verdict inputs of the sessions planned in the last failed batch, as read then. */
  let lastPlanned = new Map<string, string>();

  for (;;) {
    const rows = await readJudgeRows(db, toCheck);
    const counted = { resent: 0, skipped: toCheck.length - rows.length };
    const due: JudgeRow[] = [];
    let explained = lastPlanned.size === 0;
    notDue.clear();
    for (const row of rows) {
      const state = judgeState(row, now, settings.staleMs);
      const before = lastPlanned.get(row.session_id);
      if (before !== undefined && (state !== "due" || before !== verdictInputs(row))) {
        explained = true;
        if (state === "due") moves.set(row.session_id, (moves.get(row.session_id) ?? 0) + 1);
      }
      if (state === "judged") {
        counted.resent += 1;
      } else if (state === "due" && (moves.get(row.session_id) ?? 0) < MAX_MOVES) {
        due.push(row);
      } else if (state === "due") {
        // telemetry keeps arriving for it: the next run judges it, not a pass of this one
        notDue.set(row.session_id, now);
      } else {
        notDue.set(row.session_id, row.settle_due_at ?? row.last_seen_at + settings.staleMs);
      }
    }
    if (!explained) {
      // the batch failed as if a session moved, yet none did (facts only grow, so a move shows):
      // not a race, so do not loop on it
      throw new Error("the verdict batch failed on a moved session, but no session moved");
    }
    outcome.resent = counted.resent;
    outcome.skipped = counted.skipped;
    if (due.length === 0) break;

    const accounts = await loadAccounts(db, [...new Set(due.map((r) => r.user_id))]);
    const planned: Planned[] = due.map((row) => ({
      row,
      ...verdictToRecord(row, accounts.get(row.user_id)),
    }));
    const series = new Map<string, SeriesToEnsure>();
    for (const p of planned) if (p.series) series.set(seriesKey(p.series), p.series);
    const unattributed = planned.filter((p) => p.unattributed);

    // marks the verdicts as listed by this batch (migration 0017's trigger lists the others)
    const token = listedVerdictToken();
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
      const { verdicts, series: counts, rollups } = verdictChunk(chunk);
      verdictStatements.push(statements.length);
      statements.push(recordVerdicts(db, verdicts, token, now));
      // the counts right after the ranks they imply, so the next chunk ranks after them
      if (counts.length > 0) statements.push(addToSeries(db, counts, now));
      statements.push(addToDailyRollups(db, rollups));
    }
    // the pass's sessions in their users' lists by billing time, listed once: with their verdicts
    statements.push(
      ...listSessions(
        db,
        planned.map((p) => ({
          user_id: p.row.user_id,
          session_id: p.record.session_id,
          billed_at: p.record.billed_at,
        })),
      ),
    );
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
    let results: D1Result<{ session_id: string }>[];
    try {
      results = await db.batch<{ session_id: string }>(statements);
    } catch (error) {
      // A session moved since the read: nothing was written. Read again; the sessions whose
      // inputs changed go to the next run, so every failed pass leaves at least one out.
      if (!VERDICT_MOVED.test(String(error))) throw error;
      outcome.moved += 1;
      lastPlanned = new Map(due.map((row) => [row.session_id, verdictInputs(row)]));
      continue;
    }
    const recorded = verdictStatements.reduce((n, index) => n + (results[index]?.results.length ?? 0), 0);
    if (recorded !== planned.length) {
      // a session without a verdict is never deleted, so this cannot happen: say so if it does
      throw new Error(`verdict batch recorded ${recorded} of ${planned.length} verdicts`);
    }
    for (const p of planned) {
      if (
        countsInSeries(p) &&
        p.record.plan !== "free" &&
        p.record.plan !== null &&
        p.record.period_start !== null
      ) {
        const ref = {
          user_id: p.row.user_id,
          plan: p.record.plan as SeriesRef["plan"],
          period_start: p.record.period_start,
        };
        grown.set(seriesKey(ref), ref);
      }
    }
    outcome.judged = planned.length;
    outcome.unattributed = unattributed.length;
    break;
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
