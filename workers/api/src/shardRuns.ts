/**
 * Work across users (the crons) on a sharded D1: the same per-database run once per shard, one
 * shard after the other. Every run here is safe to cut off and repeat, so a shard whose run fails
 * does not keep the others from being done: the failure is logged with its shard, the others go
 * on, and the invocation still fails afterwards (with the first error) so the failure is seen.
 * With one shard this is the run itself, as in an unsharded deployment.
 */
import { errorFields, type Logger, type Shards } from "@aigate/shared";

export async function onEveryShard<T>(
  shards: Shards,
  log: Logger,
  run: (db: D1Database, log: Logger, index: number) => Promise<T>,
): Promise<T[]> {
  if (shards.all.length === 1) return [await run(shards.home, log, 0)];
  const results: T[] = [];
  let firstError: { error: unknown } | null = null;
  for (const [index, db] of shards.all.entries()) {
    const shardLog = log.child({ shard: index });
    try {
      results.push(await run(db, shardLog, index));
    } catch (err) {
      shardLog.error("run failed on this shard; the other shards go on", errorFields(err));
      firstError ??= { error: err };
    }
  }
  if (firstError) throw firstError.error;
  return results;
}
