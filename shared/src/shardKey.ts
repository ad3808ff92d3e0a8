/**
 * Which shard a user's rows live on, with no runtime types: used by the workers (shards.ts) and by
 * the tools beside them (the local stack, the benchmark).
 */

/** Buckets a user id hashes to; a bucket is always on one shard (bucket mod N). */
export const SHARD_BUCKETS = 256;
/** At most this many shards (one bucket each at most). */
export const MAX_SHARDS = SHARD_BUCKETS;

const encoder = new TextEncoder();

/**
 * The bucket of a user id: FNV-1a (32 bit) over its UTF-8 bytes, mod 256. Fixed forever: a
 * user's rows are where this says, so changing it would lose them.
 */
export function shardBucket(userId: string): number {
  let h = 0x811c9dc5;
  for (const byte of encoder.encode(userId)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % SHARD_BUCKETS;
}

/** The binding name of shard `i`: `DB` for shard 0 (home), `DB_<i>` for the others. */
export function shardBinding(i: number): string {
  return i === 0 ? "DB" : `DB_${i}`;
}
