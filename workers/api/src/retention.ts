/**
 * Retention (docs/operations.md "Retention"): the hourly cron deletes the operational rows that no
 * longer matter for money or idempotency, so these tables stay bounded:
 *
 * - `processed_stripe_events` applied longer ago than RETENTION_STRIPE_EVENTS_DAYS (at least a day
 *   beyond Stripe's three days of resends, so a resent event is always still deduplicated);
 * - `dead_letters` replayed longer ago than RETENTION_DEAD_LETTERS_DAYS (a pending one, never
 *   replayed, is never deleted, whatever its age; purged ones are already gone);
 * - `reconciliation_runs` started longer ago than RETENTION_RECONCILIATION_DAYS.
 *
 * Each batch is one statement deleting at most `batchSize` of the oldest rows past the window
 * (through an index in time order), and a run does at most `maxBatches` per table. Nothing is
 * remembered between runs: a run cut off anywhere has deleted whole batches only, and the next
 * run finds what is left by the same criterion, so re-running is harmless and a backlog is
 * worked off over several runs.
 *
 * On a sharded D1, `processed_stripe_events` and `dead_letters` are global tables in the home
 * database only, while each shard keeps its own `reconciliation_runs`: `runRetentionOnShards`
 * runs the home database's three tables and every other shard's reconciliation runs.
 */
import { type Logger, onEveryShard, type Shards } from "@aigate/shared";
import type { RetentionConfig } from "./config";

/** Rows deleted per statement. */
export const RETENTION_BATCH_SIZE = 500;
/** Statements per table and run (so one run deletes at most 10 000 rows of a table). */
export const RETENTION_MAX_BATCHES = 20;

export const RETAINED_TABLES = ["processed_stripe_events", "dead_letters", "reconciliation_runs"] as const;
export type RetainedTable = (typeof RETAINED_TABLES)[number];
/** The retained tables every shard holds (the others are global, in the home database only). */
export const PER_SHARD_TABLES: readonly RetainedTable[] = ["reconciliation_runs"];

/**
 * One batch per table: the oldest rows past the cutoff (?1), at most ?2 of them. Each subquery
 * walks the table's retention index (migrations/0011_add_retention_indexes.sql).
 */
const BATCH_SQL: Record<RetainedTable, string> = {
  processed_stripe_events: `DELETE FROM processed_stripe_events WHERE event_id IN (
      SELECT event_id FROM processed_stripe_events WHERE processed_at < ?1 ORDER BY processed_at LIMIT ?2)`,
  dead_letters: `DELETE FROM dead_letters WHERE id IN (
      SELECT id FROM dead_letters WHERE replayed_at IS NOT NULL AND replayed_at < ?1 ORDER BY replayed_at LIMIT ?2)
      AND replayed_at IS NOT NULL`, // and the delete itself refuses a pending one
  reconciliation_runs: `DELETE FROM reconciliation_runs WHERE id IN (
      SELECT id FROM reconciliation_runs WHERE started_at < ?1 ORDER BY started_at LIMIT ?2)`,
};

export interface RetentionResult {
  /** Rows deleted per table by this run. */
  deleted: Record<RetainedTable, number>;
  /** Tables whose last batch was full: rows past the window may remain for the next run. */
  more: RetainedTable[];
}

export interface RetentionOptions {
  batchSize?: number;
  maxBatches?: number;
  /** The tables this run looks at (default all of them). */
  tables?: readonly RetainedTable[];
}

function windowOf(table: RetainedTable, config: RetentionConfig): number {
  switch (table) {
    case "processed_stripe_events":
      return config.stripeEventsMs;
    case "dead_letters":
      return config.deadLettersMs;
    case "reconciliation_runs":
      return config.reconciliationMs;
  }
}

/** One retention run at `now`; logs one line with what it deleted. */
export async function runRetention(
  db: D1Database,
  config: RetentionConfig,
  now: number,
  log: Logger,
  opts: RetentionOptions = {},
): Promise<RetentionResult> {
  const batchSize = opts.batchSize ?? RETENTION_BATCH_SIZE;
  const maxBatches = opts.maxBatches ?? RETENTION_MAX_BATCHES;
  const deleted: Record<RetainedTable, number> = {
    processed_stripe_events: 0,
    dead_letters: 0,
    reconciliation_runs: 0,
  };
  const more: RetainedTable[] = [];
  const tables = opts.tables ?? RETAINED_TABLES;
  for (const table of RETAINED_TABLES.filter((t) => tables.includes(t))) {
    const cutoff = now - windowOf(table, config);
    const statement = db.prepare(BATCH_SQL[table]).bind(cutoff, batchSize);
    for (let batch = 0; batch < maxBatches; batch++) {
      const { meta } = await statement.run();
      deleted[table] += meta.changes;
      if (meta.changes < batchSize) break;
      if (batch === maxBatches - 1) more.push(table);
    }
  }
  log.info("retention done", { deleted, more });
  return { deleted, more };
}

/**
 * Retention on every shard, added up: the home database's tables (global and its own), then each
 * other shard's reconciliation runs. A shard that fails leaves the others done (onEveryShard).
 */
export async function runRetentionOnShards(
  shards: Shards,
  config: RetentionConfig,
  now: number,
  log: Logger,
  opts: Omit<RetentionOptions, "tables"> = {},
): Promise<RetentionResult> {
  const runs = await onEveryShard(shards, log, "retention", (db, shardLog, index) =>
    runRetention(db, config, now, shardLog, index === 0 ? opts : { ...opts, tables: PER_SHARD_TABLES }),
  );
  const deleted: Record<RetainedTable, number> = {
    processed_stripe_events: 0,
    dead_letters: 0,
    reconciliation_runs: 0,
  };
  const more = new Set<RetainedTable>();
  for (const run of runs) {
    for (const table of RETAINED_TABLES) deleted[table] += run.deleted[table];
    for (const table of run.more) more.add(table);
  }
  return { deleted, more: RETAINED_TABLES.filter((t) => more.has(t)) };
}
