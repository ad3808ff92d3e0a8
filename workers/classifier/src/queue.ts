/**
 * The `aigate-telemetry` consumer: EventsMessages (telemetry from ingest) and JudgeMessages
 * (judge these sessions now: replays of parked ones, or an operator's). No message is acked
 * unless its work is done or it is parked in `dead_letters`: poison messages are parked at once,
 * transient failures retried with backoff.
 */
import {
  createLogger,
  deadLetterOf,
  describeIssues,
  errorFields,
  insertDeadLetters,
  type JudgeMessage,
  type Logger,
  QUEUES,
  TelemetryMessage,
} from "@aigate/shared";
import { type ClassifierConfig, readConfig } from "./config";
import { judgeSessions } from "./judging";
import { listDue } from "./queries";
import { type EventsDelivery, recordEvents } from "./telemetry";
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

  if (poison.length > 0) await park(env.DB, poison, now, log);
  if (events.length > 0) await recordBatch(env, events, now, settings, log);
  if (judges.length > 0) await judgeBatch(env, judges, now, settings, log);
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

async function recordBatch(
  env: Env,
  events: { message: Message<unknown>; delivery: EventsDelivery }[],
  now: number,
  settings: ClassifierConfig,
  log: Logger,
): Promise<void> {
  const messages = events.map((e) => e.message);
  const requestIds = events.map((e) => e.delivery.body.request_id);
  try {
    const { outcome, conflicting } = await recordEvents(
      env.DB,
      events.map((e) => e.delivery),
      now,
      settings,
    );
    for (const m of messages) m.ack();
    log.info("recorded telemetry", { request_ids: requestIds, ...outcome });
    if (conflicting.length > 0) {
      // A gateway reused an event id for other content: the first copy stands.
      log.warn("ignored event copies whose payload differs from the first copy", {
        request_ids: requestIds,
        count: conflicting.length,
        conflicting: conflicting.slice(0, 100),
      });
    }
  } catch (err) {
    retryAll(messages);
    log.error("recording telemetry failed, retrying", { request_ids: requestIds, ...errorFields(err) });
  }
}

async function judgeBatch(
  env: Env,
  judges: { message: Message<unknown>; body: JudgeMessage }[],
  now: number,
  settings: ClassifierConfig,
  log: Logger,
): Promise<void> {
  const messages = judges.map((j) => j.message);
  const sessionIds = [...new Set(judges.flatMap((j) => j.body.session_ids))];
  try {
    const { notDue, ...outcome } = await judgeSessions(
      env.DB,
      { verdicts: env.VERDICTS },
      sessionIds,
      now,
      settings,
    );
    // those not due yet go (back) on the agenda: the cron judges them when they are
    if (notDue.length > 0) await env.DB.batch(listDue(env.DB, notDue));
    for (const m of messages) m.ack();
    log.info("judged sessions", { session_ids: sessionIds.slice(0, 100), ...outcome });
  } catch (err) {
    retryAll(messages);
    log.error("judging failed, retrying", { session_ids: sessionIds.slice(0, 100), ...errorFields(err) });
  }
}
