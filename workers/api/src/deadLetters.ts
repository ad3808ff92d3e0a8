/**
 * Dead letters: the drain of every consumer's dead-letter queue into D1, and their replay onto
 * the original queue. See docs/operations.md for the runbook.
 *
 * - Drain (queue handler on aigate-telemetry-dlq, aigate-verdicts-dlq and aigate-alerts-dlq): each message is parked
 *   in `dead_letters` under `<original queue>:<message id>` (the id the consumers use when they
 *   park a message themselves) and acked only once the row is written; a D1 failure retries the
 *   batch with backoff. A redelivered batch parks nothing twice.
 * - Replay: sends the stored body back to its original queue, then records `replayed_at` and
 *   `replay_count`. A dead letter already replayed is skipped unless `force` is given, so repeating
 *   a replay re-sends nothing. The order "send, then mark" means a crash in between can only lead
 *   to a second send on the next replay, never to a lost message; the consumers are idempotent.
 */
import {
  backoff,
  chunkBySize,
  type DeadLetter,
  deadLetterOf,
  errorFields,
  insertDeadLetters,
  type Logger,
  QUEUE_LIMITS,
  QUEUES,
  SpendAlertMessage,
  TelemetryMessage,
  UsageMessage,
  VerdictMessage,
} from "@aigate/shared";
import { type DeadLetterRow, deadLettersByIds, markReplayed, pendingDeadLetters } from "./adminQueries";

export const REPLAYABLE_QUEUES = [QUEUES.telemetry, QUEUES.verdicts, QUEUES.alerts] as const;
export type ReplayableQueue = (typeof REPLAYABLE_QUEUES)[number];

/**
 * Deliveries a message had on its original queue before it was moved to the dead-letter queue:
 * the consumers' `max_retries` + 1 (the classifier's, the biller's and this worker's wrangler.jsonc). The
 * dead-letter queue restarts the count, so the drain cannot read it from the message.
 */
export const ORIGINAL_MAX_ATTEMPTS: Record<string, number> = {
  [QUEUES.telemetry]: 9,
  [QUEUES.verdicts]: 11,
  [QUEUES.alerts]: 8,
};

/** D1 takes at most ~2 MB per bound value: park a batch in chunks well under that. */
const MAX_PARK_CHUNK_BYTES = 1_000_000;
/** Dead letters handled by one replay request of a whole queue (subrequest budget). */
export const MAX_REPLAY_PER_REQUEST = 500;
const REPLAY_PAGE = 100;

const encoder = new TextEncoder();
const byteLength = (s: string) => encoder.encode(s).byteLength;

/** The queue a dead-letter queue belongs to: `aigate-verdicts-dlq` -> `aigate-verdicts`. */
export function originalQueue(deadLetterQueue: string): string {
  return deadLetterQueue.endsWith("-dlq") ? deadLetterQueue.slice(0, -"-dlq".length) : deadLetterQueue;
}

/** Backoff for a dead-letter batch that could not be parked: 30 s doubling, capped at 12 h. */
export function drainRetryDelaySeconds(attempts: number): number {
  return backoff(attempts, { base: 30, max: QUEUE_LIMITS.maxDelaySeconds, maxDoublings: 15 });
}

/** A message of a dead-letter queue as the dead letter of its original queue. */
export function drainedLetter(message: Message<unknown>, deadLetterQueue: string, now: number): DeadLetter {
  const queue = originalQueue(deadLetterQueue);
  const attempts = ORIGINAL_MAX_ATTEMPTS[queue] ?? message.attempts;
  const error = `retries exhausted: ${attempts} deliveries on ${queue} failed`;
  return deadLetterOf(message, { queue, error, now, attempts });
}

/** The queue handler: parks every message of a dead-letter batch, acks only once it is written. */
export async function drainDeadLetters(
  db: D1Database,
  batch: MessageBatch<unknown>,
  now: number,
  log: Logger,
): Promise<void> {
  const letters = batch.messages.map((m) => drainedLetter(m, batch.queue, now));
  const chunks = chunkBySize(
    letters,
    QUEUE_LIMITS.maxBatchMessages,
    MAX_PARK_CHUNK_BYTES,
    (l) => byteLength(l.body) + byteLength(l.error) + byteLength(l.id) * 2 + 200,
  );
  try {
    await db.batch(chunks.map((c) => insertDeadLetters(db, c)));
  } catch (err) {
    log.error("parking dead letters failed; retrying", {
      ...errorFields(err),
      message_ids: batch.messages.map((m) => m.id),
    });
    for (const m of batch.messages) m.retry({ delaySeconds: drainRetryDelaySeconds(m.attempts) });
    return;
  }
  for (const m of batch.messages) m.ack();
  log.warn("dead letters parked", {
    queue: originalQueue(batch.queue),
    count: letters.length,
    ids: letters.map((l) => l.id),
  });
}

// ---------------------------------------------------------------------------------------------
// Replay.

export type ReplayRequest =
  | { kind: "ids"; ids: string[]; force: boolean }
  | { kind: "queue"; queue: ReplayableQueue };

export type SkipReason = "not_found" | "already_replayed" | "unknown_queue" | "invalid_body";

export interface ReplayResult {
  /** Dead letters sent back to their queue by this request. */
  replayed: number;
  ids: string[];
  skipped: { id: string; reason: SkipReason }[];
  failed: { id: string; error: string }[];
  /** A whole-queue replay stopped at its per-request limit: repeat it for the rest. */
  more: boolean;
}

export interface ReplayPlan {
  send: { row: DeadLetterRow; queue: ReplayableQueue; body: unknown }[];
  skipped: { id: string; reason: SkipReason }[];
}

function isReplayable(queue: string): queue is ReplayableQueue {
  return (REPLAYABLE_QUEUES as readonly string[]).includes(queue);
}

/** Which requested dead letters to send (pure): known, replayable, not replayed unless forced. */
export function planReplay(
  requested: readonly string[],
  rows: readonly DeadLetterRow[],
  force: boolean,
): ReplayPlan {
  const byId = new Map(rows.map((r) => [r.id, r]));
  const plan: ReplayPlan = { send: [], skipped: [] };
  for (const id of new Set(requested)) {
    const row = byId.get(id);
    if (!row) plan.skipped.push({ id, reason: "not_found" });
    else if (row.replayed_at !== null && !force) plan.skipped.push({ id, reason: "already_replayed" });
    else if (!isReplayable(row.queue)) plan.skipped.push({ id, reason: "unknown_queue" });
    else {
      const body = parseBody(row.body);
      if (body === undefined) plan.skipped.push({ id, reason: "invalid_body" });
      else plan.send.push({ row, queue: row.queue, body });
    }
  }
  return plan;
}

function parseBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Where replayed messages go: the original queues' producer bindings. */
export type Producers = Record<ReplayableQueue, Pick<Queue, "sendBatch">>;

export function producersOf(env: Env): Producers {
  return { [QUEUES.telemetry]: env.TELEMETRY, [QUEUES.verdicts]: env.VERDICTS, [QUEUES.alerts]: env.ALERTS };
}

/** Sends the planned dead letters in queue batches, marking each batch once it is accepted. */
async function sendPlanned(
  db: D1Database,
  producers: Producers,
  plan: ReplayPlan,
  now: number,
  result: ReplayResult,
  log: Logger,
): Promise<void> {
  for (const queue of REPLAYABLE_QUEUES) {
    const items = plan.send.filter((s) => s.queue === queue);
    const chunks = chunkBySize(
      items,
      QUEUE_LIMITS.maxBatchMessages,
      QUEUE_LIMITS.maxBatchBytes - 4_000,
      (s) => byteLength(s.row.body) + 100,
    );
    for (const chunk of chunks) {
      const ids = chunk.map((s) => s.row.id);
      if (result.failed.length > 0) {
        // After one failure, stop sending: the queue is likely unavailable. Repeating is safe.
        result.failed.push(...ids.map((id) => ({ id, error: "not attempted after an earlier failure" })));
        continue;
      }
      try {
        await producers[queue].sendBatch(chunk.map((s) => ({ body: s.body, contentType: "json" as const })));
      } catch (err) {
        log.error("replay send failed", { queue, ids, ...errorFields(err) });
        result.failed.push(...ids.map((id) => ({ id, error: `send failed: ${String(err)}` })));
        continue;
      }
      result.replayed += ids.length;
      result.ids.push(...ids);
      try {
        await markReplayed(db, ids, now);
      } catch (err) {
        // Sent but not marked: a repeated replay sends them again, which the consumers absorb.
        log.error("replayed dead letters not marked", { queue, ids, ...errorFields(err) });
        result.failed.push(...ids.map((id) => ({ id, error: `re-sent but not marked: ${String(err)}` })));
      }
      log.info("dead letters replayed", { queue, ids });
    }
  }
}

export async function replayDeadLetters(
  db: D1Database,
  producers: Producers,
  request: ReplayRequest,
  now: number,
  log: Logger,
): Promise<ReplayResult> {
  const result: ReplayResult = { replayed: 0, ids: [], skipped: [], failed: [], more: false };
  if (request.kind === "ids") {
    const plan = planReplay(request.ids, await deadLettersByIds(db, request.ids), request.force);
    result.skipped.push(...plan.skipped);
    await sendPlanned(db, producers, plan, now, result, log);
    return result;
  }
  let afterId = "";
  let handled = 0;
  while (handled < MAX_REPLAY_PER_REQUEST && result.failed.length === 0) {
    const rows = await pendingDeadLetters(db, request.queue, afterId, REPLAY_PAGE);
    const last = rows.at(-1);
    if (!last) return result;
    afterId = last.id;
    handled += rows.length;
    const plan = planReplay(
      rows.map((r) => r.id),
      rows,
      false,
    );
    result.skipped.push(...plan.skipped);
    await sendPlanned(db, producers, plan, now, result, log);
    if (rows.length < REPLAY_PAGE) return result;
  }
  result.more = result.failed.length === 0;
  return result;
}

// ---------------------------------------------------------------------------------------------
// What a dead letter is about, for listings (the full body is shown by GET /admin/dead-letters/:id).

export function describeBody(queue: string, bodyText: string): string {
  const body = parseBody(bodyText);
  if (body === undefined) return "body is not JSON";
  if (queue === QUEUES.verdicts) {
    const u = UsageMessage.safeParse(body);
    if (u.success) {
      const { series, judged } = u.data;
      const shown = series
        .slice(0, 3)
        .map((s) => `user ${s.user_id} ${s.plan} from ${new Date(s.period_start).toISOString()}`)
        .join(", ");
      return `usage of ${series.length} series (${shown}${series.length > 3 ? ", ..." : ""}) after ${judged} session(s) judged`;
    }
    const v = VerdictMessage.safeParse(body);
    if (v.success) {
      const d = v.data;
      return `verdict for session ${d.session_id} of user ${d.user_id}: ${d.billable ? "billable" : `not billable (${d.reason})`}`;
    }
  }
  if (queue === QUEUES.telemetry) {
    const t = TelemetryMessage.safeParse(body);
    if (t.success) {
      const m = t.data;
      if (m.kind === "judge") return `judge reminder for ${m.session_ids.length} session(s)`;
      const sessions = [...new Set(m.events.map((e) => e.session_id))];
      const shown = sessions.slice(0, 5).join(", ") + (sessions.length > 5 ? ", ..." : "");
      return `${m.events.length} event(s) of session(s) ${shown}`;
    }
  }
  if (queue === QUEUES.alerts) {
    const a = SpendAlertMessage.safeParse(body);
    if (a.success) {
      const d = a.data;
      return `spend alert of user ${d.user_id}: ${d.threshold} % of the cap, ${d.plan} from ${new Date(d.period_start).toISOString()}`;
    }
  }
  return "message that does not match its queue's schema";
}
