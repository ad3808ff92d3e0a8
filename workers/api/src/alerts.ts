/**
 * Delivery of spend alerts (docs/billing.md "Spend caps and alerts"). The crossings recorded in
 * `spend_alerts` are the outbox:
 *
 * - Every minute (cron) the due alerts (`delivery = 'pending'`, `next_attempt_at <= now`) are sent
 *   to the `aigate-alerts` queue, after their next attempt has been moved a lease ahead, so a
 *   message lost on the way is sent again once the lease runs out and none is sent twice meanwhile.
 * - The queue handler makes one delivery attempt per message: a signed POST to the user's
 *   endpoint. A 2xx marks the alert delivered; anything else is retried by the queue with backoff
 *   (30 s doubling, at most 1 h); the last attempt parks the message in `dead_letters` (queue
 *   `aigate-alerts`, with the endpoint's answer as the reason) and marks the alert `failed`. An
 *   operator replays it like any dead letter; a replayed message gets a new round of attempts.
 *
 * On a sharded D1 the cron runs on every shard (each holds its users' alerts), and the queue
 * handler reads and marks each alert on its user's shard; dead letters are parked in the home
 * database.
 */
import {
  ALERT_SIGNATURE_HEADER,
  alertSignature,
  backoff,
  deadLetterOf,
  describeIssues,
  errorFields,
  insertDeadLetters,
  type Logger,
  QUEUES,
  type Shards,
  SpendAlertMessage,
} from "@aigate/shared";
import { z } from "zod";

/** Deliveries of one alert message: the consumer's `max_retries` + 1 (wrangler.jsonc). */
export const MAX_ALERT_ATTEMPTS = 8;
/** How long an alert handed to the queue is left alone by the cron. */
export const ALERT_LEASE_MS = 2 * 60 * 60 * 1000;
/** Alerts handed to the queue per cron run. */
const ENQUEUE_LIMIT = 100;
/** How long the endpoint may take to answer. */
const DELIVERY_TIMEOUT_MS = 10_000;

/** The delay before the next attempt after `attempts` failed ones: 30 s doubling, at most 1 h. */
export function alertRetryDelaySeconds(attempts: number): number {
  return backoff(attempts, { base: 30, max: 3600, maxDoublings: 10 });
}

const DueRow = z.object({
  user_id: z.string(),
  plan: z.enum(["payg", "pro"]),
  period_start: z.number().int(),
  threshold: z.number().int(),
});

/** The cron: hands the due alerts to the queue. Returns how many. */
export async function enqueueDueAlerts(
  db: D1Database,
  queue: Pick<Queue, "sendBatch">,
  now: number,
  log: Logger,
): Promise<number> {
  const { results } = await db
    .prepare(
      `UPDATE spend_alerts SET next_attempt_at = ?2
       WHERE (user_id, plan, period_start, threshold) IN (
         SELECT user_id, plan, period_start, threshold FROM spend_alerts
         WHERE delivery = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT ?3)
       RETURNING user_id, plan, period_start, threshold`,
    )
    .bind(now, now + ALERT_LEASE_MS, ENQUEUE_LIMIT)
    .all();
  const due = results.map((r) => DueRow.parse(r));
  if (due.length === 0) return 0;
  const messages: SpendAlertMessage[] = due.map((d) => ({ v: 1, kind: "spend_alert", ...d }));
  try {
    await queue.sendBatch(messages.map((body) => ({ body, contentType: "json" as const })));
  } catch (err) {
    // Not sent: give the lease back so the next run sends them.
    await releaseLease(db, due, now);
    throw err;
  }
  log.info("spend alerts enqueued", { count: due.length });
  return due.length;
}

async function releaseLease(db: D1Database, keys: z.infer<typeof DueRow>[], now: number): Promise<void> {
  await db
    .prepare(
      `UPDATE spend_alerts SET next_attempt_at = ?2
       WHERE delivery = 'pending' AND (user_id, plan, period_start, threshold) IN (
         SELECT k.value->>'$.user_id', k.value->>'$.plan', k.value->>'$.period_start', k.value->>'$.threshold'
         FROM json_each(?1) k)`,
    )
    .bind(JSON.stringify(keys), now)
    .run();
}

const AlertRow = z.object({
  cap_cents: z.number().int(),
  usage_cents: z.number().int(),
  sessions: z.number().int(),
  crossed_at: z.number(),
  delivery: z.enum(["none", "pending", "delivered", "failed"]),
  alert_url: z.string().nullable(),
  alert_secret: z.string().nullable(),
});

/** The body POSTed to the endpoint (docs/api-billing.md "Spend alerts"). */
export function alertBody(m: SpendAlertMessage, row: z.infer<typeof AlertRow>) {
  return {
    id: `spa_${m.plan}_${m.period_start}_${m.threshold}`,
    type: "spend.threshold_crossed",
    created: Math.floor(row.crossed_at / 1000),
    data: {
      user_id: m.user_id,
      plan: m.plan,
      period_start: new Date(m.period_start).toISOString(),
      threshold: m.threshold,
      cap_cents: row.cap_cents,
      usage_cents: row.usage_cents,
      sessions: row.sessions,
      currency: "usd",
      crossed_at: new Date(row.crossed_at).toISOString(),
    },
  };
}

const KEY = "user_id = ?1 AND plan = ?2 AND period_start = ?3 AND threshold = ?4";

export interface DeliveryDeps {
  /** Each alert is on its user's shard; dead letters are parked in the home database. */
  shards: Shards;
  fetch: typeof fetch;
  now: () => number;
  log: Logger;
}

/** The queue handler of `aigate-alerts`: one delivery attempt per message. */
export async function deliverAlerts(batch: MessageBatch<unknown>, deps: DeliveryDeps): Promise<void> {
  for (const message of batch.messages) {
    try {
      await deliverOne(message, deps);
    } catch (err) {
      // D1 unavailable: try again later; nothing was marked.
      deps.log.error("spend alert delivery failed", { ...errorFields(err), message_id: message.id });
      message.retry({ delaySeconds: alertRetryDelaySeconds(message.attempts) });
    }
  }
}

async function deliverOne(message: Message<unknown>, deps: DeliveryDeps): Promise<void> {
  const { shards, log } = deps;
  const home = shards.home;
  const now = deps.now();
  const parsed = SpendAlertMessage.safeParse(message.body);
  if (!parsed.success) {
    const error = `invalid spend alert message: ${describeIssues(parsed.error)}`;
    await home.batch([
      insertDeadLetters(home, [deadLetterOf(message, { queue: QUEUES.alerts, error, now })]),
    ]);
    log.warn("dead letters parked", { queue: QUEUES.alerts, ids: [message.id], error });
    message.ack();
    return;
  }
  const m = parsed.data;
  const db = shards.of(m.user_id);
  const key = [m.user_id, m.plan, m.period_start, m.threshold] as const;
  const raw = await db
    .prepare(
      `SELECT a.cap_cents, a.usage_cents, a.sessions, a.crossed_at, a.delivery, l.alert_url, l.alert_secret
       FROM spend_alerts a LEFT JOIN spend_limits l ON l.user_id = a.user_id
       WHERE a.user_id = ?1 AND a.plan = ?2 AND a.period_start = ?3 AND a.threshold = ?4`,
    )
    .bind(...key)
    .first();
  const alert = raw ? AlertRow.parse(raw) : null;
  if (!alert || alert.delivery === "delivered") {
    message.ack();
    return;
  }
  if (alert.alert_url === null || alert.alert_secret === null) {
    // the endpoint was removed: nothing to deliver to
    await db
      .prepare(`UPDATE spend_alerts SET delivery = 'none', next_attempt_at = NULL WHERE ${KEY}`)
      .bind(...key)
      .run();
    message.ack();
    return;
  }

  const body = JSON.stringify(alertBody(m, alert));
  const signature = await alertSignature(alert.alert_secret, body, Math.floor(now / 1000));
  let failure: string | null = null;
  try {
    const res = await deps.fetch(alert.alert_url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        [ALERT_SIGNATURE_HEADER]: signature,
        "user-agent": "AIGate-Alerts/1",
      },
      body,
      redirect: "manual",
      signal: AbortSignal.timeout(DELIVERY_TIMEOUT_MS),
    });
    await res.body?.cancel();
    if (res.status < 200 || res.status > 299) failure = `the endpoint answered ${res.status}`;
  } catch (err) {
    failure = `the endpoint could not be reached: ${err instanceof Error ? err.message : String(err)}`;
  }

  if (failure === null) {
    await db
      .prepare(
        `UPDATE spend_alerts SET delivery = 'delivered', delivered_at = ?5, attempts = attempts + 1, error = NULL,
           next_attempt_at = NULL WHERE ${KEY}`,
      )
      .bind(...key, now)
      .run();
    log.info("spend alert delivered", {
      user_id: m.user_id,
      threshold: m.threshold,
      attempt: message.attempts,
    });
    message.ack();
    return;
  }

  if (message.attempts >= MAX_ALERT_ATTEMPTS) {
    const error = `spend alert not delivered after ${message.attempts} attempts: ${failure}`;
    const markFailed = db
      .prepare(
        `UPDATE spend_alerts SET delivery = 'failed', attempts = attempts + 1, error = ?5, next_attempt_at = NULL
         WHERE ${KEY}`,
      )
      .bind(...key, failure);
    const park = insertDeadLetters(home, [deadLetterOf(message, { queue: QUEUES.alerts, error, now })]);
    // one transaction when the user's shard is the home database; otherwise the alert first, then
    // the dead letter (parking is idempotent): a failure in between retries the message, whose next
    // attempt is counted and parked in turn
    if (db === home) await db.batch([markFailed, park]);
    else {
      await markFailed.run();
      await home.batch([park]);
    }
    log.warn("dead letters parked", { queue: QUEUES.alerts, ids: [message.id], error });
    message.ack();
    return;
  }
  const delaySeconds = alertRetryDelaySeconds(message.attempts);
  await db
    .prepare(
      `UPDATE spend_alerts SET attempts = attempts + 1, error = ?5,
         next_attempt_at = CASE WHEN delivery = 'pending' THEN ?6 ELSE next_attempt_at END WHERE ${KEY}`,
    )
    .bind(...key, failure, now + delaySeconds * 1000 + ALERT_LEASE_MS)
    .run();
  log.warn("spend alert delivery failed; retrying", {
    user_id: m.user_id,
    threshold: m.threshold,
    attempt: message.attempts,
    delay_seconds: delaySeconds,
    error: failure,
  });
  message.retry({ delaySeconds });
}
