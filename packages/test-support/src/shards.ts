/**
 * Tests of a sharded deployment on the workers' runtime: every worker's test run has the D1
 * bindings DB_1..DB_3 besides DB (worker-vitest.ts); `shardedEnv` migrates them and returns the
 * env with D1_SHARDS set, and `userOnShard` names a user whose rows live on a given shard.
 */

import { applyD1Migrations, env } from "cloudflare:test";
import { shardBucket } from "@aigate/shared/shardKey";

/** The largest number of shards a worker test can ask for. */
export const TEST_SHARDS = 4;

/** `base` with `n` migrated D1 shards (DB, DB_1..DB_<n-1>) and D1_SHARDS = n. */
export async function shardedEnv<E extends object>(
  base: E,
  n: number = TEST_SHARDS,
): Promise<E & { D1_SHARDS: string }> {
  if (n < 1 || n > TEST_SHARDS) throw new Error(`worker tests have at most ${TEST_SHARDS} shards`);
  const shards = [env.DB_1, env.DB_2, env.DB_3].slice(0, n - 1);
  for (const db of shards) await applyD1Migrations(db, env.TEST_MIGRATIONS);
  return { ...base, D1_SHARDS: String(n) };
}

/** The first user id `<prefix><k>` (k = 0, 1, ...) whose rows live on shard `index` of `n`. */
export function userOnShard(prefix: string, index: number, n: number = TEST_SHARDS): string {
  for (let k = 0; k < 10_000; k++) {
    const id = `${prefix}${k}`;
    if (shardBucket(id) % n === index) return id;
  }
  throw new Error(`no user id with prefix ${prefix} on shard ${index} of ${n}`);
}
