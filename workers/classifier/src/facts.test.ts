import { judge, type TelemetryEvent, utcDay } from "@aigate/shared";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  chooseOwner,
  coalesceBySession,
  compareText,
  factsFromEvent,
  mergeFacts,
  type PartialFacts,
  type ReceivedEvent,
  verdictInputs,
} from "./facts";
import { scenarioArb } from "./test/arbitraries";
import { ev, T0 } from "./test/support";

const SETTLE = 60_000;
const received = (event: TelemetryEvent, receivedAt = T0 + 100_000): ReceivedEvent => ({ event, receivedAt });
const coalesceOne = (events: TelemetryEvent[], receivedAt = T0 + 100_000): PartialFacts => {
  const facts = coalesceBySession(
    events.map((e) => received(e, receivedAt)),
    SETTLE,
  ).get(events[0]?.session_id ?? "");
  if (!facts) throw new Error("no facts");
  return facts;
};

describe("factsFromEvent", () => {
  it("turns a connected event into the connected flag and its latency", () => {
    const f = factsFromEvent(ev("connected", { session: "s", time: T0, latency: 1234 }), T0 + 5, SETTLE);
    expect(f).toMatchObject({ connected: true, connectLatencyMs: 1234, createdAt: null, endedAt: null });
    expect(f).toMatchObject({ firstEventAt: T0, lastEventAt: T0, firstSeenAt: T0 + 5, settleDueAt: null });
  });

  it("starts the settle window at the receipt of `ended`, not at its event time", () => {
    const f = factsFromEvent(
      ev("ended", { session: "s", time: T0, audio: 7000, reason: "bye" }),
      T0 + 9000,
      SETTLE,
    );
    expect(f).toMatchObject({
      endedAt: T0,
      endReason: "bye",
      audioMs: 7000,
      settleDueAt: T0 + 9000 + SETTLE,
    });
  });

  it("takes audio only from heartbeat and ended events", () => {
    expect(factsFromEvent(ev("heartbeat", { session: "s", time: T0, audio: 42 }), T0, SETTLE).audioMs).toBe(
      42,
    );
    const created = { ...ev("created", { session: "s", time: T0 }), audio_ms: 999 };
    expect(factsFromEvent(created, T0, SETTLE).audioMs).toBe(0);
  });

  it("keeps upstream status and code only from upstream_error events", () => {
    const up = factsFromEvent(
      ev("upstream_error", { session: "s", time: T0, status: 503, code: "overloaded" }),
      T0,
      SETTLE,
    );
    expect(up).toMatchObject({ upstreamError: true, upstreamStatus: 503, upstreamCode: "overloaded" });
    const other = { ...ev("heartbeat", { session: "s", time: T0 }), status: 500, code: "x" };
    expect(factsFromEvent(other, T0, SETTLE)).toMatchObject({ upstreamStatus: null, upstreamCode: null });
  });
});

describe("mergeFacts", () => {
  it("keeps the maximum of cumulative audio, whatever the order", () => {
    const a = [
      ev("heartbeat", { session: "s", time: T0 + 2000, audio: 9000 }),
      ev("heartbeat", { session: "s", time: T0 + 1000, audio: 4000 }),
    ];
    expect(coalesceOne(a).audioMs).toBe(9000);
    expect(coalesceOne([...a].reverse()).audioMs).toBe(9000);
  });

  it("only ever turns flags on", () => {
    const f = coalesceOne([
      ev("turn_failed", { session: "s", time: T0 }),
      ev("heartbeat", { session: "s", time: T0 + 1 }),
      ev("upstream_error", { session: "s", time: T0 + 2 }),
      ev("connected", { session: "s", time: T0 + 3 }),
      ev("heartbeat", { session: "s", time: T0 + 4 }),
    ]);
    expect(f).toMatchObject({ turnFailed: true, upstreamError: true, connected: true });
  });

  it("keeps the minimum connect latency and the earliest created, first and ended times", () => {
    const f = coalesceOne([
      ev("connected", { session: "s", time: T0 + 500, latency: 2500 }),
      ev("created", { session: "s", time: T0 + 10 }),
      ev("connected", { session: "s", time: T0 + 400, latency: 1500 }),
      ev("created", { session: "s", time: T0 }),
      ev("ended", { session: "s", time: T0 + 9000, reason: "late" }),
      ev("ended", { session: "s", time: T0 + 8000, reason: "early" }),
    ]);
    expect(f).toMatchObject({
      connectLatencyMs: 1500,
      createdAt: T0,
      firstEventAt: T0,
      lastEventAt: T0 + 9000,
    });
    expect(f).toMatchObject({ endedAt: T0 + 8000, endReason: "early" });
  });

  it("breaks a tie between ended events by the greatest reason, a missing reason lowest", () => {
    const a = ev("ended", { session: "s", time: T0 });
    const b = ev("ended", { session: "s", time: T0, reason: "hangup" });
    const c = ev("ended", { session: "s", time: T0, reason: "zz" });
    for (const order of [
      [a, b, c],
      [c, b, a],
      [b, a, c],
    ]) {
      expect(coalesceOne(order).endReason).toBe("zz");
    }
    expect(coalesceOne([a]).endReason).toBeNull();
  });

  it("keeps upstream status and code from one event: the greatest pair", () => {
    const a = ev("upstream_error", { session: "s", time: T0, status: 429, code: "zzz" });
    const b = ev("upstream_error", { session: "s", time: T0 + 1, status: 503, code: "aaa" });
    const c = ev("upstream_error", { session: "s", time: T0 + 2 });
    for (const order of [
      [a, b, c],
      [c, b, a],
      [b, c, a],
    ]) {
      expect(coalesceOne(order)).toMatchObject({ upstreamStatus: 503, upstreamCode: "aaa" });
    }
  });

  it("keeps the smallest source and the receipt span", () => {
    const x = factsFromEvent(ev("heartbeat", { session: "s", time: T0, source: "gw-b" }), T0 + 50, SETTLE);
    const y = factsFromEvent(ev("ended", { session: "s", time: T0, source: "gw-a" }), T0 + 10, SETTLE);
    expect(mergeFacts(x, y)).toMatchObject({ source: "gw-a", firstSeenAt: T0 + 10, lastSeenAt: T0 + 50 });
    expect(mergeFacts(x, y).settleDueAt).toBe(T0 + 10 + SETTLE);
  });

  const partial: fc.Arbitrary<PartialFacts> = fc
    .record({
      source: fc.option(fc.constantFrom("a", "b", "\uFFFF", "\u{1F600}")),
      createdAt: fc.option(fc.integer({ min: 0, max: 9 })),
      firstEventAt: fc.integer({ min: 0, max: 9 }),
      span: fc.integer({ min: 0, max: 9 }),
      connected: fc.boolean(),
      connectLatencyMs: fc.option(fc.integer({ min: 0, max: 9 })),
      turnFailed: fc.boolean(),
      upstreamError: fc.boolean(),
      upstreamStatus: fc.option(fc.constantFrom(429, 500)),
      upstreamCode: fc.option(fc.constantFrom("", "a", "\uFFFF", "\u{1F600}")),
      audioMs: fc.integer({ min: 0, max: 9 }),
      endedAt: fc.option(fc.integer({ min: 0, max: 3 })),
      endReason: fc.option(fc.constantFrom("", "a", "\uFFFF", "\u{1F600}")),
      firstSeenAt: fc.integer({ min: 0, max: 9 }),
      settleDueAt: fc.option(fc.integer({ min: 0, max: 9 })),
    })
    .map(({ span, ...f }) => ({
      ...f,
      sessionId: "s",
      userId: "u",
      projectId: "p",
      lastEventAt: f.firstEventAt + span,
      lastSeenAt: f.firstSeenAt + span,
      endReason: f.endedAt === null ? null : f.endReason,
    }));

  it("is commutative, associative and idempotent (fast-check, 2000 runs)", () => {
    fc.assert(
      fc.property(partial, partial, partial, (a, b, c) => {
        expect(mergeFacts(a, b)).toEqual(mergeFacts(b, a));
        expect(mergeFacts(mergeFacts(a, b), c)).toEqual(mergeFacts(a, mergeFacts(b, c)));
        expect(mergeFacts(a, a)).toEqual(a);
        expect(mergeFacts(mergeFacts(a, b), b)).toEqual(mergeFacts(a, b));
      }),
      { numRuns: 2000 },
    );
  });
});

describe("compareText", () => {
  it("orders by code point like SQLite, not by UTF-16 unit like JS", () => {
    expect("\u{1F600}" < "\uFFFF").toBe(true); // JS
    expect(compareText("\u{1F600}", "\uFFFF")).toBe(1); // code points: U+1F600 > U+FFFF
    expect(compareText("a", "ab")).toBe(-1);
    expect(compareText("b", "ab")).toBe(1);
    expect(compareText("x", "x")).toBe(0);
  });
});

describe("chooseOwner", () => {
  it("gives a new session to the user of its earliest created event, in any order", () => {
    const events = [
      ev("heartbeat", { session: "s", user: "early-heartbeat", time: T0 - 5 }),
      ev("created", { session: "s", user: "creator", time: T0 }),
      ev("created", { session: "s", user: "later-creator", time: T0 + 1 }),
    ];
    expect(chooseOwner(events)).toBe("creator");
    expect(chooseOwner([...events].reverse())).toBe("creator");
  });

  it("falls back to the user of the earliest event", () => {
    const events = [
      ev("heartbeat", { session: "s", user: "b", time: T0 + 1 }),
      ev("connected", { session: "s", user: "a", time: T0 }),
    ];
    expect(chooseOwner(events)).toBe("a");
    expect(chooseOwner([])).toBeNull();
  });
});

/** Content facts: everything but the receipt-driven timers. */
function content(f: PartialFacts) {
  const { firstSeenAt: _a, lastSeenAt: _b, settleDueAt: _c, ...rest } = f;
  return rest;
}

/** The model of what D1 ends up with: each batch coalesced, then merged into the stored facts. */
function mergeBatches(batches: TelemetryEvent[][], firstReceipt: number): Map<string, PartialFacts> {
  const stored = new Map<string, PartialFacts>();
  batches.forEach((batch, i) => {
    const coalesced = coalesceBySession(
      batch.map((e) => received(e, firstReceipt + i * 1000)),
      SETTLE,
    );
    for (const [id, f] of coalesced) {
      const seen = stored.get(id);
      stored.set(id, seen ? mergeFacts(seen, f) : f);
    }
  });
  return stored;
}

function verdictsAndRollups(facts: Map<string, PartialFacts>) {
  const verdicts = new Map<string, ReturnType<typeof judge>>();
  const rollups = new Map<string, { sessions: number; audio: number }>();
  for (const [id, f] of facts) {
    const v = judge(verdictInputs(f));
    verdicts.set(id, v);
    const key = `${f.userId}|${utcDay(f.createdAt ?? f.firstEventAt)}|${v.reason}`;
    const r = rollups.get(key) ?? { sessions: 0, audio: 0 };
    rollups.set(key, { sessions: r.sessions + 1, audio: r.audio + f.audioMs });
  }
  return { verdicts, rollups };
}

describe("facts model (fast-check, 1500 runs)", () => {
  it("gives identical facts, verdicts and rollups for shuffled, duplicated, split events as for one ordered copy", () => {
    fc.assert(
      fc.property(scenarioArb(8), ({ sessions, scrambled }) => {
        const ordered = mergeBatches([sessions.flat()], T0);
        const shuffled = mergeBatches(
          scrambled.map((batch) => batch.flat()),
          T0 + 5000,
        );
        expect(shuffled.size).toBe(sessions.length);
        for (const [id, f] of ordered) {
          const g = shuffled.get(id);
          expect(g && content(g)).toEqual(content(f));
        }
        const a = verdictsAndRollups(ordered);
        const b = verdictsAndRollups(shuffled);
        expect(b.verdicts).toEqual(a.verdicts);
        expect(b.rollups).toEqual(a.rollups);
      }),
      { numRuns: 1500 },
    );
  });
});
