/**
 * SQL of the admin area: dead letters (drained, listed, replayed, purged), the monthly metrics
 * aggregates and reconciliation runs. Every statement is reached only behind the admin key
 * (routes/admin.ts) or from the dead-letter drain.
 */
import type { Cursor } from "./cursor";

// ---------------------------------------------------------------------------------------------
// Dead letters.

export interface DeadLetterRow {
  id: string;
  queue: string;
  message_id: string | null;
  body: string;
  error: string;
  attempts: number;
  first_failed_at: number;
  last_failed_at: number;
  replayed_at: number | null;
  replay_count: number;
}

/** A message as it is parked: id `<original queue>:<message id>`, body as JSON text. */
export type DeadLetterState = "pending" | "replayed" | "all";

const STATE_FILTER = `(?4 = 'all' OR (?4 = 'pending' AND replayed_at IS NULL)
  OR (?4 = 'replayed' AND replayed_at IS NOT NULL))`;
const KEYSET = "(first_failed_at < ?1 OR (first_failed_at = ?1 AND id < ?2))";

/** One page, newest first (first_failed_at, then id), strictly after `after`. */
export async function deadLettersPage(
  db: D1Database,
  opts: { queue: string | null; state: DeadLetterState; after: Cursor | null; limit: number },
): Promise<DeadLetterRow[]> {
  const params = [
    opts.after?.createdAt ?? Number.MAX_SAFE_INTEGER,
    opts.after?.id ?? "",
    opts.limit,
    opts.state,
  ];
  // Two statements rather than `?5 IS NULL OR queue = ?5`, so each can use its index.
  const stmt =
    opts.queue === null
      ? db
          .prepare(
            `SELECT * FROM dead_letters WHERE ${KEYSET} AND ${STATE_FILTER}
             ORDER BY first_failed_at DESC, id DESC LIMIT ?3`,
          )
          .bind(...params)
      : db
          .prepare(
            `SELECT * FROM dead_letters WHERE queue = ?5 AND ${KEYSET} AND ${STATE_FILTER}
             ORDER BY first_failed_at DESC, id DESC LIMIT ?3`,
          )
          .bind(...params, opts.queue);
  const { results } = await stmt.all<DeadLetterRow>();
  return results;
}

export function deadLetterById(db: D1Database, id: string): Promise<DeadLetterRow | null> {
  return db.prepare("SELECT * FROM dead_letters WHERE id = ?1").bind(id).first<DeadLetterRow>();
}

export async function deadLettersByIds(db: D1Database, ids: readonly string[]): Promise<DeadLetterRow[]> {
  const { results } = await db
    .prepare("SELECT * FROM dead_letters WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id")
    .bind(JSON.stringify(ids))
    .all<DeadLetterRow>();
  return results;
}

/** Dead letters of a queue not replayed yet, by id after `afterId` (idx_dead_letters_pending). */
export async function pendingDeadLetters(
  db: D1Database,
  queue: string,
  afterId: string,
  limit: number,
): Promise<DeadLetterRow[]> {
  const { results } = await db
    .prepare(
      `SELECT * FROM dead_letters WHERE queue = ?1 AND replayed_at IS NULL AND id > ?2
       ORDER BY id LIMIT ?3`,
    )
    .bind(queue, afterId, limit)
    .all<DeadLetterRow>();
  return results;
}

/** Records that these dead letters were sent back to their queue (once per send). */
export async function markReplayed(
  db: D1Database,
  ids: readonly string[],
  now: number,
): Promise<{ id: string; replay_count: number }[]> {
  const { results } = await db
    .prepare(
      `UPDATE dead_letters SET replayed_at = ?2, replay_count = replay_count + 1
       WHERE id IN (SELECT value FROM json_each(?1))
       RETURNING id, replay_count`,
    )
    .bind(JSON.stringify(ids), now)
    .all<{ id: string; replay_count: number }>();
  return results;
}

/** Deletes the given dead letters; without `force` only those already replayed. */
export async function purgeByIds(db: D1Database, ids: readonly string[], force: boolean): Promise<string[]> {
  const { results } = await db
    .prepare(
      `DELETE FROM dead_letters
       WHERE id IN (SELECT value FROM json_each(?1)) AND (?2 = 1 OR replayed_at IS NOT NULL)
       RETURNING id`,
    )
    .bind(JSON.stringify(ids), force ? 1 : 0)
    .all<{ id: string }>();
  return results.map((r) => r.id);
}

/** Deletes the replayed dead letters of a queue (never the pending ones), at most `limit`. */
export async function purgeReplayedInQueue(db: D1Database, queue: string, limit: number): Promise<string[]> {
  const { results } = await db
    .prepare(
      `DELETE FROM dead_letters WHERE id IN (
         SELECT id FROM dead_letters WHERE queue = ?1 AND replayed_at IS NOT NULL ORDER BY id LIMIT ?2)
       RETURNING id`,
    )
    .bind(queue, limit)
    .all<{ id: string }>();
  return results.map((r) => r.id);
}

// ---------------------------------------------------------------------------------------------
// Monthly metrics (definitions: docs/operations.md). All statements run in one batch, so they
// read one consistent snapshot.

export interface MetricsWindow {
  /** Month start, epoch ms (inclusive). */
  start: number;
  /** End snapshot, epoch ms (exclusive): the month's end, or now for the current month. */
  end: number;
  /** "YYYY-MM-DD" of the month's first day, and of the first day after the window. */
  startDay: string;
  endDay: string;
}

/** The plan in force per user at an instant: the latest plan_history row before `?n`. */
const planBefore = (param: string) => `
  SELECT user_id, plan FROM (
    SELECT user_id, plan, row_number() OVER (PARTITION BY user_id ORDER BY effective_from DESC) AS rn
    FROM plan_history WHERE effective_from < ${param})
  WHERE rn = 1`;

export interface MetricsRows {
  payingAtEnd: { plan: string; n: number }[];
  churn: { paying_at_start: number; churned: number };
  conversion: { free_active: number; converted: number };
  sessions: { reason: string; n: number }[];
  invoicedCents: number;
}

export async function metricsRows(db: D1Database, w: MetricsWindow): Promise<MetricsRows> {
  const [payingAtEnd, churn, conversion, sessions, invoiced] = await db.batch([
    db
      .prepare(
        `WITH at_end AS (${planBefore("?1")})
         SELECT plan, count(*) AS n FROM at_end WHERE plan <> 'free' GROUP BY plan ORDER BY plan`,
      )
      .bind(w.end),
    db
      .prepare(
        `WITH at_start AS (${planBefore("?1")}), at_end AS (${planBefore("?2")})
         SELECT count(*) AS paying_at_start,
                coalesce(sum(CASE WHEN e.plan IS NULL OR e.plan = 'free' THEN 1 ELSE 0 END), 0) AS churned
         FROM at_start s LEFT JOIN at_end e ON e.user_id = s.user_id
         WHERE s.plan <> 'free'`,
      )
      .bind(w.start, w.end),
    db
      .prepare(
        `WITH at_start AS (${planBefore("?1")}),
           converted AS (SELECT DISTINCT user_id FROM plan_history
                         WHERE effective_from >= ?1 AND effective_from < ?2 AND plan <> 'free'),
           active AS (SELECT DISTINCT user_id FROM daily_rollups WHERE day >= ?3 AND day < ?4),
           free_at_start AS (
             SELECT c.user_id FROM (SELECT user_id FROM active UNION SELECT user_id FROM converted) AS c
             LEFT JOIN at_start s ON s.user_id = c.user_id
             WHERE s.plan IS NULL OR s.plan = 'free')
         SELECT (SELECT count(*) FROM free_at_start) AS free_active,
                (SELECT count(*) FROM free_at_start f JOIN converted v ON v.user_id = f.user_id) AS converted`,
      )
      .bind(w.start, w.end, w.startDay, w.endDay),
    db
      .prepare(
        `SELECT reason, sum(sessions) AS n FROM daily_rollups WHERE day >= ?1 AND day < ?2
         GROUP BY reason ORDER BY reason`,
      )
      .bind(w.startDay, w.endDay),
    db
      .prepare(
        `SELECT coalesce(sum(total_cents), 0) AS cents FROM invoices
         WHERE finalized_at >= ?1 AND finalized_at < ?2 AND status IN ('open', 'paid', 'uncollectible')`,
      )
      .bind(w.start, w.end),
  ]);
  return {
    payingAtEnd: rowsOf<{ plan: string; n: number }>(payingAtEnd),
    churn: rowsOf<{ paying_at_start: number; churned: number }>(churn)[0] ?? {
      paying_at_start: 0,
      churned: 0,
    },
    conversion: rowsOf<{ free_active: number; converted: number }>(conversion)[0] ?? {
      free_active: 0,
      converted: 0,
    },
    sessions: rowsOf<{ reason: string; n: number }>(sessions),
    invoicedCents: rowsOf<{ cents: number }>(invoiced)[0]?.cents ?? 0,
  };
}

function rowsOf<T>(result: D1Result | undefined): T[] {
  return (result?.results ?? []) as T[];
}

// ---------------------------------------------------------------------------------------------
// Reconciliation runs (written by the biller).

export interface ReconciliationRunRow {
  id: string;
  started_at: number;
  finished_at: number | null;
  periods_checked: number;
  mismatches: number;
  repaired: number;
  report: string;
}

export async function latestReconciliationRuns(
  db: D1Database,
  limit: number,
): Promise<ReconciliationRunRow[]> {
  const { results } = await db
    .prepare("SELECT * FROM reconciliation_runs ORDER BY started_at DESC, id DESC LIMIT ?1")
    .bind(limit)
    .all<ReconciliationRunRow>();
  return results;
}
