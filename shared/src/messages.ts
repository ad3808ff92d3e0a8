/**
 * Queue messages. Every message carries a schema version and the ids needed for idempotency.
 */
import { z } from "zod";
import { TelemetryEvent } from "./events";
import { PaidPlanId } from "./plans";
import { VerdictReason } from "./rules";

export const QUEUES = {
  telemetry: "aigate-telemetry",
  telemetryDlq: "aigate-telemetry-dlq",
  verdicts: "aigate-verdicts",
  verdictsDlq: "aigate-verdicts-dlq",
  alerts: "aigate-alerts",
  alertsDlq: "aigate-alerts-dlq",
} as const;

/** Events accepted by ingest in one request (or a slice of it). Idempotency: event id + source. */
export const EventsMessage = z.object({
  v: z.literal(1),
  kind: z.literal("events"),
  request_id: z.string(),
  received_at: z.number(),
  events: z.array(TelemetryEvent).min(1),
});
export type EventsMessage = z.infer<typeof EventsMessage>;

/** A delayed reminder to judge sessions once their settle window has passed. */
export const JudgeMessage = z.object({
  v: z.literal(1),
  kind: z.literal("judge"),
  session_ids: z.array(z.string()).min(1),
  due_at: z.number(),
});
export type JudgeMessage = z.infer<typeof JudgeMessage>;

export const TelemetryMessage = z.discriminatedUnion("kind", [EventsMessage, JudgeMessage]);
export type TelemetryMessage = z.infer<typeof TelemetryMessage>;

/**
 * Version 1 of the verdicts queue: one final verdict per session. The classifier now records usage
 * with the verdict and sends UsageMessage; the biller still reads this shape (dead letters parked
 * before the change can be replayed): it posts the session's series.
 */
export const VerdictMessage = z.object({
  v: z.literal(1),
  kind: z.literal("verdict"),
  session_id: z.string(),
  user_id: z.string(),
  project_id: z.string(),
  created_at: z.number(),
  billable: z.boolean(),
  reason: VerdictReason,
  rule_version: z.int(),
  audio_ms: z.int().min(0),
  judged_at: z.number(),
});
export type VerdictMessage = z.infer<typeof VerdictMessage>;

/** A paid usage series: (user, plan, window start). */
export const SeriesRef = z.object({ user_id: z.string(), plan: PaidPlanId, period_start: z.int() });
export type SeriesRef = z.infer<typeof SeriesRef>;

/**
 * The classifier judged sessions and added the billable ones to these paid series (usage is
 * recorded with the verdict, in D1): the biller posts their totals. One message per judge run,
 * however many sessions; idempotent (the totals are read from D1 when posting).
 */
export const UsageMessage = z.object({
  v: z.literal(2),
  kind: z.literal("usage"),
  series: z.array(SeriesRef).min(1),
  judged: z.int().min(0),
  judged_at: z.number(),
});
export type UsageMessage = z.infer<typeof UsageMessage>;

export const BillerMessage = z.discriminatedUnion("kind", [UsageMessage, VerdictMessage]);
export type BillerMessage = z.infer<typeof BillerMessage>;

/**
 * A spend alert to deliver to the user's endpoint: the crossing recorded in `spend_alerts`
 * (docs/billing.md "Spend caps and alerts"). Idempotent: a delivered alert is not sent again.
 */
export const SpendAlertMessage = z.object({
  v: z.literal(1),
  kind: z.literal("spend_alert"),
  user_id: z.string(),
  plan: PaidPlanId,
  period_start: z.int(),
  threshold: z.int().min(1).max(100),
});
export type SpendAlertMessage = z.infer<typeof SpendAlertMessage>;

/** Cloudflare Queues limits that shape how producers pack messages. */
export const QUEUE_LIMITS = {
  maxMessageBytes: 128 * 1000,
  maxBatchMessages: 100,
  maxBatchBytes: 256 * 1000,
  maxDelaySeconds: 12 * 60 * 60,
} as const;
