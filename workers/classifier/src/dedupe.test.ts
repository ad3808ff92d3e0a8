/**
 * Dedupe on (`source`, `id`): the first payload of an event id is the one merged; a copy with
 * another payload is counted and logged, never merged. The pure split first, then through the
 * real handler and real D1.
 */
import type { TelemetryEvent } from "@aigate/shared";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, type MockInstance, vi } from "vitest";
import {
  canonicalPayload,
  DIGEST_ENTRY_CHARS,
  dedupeSession,
  eventKey,
  MAX_DIGEST_ENTRIES,
  parseDigest,
} from "./dedupe";
import { deliver, ev, eventsMessage, harness, judgeMessage, sessionRow, T0 } from "./test/support";

const SETTLE_MS = 60_000; // TEST_VARS.VERDICT_SETTLE_SECONDS
const R = T0 + 40_000;

/** A session that connected fast: its verdict turns on audio alone (>= 5000 ms is a success). */
function opening(session = "s1"): TelemetryEvent[] {
  return [
    ev("created", { session, id: "c0", time: T0 }),
    ev("connected", { session, id: "c1", time: T0 + 300, latency: 300 }),
  ];
}

const hb1 = (audio: number, session = "s1") =>
  ev("heartbeat", { session, id: "hb1", time: T0 + 10_000, audio });

/** Judges the session at `at` and returns its row (with the verdict recorded). */
async function judgeNow(h: ReturnType<typeof harness>, session: string, at: number) {
  await deliver(h, [{ body: judgeMessage([session], at - 1) }], at);
  const row = await sessionRow(session);
  expect(row?.verdict_at).toBe(at);
  return row;
}

function warnings(spy: MockInstance): Record<string, unknown>[] {
  return spy.mock.calls
    .map((c) => JSON.parse(String(c[0])) as Record<string, unknown>)
    .filter((l) => l.level === "warn");
}

const keyed = async (event: TelemetryEvent, receivedAt: number) => ({
  event,
  receivedAt,
  key: await eventKey(event),
});

describe("dedupeSession", () => {
  it("hashes identity and content apart: same id with other content, same content under another id", async () => {
    const a = await eventKey(hb1(3000));
    const resent = await eventKey(hb1(60_000));
    expect(resent.idHash).toBe(a.idHash);
    expect(resent.payloadHash).not.toBe(a.payloadHash);
    const renamed = await eventKey({ ...hb1(3000), id: "hb9" });
    expect(renamed.idHash).not.toBe(a.idHash);
    expect(renamed.payloadHash).toBe(a.payloadHash);
    // (source, id) pairs that concatenate alike stay apart
    expect((await eventKey({ ...hb1(3000), source: "gw-1h", id: "b1" })).idHash).not.toBe(a.idHash);
    expect(canonicalPayload({ ...hb1(1), id: "other", source: "other" })).toBe(canonicalPayload(hb1(1)));
  });

  it("gives the same split and digest in any order, with any duplicates (fast-check)", async () => {
    const hb2 = (audio: number) => ({ ...hb1(audio), id: "hb2" });
    const events = [hb1(3000), hb1(60_000), ...opening(), hb2(7), hb2(8)];
    const pool = await Promise.all(events.flatMap((e) => [keyed(e, R), keyed(e, R + 1)]));
    // A stored digest that knows c0 and hb2 (8 ms) already.
    const stored = dedupeSession(
      [await keyed(opening()[0] as TelemetryEvent, R), await keyed(hb2(8), R)],
      null,
    ).digest;
    // some events, and the same events shuffled with some of them twice
    const arb = fc.subarray(pool, { minLength: 1 }).chain((some) =>
      fc.tuple(
        fc.constant(some),
        fc.subarray(some).chain((dups) =>
          fc.shuffledSubarray([...some, ...dups], {
            minLength: some.length + dups.length,
            maxLength: some.length + dups.length,
          }),
        ),
        fc.boolean(),
      ),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([some, scrambled, withStored]) => {
        const digest = withStored ? stored : null;
        const one = dedupeSession(some, digest);
        const two = dedupeSession(scrambled, digest);
        expect(two.digest).toBe(one.digest);
        expect(new Set(two.merge)).toEqual(new Set(one.merge));
        expect(new Set(two.conflicting)).toEqual(new Set(one.conflicting));
        // one entry per distinct id; merged events match their entry, conflicting ones do not
        const known = parseDigest(one.digest);
        expect(one.digest.length).toBe(known.size * DIGEST_ENTRY_CHARS);
        expect(one.digest.startsWith(digest ?? "")).toBe(true);
        for (const e of one.merge) expect(known.get(e.key.idHash)).toBe(e.key.payloadHash);
        for (const e of one.conflicting) expect(known.get(e.key.idHash)).not.toBe(e.key.payloadHash);
      }),
      { numRuns: 300 },
    );
  });

  it("keeps the earliest received copy, whatever its content", async () => {
    const late = await keyed(hb1(3000), R + 1);
    const early = await keyed(hb1(60_000), R);
    const split = dedupeSession([late, early], null);
    expect(split.merge).toEqual([early]);
    expect(split.conflicting).toEqual([late]);
  });

  it("stops recording new ids once the digest is full, and still merges them", async () => {
    const full = Array.from(
      { length: MAX_DIGEST_ENTRIES },
      (_, i) => `${i.toString(36).padStart(11, "0")}AAAAA`,
    ).join("");
    const e = await keyed(hb1(3000), R);
    const split = dedupeSession([e], full);
    expect(split).toMatchObject({ merge: [e], conflicting: [], digest: full });
  });
});

describe("an event id resent with another payload", () => {
  let warn: MockInstance;
  beforeEach(() => {
    warn = vi.spyOn(console, "warn").mockImplementation(() => {});
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("does not change the session: heartbeat hb1 3000 ms, then hb1 60000 ms, then ended 3000 ms is too_short", async () => {
    const h = harness();
    await deliver(h, [{ body: eventsMessage([...opening(), hb1(3000)], R, "req-1") }], R);
    const second = await deliver(
      h,
      [{ id: "m2", body: eventsMessage([hb1(60_000)], R + 1000, "req-2") }],
      R + 1000,
    );
    expect(second.acked).toEqual(["m2"]);
    const ended = ev("ended", { session: "s1", id: "e1", time: T0 + 20_000, audio: 3000 });
    await deliver(h, [{ body: eventsMessage([ended], R + 2000, "req-3") }], R + 2000);

    const judged = await judgeNow(h, "s1", R + 2000 + SETTLE_MS + 1);
    expect(judged).toMatchObject({ reason: "too_short", billable: 0, audio_ms: 3000, conflicting_events: 1 });
    expect(warnings(warn)).toEqual([
      expect.objectContaining({
        msg: "ignored event copies whose payload differs from the first copy",
        conflicting: [{ session_id: "s1", source: "gw-1", id: "hb1", received_at: R + 1000 }],
      }),
    ]);
  });

  it("keeps the earliest received copy when both copies arrive in one batch, whatever their order in it", async () => {
    for (const [first, later, expected] of [
      [3000, 60_000, 3000],
      [60_000, 3000, 60_000],
    ] as const) {
      for (const laterFirstInBatch of [false, true]) {
        const session = `s-${first}-${laterFirstInBatch}`;
        const h = harness();
        const early = { body: eventsMessage([...opening(session), hb1(first, session)], R, "req-1") };
        const late = { body: eventsMessage([hb1(later, session)], R + 5, "req-2") };
        const r = await deliver(h, laterFirstInBatch ? [late, early] : [early, late], R + 10);
        expect(r.retried).toEqual([]);
        expect(await sessionRow(session)).toMatchObject({ audio_ms: expected, conflicting_events: 1 });
      }
    }
    expect(warnings(warn)).toHaveLength(4);
  });

  it("breaks a tie between copies received in the same millisecond by payload, the same in any order", async () => {
    const results: number[] = [];
    for (const [session, order] of [
      ["tie-a", [3000, 60_000]],
      ["tie-b", [60_000, 3000]],
    ] as const) {
      const h = harness();
      await deliver(
        h,
        order.map((audio, i) => ({ body: eventsMessage([hb1(audio, session)], R, `req-${i}`) })),
        R,
      );
      const row = await sessionRow(session);
      expect(row?.conflicting_events).toBe(1);
      results.push(row?.audio_ms ?? -1);
    }
    expect(results[0]).toBe(results[1]);
  });

  it("merges identical copies as one event, in one batch or across batches, and counts no conflict", async () => {
    const h = harness();
    const events = [...opening(), hb1(3000)];
    await deliver(
      h,
      [{ body: eventsMessage(events, R, "req-1") }, { body: eventsMessage(events, R + 1, "req-2") }],
      R + 1,
    );
    await deliver(h, [{ body: eventsMessage([...events].reverse(), R + 2, "req-3") }], R + 2);
    const row = await sessionRow("s1");
    expect(row).toMatchObject({ audio_ms: 3000, conflicting_events: 0, connected: 1 });
    // one entry of 16 characters per distinct event
    expect(row?.event_digest).toHaveLength(3 * 16);
    expect(warnings(warn)).toEqual([]);
  });

  it("counts a copy of another event id as a new event: ids are per source", async () => {
    const h = harness();
    await deliver(h, [{ body: eventsMessage([...opening(), hb1(3000)], R) }], R);
    const otherGateway = ev("heartbeat", { session: "s1", id: "hb1", source: "gw-2", time: T0, audio: 8000 });
    await deliver(h, [{ body: eventsMessage([otherGateway], R + 1) }], R + 1);
    expect(await sessionRow("s1")).toMatchObject({ audio_ms: 8000, conflicting_events: 0 });
  });

  it("clears the digest with the verdict; copies arriving after it only count as late", async () => {
    const h = harness();
    const ended = ev("ended", { session: "s1", id: "e1", time: T0 + 20_000, audio: 3000 });
    await deliver(h, [{ body: eventsMessage([...opening(), hb1(3000), ended], R) }], R);
    expect((await sessionRow("s1"))?.event_digest).toHaveLength(4 * 16);
    await judgeNow(h, "s1", R + SETTLE_MS + 1);
    await deliver(
      h,
      [{ body: eventsMessage([hb1(60_000), hb1(3000)], R + SETTLE_MS + 2) }],
      R + SETTLE_MS + 2,
    );
    expect(await sessionRow("s1")).toMatchObject({
      event_digest: null,
      audio_ms: 3000,
      late_events: 2,
      conflicting_events: 0,
      reason: "too_short",
    });
  });

  it("keeps the first merged payload when another batch merges a copy between the read and the upsert", async () => {
    const h = harness();
    await deliver(h, [{ body: eventsMessage(opening(), R) }], R);
    // Another consumer run merges hb1 (60000 ms) after this run has read the session.
    h.d1.beforeNextBatch = async () => {
      await deliver(harness(), [{ body: eventsMessage([hb1(60_000)], R + 1) }], R + 1);
    };
    const r = await deliver(h, [{ id: "m", body: eventsMessage([hb1(3000)], R + 2) }], R + 2);
    expect(r.retried).toEqual([]);
    expect(await sessionRow("s1")).toMatchObject({ audio_ms: 60_000, conflicting_events: 1 });
    expect((await sessionRow("s1"))?.event_digest).toHaveLength(3 * 16);
  });

  it("lets a run write when another run merged the same events between its read and its upsert", async () => {
    const info = vi.spyOn(console, "log").mockImplementation(() => {});
    const h = harness();
    await deliver(h, [{ body: eventsMessage(opening(), R) }], R);
    const events = [hb1(3000), ev("heartbeat", { session: "s1", id: "hb2", time: T0 + 20_000, audio: 9000 })];
    h.d1.beforeNextBatch = async () => {
      await deliver(harness(), [{ body: eventsMessage(events, R + 1) }], R + 1);
    };
    await deliver(h, [{ body: eventsMessage(events, R + 1) }], R + 1);
    expect(await sessionRow("s1")).toMatchObject({ audio_ms: 9000, conflicting_events: 0 });
    expect((await sessionRow("s1"))?.event_digest).toHaveLength(4 * 16);
    // the stored digest was a prefix of the one this run wrote: no second pass
    const passes = info.mock.calls
      .map((c) => JSON.parse(String(c[0])) as { msg: string; passes?: number })
      .filter((l) => l.msg === "recorded telemetry")
      .map((l) => l.passes);
    expect(passes).toEqual([1, 1, 1]);
  });

  it("loses no event id when another batch merges other events between the read and the upsert", async () => {
    const h = harness();
    await deliver(h, [{ body: eventsMessage(opening(), R) }], R);
    const hb2 = ev("heartbeat", { session: "s1", id: "hb2", time: T0 + 20_000, audio: 9000 });
    h.d1.beforeNextBatch = async () => {
      await deliver(harness(), [{ body: eventsMessage([hb2], R + 1) }], R + 1);
    };
    await deliver(h, [{ body: eventsMessage([hb1(3000)], R + 2) }], R + 2);
    expect((await sessionRow("s1"))?.event_digest).toHaveLength(4 * 16);
    // Both ids are known now: conflicting copies of either are refused.
    await deliver(h, [{ body: eventsMessage([hb1(70_000), { ...hb2, audio_ms: 80_000 }], R + 3) }], R + 3);
    expect(await sessionRow("s1")).toMatchObject({ audio_ms: 9000, conflicting_events: 2 });
  });
});
