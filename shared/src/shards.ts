/**
 * D1 shards: a user's rows live in one database, chosen by a fixed hash of the user id
 * (docs/scale.md "Sharding"). The `DB` binding is shard 0 and also holds the global tables
 * (`api_keys`, `customer_directory`, `processed_stripe_events`, `dead_letters`); shards 1..N-1
 * are the bindings `DB_1`..`DB_<N-1>`. `D1_SHARDS` (default 1) says how many there are. With one
 * shard every table is in `DB`, as in an unsharded deployment.
 *
 * Every shard carries the whole schema (the same migrations), so a statement never depends on
 * which shard it runs on; only the rows differ.
 */
import { errorFields, type Logger } from "./log";
import { MAX_SHARDS, shardBinding, shardBucket } from "./shardKey";

export { MAX_SHARDS, SHARD_BUCKETS, shardBinding, shardBucket } from "./shardKey";

export interface Shards {
  /** Shard 0: the global tables, and the users hashed to it. */
  readonly home: D1Database;
  /** Every shard in order; `all[0]` is `home`. */
  readonly all: readonly D1Database[];
  /** The shard holding this user's rows. */
  of(userId: string): D1Database;
  /** The index (0..N-1) of the shard holding this user's rows. */
  indexOf(userId: string): number;
}

/** The number of shards `D1_SHARDS` asks for (unset or empty: 1). */
export function shardCount(env: { D1_SHARDS?: unknown }): number {
  const raw = env.D1_SHARDS;
  if (raw === undefined || raw === null || raw === "") return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > MAX_SHARDS) {
    throw new Error(
      `invalid worker settings: D1_SHARDS: expected an integer from 1 to ${MAX_SHARDS}, got ${String(raw)}`,
    );
  }
  return n;
}

/** Shards over the given databases, in order (the first is home). */
export function shardsOver(all: readonly D1Database[]): Shards {
  const home = all[0];
  if (!home) throw new Error("at least one D1 shard is needed");
  const indexOf = (userId: string) => shardBucket(userId) % all.length;
  return {
    home,
    all,
    indexOf,
    of: (userId) => all[indexOf(userId)] ?? home,
  };
}

/** The shards of a worker's env: `DB`, then `DB_1`.. up to `D1_SHARDS`; a missing binding is a configuration error. */
export function shardsOf(env: { DB: D1Database; D1_SHARDS?: unknown }): Shards {
  const n = shardCount(env);
  const bindings = env as unknown as Record<string, D1Database | undefined>;
  const all: D1Database[] = [];
  for (let i = 0; i < n; i++) {
    const db = bindings[shardBinding(i)];
    if (!db)
      throw new Error(
        `invalid worker settings: ${shardBinding(i)}: D1_SHARDS is ${n} but this binding is missing`,
      );
    all.push(db);
  }
  return shardsOver(all);
}

/**
 * Groups items by the shard of their user, in the order the shards first appear; each group
 * keeps the items' order.
 */
export function groupByShard<T>(
  shards: Shards,
  items: readonly T[],
  userOf: (item: T) => string,
): Array<{ db: D1Database; index: number; items: T[] }> {
  const groups = new Map<number, T[]>();
  for (const item of items) {
    const index = shards.indexOf(userOf(item));
    const group = groups.get(index);
    if (group) group.push(item);
    else groups.set(index, [item]);
  }
  return [...groups].map(([index, grouped]) => ({
    db: shards.all[index] ?? shards.home,
    index,
    items: grouped,
  }));
}

/** What a run on every shard did: each shard's result that finished, and the first failure. */
export interface ShardRuns<T> {
  results: T[];
  failure: { error: unknown } | null;
}

/**
 * Work across users (the crons) on every shard, one after the other. Every such run is safe to
 * cut off and repeat, so a shard whose run fails does not keep the others from being done: the
 * failure is logged at error with its shard (`what` says which run), the other shards go on, and
 * the first failure is returned for the caller to raise once it has logged what was done. With
 * one shard this is the run itself: its error is thrown at once, as in an unsharded deployment.
 */
export async function settleEveryShard<T>(
  shards: Shards,
  log: Logger,
  what: string,
  run: (db: D1Database, log: Logger, index: number) => Promise<T>,
): Promise<ShardRuns<T>> {
  if (shards.all.length === 1) return { results: [await run(shards.home, log, 0)], failure: null };
  const results: T[] = [];
  let failure: ShardRuns<T>["failure"] = null;
  for (const [index, db] of shards.all.entries()) {
    const shardLog = log.child({ shard: index });
    try {
      results.push(await run(db, shardLog, index));
    } catch (err) {
      shardLog.error(`${what} failed on this shard; the other shards go on`, errorFields(err));
      failure ??= { error: err };
    }
  }
  return { results, failure };
}

/** `settleEveryShard`, then the first failure thrown: the results of every shard, or an error. */
export async function onEveryShard<T>(
  shards: Shards,
  log: Logger,
  what: string,
  run: (db: D1Database, log: Logger, index: number) => Promise<T>,
): Promise<T[]> {
  const { results, failure } = await settleEveryShard(shards, log, what, run);
  if (failure) throw failure.error;
  return results;
}

/**
 * Adds one shard's outcome into the total, field by field: counts are added, flags OR-ed (any
 * shard that left work makes the total say so).
 */
export function addOutcome<T extends { [K in keyof T]: number | boolean }>(total: T, part: T): T {
  for (const key of Object.keys(part) as (keyof T)[]) {
    const value = part[key];
    const sum =
      typeof value === "boolean" ? Boolean(total[key]) || value : Number(total[key] ?? 0) + Number(value);
    total[key] = sum as T[keyof T];
  }
  return total;
}
