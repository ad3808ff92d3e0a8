/**
 * The billing API's reads of a user's sessions by billing time go through the user's session
 * lists (docs/architecture.md "Finding a user's sessions"), not an index on `sessions`. These
 * tests check, on the local D1 with the real migrations, that what the lists give equals what a
 * direct read of `sessions` gives, whatever the lists' shape: several list rows per hour (one
 * per judge run), sessions of one hour spread over rows written at different times, hours listed
 * out of order, and other users' rows in between.
 */
import { env } from "cloudflare:test";
import { listSessions } from "@aigate/shared";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { failedSessions, sessionsPage } from "./queries";
import { insertJudged, type JudgedFixture } from "./test/support";

const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 10, 3, 10, 0);

/** Lists the user's judged sessions again, in the given groups (as separate judge runs would). */
async function relist(user: string, groups: JudgedFixture[][]) {
  await env.DB.prepare("DELETE FROM session_lists WHERE user_id = ?1").bind(user).run();
  for (const group of groups) {
    const listed = listSessions(
      env.DB,
      group.map((r) => ({ user_id: r.user, session_id: r.id, billed_at: r.billedAt })),
    );
    for (const statement of listed) await statement.run();
  }
}

/** Every page of the user's sessions, newest first, `limit` at a time. */
async function walk(user: string, limit: number): Promise<string[]> {
  const ids: string[] = [];
  let after: { createdAt: number; id: string } | null = null;
  for (;;) {
    const rows = await sessionsPage(env.DB, user, after, limit + 1);
    ids.push(...rows.slice(0, limit).map((r) => r.session_id));
    const last = rows[Math.min(rows.length, limit) - 1];
    if (rows.length <= limit || !last) return ids;
    after = { createdAt: last.billed_at, id: last.session_id };
  }
}

const sessionArb = fc.record({
  /** minutes after T0 (over about 8 hours), with repeats so that billing times tie */
  minute: fc.integer({ min: 0, max: 500 }),
  second: fc.constantFrom(0, 0, 0, 30, 59),
  failed: fc.boolean(),
});

describe("a user's sessions through the session lists", () => {
  it("pages exactly like billing-time order, for any split of the lists (60 random cases)", async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(sessionArb, { minLength: 1, maxLength: 40 }),
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 40, maxLength: 40 }),
        fc.integer({ min: 1, max: 9 }),
        async (specs, runOf, limit) => {
          n += 1;
          const user = `lists_${n}`;
          const other = `other_${n}`;
          const rows: JudgedFixture[] = specs.map((s, i) => ({
            id: `s_${String(i).padStart(3, "0")}_${n}`,
            user,
            billedAt: T0 + s.minute * 60_000 + s.second * 1000,
            status: s.failed ? "failed" : "success",
          }));
          await insertJudged(env.DB, rows);
          await insertJudged(env.DB, [{ id: `o_${n}`, user: other, billedAt: T0 + 60_000 }]);
          // the same sessions spread over up to four "runs", each listing its share of every hour
          const groups: JudgedFixture[][] = [[], [], [], []];
          for (const [i, r] of rows.entries()) groups[runOf[i] ?? 0]?.push(r);
          await relist(user, groups.reverse());

          const expected = [...rows]
            .sort((a, b) => b.billedAt - a.billedAt || (a.id < b.id ? 1 : -1))
            .map((r) => r.id);
          expect(await walk(user, limit)).toEqual(expected);

          const start = T0 + 2 * HOUR;
          const end = T0 + 5 * HOUR;
          const failed = rows.filter((r) => r.status === "failed" && r.billedAt >= start && r.billedAt < end);
          expect(await failedSessions(env.DB, user, start, end)).toBe(failed.length);
        },
      ),
      { numRuns: 60 },
    );
  });

  it("counts failed sessions on the window's edges exactly: from its first ms, up to but not its end", async () => {
    const user = "edges";
    const start = T0 + HOUR;
    const end = T0 + 3 * HOUR;
    await insertJudged(
      env.DB,
      [start - 1, start, start + HOUR - 1, end - 1, end].map((t, i) => ({
        id: `e${i}`,
        user,
        billedAt: t,
        status: "failed" as const,
      })),
    );
    expect(await failedSessions(env.DB, user, start, end)).toBe(3);
  });

  it("finds nothing of a session no list names, and nothing listed whose session left D1", async () => {
    const user = "unlisted";
    await insertJudged(env.DB, [
      { id: "kept", user, billedAt: T0 },
      { id: "gone", user, billedAt: T0 + 1000 },
    ]);
    await env.DB.prepare("DELETE FROM sessions WHERE session_id = 'gone'").run();
    expect(await walk(user, 10)).toEqual(["kept"]);
    await env.DB.prepare("DELETE FROM session_lists WHERE user_id = ?1").bind(user).run();
    expect(await walk(user, 10)).toEqual([]);
  });
});
