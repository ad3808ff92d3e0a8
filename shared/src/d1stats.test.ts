import { env } from "cloudflare:test";
import { shardedEnv, userOnShard } from "@aigate/test-support/shards";
import { describe, expect, it } from "vitest";
import { countingD1, d1LogFields, withD1Stats } from "./d1stats";
import { shardsOf } from "./shards";

describe("countingD1", () => {
  it("adds up rows written and read by run, first, all and batch", async () => {
    const { db, stats } = countingD1(env.DB);
    await db
      .prepare(
        "INSERT INTO daily_rollups (user_id, day, reason, sessions, audio_ms) VALUES (?1, ?2, ?3, 1, 0)",
      )
      .bind("u1", "2026-11-01", "success")
      .run();
    // one table row + one idx_rollups_day entry
    expect(stats.rowsWritten).toBe(2);
    const row = await db.prepare("SELECT sessions FROM daily_rollups WHERE user_id = ?1").bind("u1").first<{
      sessions: number;
    }>();
    expect(row).toEqual({ sessions: 1 });
    const col = await db
      .prepare("SELECT sessions FROM daily_rollups WHERE user_id = ?1")
      .bind("u1")
      .first("sessions");
    expect(col).toBe(1);
    expect(await db.prepare("SELECT 1 FROM daily_rollups WHERE user_id = 'nobody'").first()).toBeNull();
    await db.batch([
      db.prepare("UPDATE daily_rollups SET sessions = sessions + 1 WHERE user_id = ?1").bind("u1"),
      db.prepare("UPDATE daily_rollups SET sessions = sessions + 1 WHERE user_id = ?1").bind("u1"),
    ]);
    expect(stats.rowsWritten).toBe(4);
    expect(stats.queries).toBe(6);
    expect(stats.rowsRead).toBeGreaterThan(0);
    const all = await db.prepare("SELECT sessions FROM daily_rollups").all<{ sessions: number }>();
    expect(all.results).toEqual([{ sessions: 3 }]);
  });

  it("adds up the time D1 reports for each statement, and logs it as d1_duration_ms", async () => {
    // a database answering every statement with a fixed duration
    const meta = { rows_read: 1, rows_written: 0, duration: 1.2345 };
    const statement = {
      bind: () => statement,
      all: async () => ({ results: [], success: true, meta }),
    };
    const fake = {
      prepare: () => statement,
      batch: async (list: unknown[]) => list.map(() => ({ results: [], success: true, meta })),
    } as unknown as D1Database;
    const { db, stats } = countingD1(fake);
    await db.prepare("SELECT 1").run();
    await db.prepare("SELECT 1").first();
    await db.batch([db.prepare("SELECT 1"), db.prepare("SELECT 1")]);
    expect(stats.queries).toBe(4);
    expect(stats.durationMs).toBeCloseTo(4 * 1.2345, 9);
    expect(d1LogFields(stats)).toEqual({
      d1_queries: 4,
      d1_rows_read: 4,
      d1_rows_written: 0,
      d1_duration_ms: 4.938,
    });

    // and the real D1 reports a duration for a statement that works
    const real = countingD1(env.DB);
    await real.db
      .prepare(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) SELECT count(*) FROM n",
      )
      .first();
    expect(real.stats.durationMs).toBeGreaterThan(0);
  });
});

describe("withD1Stats over shards", () => {
  it("counts each shard on its own and in the total, and logs D1 time per shard", async () => {
    const sharded = await shardedEnv({ DB: env.DB, DB_1: env.DB_1, DB_2: env.DB_2, DB_3: env.DB_3 });
    const { env: counted, stats } = withD1Stats(sharded);
    const shards = shardsOf(counted);
    const users = [0, 1, 2, 3].map((i) => userOnShard("stats_user_", i));
    // two rows for the user on shard 2, one for each of the others
    for (const user of [...users, users[2] ?? ""]) {
      await shards
        .of(user)
        .prepare(
          "INSERT INTO daily_rollups (user_id, day, reason, sessions, audio_ms) VALUES (?1, ?2, 'success', 1, 0) ON CONFLICT DO UPDATE SET sessions = sessions + 1",
        )
        .bind(user, "2026-11-01")
        .run();
    }
    expect(stats.queries).toBe(5);
    expect(stats.byShard?.map((s) => s.queries)).toEqual([1, 1, 2, 1]);
    // the row lands in the user's shard, and only there
    for (const [i, db] of [env.DB, env.DB_1, env.DB_2, env.DB_3].entries()) {
      const { results } = await db.prepare("SELECT user_id, sessions FROM daily_rollups").all();
      expect(results).toEqual([{ user_id: users[i], sessions: i === 2 ? 2 : 1 }]);
    }
    const fields = d1LogFields(stats);
    expect(fields.d1_duration_ms_by_shard).toHaveLength(4);
    expect(d1LogFields(withD1Stats({ DB: env.DB }).stats).d1_duration_ms_by_shard).toBeUndefined();
  });
});
