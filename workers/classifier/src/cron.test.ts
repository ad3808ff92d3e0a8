import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { sweepDueSessions } from "./cron";
import { readDueRows } from "./queries";
import {
  agenda,
  deliver,
  ev,
  eventsMessage,
  harness,
  MAY,
  paidAccount,
  rollups,
  seriesRows,
  sessionRow,
  T0,
  typicalSession,
  usageOf,
} from "./test/support";

const MINUTE = 60_000;
const STALE_MS = 15 * MINUTE; // TEST_VARS.STALE_SESSION_MINUTES

describe("cron sweep", () => {
  it("judges a session without `ended` on what was seen once it has been silent for 15 minutes", async () => {
    const h = harness();
    const seen = T0 + 10_000;
    await deliver(
      h,
      [
        {
          body: eventsMessage(
            [
              ev("created", { session: "s1", time: T0 }),
              ev("connected", { session: "s1", time: T0 + 300, latency: 300 }),
              ev("heartbeat", { session: "s1", time: T0 + 9000, audio: 4999 }),
            ],
            seen,
          ),
        },
      ],
      seen,
    );
    // listed when first seen, due when it turns stale
    expect(await agenda()).toEqual([{ due_at: seen + STALE_MS, ids: ["s1"] }]);
    expect((await sweepDueSessions(h.env, seen + STALE_MS - 1)).rows).toBe(0);
    expect((await sessionRow("s1"))?.verdict_at).toBeNull();

    expect(await sweepDueSessions(h.env, seen + STALE_MS)).toMatchObject({ rows: 1, judged: 1, relisted: 0 });
    expect(await agenda()).toEqual([]);
    expect(await sessionRow("s1")).toMatchObject({
      verdict_at: seen + STALE_MS,
      billable: 0,
      reason: "too_short",
      audio_ms: 4999,
      billed_at: T0,
      plan: "free",
      seq: null,
    });
    expect(h.verdicts.sent).toEqual([]); // unbillable: no series grew
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "too_short", sessions: 1, audio_ms: 4999 },
    ]);
  });

  it("keeps a session alive while telemetry keeps coming", async () => {
    const h = harness();
    await deliver(h, [{ body: eventsMessage([ev("created", { session: "s1", time: T0 })], T0) }], T0);
    const later = T0 + 10 * MINUTE;
    await deliver(
      h,
      [{ body: eventsMessage([ev("heartbeat", { session: "s1", time: later })], later) }],
      later,
    );
    // the row of its first sight comes due; the session is live, so it is listed again
    expect(await sweepDueSessions(h.env, T0 + STALE_MS)).toMatchObject({ rows: 1, judged: 0, relisted: 1 });
    expect((await sessionRow("s1"))?.verdict_at).toBeNull();
    expect(await agenda()).toEqual([{ due_at: later + STALE_MS, ids: ["s1"] }]);
    expect(await sweepDueSessions(h.env, later + STALE_MS)).toMatchObject({
      rows: 1,
      judged: 1,
      relisted: 0,
    });
    expect((await sessionRow("s1"))?.verdict_at).toBe(later + STALE_MS);
  });

  it("judges a session once its settle window is over, and tells the biller about its paid series", async () => {
    const h = harness();
    const period = { start: Date.UTC(2026, 4, 3), end: Date.UTC(2026, 5, 3) };
    await paidAccount("user-1", { periods: [period] });
    await deliver(h, [{ body: eventsMessage(typicalSession("s1", T0), T0 + 40_000) }], T0 + 40_000);
    expect(h.telemetry.sent).toEqual([]); // nothing goes through the queue
    expect(await agenda()).toEqual([{ due_at: T0 + 40_000 + MINUTE, ids: ["s1"] }]);
    expect((await sweepDueSessions(h.env, T0 + 40_000 + MINUTE - 1)).rows).toBe(0);
    expect(await sweepDueSessions(h.env, T0 + 40_000 + MINUTE)).toMatchObject({ rows: 1, judged: 1 });
    expect(await sessionRow("s1")).toMatchObject({ billable: 1, reason: "success", plan: "payg", seq: 1 });
    expect(usageOf(h.verdicts)).toEqual([
      {
        v: 2,
        kind: "usage",
        series: [{ user_id: "user-1", plan: "payg", period_start: period.start }],
        judged: 1,
        judged_at: T0 + 40_000 + MINUTE,
      },
    ]);
  });

  it("judges an admitted session that never sent telemetry, billed at its admission", async () => {
    const h = harness();
    await env.DB.prepare(
      `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, admitted_at, admitted_plan, open)
       VALUES ('ghost', 'user-1', 'proj-1', ?1, ?1, ?1, 'free', 1)`,
    )
      .bind(T0)
      .run();
    // as ingest lists a lease it takes: due at once
    await env.DB.prepare(`INSERT INTO session_due VALUES (?1, 'admit:1', '["ghost"]')`).bind(T0).run();
    expect(await sweepDueSessions(h.env, T0 + MINUTE)).toMatchObject({ rows: 1, judged: 0, relisted: 1 });
    expect(await agenda()).toEqual([{ due_at: T0 + STALE_MS, ids: ["ghost"] }]);
    await sweepDueSessions(h.env, T0 + STALE_MS);
    expect(await sessionRow("ghost")).toMatchObject({
      open: 0,
      billable: 0,
      reason: "not_connected",
      audio_ms: 0,
      billed_at: T0,
      plan: "free",
      period_start: MAY.start,
    });
    expect(h.verdicts.sent).toEqual([]);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "not_connected", sessions: 1, audio_ms: 0 },
    ]);
  });

  it("judges every due row of a run in passes of whole rows, the not-due sessions listed again", async () => {
    const h = harness();
    // three batches of 150 new sessions: three rows due when they turn stale
    for (const batch of [0, 1, 2]) {
      const events = Array.from({ length: 150 }, (_, i) =>
        ev("created", { session: `s${batch}-${i}`, time: T0 + batch * 1000 }),
      );
      await deliver(h, [{ body: eventsMessage(events, T0 + batch * 1000) }], T0 + batch * 1000);
    }
    // one more, newer: not due at the run
    await deliver(
      h,
      [{ body: eventsMessage([ev("created", { session: "late", time: T0 + MINUTE })], T0 + MINUTE) }],
      T0 + MINUTE,
    );
    expect((await agenda()).map((r) => r.ids.length)).toEqual([150, 150, 150, 1]);
    const swept = await sweepDueSessions(h.env, T0 + 2000 + STALE_MS, { sessionsPerPass: 200 });
    // 200 per pass takes one whole row (a second would pass 200), so three passes
    expect(swept).toMatchObject({ rows: 3, judged: 450, relisted: 0, passes: 3, more: false });
    expect(await agenda()).toEqual([{ due_at: T0 + MINUTE + STALE_MS, ids: ["late"] }]);
    expect((await rollups()).map((r) => r.sessions)).toEqual([450]);
  });

  it("leaves the rest for the next run when its time budget is spent", async () => {
    const h = harness();
    for (const batch of [0, 1]) {
      const events = Array.from({ length: 10 }, (_, i) =>
        ev("created", { session: `s${batch}-${i}`, time: T0 }),
      );
      await deliver(h, [{ body: eventsMessage(events, T0 + batch) }], T0 + batch);
    }
    const first = await sweepDueSessions(h.env, T0 + STALE_MS + 1, { sessionsPerPass: 10, budgetMs: 0 });
    expect(first).toMatchObject({ rows: 1, judged: 10, passes: 1, more: true });
    expect((await agenda()).map((r) => r.ids.length)).toEqual([10]);
    expect(await sweepDueSessions(h.env, T0 + STALE_MS + 1)).toMatchObject({
      rows: 1,
      judged: 10,
      more: false,
    });
    expect(await agenda()).toEqual([]);
  });

  it("finishes after a crash between the verdicts and the agenda update, counting nothing twice", async () => {
    const h = harness();
    await paidAccount("user-1");
    await deliver(h, [{ body: eventsMessage(typicalSession("s1", T0), T0 + 40_000) }], T0 + 40_000);
    const due = T0 + 40_000 + MINUTE;
    // the verdict batch commits; the batch that deletes the agenda rows fails
    h.d1.beforeNextBatch = async () => {
      h.d1.failBeforeBatch = 1;
    };
    await expect(sweepDueSessions(h.env, due)).rejects.toThrow(/injected/);
    expect((await sessionRow("s1"))?.billable).toBe(1);
    expect((await agenda()).map((r) => r.ids)).toEqual([["s1"]]);
    expect(await sweepDueSessions(h.env, due + MINUTE)).toMatchObject({ rows: 1, judged: 0, relisted: 0 });
    expect(await agenda()).toEqual([]);
    expect((await seriesRows()).map((r) => [r.plan, r.billable_sessions])).toEqual([["payg", 1]]);
    expect((await rollups()).map((r) => r.sessions)).toEqual([1]);
  });

  it("records a pass's verdicts all or none, and leaves a session that keeps moving to the next run", async () => {
    const h = harness();
    await paidAccount("user-1");
    await deliver(
      h,
      [{ body: eventsMessage([...typicalSession("s1", T0), ...typicalSession("s2", T0)], T0 + 40_000) }],
      T0 + 40_000,
    );
    const due = T0 + 40_000 + MINUTE;
    // before every verdict batch of this run, telemetry for s1 lands: more audio, so its inputs move
    let audio = 33_000;
    let heartbeats = 0;
    const heartbeat = async () => {
      heartbeats += 1;
      audio += 1000;
      await env.DB.prepare("UPDATE sessions SET audio_ms = ?1 WHERE session_id = 's1'").bind(audio).run();
      h.d1.beforeNextBatch = heartbeat;
    };
    h.d1.beforeNextBatch = heartbeat;
    expect(await sweepDueSessions(h.env, due)).toMatchObject({ judged: 1, relisted: 1, moved: 2 });
    h.d1.beforeNextBatch = null;
    // two verdict batches failed whole on s1 (nothing of them was written), the third judged s2
    // alone, then the agenda was updated: four writing batches, a heartbeat before each
    expect(heartbeats).toBe(4);
    expect((await sessionRow("s1"))?.verdict_at).toBeNull();
    expect(await sessionRow("s2")).toMatchObject({ billable: 1, seq: 1 });
    expect((await seriesRows()).map((r) => [r.billable_sessions, r.seq_top])).toEqual([[1, 1]]);
    expect((await rollups()).map((r) => r.sessions)).toEqual([1]);
    // s1 is on the agenda, due at once, and the next run judges it on what it has by then
    expect((await agenda()).map((r) => [r.due_at, r.ids])).toEqual([[due, ["s1"]]]);
    expect(await sweepDueSessions(h.env, due + MINUTE)).toMatchObject({ judged: 1, relisted: 0, moved: 0 });
    expect(await sessionRow("s1")).toMatchObject({ billable: 1, seq: 2, audio_ms: audio });
    expect((await seriesRows()).map((r) => [r.billable_sessions, r.seq_top])).toEqual([[2, 2]]);
    expect((await rollups()).map((r) => r.sessions)).toEqual([2]);
    expect(await agenda()).toEqual([]);
  });

  it("does not loop on a verdict batch that fails as if a session moved when none did", async () => {
    const h = harness();
    await deliver(h, [{ body: eventsMessage(typicalSession("s1", T0), T0 + 40_000) }], T0 + 40_000);
    h.d1.beforeNextBatch = async () => {
      throw new Error("D1_ERROR: NOT NULL constraint failed: sessions.first_seen_at: SQLITE_CONSTRAINT");
    };
    await expect(sweepDueSessions(h.env, T0 + 40_000 + MINUTE)).rejects.toThrow(/no session moved/);
    // nothing written: the session waits on the agenda for the next run
    expect((await sessionRow("s1"))?.verdict_at).toBeNull();
    expect((await agenda()).map((r) => r.ids)).toEqual([["s1"]]);
  });

  it("does not judge a session twice when it is listed twice", async () => {
    const h = harness();
    await deliver(h, [{ body: eventsMessage([ev("created", { session: "s1", time: T0 })], T0) }], T0);
    // a redelivered batch lists it again
    await env.DB.prepare(`INSERT INTO session_due VALUES (?1, 'again', '["s1"]')`)
      .bind(T0 + 2 * STALE_MS)
      .run();
    expect((await sweepDueSessions(h.env, T0 + STALE_MS)).judged).toBe(1);
    expect((await sessionRow("s1"))?.verdict_at).toBe(T0 + STALE_MS);
    expect(await sweepDueSessions(h.env, T0 + 2 * STALE_MS)).toMatchObject({
      rows: 1,
      judged: 0,
      relisted: 0,
    });
    expect((await sessionRow("s1"))?.verdict_at).toBe(T0 + STALE_MS);
    expect((await seriesRows()).map((r) => [r.plan, r.billable_sessions])).toEqual([["free", 0]]);
    expect((await rollups()).map((r) => r.sessions)).toEqual([1]);
  });

  it("reads only the due rows of the agenda, through its primary key", async () => {
    const { results } = await env.DB.prepare(
      "EXPLAIN QUERY PLAN SELECT due_at, id, session_ids FROM session_due WHERE due_at <= ?1 ORDER BY due_at, id LIMIT ?2",
    )
      .bind(T0, 10)
      .all<{ detail: string }>();
    expect(results.map((r) => r.detail).join("\n")).toMatch(
      /SEARCH session_due USING PRIMARY KEY \(due_at<\?\)/,
    );
    for (let i = 0; i < 50; i++) {
      await env.DB.prepare("INSERT INTO session_due VALUES (?1, ?2, '[]')")
        .bind(T0 + i * MINUTE, `r${i}`)
        .run();
    }
    const rows = await readDueRows(env.DB, T0 + 2 * MINUTE, 100);
    expect(rows.map((r) => r.id)).toEqual(["r0", "r1", "r2"]);
    const { meta } = await env.DB.prepare(
      "SELECT due_at, id, session_ids FROM session_due WHERE due_at <= ?1 ORDER BY due_at, id LIMIT ?2",
    )
      .bind(T0 + 2 * MINUTE, 100)
      .all();
    // the three due rows and the first one past them: not the 47 that are not due
    expect(meta.rows_read).toBeLessThanOrEqual(4);
  });
});
