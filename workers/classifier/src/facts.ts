/**
 * Session facts: what a session's telemetry says, merged so that duplicates and any arrival order
 * give identical facts. Pure functions; the SQL upsert in queries.ts applies the same rules to the
 * stored row, so "coalesce a batch here, merge it into D1 there" equals "merge everything at once".
 * Which events are merged is decided before (dedupe.ts): the first copy of each (source, id) and
 * copies identical to it, never a copy with another payload.
 *
 * Merge rule of each field (every rule is commutative, associative and idempotent):
 *
 * | field                              | rule                                                             |
 * |------------------------------------|------------------------------------------------------------------|
 * | user_id                            | not merged: the owner; events of another user are parked         |
 * | project_id                         | smallest within a batch; kept from the row's creator afterwards  |
 * | source                             | smallest gateway id seen (nulls ignored)                         |
 * | created_at                         | minimum time of `created` events                                 |
 * | first_event_at / last_event_at     | minimum / maximum event time                                     |
 * | connected, turn_failed, upstream_error | flags only turn on (logical or)                              |
 * | connect_latency_ms                 | minimum over `connected` events                                  |
 * | (upstream_status, upstream_code)   | the greatest pair over `upstream_error` events (null lowest,     |
 * |                                    | status first), so both come from one event                       |
 * | audio_ms                           | maximum of the cumulative values (`heartbeat`, `ended`)          |
 * | (ended_at, end_reason)             | the earliest `ended` event; on equal times the greatest reason   |
 * | first_seen_at / last_seen_at       | minimum / maximum receipt time (ingest's `received_at`)          |
 * | settle_due_at                      | minimum of receipt time + settle window over `ended` events      |
 *
 * Text is ordered by code point, which is the order of SQLite's BINARY collation on UTF-8.
 * `first_seen_at`, `last_seen_at` and `settle_due_at` follow receipt, not content: they drive the
 * timers, never the verdict.
 */
import type { SessionFacts, TelemetryEvent } from "@aigate/shared";

export interface PartialFacts {
  sessionId: string;
  userId: string;
  projectId: string;
  source: string | null;
  createdAt: number | null;
  firstEventAt: number;
  lastEventAt: number;
  connected: boolean;
  connectLatencyMs: number | null;
  turnFailed: boolean;
  upstreamError: boolean;
  upstreamStatus: number | null;
  upstreamCode: string | null;
  audioMs: number;
  endedAt: number | null;
  endReason: string | null;
  firstSeenAt: number;
  lastSeenAt: number;
  settleDueAt: number | null;
}

/** An event with the time ingest received it (the `received_at` of its queue message). */
export interface ReceivedEvent {
  event: TelemetryEvent;
  receivedAt: number;
}

/** Code point order (SQLite BINARY on UTF-8), unlike `<` on JS strings (UTF-16 units). */
export function compareText(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; ) {
    const ca = a.codePointAt(i) ?? 0;
    const cb = b.codePointAt(i) ?? 0;
    if (ca !== cb) return ca < cb ? -1 : 1;
    i += ca > 0xffff ? 2 : 1;
  }
  return a.length < b.length ? -1 : 1;
}

/** Nulls sort below every value. */
function compareNullable<T>(a: T | null, b: T | null, cmp: (x: T, y: T) => number): number {
  if (a === null) return b === null ? 0 : -1;
  if (b === null) return 1;
  return cmp(a, b);
}

const compareNumber = (a: number, b: number) => (a < b ? -1 : a > b ? 1 : 0);

function minNullable(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.min(a, b);
}

function minText(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return compareText(a, b) <= 0 ? a : b;
}

/** The facts one event contributes on its own. */
export function factsFromEvent(e: TelemetryEvent, receivedAt: number, settleMs: number): PartialFacts {
  const ended = e.type === "aigate.session.ended";
  const carriesAudio = ended || e.type === "aigate.session.heartbeat";
  const connected = e.type === "aigate.session.connected";
  const upstream = e.type === "aigate.session.upstream_error";
  return {
    sessionId: e.session_id,
    userId: e.user_id,
    projectId: e.project_id,
    source: e.source,
    createdAt: e.type === "aigate.session.created" ? e.time : null,
    firstEventAt: e.time,
    lastEventAt: e.time,
    connected,
    connectLatencyMs: connected ? (e.connect_latency_ms ?? null) : null,
    turnFailed: e.type === "aigate.session.turn_failed",
    upstreamError: upstream,
    upstreamStatus: upstream ? (e.status ?? null) : null,
    upstreamCode: upstream ? (e.code ?? null) : null,
    audioMs: carriesAudio ? (e.audio_ms ?? 0) : 0,
    endedAt: ended ? e.time : null,
    endReason: ended ? (e.reason ?? null) : null,
    firstSeenAt: receivedAt,
    lastSeenAt: receivedAt,
    settleDueAt: ended ? receivedAt + settleMs : null,
  };
}

/**
 * Merges two partial facts of the same session and owner (the caller parks other owners).
 * Commutative, associative and idempotent: see the table at the top of this file.
 */
export function mergeFacts(a: PartialFacts, b: PartialFacts): PartialFacts {
  const upstream =
    compareNullable(a.upstreamStatus, b.upstreamStatus, compareNumber) ||
    compareNullable(a.upstreamCode, b.upstreamCode, compareText);
  const upstreamFrom = upstream >= 0 ? a : b;
  const end =
    compareNullable(b.endedAt, a.endedAt, compareNumber) || // earliest time wins; null never does
    compareNullable(a.endReason, b.endReason, compareText);
  const endFrom = a.endedAt === null ? b : b.endedAt === null ? a : end >= 0 ? a : b;
  return {
    sessionId: a.sessionId,
    userId: a.userId,
    projectId: minText(a.projectId, b.projectId) ?? a.projectId,
    source: minText(a.source, b.source),
    createdAt: minNullable(a.createdAt, b.createdAt),
    firstEventAt: Math.min(a.firstEventAt, b.firstEventAt),
    lastEventAt: Math.max(a.lastEventAt, b.lastEventAt),
    connected: a.connected || b.connected,
    connectLatencyMs: minNullable(a.connectLatencyMs, b.connectLatencyMs),
    turnFailed: a.turnFailed || b.turnFailed,
    upstreamError: a.upstreamError || b.upstreamError,
    upstreamStatus: upstreamFrom.upstreamStatus,
    upstreamCode: upstreamFrom.upstreamCode,
    audioMs: Math.max(a.audioMs, b.audioMs),
    endedAt: endFrom.endedAt,
    endReason: endFrom.endReason,
    firstSeenAt: Math.min(a.firstSeenAt, b.firstSeenAt),
    lastSeenAt: Math.max(a.lastSeenAt, b.lastSeenAt),
    settleDueAt: minNullable(a.settleDueAt, b.settleDueAt),
  };
}

/** Coalesces events into one partial-facts record per session (one upsert row each). */
export function coalesceBySession(
  events: readonly ReceivedEvent[],
  settleMs: number,
): Map<string, PartialFacts> {
  const out = new Map<string, PartialFacts>();
  for (const { event, receivedAt } of events) {
    const facts = factsFromEvent(event, receivedAt, settleMs);
    const seen = out.get(event.session_id);
    out.set(event.session_id, seen ? mergeFacts(seen, facts) : facts);
  }
  return out;
}

/** What the rules read from merged facts. */
export function verdictInputs(f: PartialFacts): SessionFacts {
  return {
    connected: f.connected,
    connectLatencyMs: f.connectLatencyMs,
    turnFailed: f.turnFailed,
    upstreamError: f.upstreamError,
    audioMs: f.audioMs,
  };
}

/**
 * The owner a not-yet-stored session gets from one batch, chosen the same way whatever the
 * order: the user of the earliest `created` event, else of the earliest event (ties by id and
 * source). Events naming another user are parked.
 */
export function chooseOwner(events: readonly TelemetryEvent[]): string | null {
  let best: TelemetryEvent | null = null;
  for (const e of events) {
    if (best === null || compareOwnerCandidates(e, best) < 0) best = e;
  }
  return best?.user_id ?? null;
}

function compareOwnerCandidates(a: TelemetryEvent, b: TelemetryEvent): number {
  const created = (e: TelemetryEvent) => (e.type === "aigate.session.created" ? 0 : 1);
  return (
    created(a) - created(b) ||
    compareNumber(a.time, b.time) ||
    compareText(a.id, b.id) ||
    compareText(a.source, b.source) ||
    compareText(a.user_id, b.user_id)
  );
}
