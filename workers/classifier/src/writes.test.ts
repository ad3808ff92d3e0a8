/**
 * D1 rows written per session, measured from D1's result metadata (meta.rows_written of every
 * statement the classifier runs, index entries included). Target: at most 8 per session.
 */
import { describe, expect, it, vi } from "vitest";
import {
  deliver,
  eventsMessage,
  harness,
  judgeMessage,
  T0,
  typicalSession,
  verdictsOf,
} from "./test/support";

const RECEIVED = T0 + 40_000;
const JUDGE_AT = RECEIVED + 61_000;

async function judgeAll(h: ReturnType<typeof harness>, ids: string[]) {
  await deliver(h, [{ body: judgeMessage(ids, RECEIVED + 60_000) }], JUDGE_AT);
  expect(
    verdictsOf(h.verdicts)
      .map((v) => v.session_id)
      .sort(),
  ).toEqual([...ids].sort());
}

function report(label: string, h: ReturnType<typeof harness>, sessions: number) {
  const perStatement = h.d1.log.filter((l) => l.rowsWritten > 0);
  console.info(
    `[rows_written] ${label}: ${h.d1.rowsWritten} for ${sessions} session(s) = ${h.d1.rowsWritten / sessions} per session`,
    JSON.stringify(perStatement),
  );
}

describe("D1 rows written per session", () => {
  it("stays at or under 8 for a typical session arriving in one batch, then judged", async () => {
    const h = harness();
    await deliver(h, [{ body: eventsMessage(typicalSession("s1", T0), RECEIVED) }], RECEIVED);
    await judgeAll(h, ["s1"]);
    report("6 events in 1 batch + verdict", h, 1);
    expect(h.d1.rowsWritten).toBeGreaterThan(0);
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
    expect(h.d1.rowsWritten).toBeGreaterThan(0);
    expect(h.d1.rowsWritten).toBeLessThanOrEqual(8);
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
    expect(h.d1.rowsWritten).toBeLessThanOrEqual(8);
  });

  it("amortises the rollup row over the sessions judged together", async () => {
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
    expect(h.d1.rowsWritten / ids.length).toBeLessThanOrEqual(5);
  });
});
