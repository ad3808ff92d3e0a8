/**
 * Judging sessions: the verdict is computed by the versioned rules (shared/src/rules.ts) from the
 * stored facts, recorded together with its daily rollup in one D1 batch, and only then sent to
 * the biller. A verdict is final: it is written once (guarded by `verdict_at IS NULL`) and re-sent
 * as stored whenever a reminder lists an already-judged session (the biller is idempotent on the
 * session id), which covers a crash between the commit and the send.
 */
import { chunkBySize, type JudgeMessage, judge, type SessionFacts, VerdictMessage } from "@aigate/shared";
import type { ClassifierConfig } from "./config";
import {
  addToDailyRollups,
  type JudgedRow,
  type JudgeRow,
  readJudgeRows,
  recordVerdicts,
  type VerdictToRecord,
} from "./queries";
import { sendAll } from "./send";
import { delaySecondsUntil, judgeState } from "./timing";

export interface JudgeOutcome {
  /** Verdicts recorded by this run. */
  judged: number;
  /** Verdicts recorded earlier and sent again. */
  resent: number;
  /** Still settling: reminded again for later. */
  settling: number;
  /** Not judged: unknown to D1, or live (the cron judges them once stale). */
  skipped: number;
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

/** The verdict of a row and the facts it rests on (the update applies only if they still hold). */
export function verdictToRecord(row: JudgeRow): VerdictToRecord {
  const verdict = judge(factsOfRow(row));
  return {
    session_id: row.session_id,
    billable: verdict.billable ? 1 : 0,
    reason: verdict.reason,
    rule_version: verdict.ruleVersion,
    connected: row.connected === 1 ? 1 : 0,
    connect_latency_ms: row.connect_latency_ms,
    turn_failed: row.turn_failed === 1 ? 1 : 0,
    upstream_error: row.upstream_error === 1 ? 1 : 0,
    audio_ms: row.audio_ms,
  };
}

/** The message for the biller, validated: a row that cannot make one is an error, not a send. */
export function verdictMessage(row: JudgedRow | JudgeRow): VerdictMessage {
  return VerdictMessage.parse({
    v: 1,
    kind: "verdict",
    session_id: row.session_id,
    user_id: row.user_id,
    project_id: row.project_id,
    created_at: row.created_at,
    billable: row.billable === 1,
    reason: row.reason,
    rule_version: row.rule_version,
    audio_ms: row.audio_ms,
    judged_at: row.verdict_at,
  });
}

/** Upper bound on re-reads when facts change between the read and the guarded verdict update. */
const MAX_PASSES = 4;
/** Sessions per verdict statement (keeps the JSON parameter small). */
const MAX_SESSIONS_PER_STATEMENT = 1000;
const MAX_IDS_PER_REMINDER = 250;

/**
 * Judges the listed sessions that are due, re-sends the verdicts of those already judged, and
 * reminds again for those still settling. Throws on D1 or queue failure; a retry is safe (a new
 * judge token matches no row twice in the rollups; verdicts already recorded are re-sent).
 */
export async function judgeSessions(
  db: D1Database,
  queues: { verdicts: Queue; telemetry: Queue },
  sessionIds: readonly string[],
  now: number,
  settings: ClassifierConfig,
): Promise<JudgeOutcome> {
  const outcome: JudgeOutcome = { judged: 0, resent: 0, settling: 0, skipped: 0 };
  const toSend = new Map<string, VerdictMessage>();
  const settling = new Map<string, number>();
  let toCheck = [...new Set(sessionIds)];

  for (let pass = 0; toCheck.length > 0; pass += 1) {
    if (pass === MAX_PASSES) throw new Error(`facts kept changing under the verdict update (${pass} passes)`);
    const rows = await readJudgeRows(db, toCheck);
    outcome.skipped += toCheck.length - rows.length;
    const due: JudgeRow[] = [];
    for (const row of rows) {
      const state = judgeState(row, now, settings.staleMs);
      if (state === "judged") {
        toSend.set(row.session_id, verdictMessage(row));
        outcome.resent += 1;
      } else if (state === "due") {
        due.push(row);
      } else if (state === "settling" && row.settle_due_at !== null) {
        settling.set(row.session_id, row.settle_due_at);
      } else {
        outcome.skipped += 1;
      }
    }
    if (due.length === 0) break;

    const token = crypto.randomUUID();
    const statements: D1PreparedStatement[] = [];
    for (const chunk of chunkBySize(due, MAX_SESSIONS_PER_STATEMENT, Number.MAX_SAFE_INTEGER, () => 1)) {
      statements.push(recordVerdicts(db, chunk.map(verdictToRecord), token, now));
    }
    const updates = statements.length;
    for (const chunk of chunkBySize(due, MAX_SESSIONS_PER_STATEMENT, Number.MAX_SAFE_INTEGER, () => 1)) {
      statements.push(
        addToDailyRollups(
          db,
          chunk.map((r) => r.session_id),
          token,
        ),
      );
    }
    const results = await db.batch<JudgedRow>(statements);
    const judged = new Set<string>();
    for (const result of results.slice(0, updates)) {
      for (const row of result.results) {
        judged.add(row.session_id);
        toSend.set(row.session_id, verdictMessage(row));
      }
    }
    outcome.judged += judged.size;
    // Not updated: judged by another run, or facts changed since the read. Look again.
    toCheck = due.map((r) => r.session_id).filter((id) => !judged.has(id));
  }

  await sendAll(queues.verdicts, [...toSend.values()]);

  if (settling.size > 0) {
    const dueAt = [...settling.values()].reduce((a, b) => Math.max(a, b));
    const reminders: JudgeMessage[] = chunkBySize(
      [...settling.keys()],
      MAX_IDS_PER_REMINDER,
      Number.MAX_SAFE_INTEGER,
      () => 1,
    ).map((session_ids) => ({ v: 1, kind: "judge", session_ids, due_at: dueAt }));
    await sendAll(queues.telemetry, reminders, delaySecondsUntil(dueAt, now));
    outcome.settling = settling.size;
  }
  return outcome;
}
