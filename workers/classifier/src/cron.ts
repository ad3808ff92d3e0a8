/**
 * The minute cron judges what the agenda (session_due) says is due: it reads the due rows in key
 * order, judges their sessions in one run (so a run's series counts and rollups are written once
 * per user, not once per session), then, in one transaction, deletes the rows it read and lists
 * again the sessions that were not due yet. A crash before that leaves the rows for the next run,
 * which finds the judged sessions judged (verdicts are final) and judges the rest. Usage recorded
 * by a run that crashed before telling the biller reaches it through its series rows (the biller's
 * minute sweep posts them).
 */
import { createLogger } from "@aigate/shared";
import { readConfig } from "./config";
import { judgeSessions } from "./judging";
import { type DueRow, deleteDueRows, listDue, readDueRows } from "./queries";

/** Agenda rows read per pass. */
const ROWS_PER_PASS = 100;
/** Sessions judged per pass, at most (a pass takes whole rows while under it). */
export const SESSIONS_PER_PASS = 2000;
/**
 * A run starts no new pass after this long (the rest waits for the next minute): most of a pass
 * is waiting on D1, so the CPU it takes stays far below the limit, and the run ends before the
 * next minute's starts.
 */
export const RUN_BUDGET_MS = 45_000;

export interface SweepOutcome {
  rows: number;
  judged: number;
  /** Listed again: not due yet, or moving under the verdict batch. */
  relisted: number;
  /** Verdict batches that failed whole because a session moved under them, and were read again. */
  moved: number;
  passes: number;
  /** Due rows were left for the next run (the budget ran out). */
  more: boolean;
}

/** The rows a pass takes: in order, whole rows, until SESSIONS_PER_PASS (always at least one). */
function takeRows(rows: DueRow[], maxSessions: number): { taken: DueRow[]; ids: string[] } {
  const taken: DueRow[] = [];
  const ids = new Set<string>();
  for (const row of rows) {
    const list = JSON.parse(row.session_ids) as string[];
    if (taken.length > 0 && ids.size + list.length > maxSessions) break;
    taken.push(row);
    for (const id of list) ids.add(id);
  }
  return { taken, ids: [...ids] };
}

export async function sweepDueSessions(
  env: Env,
  now: number,
  opts: { sessionsPerPass?: number; budgetMs?: number } = {},
): Promise<SweepOutcome> {
  const log = createLogger("classifier", { cron: "judge" });
  const settings = readConfig(env);
  const started = Date.now();
  const outcome: SweepOutcome = { rows: 0, judged: 0, relisted: 0, moved: 0, passes: 0, more: false };
  for (;;) {
    const rows = await readDueRows(env.DB, now, ROWS_PER_PASS);
    if (rows.length === 0) break;
    const { taken, ids } = takeRows(rows, opts.sessionsPerPass ?? SESSIONS_PER_PASS);
    const judged = await judgeSessions(env.DB, { verdicts: env.VERDICTS }, ids, now, settings);
    await env.DB.batch([deleteDueRows(env.DB, taken), ...listDue(env.DB, judged.notDue)]);
    outcome.rows += taken.length;
    outcome.judged += judged.judged;
    outcome.relisted += judged.notDue.length;
    outcome.moved += judged.moved;
    outcome.passes += 1;
    if (taken.length === rows.length && rows.length < ROWS_PER_PASS) break;
    if (Date.now() - started >= (opts.budgetMs ?? RUN_BUDGET_MS)) {
      outcome.more = true;
      break;
    }
  }
  if (outcome.rows > 0) log.info("judged due sessions", { ...outcome });
  return outcome;
}
