import { CloudEvent, EVENT_TYPES, LIMITS, parseEventBatch } from "@aigate/shared";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { acceptor, REJECT } from "./acceptor";
import { parseEvents } from "./telemetry";

const NOW = Date.UTC(2026, 10, 20, 12, 0, 0);
const DAY = 24 * 60 * 60 * 1000;

/** Whatever a client might put in a field: mostly plausible values, some of every other kind. */
const junk = fc.oneof(
  fc.constant(undefined),
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.double(),
  fc.string(),
  fc.array(fc.string(), { maxLength: 2 }),
  fc.dictionary(fc.string({ maxLength: 3 }), fc.string(), { maxKeys: 2 }),
);

/** Ids near every bound: padded (trimmed), blank, 200 and 201 long, lone or paired surrogates, emoji. */
const idText = fc.oneof(
  { arbitrary: fc.string({ minLength: 1, maxLength: 30 }), weight: 6 },
  { arbitrary: fc.string({ maxLength: 30, unit: "binary" }), weight: 2 },
  { arbitrary: fc.string({ maxLength: 4 }).map((s) => `  ${s}\t`), weight: 1 },
  { arbitrary: fc.constantFrom(199, 200, 201).map((n) => "x".repeat(n)), weight: 1 },
  { arbitrary: fc.constantFrom(100, 101).map((n) => "\u{1F600}".repeat(n)), weight: 1 },
  { arbitrary: fc.constantFrom("a\ud800", "\udc00b", "\ud83d\ude00", "", " "), weight: 1 },
);
const text = fc.oneof(
  { arbitrary: fc.string({ maxLength: 40 }), weight: 6 },
  { arbitrary: fc.constantFrom(500, 501).map((n) => "t".repeat(n)), weight: 1 },
  { arbitrary: fc.string({ maxLength: 6, unit: "binary" }), weight: 1 },
);
const millis = fc.oneof(
  { arbitrary: fc.integer({ min: 0, max: LIMITS.maxDurationMs }), weight: 6 },
  { arbitrary: fc.constantFrom(-1, 0.5, LIMITS.maxDurationMs + 1, Number.MAX_SAFE_INTEGER + 2), weight: 1 },
);
const time = fc.oneof(
  {
    arbitrary: fc
      .integer({ min: NOW - 36 * DAY, max: NOW + 10 * 60_000 })
      .map((ms) => new Date(ms).toISOString()),
    weight: 6,
  },
  {
    arbitrary: fc.constantFrom(
      "2026-11-20T12:00:00+01:00",
      "2026-11-20T12:00:00",
      "2026-11-20 12:00:00Z",
      "2026-02-30T00:00:00Z",
      "2026-11-20T12:00:00.123456Z",
    ),
    weight: 1,
  },
);

/** A field: usually its plausible value, sometimes junk, sometimes missing (undefined below). */
const field = <T>(valid: fc.Arbitrary<T>) =>
  fc.oneof({ arbitrary: valid, weight: 12 }, { arbitrary: junk, weight: 1 });

const dataFields = {
  user_id: field(idText),
  project_id: field(idText),
  connect_latency_ms: field(millis),
  audio_ms: field(millis),
  status: field(fc.oneof(fc.integer({ min: 0, max: 999 }), fc.constantFrom(-1, 1000, 2.5))),
  code: field(text),
  reason: field(text),
  detail: field(text),
  extra: field(fc.string()),
};

/**
 * The keys an event of `type` may carry in its data (plus one it may not). A Map: a junk type such
 * as "constructor" must not find an object's inherited property.
 */
const DATA_KEYS = new Map<string, string[]>([
  ["aigate.session.created", ["user_id", "project_id"]],
  ["aigate.session.connected", ["user_id", "project_id", "connect_latency_ms"]],
  ["aigate.session.turn_failed", ["user_id", "project_id", "detail"]],
  ["aigate.session.upstream_error", ["user_id", "project_id", "status", "code"]],
  ["aigate.session.heartbeat", ["user_id", "project_id", "audio_ms"]],
  ["aigate.session.ended", ["user_id", "project_id", "audio_ms", "reason"]],
]);

/** A CloudEvent as a gateway (or a broken one) might send it: fields in any order, some omitted. */
const eventLike = fc
  .record({
    specversion: field(fc.constantFrom("1.0", "1.0", "1.0", "0.3")),
    id: field(idText),
    source: field(idText),
    subject: field(idText),
    time: field(time),
    type: field(fc.constantFrom(...EVENT_TYPES, "aigate.session.other")),
    data: fc.oneof({ arbitrary: fc.record(dataFields), weight: 12 }, { arbitrary: junk, weight: 1 }),
    extension: fc.option(fc.string(), { nil: undefined }),
    omit: fc.subarray(["specversion", "id", "source", "subject", "time", "type", "data", "extension"], {
      maxLength: 1,
    }),
    omitData: fc.subarray(["user_id", "project_id", "connect_latency_ms", "audio_ms", "status"], {
      maxLength: 1,
    }),
    reversed: fc.boolean(),
  })
  .map(({ omit, omitData, reversed, ...e }) => {
    const keys = (typeof e.type === "string" ? DATA_KEYS.get(e.type) : undefined) ?? [
      "user_id",
      "project_id",
    ];
    let data: unknown = e.data;
    if (e.data !== null && typeof e.data === "object" && !Array.isArray(e.data)) {
      const all: Record<string, unknown> = e.data;
      const picked = Object.entries(all).filter(
        ([k, v]) => (keys.includes(k) || k === "extra") && v !== undefined && !omitData.includes(k),
      );
      data = Object.fromEntries(reversed ? picked.reverse() : picked);
    }
    const entries = Object.entries({ ...e, data }).filter(([k, v]) => v !== undefined && !omit.includes(k));
    return Object.fromEntries(reversed ? entries.reverse() : entries);
  });

const anyValue = fc.oneof({ arbitrary: eventLike, weight: 20 }, { arbitrary: fc.anything(), weight: 1 });

describe("acceptor(CloudEvent), the fast path of event validation", () => {
  const accept = acceptor(CloudEvent);

  it("accepts exactly what the schema accepts, with the schema's output in the same key order (property)", () => {
    let acceptedByBoth = 0;
    fc.assert(
      fc.property(anyValue, (value) => {
        const parsed = CloudEvent.safeParse(value);
        const fast = accept(value);
        if (!parsed.success) {
          expect(fast).toBe(REJECT);
          return;
        }
        expect(fast).not.toBe(REJECT);
        expect(fast).toEqual(parsed.data);
        expect(JSON.stringify(fast)).toBe(JSON.stringify(parsed.data));
        acceptedByBoth++;
      }),
      { numRuns: 2000 },
    );
    // the generator reaches both sides: valid events (about 5 % of runs, so at least 30 of 2000
    // whatever the seed), and the rest invalid
    expect(acceptedByBoth).toBeGreaterThanOrEqual(30);
    expect(acceptedByBoth).toBeLessThan(1900);
  });

  it("trims ids as the schema does and drops keys the schema does not know", () => {
    const event = {
      specversion: "1.0",
      id: "  e-1 ",
      source: "gw",
      subject: "s",
      time: "2026-11-20T12:00:00Z",
      type: "aigate.session.heartbeat",
      data: { audio_ms: 10, project_id: "p", user_id: "u", note: "x" },
      traceparent: "00-abc",
    };
    expect(accept(event)).toEqual({
      specversion: "1.0",
      id: "e-1",
      source: "gw",
      subject: "s",
      time: "2026-11-20T12:00:00Z",
      type: "aigate.session.heartbeat",
      data: { user_id: "u", project_id: "p", audio_ms: 10 },
    });
  });

  it("rejects, for the schema to explain, any event the schema refuses", () => {
    const good = {
      specversion: "1.0",
      id: "e",
      source: "gw",
      subject: "s",
      time: "2026-11-20T12:00:00Z",
      type: "aigate.session.ended",
      data: { user_id: "u", project_id: "p", audio_ms: 10 },
    };
    expect(accept(good)).not.toBe(REJECT);
    for (const bad of [
      { ...good, id: "   " },
      { ...good, subject: "x".repeat(201) },
      { ...good, source: "a\ud800" },
      { ...good, time: "2026-11-20T12:00:00" },
      { ...good, specversion: "0.3" },
      { ...good, type: "aigate.session.other" },
      { ...good, data: { user_id: "u", project_id: "p" } },
      { ...good, data: { user_id: "u", project_id: "p", audio_ms: 1.5 } },
      { ...good, data: { user_id: "u", project_id: "p", audio_ms: 10, reason: "r".repeat(501) } },
      [good],
      null,
      "event",
    ]) {
      expect(CloudEvent.safeParse(bad).success).toBe(false);
      expect(accept(bad)).toBe(REJECT);
    }
  });
});

describe("acceptor on schema kinds it does not walk", () => {
  const cases: Array<[string, z.ZodType, unknown[]]> = [
    [
      "an object-wide refine",
      z.object({ a: z.int(), b: z.int() }).refine((v) => v.a < v.b),
      [{ a: 1, b: 2 }, { a: 2, b: 1 }, { a: 1 }],
    ],
    ["a strict object", z.strictObject({ a: z.string() }), [{ a: "x" }, { a: "x", b: 1 }]],
    ["an array and an enum", z.object({ a: z.array(z.enum(["x", "y"])) }), [{ a: ["x"] }, { a: ["z"] }]],
    ["a default", z.object({ a: z.string().default("d") }), [{}, { a: "x" }, { a: 1 }]],
    ["a transform", z.object({ a: z.string().transform((s) => s.length) }), [{ a: "abc" }, { a: 1 }]],
    ["lengths counted in code points", z.object({ a: z.string().max(3) }), [{ a: "\u{1F600}".repeat(3) }]],
  ];
  for (const [name, schema, values] of cases) {
    it(`agrees with the schema on ${name}`, () => {
      const accept = acceptor(schema);
      for (const value of values) {
        const parsed = schema.safeParse(value);
        expect(accept(value)).toEqual(parsed.success ? parsed.data : REJECT);
      }
    });
  }
});

describe("parseEvents, the batch validation of POST /v1/events", () => {
  it("returns what parseEventBatch returns: the same events, or the same issues (property)", () => {
    const timed = eventLike.chain((e) =>
      fc
        .integer({ min: NOW - 40 * DAY, max: NOW + 20 * 60_000 })
        .map((ms) => ({ ...e, time: new Date(ms).toISOString() })),
    );
    fc.assert(
      fc.property(fc.array(fc.oneof(eventLike, timed), { minLength: 1, maxLength: 8 }), (batch) => {
        expect(parseEvents(batch, NOW)).toEqual(parseEventBatch(batch, NOW));
      }),
      { numRuns: 500 },
    );
  });
});
