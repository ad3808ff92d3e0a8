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

/**
 * Each subscription's paying span `(started_at, stopped_at]`, from the subscriptions table (the
 * latest state Stripe reported; D1 keeps no status history):
 * - `active`, `past_due`: paying since its start, still paying (Stripe counts past_due in MRR).
 * - `canceled`: was paying from its start until it ended (`ended_at`).
 * - `unpaid`: was paying until its payment started failing (`past_due_since`).
 * - any other status (`trialing`, `incomplete`, `incomplete_expired`, `paused`): never paying.
 */
const PAID_SPANS = `paid_spans AS (
  SELECT stripe_subscription_id, user_id, plan, started_at,
         CASE WHEN status = 'unpaid' THEN coalesce(past_due_since, started_at) ELSE ended_at END AS stopped_at
  FROM subscriptions
  WHERE status IN ('active', 'past_due', 'canceled', 'unpaid'))`;

/** Subscriptions paying at the instant `t`: started before it, not stopped before it. */
const payingAt = (t: string) =>
  `SELECT * FROM paid_spans WHERE started_at < ${t} AND (stopped_at IS NULL OR stopped_at >= ${t})`;

/** Subscriptions paying at some instant of `[start, end)`. */
const payingDuring = (start: string, end: string) =>
  `SELECT * FROM paid_spans WHERE started_at < ${end}
     AND (stopped_at IS NULL OR (stopped_at >= ${start} AND stopped_at > started_at))`;

/**
 * The plan of a paying subscription at `t`: its latest plan_history row before `t` (plan changes
 * within a subscription), else its current plan.
 */
const planAt = (t: string) => `coalesce(
  (SELECT h.plan FROM plan_history h
   WHERE h.user_id = p.user_id AND h.stripe_subscription_id = p.stripe_subscription_id AND h.effective_from < ${t}
   ORDER BY h.effective_from DESC LIMIT 1),
  p.plan)`;

/** Invoices that bill revenue of the window: finalized in it, and neither draft nor void. */
const INVOICED = `finalized_at >= ?1 AND finalized_at < ?2 AND status IN ('open', 'paid', 'uncollectible')`;

export interface MetricsRows {
  /** Subscriptions paying at the end of the window, by their plan then (for MRR). */
  subscriptionsAtEnd: { plan: string; n: number }[];
  /** Customers paying at the end of the window, by the plan of their newest paying subscription. */
  customersAtEnd: { plan: string; n: number }[];
  churn: { paying_at_start: number; churned: number };
  conversion: { free_active: number; converted: number };
  sessions: { reason: string; n: number }[];
  invoicedCents: number;
  /** Customers paying at some time in the window, or billed in it (ARPU's denominator). */
  arpuCustomers: number;
}

export async function metricsRows(db: D1Database, w: MetricsWindow): Promise<MetricsRows> {
  const [subscriptionsAtEnd, customersAtEnd, churn, conversion, sessions, invoiced, arpuCustomers] =
    await db.batch([
      db
        .prepare(
          `WITH ${PAID_SPANS}, at_end AS (SELECT ${planAt("?1")} AS plan FROM (${payingAt("?1")}) AS p)
           SELECT plan, count(*) AS n FROM at_end GROUP BY plan ORDER BY plan`,
        )
        .bind(w.end),
      db
        .prepare(
          `WITH ${PAID_SPANS},
             at_end AS (
               SELECT ${planAt("?1")} AS plan,
                      row_number() OVER (PARTITION BY p.user_id
                                         ORDER BY p.started_at DESC, p.stripe_subscription_id DESC) AS rn
               FROM (${payingAt("?1")}) AS p)
           SELECT plan, count(*) AS n FROM at_end WHERE rn = 1 GROUP BY plan ORDER BY plan`,
        )
        .bind(w.end),
      db
        .prepare(
          `WITH ${PAID_SPANS},
             at_start AS (SELECT DISTINCT user_id FROM (${payingAt("?1")})),
             at_end AS (SELECT DISTINCT user_id FROM (${payingAt("?2")}))
           SELECT count(*) AS paying_at_start,
                  coalesce(sum(CASE WHEN e.user_id IS NULL THEN 1 ELSE 0 END), 0) AS churned
           FROM at_start s LEFT JOIN at_end e ON e.user_id = s.user_id`,
        )
        .bind(w.start, w.end),
      db
        .prepare(
          `WITH ${PAID_SPANS},
             at_start AS (SELECT DISTINCT user_id FROM (${payingAt("?1")})),
             converted AS (SELECT user_id FROM (${payingDuring("?1", "?2")}) EXCEPT SELECT user_id FROM at_start),
             active AS (SELECT DISTINCT user_id FROM daily_rollups WHERE day >= ?3 AND day < ?4),
             free_active AS (
               SELECT user_id FROM active EXCEPT SELECT user_id FROM at_start
               UNION SELECT user_id FROM converted)
           SELECT (SELECT count(*) FROM free_active) AS free_active,
                  (SELECT count(*) FROM converted) AS converted`,
        )
        .bind(w.start, w.end, w.startDay, w.endDay),
      db
        .prepare(
          `SELECT reason, sum(sessions) AS n FROM daily_rollups WHERE day >= ?1 AND day < ?2
           GROUP BY reason ORDER BY reason`,
        )
        .bind(w.startDay, w.endDay),
      db
        .prepare(`SELECT coalesce(sum(total_cents), 0) AS cents FROM invoices WHERE ${INVOICED}`)
        .bind(w.start, w.end),
      db
        .prepare(
          `WITH ${PAID_SPANS}
           SELECT count(*) AS n FROM (
             SELECT user_id FROM (${payingDuring("?1", "?2")})
             UNION SELECT user_id FROM invoices WHERE ${INVOICED} AND total_cents > 0)`,
        )
        .bind(w.start, w.end),
    ]);
  return {
    subscriptionsAtEnd: rowsOf<{ plan: string; n: number }>(subscriptionsAtEnd),
    customersAtEnd: rowsOf<{ plan: string; n: number }>(customersAtEnd),
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
    arpuCustomers: rowsOf<{ n: number }>(arpuCustomers)[0]?.n ?? 0,
  };
}

/** Adds up two lists of counts by key (`plan`, `reason`), in key order as the SQL gives them. */
function addCounts<R extends { n: number }>(a: readonly R[], b: readonly R[], keyOf: (r: R) => string): R[] {
  const sums = new Map<string, R>();
  for (const r of [...a, ...b]) {
    const seen = sums.get(keyOf(r));
    sums.set(keyOf(r), seen ? { ...seen, n: seen.n + r.n } : { ...r });
  }
  return [...sums.values()].sort((x, y) => (keyOf(x) < keyOf(y) ? -1 : keyOf(x) > keyOf(y) ? 1 : 0));
}

/**
 * The metrics rows of two disjoint sets of users, as one. Every figure of `MetricsRows` is a
 * count or a sum over users (customers, subscriptions, sessions, cents), and a user's rows
 * (subscriptions, plan history, daily rollups, invoices) all live on the user's shard, so the
 * shards' figures add up: a distinct-user count of one shard never meets a user of another. The
 * rates (churn, conversion, success, ARPU) are not here: metricsBody computes them from the
 * summed numerators and denominators, never by averaging the shards' rates.
 */
export function addMetricsRows(a: MetricsRows, b: MetricsRows): MetricsRows {
  return {
    subscriptionsAtEnd: addCounts(a.subscriptionsAtEnd, b.subscriptionsAtEnd, (r) => r.plan),
    customersAtEnd: addCounts(a.customersAtEnd, b.customersAtEnd, (r) => r.plan),
    churn: {
      paying_at_start: a.churn.paying_at_start + b.churn.paying_at_start,
      churned: a.churn.churned + b.churn.churned,
    },
    conversion: {
      free_active: a.conversion.free_active + b.conversion.free_active,
      converted: a.conversion.converted + b.conversion.converted,
    },
    sessions: addCounts(a.sessions, b.sessions, (r) => r.reason),
    invoicedCents: a.invoicedCents + b.invoicedCents,
    arpuCustomers: a.arpuCustomers + b.arpuCustomers,
  };
}

/** The metrics rows of every shard (one consistent snapshot per shard), added up. */
export async function metricsRowsOfShards(
  shards: readonly D1Database[],
  w: MetricsWindow,
): Promise<MetricsRows> {
  let total: MetricsRows | null = null;
  for (const db of shards) {
    const rows = await metricsRows(db, w);
    total = total ? addMetricsRows(total, rows) : rows;
  }
  if (!total) throw new Error("at least one D1 shard is needed");
  return total;
}

function rowsOf<T>(result: D1Result | undefined): T[] {
  return (result?.results ?? []) as T[];
}

// ---------------------------------------------------------------------------------------------
// Reconciliation runs (written by the biller, each shard's run on that shard).

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

/** Newest first: `started_at DESC, id DESC`, the order of `latestReconciliationRuns`. */
function newestRunFirst(a: ReconciliationRunRow, b: ReconciliationRunRow): number {
  return b.started_at - a.started_at || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

/**
 * The latest `limit` runs over every shard: each shard's latest `limit` (the newest `limit` of all
 * are among them), merged in the same order, then cut to `limit`.
 */
export async function latestReconciliationRunsOfShards(
  shards: readonly D1Database[],
  limit: number,
): Promise<ReconciliationRunRow[]> {
  const runs: ReconciliationRunRow[] = [];
  for (const db of shards) runs.push(...(await latestReconciliationRuns(db, limit)));
  return runs.sort(newestRunFirst).slice(0, limit);
}
