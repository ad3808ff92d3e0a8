/**
 * The session lists a judge pass writes (docs/architecture.md "Finding a user's sessions"): every
 * session it judges is named once, by a row of its user and billing hour, at most 1,000 to a row
 * and to a statement, in the verdict batch; a replay of judged sessions lists nothing more; and a
 * verdict recorded by a writer that does not list (the workers before the lists) is listed by the
 * migration's trigger, once.
 */
import { env } from "cloudflare:test";
import { LISTED_VERDICT_TOKEN_PREFIX } from "@aigate/shared";
import { describe, expect, it } from "vitest";
import { readConfig } from "./config";
import { judgeSessions } from "./judging";
import { harness, paidAccount, RecordingQueue, storeSessions, T0, TEST_VARS } from "./test/support";

const HOUR = 3_600_000;

async function listRows() {
  const { results } = await env.DB.prepare(
    "SELECT user_id, hour, session_ids FROM session_lists ORDER BY user_id, hour, json_array_length(session_ids)",
  ).all<{ user_id: string; hour: number; session_ids: string }>();
  return results.map((r) => ({ ...r, ids: JSON.parse(r.session_ids) as string[] }));
}

describe("the session lists of a judge pass", () => {
  it("names each judged session once, in its user's billing hour, at most 1,000 to a row and a statement", async () => {
    await paidAccount("user-1");
    // 2,500 sessions of one user in one hour, and 3 of another user in the next hour
    const hourStart = Math.floor((T0 - 2 * HOUR) / HOUR) * HOUR;
    const many = Array.from({ length: 2500 }, (_, i) => ({
      id: `m${String(i).padStart(4, "0")}`,
      firstSeen: hourStart + i * 1000,
    }));
    const few = [0, 1, 2].map((i) => ({ id: `f${i}`, user: "user-2", firstSeen: hourStart + HOUR + i }));
    await storeSessions([...many, ...few]);
    const h = harness();
    const ids = [...many, ...few].map((s) => s.id);
    const result = await judgeSessions(
      h.env.DB,
      { verdicts: new RecordingQueue() },
      ids,
      T0,
      readConfig(TEST_VARS),
    );
    expect(result.judged).toBe(2503);

    const rows = await listRows();
    expect(rows.map((r) => [r.user_id, r.hour, r.ids.length])).toEqual([
      ["user-1", hourStart / HOUR, 500],
      ["user-1", hourStart / HOUR, 1000],
      ["user-1", hourStart / HOUR, 1000],
      ["user-2", hourStart / HOUR + 1, 3],
    ]);
    expect(rows.flatMap((r) => r.ids).sort()).toEqual([...ids].sort());
    const inserts = h.d1.log.filter((l) => l.statement === "INSERT INTO session_lists");
    // statements of at most 1,000 ids: 1,000, 1,000, then the last 500 with the other user's 3
    expect(inserts.map((l) => l.rowsWritten)).toEqual([1, 1, 2]);
    // every verdict carries the mark that it was listed by its batch
    const unmarked = await env.DB.prepare(
      "SELECT count(*) AS n FROM sessions WHERE verdict_token NOT LIKE ?1 || '%'",
    )
      .bind(LISTED_VERDICT_TOKEN_PREFIX)
      .first<{ n: number }>();
    expect(unmarked?.n).toBe(0);

    // a replay of the judged sessions judges and lists nothing more
    const again = await judgeSessions(
      env.DB,
      { verdicts: new RecordingQueue() },
      ids,
      T0 + 1,
      readConfig(TEST_VARS),
    );
    expect(again).toMatchObject({ judged: 0, resent: 2503 });
    expect((await listRows()).flatMap((r) => r.ids)).toHaveLength(2503);
  });

  it("lists, once, a verdict recorded by a writer that does not list it (the trigger of migration 0017)", async () => {
    await storeSessions([{ id: "old", firstSeen: T0 - 5 * HOUR }]);
    const billedAt = T0 - 5 * HOUR;
    // as the classifier wrote verdicts before the lists: no list row, a plain token
    await env.DB.prepare(
      `UPDATE sessions SET verdict_at = ?1, billable = 1, reason = 'success', rule_version = 1,
         verdict_token = ?2, billed_at = ?3, open = 0 WHERE session_id = 'old'`,
    )
      .bind(T0, crypto.randomUUID(), billedAt)
      .run();
    await env.DB.prepare("UPDATE sessions SET late_events = late_events + 1 WHERE session_id = 'old'").run();
    expect((await listRows()).map((r) => [r.user_id, r.hour, r.ids])).toEqual([
      ["user-1", Math.floor(billedAt / HOUR), ["old"]],
    ]);
  });
});
