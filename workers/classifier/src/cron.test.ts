import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { sweepDueSessions } from "./cron";
import { DUE_SESSIONS_SQL } from "./queries";
import {
  deliver,
  ev,
  eventsMessage,
  harness,
  judgesOf,
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

/** Runs the cron at `now`, then hands what it enqueued to the consumer (as the queue would). */
async function cronThenConsume(h: ReturnType<typeof harness>, now: number) {
  const swept = await sweepDueSessions(h.env, now);
  const reminders = judgesOf(h.telemetry.drain());
  for (const r of reminders) expect(r.delaySeconds).toBe(0);
  if (reminders.length > 0)
    await deliver(
      h,
      reminders.map((r) => ({ body: r.body })),
      now,
    );
  return { swept, reminders };
}

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
    expect((await cronThenConsume(h, seen + STALE_MS - 1)).swept.due).toBe(0);
    expect((await sessionRow("s1"))?.verdict_at).toBeNull();

    await cronThenConsume(h, seen + STALE_MS);
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
    expect((await cronThenConsume(h, T0 + STALE_MS + MINUTE)).swept.due).toBe(0);
    expect((await sessionRow("s1"))?.verdict_at).toBeNull();
  });

  it("judges a settled session whose reminder was lost, and tells the biller about its paid series", async () => {
    const h = harness();
    const period = { start: Date.UTC(2026, 4, 3), end: Date.UTC(2026, 5, 3) };
    await paidAccount("user-1", { periods: [period] });
    await deliver(h, [{ body: eventsMessage(typicalSession("s1", T0), T0 + 40_000) }], T0 + 40_000);
    h.telemetry.drain(); // the reminder is lost
    await cronThenConsume(h, T0 + 40_000 + MINUTE);
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
    await cronThenConsume(h, T0 + STALE_MS);
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

  it("hands over at most `limit` sessions per run, oldest first, in JudgeMessages of at most 100 ids", async () => {
    const h = harness();
    const events = Array.from({ length: 150 }, (_, i) => ev("created", { session: `s${i}`, time: T0 + i }));
    await deliver(h, [{ body: eventsMessage(events, T0) }], T0);
    const swept = await sweepDueSessions(h.env, T0 + STALE_MS, 120);
    expect(swept.due).toBe(120);
    const sent = judgesOf(h.telemetry.drain());
    expect(sent.map((s) => s.body.session_ids.length)).toEqual([100, 20]);
    expect(sent[0]?.body.session_ids[0]).toBe("s0");
    expect(sent.flatMap((s) => s.body.session_ids)).not.toContain("s120");
  });

  it("does not hand over judged sessions again", async () => {
    const h = harness();
    await deliver(h, [{ body: eventsMessage([ev("created", { session: "s1", time: T0 })], T0) }], T0);
    expect((await cronThenConsume(h, T0 + STALE_MS)).swept.due).toBe(1);
    expect((await sessionRow("s1"))?.verdict_at).toBe(T0 + STALE_MS);
    expect((await cronThenConsume(h, T0 + 2 * STALE_MS)).swept.due).toBe(0);
    expect((await sessionRow("s1"))?.verdict_at).toBe(T0 + STALE_MS);
    expect((await seriesRows()).map((r) => [r.plan, r.billable_sessions])).toEqual([["free", 0]]);
    expect((await rollups()).map((r) => r.sessions)).toEqual([1]);
  });

  it("finds due sessions through the partial index idx_sessions_pending", async () => {
    const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${DUE_SESSIONS_SQL}`)
      .bind(T0, T0, 10)
      .all<{ detail: string }>();
    expect(results.map((r) => r.detail).join("\n")).toMatch(/USING INDEX idx_sessions_pending/);
  });
});
