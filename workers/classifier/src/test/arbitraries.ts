/**
 * fast-check generators for the "any order, any duplicates, same result" tests: random sessions
 * (values clustered on the rule boundaries, creation times around a UTC midnight, text that JS and
 * SQLite order differently), and a scrambled delivery of their events:
 * duplicated, shuffled, split into messages and queue batches.
 */
import type { EventType, TelemetryEvent } from "@aigate/shared";
import fc from "fast-check";

export const MIDNIGHT = Date.UTC(2026, 4, 15);
const HOUR = 3_600_000;

const latency = fc.oneof(fc.constantFrom(0, 1999, 2000, 2001), fc.integer({ min: 0, max: 5000 }));
const audio = fc.oneof(fc.constantFrom(0, 4999, 5000, 5001), fc.integer({ min: 0, max: 20_000 }));
// U+FFFF sorts after U+1F600 as JS UTF-16 units but before it by code point (SQLite's order).
const text = fc.constantFrom("hangup", "", "é", "\uFFFF", "\u{1F600}");
const offset = fc.integer({ min: 0, max: 60_000 });

type RawEvent =
  | { type: "created"; at: number }
  | { type: "connected"; at: number; latency: number }
  | { type: "turn_failed"; at: number }
  | { type: "upstream_error"; at: number; status: number | null; code: string | null }
  | { type: "heartbeat"; at: number; audio: number }
  | { type: "ended"; at: number; audio: number; reason: string | null };

const rawEvent: fc.Arbitrary<RawEvent> = fc.oneof(
  fc.record({ type: fc.constant("created" as const), at: fc.constant(0) }),
  fc.record({ type: fc.constant("connected" as const), at: offset, latency }),
  fc.record({ type: fc.constant("turn_failed" as const), at: offset }),
  fc.record({
    type: fc.constant("upstream_error" as const),
    at: offset,
    status: fc.option(fc.constantFrom(500, 503)),
    code: fc.option(text),
  }),
  fc.record({ type: fc.constant("heartbeat" as const), at: offset, audio }),
  // ended events often share a time, so ties between reasons are common
  fc.record({
    type: fc.constant("ended" as const),
    at: fc.oneof(fc.constant(60_000), offset),
    audio,
    reason: fc.option(text),
  }),
);

const rawSession = fc.record({
  user: fc.constantFrom("u1", "u2", "u3"),
  source: fc.constantFrom("gw-a", "gw-\uFFFF", "gw-\u{1F600}"),
  start: fc.integer({ min: -2 * HOUR, max: 2 * HOUR }),
  // Most sessions look real (created first, ended last); the rest is noise in any combination.
  typical: fc.boolean(),
  events: fc.array(rawEvent, { minLength: 1, maxLength: 7 }),
});

const TYPES: Record<RawEvent["type"], EventType> = {
  created: "aigate.session.created",
  connected: "aigate.session.connected",
  turn_failed: "aigate.session.turn_failed",
  upstream_error: "aigate.session.upstream_error",
  heartbeat: "aigate.session.heartbeat",
  ended: "aigate.session.ended",
};

type RawSession = typeof rawSession extends fc.Arbitrary<infer T> ? T : never;

function buildSession(raw: RawSession, index: number): TelemetryEvent[] {
  const session_id = `s${index}`;
  const start = MIDNIGHT + raw.start;
  const events: RawEvent[] = raw.typical
    ? [
        { type: "created", at: 0 },
        ...raw.events,
        { type: "ended", at: 60_000, audio: 6000, reason: "hangup" },
      ]
    : raw.events;
  return events.map((r, k) => {
    const e: TelemetryEvent = {
      id: `${session_id}-e${k}`,
      // A second gateway sometimes reports too: `source` merges to the smallest.
      source: k % 3 === 2 ? "gw-z" : raw.source,
      type: TYPES[r.type],
      session_id,
      user_id: raw.user,
      project_id: `p-${raw.user}`,
      time: start + r.at,
    };
    if (r.type === "connected") e.connect_latency_ms = r.latency;
    if (r.type === "heartbeat") e.audio_ms = r.audio;
    if (r.type === "ended") {
      e.audio_ms = r.audio;
      if (r.reason !== null) e.reason = r.reason;
    }
    if (r.type === "upstream_error") {
      if (r.status !== null) e.status = r.status;
      if (r.code !== null) e.code = r.code;
    }
    return e;
  });
}

export const sessionsArb = (maxSessions: number): fc.Arbitrary<TelemetryEvent[][]> =>
  fc.array(rawSession, { minLength: 1, maxLength: maxSessions }).map((list) => list.map(buildSession));

/** Events as delivered: batches of messages of events. */
export type Delivery = TelemetryEvent[][][];

function cut<T>(items: readonly T[], sizes: readonly number[]): T[][] {
  const out: T[][] = [];
  let i = 0;
  let k = 0;
  while (i < items.length) {
    const size = sizes[k % Math.max(sizes.length, 1)] ?? items.length;
    out.push(items.slice(i, i + size));
    i += size;
    k += 1;
  }
  return out;
}

/** A scrambled delivery of `events`: some duplicated, all shuffled, cut into messages and batches. */
export function scrambledArb(events: TelemetryEvent[]): fc.Arbitrary<Delivery> {
  return fc.subarray(events).chain((dups) => {
    const all = [...events, ...dups];
    return fc
      .record({
        order: fc.shuffledSubarray(all, { minLength: all.length, maxLength: all.length }),
        messageSizes: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 8 }),
        batchSizes: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 4 }),
      })
      .map(({ order, messageSizes, batchSizes }) => cut(cut(order, messageSizes), batchSizes));
  });
}

export interface Scenario {
  sessions: TelemetryEvent[][];
  scrambled: Delivery;
}

export const scenarioArb = (maxSessions: number): fc.Arbitrary<Scenario> =>
  sessionsArb(maxSessions).chain((sessions) =>
    scrambledArb(sessions.flat()).map((scrambled) => ({ sessions, scrambled })),
  );

/** A copy of `e` under the same (source, id) with other content: later, and maybe another type and audio. */
const conflictingCopyArb = (e: TelemetryEvent): fc.Arbitrary<TelemetryEvent> =>
  fc
    .record({ dt: fc.integer({ min: 1, max: 30_000 }), audio: fc.option(audio), asHeartbeat: fc.boolean() })
    .map(({ dt, audio: a, asHeartbeat }) => {
      const { connect_latency_ms: _l, status: _s, code: _c, reason: _r, detail: _d, ...base } = e;
      const copy = asHeartbeat ? { ...base, type: TYPES.heartbeat } : { ...e };
      copy.time = e.time + dt;
      if (copy.type === TYPES.heartbeat || copy.type === TYPES.ended) copy.audio_ms = a ?? 60_000;
      return copy;
    });

export interface ConflictScenario {
  sessions: TelemetryEvent[][];
  /** Every message received 1 ms after the one before it, batch by batch. */
  delivery: Delivery;
  /** Copies with another payload, each in a message received after its original's first copy. */
  conflicting: number;
}

/**
 * A scrambled delivery of the sessions' events, plus conflicting copies of some of them, each put
 * in a message received after the first message carrying its original (a new last batch if none).
 */
export const conflictScenarioArb = (maxSessions: number): fc.Arbitrary<ConflictScenario> =>
  scenarioArb(maxSessions).chain(({ sessions, scrambled }) => {
    const all = sessions.flat();
    return fc
      .record({
        copies: fc.array(
          fc.integer({ min: 0, max: all.length - 1 }).chain((i) =>
            fc.record({
              original: fc.constant(i),
              copy: conflictingCopyArb(all[i] as TelemetryEvent),
              later: fc.nat(),
              at: fc.nat(),
            }),
          ),
          { maxLength: 6 },
        ),
      })
      .map(({ copies }) => {
        const delivery: Delivery = scrambled.map((batch) => batch.map((m) => [...m]));
        const messages = delivery.flat();
        const extra: TelemetryEvent[] = [];
        for (const { original, copy, later, at } of copies) {
          const target = all[original] as TelemetryEvent;
          const first = messages.findIndex((m) =>
            m.some((e) => e.id === target.id && e.source === target.source),
          );
          const choices = messages.length - first - 1;
          const message = choices > 0 ? messages[first + 1 + (later % choices)] : extra;
          message?.splice(at % (message.length + 1), 0, copy);
        }
        if (extra.length > 0) delivery.push([extra]);
        return { sessions, delivery, conflicting: copies.length };
      });
  });
