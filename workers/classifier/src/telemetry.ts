/**
 * Recording telemetry: the events of one queue batch are coalesced per session and merged into
 * `sessions` with one upsert; events for judged sessions are counted as late; events naming a
 * user other than the session's owner are parked; copies of a known event id with another payload
 * are counted as conflicting and not merged (dedupe.ts). New sessions and sessions that see
 * `ended` are listed on the agenda (session_due), in the same transaction, for the cron to judge.
 */
import {
  chunkBySize,
  type DeadLetter,
  type EventsMessage,
  insertDeadLetters,
  jsonBytes,
  QUEUES,
  type TelemetryEvent,
} from "@aigate/shared";
import type { ClassifierConfig } from "./config";
import { dedupeSession, type EventKey, eventKey } from "./dedupe";
import { chooseOwner, coalesceBySession, type PartialFacts, type ReceivedEvent } from "./facts";
import {
  countConflictingEvents,
  countLateEvents,
  type FactsToMerge,
  listDue,
  readSessionStates,
  type SessionStateRow,
  type UpsertedRow,
  upsertFacts,
} from "./queries";

/** An event with the queue message that carried it and its dedupe key. */
export interface TaggedEvent extends ReceivedEvent {
  messageId: string;
  attempts: number;
  requestId: string;
  key: EventKey;
}

export interface EventsDelivery {
  messageId: string;
  attempts: number;
  body: EventsMessage;
}

/** What one batch does to one session that is open and owned by the events' user. */
export interface SessionMerge {
  /** Merged facts to upsert; null when every event of the batch is a conflicting copy. */
  facts: PartialFacts | null;
  /** The session's event digest after this merge. */
  digest: string;
  /** The owner's events of the batch, all re-planned if the write is refused. */
  events: TaggedEvent[];
  merged: number;
  conflicting: TaggedEvent[];
}

export interface EventPlan {
  /** Per open session: facts to upsert, or conflicting copies to count. */
  sessions: Map<string, SessionMerge>;
  /** Events per judged session: counted, never merged. */
  late: Map<string, number>;
  /** Events whose user is not the session's owner. */
  mismatched: TaggedEvent[];
}

/**
 * Splits events by what the stored sessions say: owner mismatch (park), judged (late), else
 * dedupe against the session's digest: first copies and identical copies merge, conflicting
 * copies are counted. A session not stored yet gets the owner chooseOwner picks from this batch.
 */
export function planEvents(
  events: readonly TaggedEvent[],
  states: ReadonlyMap<string, Pick<SessionStateRow, "user_id" | "verdict_at" | "event_digest">>,
  settleMs: number,
): EventPlan {
  const bySession = new Map<string, TaggedEvent[]>();
  for (const e of events) {
    const list = bySession.get(e.event.session_id);
    if (list) list.push(e);
    else bySession.set(e.event.session_id, [e]);
  }
  const plan: EventPlan = { sessions: new Map(), late: new Map(), mismatched: [] };
  for (const [sessionId, list] of bySession) {
    const state = states.get(sessionId);
    const owner = state?.user_id ?? chooseOwner(list.map((e) => e.event));
    const mine = list.filter((e) => e.event.user_id === owner);
    plan.mismatched.push(...list.filter((e) => e.event.user_id !== owner));
    if (mine.length === 0) continue;
    if (state !== undefined && state.verdict_at !== null) {
      plan.late.set(sessionId, mine.length);
      continue;
    }
    const { merge, conflicting, digest } = dedupeSession(mine, state?.event_digest ?? null);
    plan.sessions.set(sessionId, {
      facts: coalesceBySession(merge, settleMs).get(sessionId) ?? null,
      digest,
      events: mine,
      merged: merge.length,
      conflicting,
    });
  }
  return plan;
}

/** Dead letters for mismatched events: one per (message, session), the offending events in an EventsMessage body. */
export function mismatchDeadLetters(
  mismatched: readonly TaggedEvent[],
  pass: number,
  now: number,
): DeadLetter[] {
  const groups = new Map<string, TaggedEvent[]>();
  for (const e of mismatched) {
    const key = JSON.stringify([e.messageId, e.event.session_id]);
    const list = groups.get(key);
    if (list) list.push(e);
    else groups.set(key, [e]);
  }
  const letters: DeadLetter[] = [];
  for (const list of groups.values()) {
    const first = list[0];
    if (first === undefined) continue;
    const sessionId = first.event.session_id;
    const body: EventsMessage = {
      v: 1,
      kind: "events",
      request_id: first.requestId,
      received_at: first.receivedAt,
      events: list.map((e) => e.event),
    };
    // A later pass only runs when the session changed under the first one: its own id keeps both.
    const suffix = pass === 0 ? "" : `:${pass}`;
    letters.push({
      id: `${QUEUES.telemetry}:${first.messageId}:user_mismatch:${sessionId}${suffix}`,
      queue: QUEUES.telemetry,
      message_id: first.messageId,
      body: JSON.stringify(body),
      error: `user_mismatch: session ${sessionId} belongs to another user`,
      attempts: first.attempts,
      failed_at: now,
    });
  }
  return letters;
}

/** A conflicting copy as logged: enough to find the gateway and the event. */
export interface ConflictingCopy {
  session_id: string;
  source: string;
  id: string;
  received_at: number;
}

export interface RecordOutcome {
  events: number;
  sessions: number;
  merged: number;
  /** Copies of a known event id with another payload: counted on the session, not merged. */
  conflicting: number;
  late: number;
  parked: number;
  /** Sessions listed on the agenda (new, or ended here). */
  listed: number;
  passes: number;
}

/** Upper bound on re-reads when sessions change between the read and the guarded upsert. */
const MAX_PASSES = 4;
/** Keeps each bulk statement's JSON parameter well under D1's 2 MB per value. */
const MAX_PARAM_BYTES = 512 * 1024;

/**
 * Records the events of a batch of EventsMessages in `db` (the shard of every event's user).
 * Mismatched events are parked in `deadLetters` (the home database): in the same transaction as
 * the facts when it is `db`, else right after it. Throws on D1 or queue failure (nothing is
 * lost: a retry merges idempotently, parks under the same ids and lists again; its
 * conflicting copies are counted again, like late events).
 */
export async function recordEvents(
  db: D1Database,
  deliveries: readonly EventsDelivery[],
  now: number,
  settings: ClassifierConfig,
  deadLetters: D1Database = db,
): Promise<{ outcome: RecordOutcome; conflicting: ConflictingCopy[] }> {
  let pending: TaggedEvent[] = await Promise.all(
    deliveries.flatMap((d) =>
      d.body.events.map(async (event: TelemetryEvent) => ({
        event,
        receivedAt: d.body.received_at,
        messageId: d.messageId,
        attempts: d.attempts,
        requestId: d.body.request_id,
        key: await eventKey(event),
      })),
    ),
  );
  const outcome: RecordOutcome = {
    events: pending.length,
    sessions: new Set(pending.map((e) => e.event.session_id)).size,
    merged: 0,
    conflicting: 0,
    late: 0,
    parked: 0,
    listed: 0,
    passes: 0,
  };
  const conflicting: ConflictingCopy[] = [];

  for (let pass = 0; pending.length > 0; pass += 1) {
    if (pass === MAX_PASSES)
      throw new Error(`sessions kept changing under the facts upsert (${pass} passes)`);
    outcome.passes = pass + 1;
    const ids = [...new Set(pending.map((e) => e.event.session_id))];
    const states = new Map((await readSessionStates(db, ids)).map((s) => [s.session_id, s]));
    const plan = planEvents(pending, states, settings.settleMs);

    const merges: FactsToMerge[] = [];
    const conflictsOnly: { session_id: string; n: number }[] = [];
    for (const [session_id, s] of plan.sessions) {
      if (s.facts !== null)
        merges.push({ facts: s.facts, digest: s.digest, conflicting: s.conflicting.length });
      else conflictsOnly.push({ session_id, n: s.conflicting.length });
    }
    const statements = chunkBySize(merges, Number.MAX_SAFE_INTEGER, MAX_PARAM_BYTES, jsonBytes).map((chunk) =>
      upsertFacts(db, chunk),
    );
    if (conflictsOnly.length > 0) statements.push(countConflictingEvents(db, conflictsOnly));
    const guarded = statements.length;
    // On the agenda, in the same transaction: sessions seen for the first time (due when they
    // turn stale) and sessions that saw `ended` here (due when their settle window ends). A
    // session stays on the agenda until judged (the cron lists again what is not due yet).
    // A new session's stored clocks are this batch's; an ended one is due no later than its settle
    // time here (an earlier `ended` listed it earlier).
    const toList = merges
      .filter((m) => !states.has(m.facts.sessionId) || m.facts.endedAt !== null)
      .map((m) => ({
        session_id: m.facts.sessionId,
        due_at: m.facts.settleDueAt ?? m.facts.lastSeenAt + settings.staleMs,
      }));
    statements.push(...listDue(db, toList));
    outcome.listed += toList.length;
    const late = [...plan.late].map(([session_id, n]) => ({ session_id, n }));
    if (late.length > 0) statements.push(countLateEvents(db, late));
    const letters = chunkBySize(
      mismatchDeadLetters(plan.mismatched, pass, now),
      Number.MAX_SAFE_INTEGER,
      MAX_PARAM_BYTES,
      jsonBytes,
    );
    const parkHere = deadLetters === db;
    if (parkHere) for (const chunk of letters) statements.push(insertDeadLetters(db, chunk));
    const results = statements.length > 0 ? await db.batch<UpsertedRow>(statements) : [];
    // in another database: after the sessions' shard (if this fails, the retry finds the same
    // events mismatched and parks them then)
    if (!parkHere && letters.length > 0) {
      await deadLetters.batch(letters.map((chunk) => insertDeadLetters(deadLetters, chunk)));
    }

    const applied = new Set<string>();
    for (const result of results.slice(0, guarded)) {
      for (const row of result.results) applied.add(row.session_id);
    }
    pending = [];
    for (const [sessionId, s] of plan.sessions) {
      // Refused by a guard: the session was judged, claimed by another user or given other
      // event ids meanwhile. Look again.
      if (!applied.has(sessionId)) {
        pending.push(...s.events);
        continue;
      }
      outcome.merged += s.merged;
      outcome.conflicting += s.conflicting.length;
      for (const c of s.conflicting) {
        conflicting.push({
          session_id: sessionId,
          source: c.event.source,
          id: c.event.id,
          received_at: c.receivedAt,
        });
      }
    }
    outcome.late += late.reduce((n, l) => n + l.n, 0);
    outcome.parked += plan.mismatched.length;
  }

  return { outcome, conflicting };
}
