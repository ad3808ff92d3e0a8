/**
 * D1 rows written per session, measured from D1's result metadata (meta.rows_written of every
 * statement the classifier runs, index entries included). A session costs 2 rows: its facts merged
 * once per batch that carries its events (1), and its verdict (1: `sessions` has no index that the
 * verdict enters). Everything else is per batch or per run and shared by the sessions in it: the
 * agenda row of a batch (1, and 1 to delete it when judged), the session list row of a judge run
 * per user and billing hour (1), the series' count (1 per judge run and series), the day's rollup
 * row (2 when new, 1 after) and the series row (created once per user and window, with its first
 * verdict: the row and its two index entries). The figures are for a series that already exists
 * (an earlier session of the window, judged on another day, so the day's rollup row is still new).
 */
import { env } from "cloudflare:test";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { readConfig } from "./config";
import { sweepDueSessions } from "./cron";
import { judgeSessions } from "./judging";
import {
  deliver,
  eventsMessage,
  harness,
  judgeMessage,
  paidAccount,
  RecordingQueue,
  seriesRows,
  storeSessions,
  T0,
  TEST_VARS,
  typicalSession,
  usageOf,
} from "./test/support";

const RECEIVED = T0 + 40_000;
const JUDGE_AT = RECEIVED + 61_000;

/** The cron judges the sessions in one run; all of them get their verdict and rank, told in one message. */
async function judgeAll(h: ReturnType<typeof harness>, ids: string[]) {
  await sweepDueSessions(h.env, JUDGE_AT);
  const { results } = await env.DB.prepare(
    "SELECT session_id FROM sessions WHERE verdict_at = ?1 AND billable = 1 AND plan = 'payg' AND seq IS NOT NULL",
  )
    .bind(JUDGE_AT)
    .all<{ session_id: string }>();
  expect(results.map((r) => r.session_id).sort()).toEqual([...ids].sort());
  expect(usageOf(h.verdicts).map((m) => m.judged)).toEqual([ids.length]);
}

/** Rows written by the series' count updates (once per judge run and series). */
function seriesCountRows(h: ReturnType<typeof harness>): number[] {
  return h.d1.log.filter((l) => l.statement === "UPDATE usage_periods SET").map((l) => l.rowsWritten);
}

/** Rows written by the statements whose first words are `statement`. */
function rowsOf(h: ReturnType<typeof harness>, statement: string): number[] {
  return h.d1.log.filter((l) => l.statement === statement).map((l) => l.rowsWritten);
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

function report(label: string, h: ReturnType<typeof harness>, sessions: number) {
  const perStatement = h.d1.log.filter((l) => l.rowsWritten > 0);
  console.info(
    `[rows_written] ${label}: ${h.d1.rowsWritten} for ${sessions} session(s) = ${h.d1.rowsWritten / sessions} per session`,
    JSON.stringify(perStatement),
  );
}

describe("D1 rows written per session", () => {
  beforeEach(async () => {
    await paidAccount("user-1");
    // the window's first session, judged four days earlier (not measured)
    await storeSessions([{ id: "opening", firstSeen: T0 - 4 * 86_400_000 }]);
    const q = new RecordingQueue();
    await judgeSessions(env.DB, { verdicts: q }, ["opening"], T0, readConfig(TEST_VARS));
    expect((await seriesRows()).map((r) => r.billable_sessions)).toEqual([1]);
  });

  it("creates a series row once per user and window, with the window's first verdict", async () => {
    await paidAccount("newcomer");
    const h = harness();
    await deliver(h, [{ body: eventsMessage(typicalSession("s1", T0, "newcomer"), RECEIVED) }], RECEIVED);
    await judgeAll(h, ["s1"]);
    report("6 events in 1 batch + verdict, opening the series", h, 1);
    const creating = h.d1.log.filter((l) => l.statement === "INSERT INTO usage_periods");
    expect(creating.map((l) => l.rowsWritten)).toEqual([3]); // the row and its index entries
    expect(h.d1.rowsWritten).toBe(8 + 3);

    // the next verdict of the window finds the row: nothing written for it
    await deliver(h, [{ body: eventsMessage(typicalSession("s2", T0, "newcomer"), RECEIVED) }], RECEIVED);
    const before = h.d1.log.length;
    await deliver(h, [{ body: judgeMessage(["s2"], RECEIVED + 60_000) }], JUDGE_AT);
    expect(
      h.d1.log
        .slice(before)
        .filter((l) => l.statement === "INSERT INTO usage_periods")
        .map((l) => l.rowsWritten),
    ).toEqual([0]);
  });

  it("writes 2 rows for a typical session arriving in one batch, plus its batch's and run's shares", async () => {
    const h = harness();
    await deliver(h, [{ body: eventsMessage(typicalSession("s1", T0), RECEIVED) }], RECEIVED);
    await judgeAll(h, ["s1"]);
    report("6 events in 1 batch + verdict", h, 1);
    expect(rowsOf(h, "INSERT INTO sessions")).toEqual([1]); // the facts
    expect(rowsOf(h, "UPDATE sessions SET")).toEqual([1]); // the verdict, no index entry
    expect(rowsOf(h, "INSERT INTO session_lists")).toEqual([1]); // the run's list row of the user's hour
    expect(rowsOf(h, "INSERT INTO session_due")).toEqual([1]); // the batch's agenda row
    expect(rowsOf(h, "DELETE FROM session_due")).toEqual([1]); // removed once judged
    expect(seriesCountRows(h)).toEqual([1]);
    expect(rowsOf(h, "INSERT INTO daily_rollups")).toEqual([2]); // a new day's row
    expect(h.d1.rowsWritten).toBe(8);
  });

  it("writes one row per batch for a typical session split over 3 batches, and lists it twice", async () => {
    const h = harness();
    const events = typicalSession("s1", T0);
    for (let i = 0; i < 3; i += 1) {
      await deliver(h, [{ body: eventsMessage(events.slice(i * 2, i * 2 + 2), RECEIVED + i) }], RECEIVED + i);
    }
    // listed when new (due when stale) and when it ended (due when settled)
    expect(rowsOf(h, "INSERT INTO session_due")).toEqual([1, 1]);
    await sweepDueSessions(h.env, JUDGE_AT + 15 * 60_000);
    report("6 events in 3 batches + verdict", h, 1);
    expect(rowsOf(h, "INSERT INTO sessions")).toEqual([1, 1, 1]);
    expect(rowsOf(h, "UPDATE sessions SET")).toEqual([1]);
    expect(sum(rowsOf(h, "DELETE FROM session_due"))).toBe(2);
  });

  it("writes one row for a resend of known event ids, identical or conflicting, like any later batch", async () => {
    const h = harness();
    const events = typicalSession("s1", T0);
    await deliver(h, [{ body: eventsMessage(events, RECEIVED) }], RECEIVED);
    const before = h.d1.rowsWritten;
    await deliver(h, [{ body: eventsMessage(events.slice(1), RECEIVED + 1) }], RECEIVED + 1);
    // the merge (the resent `ended` lists it again, at the same settle time)
    expect(h.d1.rowsWritten - before).toBe(2);
    const heartbeat = events[2];
    if (heartbeat === undefined) throw new Error("typicalSession has 6 events");
    const conflicting = { ...heartbeat, audio_ms: 60_000 };
    vi.spyOn(console, "warn").mockImplementation(() => {});
    await deliver(h, [{ body: eventsMessage([conflicting], RECEIVED + 2) }], RECEIVED + 2);
    vi.restoreAllMocks();
    expect(h.d1.rowsWritten - before).toBe(3);
    await judgeAll(h, ["s1"]);
    report("6 events, an identical resend of 5, a conflicting copy + verdict", h, 1);
    // the conflicting copy counted (1), the verdict (1)
    expect(rowsOf(h, "UPDATE sessions SET")).toEqual([1, 1]);
  });

  it("amortises the agenda, the rollup row and the series' count over the sessions judged together", async () => {
    const h = harness();
    const ids = Array.from({ length: 100 }, (_, i) => `s${i}`);
    await deliver(
      h,
      [
        {
          body: eventsMessage(
            ids.flatMap((id) => typicalSession(id, T0)),
            RECEIVED,
          ),
        },
      ],
      RECEIVED,
    );
    await judgeAll(h, ids);
    report("100 sessions, 1 batch + verdicts", h, 100);
    expect(seriesCountRows(h)).toEqual([1]); // one count update for the 100
    expect(rowsOf(h, "INSERT INTO session_due")).toEqual([1]);
    expect(rowsOf(h, "INSERT INTO session_lists")).toEqual([1]); // one list row for the 100
    // 2 per session, 6 shared: 2.06
    expect(h.d1.rowsWritten).toBe(206);
  });
});
