/**
 * Migration 0017 on a database that already holds judged sessions (the local D1, an empty shard
 * binding migrated up to 0016 first): it lists every judged session exactly once, in the hour of
 * its billing time, at most 1,000 to a row, leaves sessions without a verdict unlisted, and drops
 * the billing-time index it replaces. The billing API then pages them as before.
 */
import { applyD1Migrations, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { sessionsPage } from "./queries";

const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 10, 3, 10, 0);

describe("migration 0017 (session lists)", () => {
  it("lists the sessions judged before it once each, in their hour, and drops idx_sessions_user_billed", async () => {
    const db = env.DB_1;
    const before = env.TEST_MIGRATIONS.filter((m) => m.name < "0017");
    expect(before.length).toBeLessThan(env.TEST_MIGRATIONS.length);
    await applyD1Migrations(db, before);

    // 1,001 sessions of one user in one hour (two rows), three more in other hours, another
    // user's session, and one session not judged yet
    const judged = [
      ...Array.from({ length: 1001 }, (_, i) => ({ id: `big_${i}`, user: "alice", at: T0 + i * 1000 })),
      { id: "a_next", user: "alice", at: T0 + HOUR },
      { id: "a_later", user: "alice", at: T0 + 5 * HOUR + 1 },
      { id: "a_before", user: "alice", at: T0 - 1 },
      { id: "b_1", user: "bob", at: T0 + 10 },
    ];
    await db
      .prepare(
        `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, created_at, verdict_at,
           billable, reason, billed_at, plan, period_start)
         SELECT value->>'$.id', value->>'$.user', 'p', value->>'$.at', value->>'$.at', value->>'$.at',
           value->>'$.at', 1, 'success', value->>'$.at', 'free', 0
         FROM json_each(?1)`,
      )
      .bind(JSON.stringify(judged))
      .run();
    await db
      .prepare(
        "INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at) VALUES ('open', 'alice', 'p', ?1, ?1)",
      )
      .bind(T0)
      .run();

    await applyD1Migrations(db, env.TEST_MIGRATIONS);

    const { results: listed } = await db
      .prepare(
        `SELECT l.user_id, l.hour, j.value AS id FROM session_lists l, json_each(l.session_ids) j ORDER BY 3`,
      )
      .all<{ user_id: string; hour: number; id: string }>();
    expect(listed).toEqual(
      judged
        .map((s) => ({ user_id: s.user, hour: Math.floor(s.at / HOUR), id: s.id }))
        .sort((a, b) => (a.id < b.id ? -1 : 1)),
    );
    const { results: sizes } = await db
      .prepare(
        "SELECT json_array_length(session_ids) AS n FROM session_lists WHERE user_id = 'alice' ORDER BY 1",
      )
      .all<{ n: number }>();
    expect(sizes.map((r) => r.n)).toEqual([1, 1, 1, 1, 1000]);
    const index = await db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'idx_sessions_user_billed'")
      .first();
    expect(index).toBeNull();

    const page = await sessionsPage(db, "alice", null, 3);
    expect(page.map((r) => r.session_id)).toEqual(["a_later", "a_next", "big_1000"]);
  });
});
