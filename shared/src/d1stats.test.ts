import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { countingD1 } from "./d1stats";

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
});
