import { type EventsMessage, QUEUE_LIMITS, type TelemetryEvent } from "@aigate/shared";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { dedupeEvents, jsonBytes, type PackLimits, packEvents, sendBatches } from "./packing";

const header = { request_id: "req_1", received_at: 1_780_000_000_000 };

function telemetry(i: number, extra: Partial<TelemetryEvent> = {}): TelemetryEvent {
  return {
    id: `evt_${i}`,
    source: "gw-eu-1",
    type: "aigate.session.heartbeat",
    session_id: `sess_${Math.floor(i / 10)}`,
    user_id: "user_1",
    project_id: "proj_1",
    time: 1_780_000_000_000 + i,
    audio_ms: i * 100,
    ...extra,
  };
}

/** The largest event validation lets through: every text field at its limit, 3 UTF-8 bytes a char. */
function largestEvent(i: number): TelemetryEvent {
  const id = (prefix: string) => `${prefix}${i}`.padEnd(200, "€");
  return {
    ...telemetry(i),
    id: id("e"),
    source: id("s"),
    session_id: id("x"),
    user_id: id("u"),
    project_id: id("p"),
    type: "aigate.session.ended",
    reason: "€".repeat(500),
  };
}

function checkPacking(events: TelemetryEvent[], messages: ReturnType<typeof packEvents>, limits: PackLimits) {
  // order and content preserved
  expect(messages.flatMap((m) => m.body.events)).toEqual(events);
  for (const m of messages) {
    expect(m.bytes).toBe(jsonBytes(m.body));
    expect(m.bytes).toBeLessThanOrEqual(limits.maxMessageBytes);
    expect(m.body.events.length).toBeGreaterThan(0);
    expect(m.body).toMatchObject({ v: 1, kind: "events", ...header });
  }
  // fewest messages: no message could have taken the next message's first event
  for (let i = 0; i + 1 < messages.length; i++) {
    const current = messages[i];
    const next = messages[i + 1];
    if (!current || !next) throw new Error("unreachable");
    const merged: EventsMessage = {
      ...current.body,
      events: [...current.body.events, ...next.body.events.slice(0, 1)],
    };
    expect(jsonBytes(merged)).toBeGreaterThan(limits.maxMessageBytes);
  }
}

describe("packEvents", () => {
  it("puts a 50-event request in one message (0.02 messages per event, target <= 0.05)", () => {
    const events = Array.from({ length: 50 }, (_, i) => telemetry(i));
    const messages = packEvents(events, header);
    expect(messages).toHaveLength(1);
    expect(messages.length / events.length).toBeLessThanOrEqual(0.05);
    checkPacking(events, messages, QUEUE_LIMITS);
  });

  it("splits 500 of the largest valid events into several messages, each under 128 KB", () => {
    const events = Array.from({ length: 500 }, (_, i) => largestEvent(i));
    const total = events.reduce((n, e) => n + jsonBytes(e), 0);
    const messages = packEvents(events, header);
    expect(messages.length).toBeGreaterThan(1);
    expect(messages.length).toBeLessThanOrEqual(Math.ceil(total / (QUEUE_LIMITS.maxMessageBytes - 200)) + 1);
    checkPacking(events, messages, QUEUE_LIMITS);
  });

  it("returns no message for no events", () => {
    expect(packEvents([], header)).toEqual([]);
  });

  it("refuses an event that cannot fit in any message", () => {
    expect(() =>
      packEvents([telemetry(1, { reason: "x".repeat(2000) })], header, {
        ...QUEUE_LIMITS,
        maxMessageBytes: 1000,
      }),
    ).toThrow(RangeError);
  });

  it("packs any events into the fewest in-order messages within the limit (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ maxLength: 400, unit: "binary" }), { maxLength: 120 }),
        fc.integer({ min: 900, max: 20_000 }),
        (reasons, maxMessageBytes) => {
          const limits = { ...QUEUE_LIMITS, maxMessageBytes };
          const events = reasons.map((reason, i) => telemetry(i, { reason }));
          checkPacking(events, packEvents(events, header, limits), limits);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("sendBatches", () => {
  it("keeps every sendBatch call within 100 messages and 256 KB, in order", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: QUEUE_LIMITS.maxMessageBytes }), { maxLength: 400 }),
        (sizes) => {
          const messages = sizes.map((bytes, i) => ({
            body: { v: 1 as const, kind: "events" as const, request_id: `r${i}`, received_at: 0, events: [] },
            bytes,
          }));
          const batches = sendBatches(messages);
          expect(batches.flat()).toEqual(messages);
          for (const batch of batches) {
            expect(batch.length).toBeGreaterThan(0);
            expect(batch.length).toBeLessThanOrEqual(QUEUE_LIMITS.maxBatchMessages);
            expect(batch.reduce((n, m) => n + m.bytes, 0)).toBeLessThanOrEqual(QUEUE_LIMITS.maxBatchBytes);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("sends 500 large events in one call per two full messages", () => {
    const messages = packEvents(
      Array.from({ length: 500 }, (_, i) => largestEvent(i)),
      header,
    );
    const batches = sendBatches(messages);
    expect(batches.length).toBe(Math.ceil(messages.length / 2));
  });

  it("starts a new call after 100 small messages", () => {
    const small = Array.from({ length: 250 }, (_, i) => ({
      body: { v: 1 as const, kind: "events" as const, request_id: `r${i}`, received_at: 0, events: [] },
      bytes: 100,
    }));
    expect(sendBatches(small).map((b) => b.length)).toEqual([100, 100, 50]);
  });
});

describe("dedupeEvents", () => {
  it("keeps the first copy of each (source, id) and every distinct event in order", () => {
    const a = telemetry(1);
    const b = telemetry(2);
    const aAgain = { ...telemetry(1), audio_ms: 999 };
    const otherSource = { ...telemetry(1), source: "gw-us-1" };
    expect(dedupeEvents([a, b, aAgain, otherSource, b])).toEqual([a, b, otherSource]);
  });

  it("keeps the first copy of each (source, id) pair, whatever the strings hold (property)", () => {
    const part = fc.constantFrom("a", "b", "a:b", "b:", ":", "1:a", "");
    fc.assert(
      fc.property(fc.array(fc.tuple(part, part), { maxLength: 30 }), (pairs) => {
        const events = pairs.map(([source, id], i) => ({ ...telemetry(i), source, id }));
        const seen = new Set<string>();
        const expected = events.filter((e) => {
          const key = JSON.stringify([e.source, e.id]);
          if (seen.has(key)) return false;
          seen.add(key);
          return true;
        });
        expect(dedupeEvents(events)).toEqual(expected);
      }),
    );
  });
});
