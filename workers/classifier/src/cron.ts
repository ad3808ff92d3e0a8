/**
 * The minute cron judges what the agenda (session_due) says is due: it reads the due rows in key
 * order, judges their sessions in one run (so a run's series counts and rollups are written once
 * per user, not once per session), then, in one transaction, deletes the rows it read and lists
 * again the sessions that were not due yet. A crash before that leaves the rows for the next run,
 * which finds the judged sessions judged (verdicts are final) and judges the rest. Usage recorded
 * by a run that crashed before telling the biller reaches it through its series rows (the biller's
 * minute sweep posts them).
 *
 * With several D1 shards the run judges each shard's agenda in turn (its due rows, sessions,
 * series and rollups are all on it), each shard getting its share of the run's time budget, and
 * adds their outcomes up. A shard whose pass fails does not stop the others; the run then fails
 * (its rows stay for the next run).
 */
import { addOutcome, createLogger, errorFields, shardsOf } from "@aigate/shared";
import { type ClassifierConfig, readConfig } from "./config";
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

function emptyOutcome(): SweepOutcome {
  return { rows: 0, judged: 0, relisted: 0, moved: 0, passes: 0, more: false };
}

/** One shard's agenda: passes until its due rows are done or `deadline` (epoch ms, wall clock) is past. */
async function sweepShard(
  db: D1Database,
  verdicts: Queue,
  now: number,
  settings: ClassifierConfig,
  sessionsPerPass: number,
  deadline: number,
  outcome: SweepOutcome,
): Promise<void> {
  for (;;) {
    const rows = await readDueRows(db, now, ROWS_PER_PASS);
    if (rows.length === 0) break;
    const { taken, ids } = takeRows(rows, sessionsPerPass);
    const judged = await judgeSessions(db, { verdicts }, ids, now, settings);
    await db.batch([deleteDueRows(db, taken), ...listDue(db, judged.notDue)]);
    outcome.rows += taken.length;
    outcome.judged += judged.judged;
    outcome.relisted += judged.notDue.length;
    outcome.moved += judged.moved;
    outcome.passes += 1;
    if (taken.length === rows.length && rows.length < ROWS_PER_PASS) break;
    if (Date.now() >= deadline) {
      outcome.more = true;
      break;
    }
  }
}

export async function sweepDueSessions(
  env: Env,
  now: number,
  opts: { sessionsPerPass?: number; budgetMs?: number } = {},
): Promise<SweepOutcome> {
  const log = createLogger("classifier", { cron: "judge" });
  const settings = readConfig(env);
  const shards = shardsOf(env);
  const started = Date.now();
  const budgetMs = opts.budgetMs ?? RUN_BUDGET_MS;
  const sessionsPerPass = opts.sessionsPerPass ?? SESSIONS_PER_PASS;
  const outcome = emptyOutcome();
  const byShard: SweepOutcome[] = [];
  let failure: unknown = null;
  for (const [index, db] of shards.all.entries()) {
    // shard i may run until (i + 1) / N of the budget: a large backlog on one shard leaves the
    // others their share, and time one leaves unused goes to the next
    const deadline = started + (budgetMs * (index + 1)) / shards.all.length;
    const part = emptyOutcome();
    try {
      await sweepShard(db, env.VERDICTS, now, settings, sessionsPerPass, deadline, part);
    } catch (err) {
      if (shards.all.length === 1) throw err;
      failure ??= err;
      part.more = true;
      log.error("judging a shard's due sessions failed", { shard: index, ...part, ...errorFields(err) });
    }
    byShard.push(part);
    addOutcome(outcome, part);
  }
  if (outcome.rows > 0) {
    log.info("judged due sessions", {
      ...outcome,
      ...(shards.all.length > 1 ? { rows_by_shard: byShard.map((p) => p.rows) } : {}),
    });
  }
  if (failure !== null) throw failure;
  return outcome;
}
