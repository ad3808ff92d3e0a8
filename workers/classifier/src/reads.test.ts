/**
 * D1 rows read per session, measured from D1's result metadata (meta.rows_read of every statement
 * the classifier runs). A session is read by key a bounded number of times: its state and its
 * merge when its telemetry arrives, its verdict inputs and its verdict when it is judged. Series
 * counts and rollups are written from what the judge run computed, not by reading the sessions
 * again, so their reads do not grow with the sessions judged.
 */
import { beforeEach, describe, expect, it } from "vitest";
import { sweepDueSessions } from "./cron";
import { deliver, eventsMessage, harness, paidAccount, T0, typicalSession } from "./test/support";

const RECEIVED = T0 + 40_000;
const JUDGE_AT = RECEIVED + 61_000;
const USERS = ["user-1", "user-2", "user-3", "user-4"];

/** Rows read per statement (by its first words), for `sessions` sessions of 4 users in one batch, judged in one run. */
async function readsFor(sessions: number) {
  const h = harness();
  const ids = Array.from({ length: sessions }, (_, i) => `n${sessions}-s${i}`);
  const events = ids.flatMap((id, i) => typicalSession(id, T0, USERS[i % USERS.length]));
  await deliver(h, [{ body: eventsMessage(events, RECEIVED) }], RECEIVED);
  const telemetryReads = h.d1.rowsRead;
  const before = h.d1.log.length;
  const swept = await sweepDueSessions(h.env, JUDGE_AT);
  expect(swept).toMatchObject({ judged: sessions, relisted: 0 });
  const judge = new Map<string, number>();
  for (const l of h.d1.log.slice(before)) judge.set(l.statement, (judge.get(l.statement) ?? 0) + l.rowsRead);
  return { telemetryReads, judgeReads: h.d1.rowsRead - telemetryReads, judge, total: h.d1.rowsRead };
}

describe("D1 rows read per session", () => {
  beforeEach(async () => {
    for (const user of USERS) await paidAccount(user);
  });

  it("reads each session by key a few times, and the series and rollups once per run", async () => {
    const small = await readsFor(100);
    const large = await readsFor(200);
    console.info("[rows_read] 100 sessions", JSON.stringify([...small.judge]), small.total);
    console.info("[rows_read] 200 sessions", JSON.stringify([...large.judge]), large.total);

    // the verdict statement: each session once by key, its series' highest rank once
    expect(large.judge.get("UPDATE sessions SET")).toBeLessThanOrEqual(5 * 200);
    // the series' counts and the rollups: read per series and per group, not per session
    for (const statement of ["UPDATE usage_periods SET", "INSERT INTO daily_rollups"]) {
      expect(large.judge.get(statement)).toBe(small.judge.get(statement));
    }
    // the verdict inputs: each session once through the id list
    expect(large.judge.get("SELECT session_id, user_id,")).toBe(2 * 200);
    // all of it: at most 15 rows read per session, from telemetry to verdict
    expect(large.total / 200).toBeLessThanOrEqual(15);
    expect(large.judgeReads / 200).toBeLessThanOrEqual(10);
  });
});
