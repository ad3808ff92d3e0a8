/**
 * Recording telemetry: the events of one queue batch are coalesced per session and merged into
 * `sessions` with one upsert; events for judged sessions are counted as late; events naming a
 * user other than the session's owner are parked. Sessions that see `ended` get a delayed
 * reminder to judge them once the settle window is over.
 */
import {
  chunkBySize,
  type DeadLetter,
  type EventsMessage,
  insertDeadLetters,
  type JudgeMessage,
  jsonBytes,
  QUEUES,
  type TelemetryEvent,
} from "@aigate/shared";
import { chooseOwner, coalesceBySession, type PartialFacts, type ReceivedEvent } from "./facts";
import {
  countLateEvents,
  readSessionStates,
  type SessionStateRow,
  type UpsertedRow,
  upsertFacts,
} from "./queries";
import { sendAll } from "./send";
import { delaySecondsUntil, type Settings } from "./timing";

/** An event with the queue message that carried it. */
export interface TaggedEvent extends ReceivedEvent {
  messageId: string;
  attempts: number;
  requestId: string;
}

export interface EventsDelivery {
  messageId: string;
  attempts: number;
  body: EventsMessage;
}

export interface EventPlan {
  /** Merged facts per session to upsert, and the events behind them (re-planned if the upsert is refused). */
  merge: PartialFacts[];
  mergeEvents: Map<string, TaggedEvent[]>;
  /** Events per judged session: counted, never merged. */
  late: Map<string, number>;
  /** Events whose user is not the session's owner. */
  mismatched: TaggedEvent[];
}

/**
 * Splits events by what the stored sessions say: owner mismatch (park), judged (late), else merge.
 * A session not stored yet gets the owner chooseOwner picks from this batch.
 */
export function planEvents(
  events: readonly TaggedEvent[],
  states: ReadonlyMap<string, Pick<SessionStateRow, "user_id" | "verdict_at">>,
  settleMs: number,
): EventPlan {
  const bySession = new Map<string, TaggedEvent[]>();
  for (const e of events) {
    const list = bySession.get(e.event.session_id);
    if (list) list.push(e);
    else bySession.set(e.event.session_id, [e]);
  }
  const plan: EventPlan = { merge: [], mergeEvents: new Map(), late: new Map(), mismatched: [] };
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
    plan.mergeEvents.set(sessionId, mine);
    const facts = coalesceBySession(mine, settleMs).get(sessionId);
    if (facts) plan.merge.push(facts);
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

export interface RecordOutcome {
  events: number;
  sessions: number;
  merged: number;
  late: number;
  parked: number;
  reminders: number;
  passes: number;
}

/** Upper bound on re-reads when sessions change between the read and the guarded upsert. */
const MAX_PASSES = 4;
/** Keeps each bulk statement's JSON parameter well under D1's 2 MB per value. */
const MAX_PARAM_BYTES = 512 * 1024;
/** Session ids per reminder: far below the 128 KB message limit even for 200-character ids. */
const MAX_IDS_PER_REMINDER = 250;

/**
 * Records the events of a batch of EventsMessages. Throws on D1 or queue failure (nothing is
 * lost: a retry merges idempotently, parks under the same ids and re-sends reminders).
 */
export async function recordEvents(
  db: D1Database,
  telemetry: Queue,
  deliveries: readonly EventsDelivery[],
  now: number,
  settings: Settings,
): Promise<RecordOutcome> {
  let pending: TaggedEvent[] = deliveries.flatMap((d) =>
    d.body.events.map((event: TelemetryEvent) => ({
      event,
      receivedAt: d.body.received_at,
      messageId: d.messageId,
      attempts: d.attempts,
      requestId: d.body.request_id,
    })),
  );
  const outcome: RecordOutcome = {
    events: pending.length,
    sessions: new Set(pending.map((e) => e.event.session_id)).size,
    merged: 0,
    late: 0,
    parked: 0,
    reminders: 0,
    passes: 0,
  };
  const settleDue = new Map<string, number>();

  for (let pass = 0; pending.length > 0; pass += 1) {
    if (pass === MAX_PASSES)
      throw new Error(`sessions kept changing under the facts upsert (${pass} passes)`);
    outcome.passes = pass + 1;
    const ids = [...new Set(pending.map((e) => e.event.session_id))];
    const states = new Map((await readSessionStates(db, ids)).map((s) => [s.session_id, s]));
    const plan = planEvents(pending, states, settings.settleMs);

    // Facts with and without a creation time go in separate statements (see upsertFacts).
    const upserts = [
      plan.merge.filter((f) => f.createdAt !== null),
      plan.merge.filter((f) => f.createdAt === null),
    ].flatMap((group) =>
      chunkBySize(group, Number.MAX_SAFE_INTEGER, MAX_PARAM_BYTES, jsonBytes).map((chunk) =>
        upsertFacts(db, chunk),
      ),
    );
    const statements = [...upserts];
    const late = [...plan.late].map(([session_id, n]) => ({ session_id, n }));
    if (late.length > 0) statements.push(countLateEvents(db, late));
    const letters = mismatchDeadLetters(plan.mismatched, pass, now);
    for (const chunk of chunkBySize(letters, Number.MAX_SAFE_INTEGER, MAX_PARAM_BYTES, jsonBytes)) {
      statements.push(insertDeadLetters(db, chunk));
    }
    const results = statements.length > 0 ? await db.batch<UpsertedRow>(statements) : [];

    const merged = new Map(plan.merge.map((f) => [f.sessionId, f]));
    const applied = new Set<string>();
    for (const result of results.slice(0, upserts.length)) {
      for (const row of result.results) {
        applied.add(row.session_id);
        // Only sessions whose events in this batch include `ended` need a reminder from it.
        const endedHere = merged.get(row.session_id)?.endedAt != null;
        if (endedHere && row.settle_due_at !== null) settleDue.set(row.session_id, row.settle_due_at);
      }
    }
    outcome.merged += [...plan.mergeEvents]
      .filter(([id]) => applied.has(id))
      .reduce((n, [, l]) => n + l.length, 0);
    outcome.late += late.reduce((n, l) => n + l.n, 0);
    outcome.parked += plan.mismatched.length;
    // Refused by the guard: the session was judged or claimed by another user meanwhile. Look again.
    pending = [...plan.mergeEvents].filter(([id]) => !applied.has(id)).flatMap(([, l]) => l);
  }

  if (settleDue.size > 0) {
    const ids = [...settleDue.keys()];
    const dueAt = [...settleDue.values()].reduce((a, b) => Math.max(a, b));
    const reminders: JudgeMessage[] = chunkBySize(
      ids,
      MAX_IDS_PER_REMINDER,
      Number.MAX_SAFE_INTEGER,
      () => 1,
    ).map((session_ids) => ({ v: 1, kind: "judge", session_ids, due_at: dueAt }));
    await sendAll(telemetry, reminders, delaySecondsUntil(dueAt, now));
    outcome.reminders = ids.length;
  }
  return outcome;
}
