/**
 * Counting what a handler costs in D1: wraps a D1Database so every statement's result metadata
 * (rows read, rows written, and the time D1 spent running it) is added up. `raw()` is passed through uncounted. Workers log the totals with each request or batch, and
 * the benchmark and tests read them from there.
 */
import { MAX_SHARDS, shardBinding } from "./shardKey";

export interface D1Stats {
  queries: number;
  rowsRead: number;
  rowsWritten: number;
  /**
   * Milliseconds D1 spent executing the statements (`meta.duration`, as D1 reports it: the time
   * inside the database, not the round trip). One D1 database runs one statement at a time, so
   * this is the share of the database an invocation used (docs/scale.md).
   */
  durationMs: number;
  /** The same, per D1 shard (index = shard), when the env has more than one (docs/scale.md). */
  byShard?: D1Stats[];
}

export function emptyStats(): D1Stats {
  return { queries: 0, rowsRead: 0, rowsWritten: 0, durationMs: 0 };
}

function add(
  stats: D1Stats,
  meta: { rows_read?: number; rows_written?: number; duration?: number } | undefined,
) {
  stats.queries += 1;
  stats.rowsRead += meta?.rows_read ?? 0;
  stats.rowsWritten += meta?.rows_written ?? 0;
  stats.durationMs +=
    typeof meta?.duration === "number" && Number.isFinite(meta.duration) ? meta.duration : 0;
}

/** The real statement behind each wrapper (D1's batch() needs the real ones). */
const originals = new WeakMap<D1PreparedStatement, D1PreparedStatement>();

/** Several counters fed by the same statements (a shard's own, and the invocation's total). */
function addAll(sinks: D1Stats[], meta: Parameters<typeof add>[1]) {
  for (const s of sinks) add(s, meta);
}

function wrapStatement(stmt: D1PreparedStatement, stats: D1Stats[]): D1PreparedStatement {
  const wrapped = new Proxy(stmt, {
    get(target, prop, receiver) {
      if (prop === "bind") {
        return (...values: unknown[]) => wrapStatement(target.bind(...values), stats);
      }
      if (prop === "run" || prop === "all") {
        return async () => {
          const result = await target.all();
          addAll(stats, result.meta);
          return result;
        };
      }
      if (prop === "first") {
        return async (column?: string) => {
          const result = await target.all<Record<string, unknown>>();
          addAll(stats, result.meta);
          const row = result.results[0];
          if (row === undefined) return null;
          return column === undefined ? row : (row[column] ?? null);
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  originals.set(wrapped, stmt);
  return wrapped;
}

/** A D1Database that adds every statement's rows read and written to `stats` (and to `total`, if given). */
export function countingD1(
  db: D1Database,
  stats: D1Stats = emptyStats(),
  total?: D1Stats,
): { db: D1Database; stats: D1Stats } {
  const sinks = total ? [stats, total] : [stats];
  const wrapped = new Proxy(db, {
    get(target, prop, receiver) {
      if (prop === "prepare") {
        return (sql: string) => wrapStatement(target.prepare(sql), sinks);
      }
      if (prop === "batch") {
        return async (statements: D1PreparedStatement[]) => {
          const results = await target.batch(statements.map(unwrap));
          for (const r of results) addAll(sinks, r.meta);
          return results;
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { db: wrapped, stats };
}

function unwrap(stmt: D1PreparedStatement): D1PreparedStatement {
  return originals.get(stmt) ?? stmt;
}

/**
 * A copy of a worker's env whose D1 shards (`DB`, `DB_1`, ...) count rows, and the counts: the
 * total, and per shard when there is more than one.
 */
export function withD1Stats<E extends { DB: D1Database }>(env: E): { env: E; stats: D1Stats } {
  const total = emptyStats();
  const copy: Record<string, unknown> = { ...env };
  const byShard: D1Stats[] = [];
  for (let i = 0; i < MAX_SHARDS; i++) {
    const name = shardBinding(i);
    const db = copy[name] as D1Database | undefined;
    if (!db) break;
    const counted = countingD1(db, emptyStats(), total);
    copy[name] = counted.db;
    byShard.push(counted.stats);
  }
  if (byShard.length > 1) total.byShard = byShard;
  return { env: copy as E, stats: total };
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;

/** The log fields every worker reports per request, batch or cron run (durations to the microsecond). */
export function d1LogFields(stats: D1Stats): Record<string, number | number[]> {
  return {
    d1_queries: stats.queries,
    d1_rows_read: stats.rowsRead,
    d1_rows_written: stats.rowsWritten,
    d1_duration_ms: round(stats.durationMs),
    ...(stats.byShard ? { d1_duration_ms_by_shard: stats.byShard.map((s) => round(s.durationMs)) } : {}),
  };
}
