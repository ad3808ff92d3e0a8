/**
 * D1 rows written per session, measured from D1's result metadata (meta.rows_written of every
 * statement the classifier runs, index entries included). Target: at most 8 per session, on the
 * paid path. Two costs are per run or per window rather than per session, and are measured on
 * their own: the series' count (2 rows per judge run and series: the row and its entry in the
 * biller's unposted index; the usage record the biller used to write per session), and the series
 * row (created once per user and window, with its first verdict). The per-session figures are for
 * a series that already exists (an earlier session of the window, judged on another day, so the
 * day's rollup row is still new).
 */
import { env } from "cloudflare:test";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { readConfig } from "./config";
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

/** Judges the sessions in one run; all of them get their verdict and rank, told in one message. */
async function judgeAll(h: ReturnType<typeof harness>, ids: string[]) {
  await deliver(h, [{ body: judgeMessage(ids, RECEIVED + 60_000) }], JUDGE_AT);
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

/** The per-session budget: everything but the series' count, which is per run. */
function expectPerSessionBudget(h: ReturnType<typeof harness>) {
  expect(seriesCountRows(h)).toEqual([2]);
  expect(h.d1.rowsWritten - 2).toBeGreaterThan(0);
  expect(h.d1.rowsWritten - 2).toBeLessThanOrEqual(8);
}

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
    await judgeSessions(env.DB, { verdicts: q, telemetry: q }, ["opening"], T0, readConfig(TEST_VARS));
    expect((await seriesRows()).map((r) => r.billable_sessions)).toEqual([1]);
  });

  it("creates a series row once per user and window, with the window's first verdict", async () => {
    await paidAccount("newcomer");
    const h = harness();
    await deliver(h, [{ body: eventsMessage(typicalSession("s1", T0, "newcomer"), RECEIVED) }], RECEIVED);
    await judgeAll(h, ["s1"]);
    report("6 events in 1 batch + verdict, opening the series", h, 1);
    const creating = h.d1.log.filter((l) => l.statement === "INSERT INTO usage_periods");
    expect(creating.map((l) => l.rowsWritten)).toEqual([2]); // the row and its index entry
    expect(h.d1.rowsWritten - 2 - 2).toBeLessThanOrEqual(8);

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

  it("stays at or under 8 (the series' count included) for a typical session arriving in one batch, then judged", async () => {
    const h = harness();
    await deliver(h, [{ body: eventsMessage(typicalSession("s1", T0), RECEIVED) }], RECEIVED);
    await judgeAll(h, ["s1"]);
    report("6 events in 1 batch + verdict", h, 1);
    expectPerSessionBudget(h);
    // with the series' count: still 8 when the session arrives in one batch
    expect(h.d1.rowsWritten).toBeLessThanOrEqual(8);
  });

  it("stays at or under 8 for a typical session split over 3 batches, then judged", async () => {
    const h = harness();
    const events = typicalSession("s1", T0);
    for (let i = 0; i < 3; i += 1) {
      await deliver(h, [{ body: eventsMessage(events.slice(i * 2, i * 2 + 2), RECEIVED + i) }], RECEIVED + i);
    }
    await judgeAll(h, ["s1"]);
    report("6 events in 3 batches + verdict", h, 1);
    expectPerSessionBudget(h);
  });

  it("writes one row for a resend of known event ids, identical or conflicting, like any later batch", async () => {
    const h = harness();
    const events = typicalSession("s1", T0);
    await deliver(h, [{ body: eventsMessage(events, RECEIVED) }], RECEIVED);
    const before = h.d1.rowsWritten;
    // (a resent `created` would also rewrite its idx_sessions_pending entry: see upsertFacts)
    await deliver(h, [{ body: eventsMessage(events.slice(1), RECEIVED + 1) }], RECEIVED + 1);
    expect(h.d1.rowsWritten - before).toBe(1);
    const heartbeat = events[2];
    if (heartbeat === undefined) throw new Error("typicalSession has 6 events");
    const conflicting = { ...heartbeat, audio_ms: 60_000 };
    vi.spyOn(console, "warn").mockImplementation(() => {});
    await deliver(h, [{ body: eventsMessage([conflicting], RECEIVED + 2) }], RECEIVED + 2);
    vi.restoreAllMocks();
    expect(h.d1.rowsWritten - before).toBe(2);
    await judgeAll(h, ["s1"]);
    report("6 events, an identical resend of 5, a conflicting copy + verdict", h, 1);
    expectPerSessionBudget(h);
  });

  it("amortises the rollup row and the series' count over the sessions judged together", async () => {
    const h = harness();
    const ids = Array.from({ length: 10 }, (_, i) => `s${i}`);
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
    report("10 sessions, 1 batch + verdicts", h, 10);
    expect(seriesCountRows(h)).toEqual([2]); // one count update for the 10
    expect(h.d1.rowsWritten / ids.length).toBeLessThanOrEqual(5);
  });
});
