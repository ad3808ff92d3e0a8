/**
 * The `aigate-telemetry` consumer: EventsMessages (telemetry from ingest) and JudgeMessages
 * (judge these sessions now: replays of parked ones, or an operator's). No message is acked
 * unless its work is done or it is parked in `dead_letters`: poison messages are parked at once,
 * transient failures retried with backoff.
 *
 * With several D1 shards, a batch's events are recorded shard by shard (each event on its user's
 * shard); a message is acked once every shard holding some of its events has recorded them, and
 * retried whole otherwise (recording again is idempotent). Parked messages go to the home database.
 */
import {
  addOutcome,
  createLogger,
  deadLetterOf,
  describeIssues,
  errorFields,
  groupByShard,
  insertDeadLetters,
  type JudgeMessage,
  type Logger,
  QUEUES,
  type Shards,
  shardsOf,
  TelemetryMessage,
} from "@aigate/shared";
import { type ClassifierConfig, readConfig } from "./config";
import { type JudgeOutcome, judgeSessions } from "./judging";
import { listDue } from "./queries";
import { type ConflictingCopy, type EventsDelivery, type RecordOutcome, recordEvents } from "./telemetry";
import { retryDelaySeconds } from "./timing";

/** Longest reason kept with a parked message. */
const MAX_ERROR_LENGTH = 1000;

function retryAll(messages: readonly Message<unknown>[]): void {
  for (const m of messages) m.retry({ delaySeconds: retryDelaySeconds(m.attempts) });
}

export async function handleTelemetryBatch(
  batch: MessageBatch<unknown>,
  env: Env,
  now: number,
): Promise<void> {
  const log = createLogger("classifier", { queue: batch.queue, batch_size: batch.messages.length });
  const settings = readConfig(env);
  const shards = shardsOf(env);
  const poison: { message: Message<unknown>; error: string }[] = [];
  const events: { message: Message<unknown>; delivery: EventsDelivery }[] = [];
  const judges: { message: Message<unknown>; body: JudgeMessage }[] = [];

  for (const message of batch.messages) {
    const parsed = TelemetryMessage.safeParse(message.body);
    if (!parsed.success) {
      poison.push({ message, error: `schema_error: ${describeIssues(parsed.error)}` });
    } else if (parsed.data.kind === "events") {
      events.push({
        message,
        delivery: { messageId: message.id, attempts: message.attempts, body: parsed.data },
      });
    } else {
      judges.push({ message, body: parsed.data });
    }
  }

  if (poison.length > 0) await park(shards.home, poison, now, log);
  if (events.length > 0) await recordBatch(shards, events, now, settings, log);
  if (judges.length > 0) await judgeBatch(env, shards, judges, now, settings, log);
}

async function park(
  db: D1Database,
  poison: { message: Message<unknown>; error: string }[],
  now: number,
  log: Logger,
): Promise<void> {
  const messages = poison.map((p) => p.message);
  try {
    await insertDeadLetters(
      db,
      poison.map((p) =>
        deadLetterOf(p.message, { queue: QUEUES.telemetry, error: p.error.slice(0, MAX_ERROR_LENGTH), now }),
      ),
    ).run();
    for (const m of messages) m.ack();
    log.warn("parked poison messages", {
      message_ids: messages.map((m) => m.id),
      errors: poison.map((p) => p.error),
    });
  } catch (err) {
    retryAll(messages);
    log.error("parking failed, retrying", { message_ids: messages.map((m) => m.id), ...errorFields(err) });
  }
}

/** The deliveries' events split by their user's shard: per shard, each message with its events there. */
function deliveriesByShard(
  shards: Shards,
  deliveries: readonly EventsDelivery[],
): { db: D1Database; index: number; deliveries: EventsDelivery[] }[] {
  const tagged = deliveries.flatMap((delivery) => delivery.body.events.map((event) => ({ delivery, event })));
  return groupByShard(shards, tagged, (t) => t.event.user_id).map(({ db, index, items }) => {
    const byMessage = new Map<EventsDelivery, EventsDelivery>();
    for (const { delivery, event } of items) {
      const part = byMessage.get(delivery);
      if (part) part.body.events.push(event);
      else byMessage.set(delivery, { ...delivery, body: { ...delivery.body, events: [event] } });
    }
    return { db, index, deliveries: [...byMessage.values()] };
  });
}

async function recordBatch(
  shards: Shards,
  events: { message: Message<unknown>; delivery: EventsDelivery }[],
  now: number,
  settings: ClassifierConfig,
  log: Logger,
): Promise<void> {
  const groups = deliveriesByShard(
    shards,
    events.map((e) => e.delivery),
  );
  const outcome: RecordOutcome = {
    events: 0,
    sessions: 0,
    merged: 0,
    conflicting: 0,
    late: 0,
    parked: 0,
    listed: 0,
    passes: 0,
  };
  const conflicting: ConflictingCopy[] = [];
  /** Messages with events on a shard that failed: retried whole. */
  const failed = new Set<string>();
  for (const group of groups) {
    try {
      const recorded = await recordEvents(group.db, group.deliveries, now, settings, shards.home);
      // passes run shard after shard: the most any shard needed, not their sum
      const passes = Math.max(outcome.passes, recorded.outcome.passes);
      addOutcome(outcome, recorded.outcome).passes = passes;
      conflicting.push(...recorded.conflicting);
    } catch (err) {
      for (const d of group.deliveries) failed.add(d.messageId);
      log.error("recording telemetry failed, retrying", {
        request_ids: group.deliveries.map((d) => d.body.request_id),
        ...(shards.all.length > 1 ? { shard: group.index } : {}),
        ...errorFields(err),
      });
    }
  }
  const done = events.filter((e) => !failed.has(e.message.id));
  retryAll(events.filter((e) => failed.has(e.message.id)).map((e) => e.message));
  for (const e of done) e.message.ack();
  if (done.length === 0) return;
  const requestIds = done.map((e) => e.delivery.body.request_id);
  log.info("recorded telemetry", { request_ids: requestIds, ...outcome });
  if (conflicting.length > 0) {
    // A gateway reused an event id for other content: the first copy stands.
    log.warn("ignored event copies whose payload differs from the first copy", {
      request_ids: requestIds,
      count: conflicting.length,
      conflicting: conflicting.slice(0, 100),
    });
  }
}

/**
 * A JudgeMessage names sessions, not users: every shard judges those of them it holds (a session
 * is on one shard; the others skip it). The messages are acked once every shard has, else retried
 * (judging again is idempotent: verdicts are final).
 */
async function judgeBatch(
  env: Env,
  shards: Shards,
  judges: { message: Message<unknown>; body: JudgeMessage }[],
  now: number,
  settings: ClassifierConfig,
  log: Logger,
): Promise<void> {
  const messages = judges.map((j) => j.message);
  const sessionIds = [...new Set(judges.flatMap((j) => j.body.session_ids))];
  const outcome: JudgeOutcome = { judged: 0, resent: 0, unattributed: 0, settling: 0, skipped: 0, moved: 0 };
  let found = 0;
  let failed = false;
  for (const [index, db] of shards.all.entries()) {
    try {
      const { notDue, ...judged } = await judgeSessions(
        db,
        { verdicts: env.VERDICTS },
        sessionIds,
        now,
        settings,
      );
      // those not due yet go (back) on the agenda: the cron judges them when they are
      if (notDue.length > 0) await db.batch(listDue(db, notDue));
      // `skipped` is set below: a session unknown to one shard may be on another
      addOutcome(outcome, judged);
      found += sessionIds.length - judged.skipped;
    } catch (err) {
      failed = true;
      log.error("judging failed, retrying", {
        session_ids: sessionIds.slice(0, 100),
        ...(shards.all.length > 1 ? { shard: index } : {}),
        ...errorFields(err),
      });
    }
  }
  if (failed) {
    retryAll(messages);
    return;
  }
  // unknown to every shard
  outcome.skipped = Math.max(0, sessionIds.length - found);
  for (const m of messages) m.ack();
  log.info("judged sessions", { session_ids: sessionIds.slice(0, 100), ...outcome });
}
