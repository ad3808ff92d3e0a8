/**
 * Session telemetry from gateways: CloudEvents 1.0 as received at the edge, and the compact
 * internal form carried on the telemetry queue.
 */
import { z } from "zod";

export const EVENT_TYPES = [
  "aigate.session.created",
  "aigate.session.connected",
  "aigate.session.turn_failed",
  "aigate.session.upstream_error",
  "aigate.session.heartbeat",
  "aigate.session.ended",
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export const LIMITS = {
  maxEventsPerRequest: 500,
  maxBodyBytes: 1024 * 1024,
  maxFutureSkewMs: 5 * 60 * 1000,
  maxAgeMs: 35 * 24 * 60 * 60 * 1000,
  maxIdLength: 200,
  maxTextLength: 500,
  /** Upper bound for millisecond durations (30 days): rejects absurd values early. */
  maxDurationMs: 30 * 24 * 60 * 60 * 1000,
} as const;

/**
 * JSON strings can carry lone UTF-16 surrogates ("\ud800"); D1 stores UTF-8, where they do not
 * survive, so such an id would not match itself (or would match someone else's) once stored.
 */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
export function isWellFormedText(s: string): boolean {
  return !LONE_SURROGATE.test(s);
}
const WELL_FORMED = { message: "must be well-formed Unicode (no lone surrogates)" };

/** An id from outside (session, user, project, event, source): trimmed, 1-200 chars, storable. */
export const Identifier = z
  .string()
  .trim()
  .min(1)
  .max(LIMITS.maxIdLength)
  .refine(isWellFormedText, WELL_FORMED);
const Id = Identifier;
const Text = z.string().max(LIMITS.maxTextLength).refine(isWellFormedText, WELL_FORMED);
const DurationMs = z.int().min(0).max(LIMITS.maxDurationMs);
const Rfc3339 = z.iso.datetime({ offset: true });

const Owner = { user_id: Id, project_id: Id };

const envelope = {
  specversion: z.literal("1.0"),
  id: Id,
  source: Id,
  subject: Id,
  time: Rfc3339,
};

export const CloudEvent = z.discriminatedUnion("type", [
  z.object({ ...envelope, type: z.literal("aigate.session.created"), data: z.object(Owner) }),
  z.object({
    ...envelope,
    type: z.literal("aigate.session.connected"),
    data: z.object({ ...Owner, connect_latency_ms: DurationMs }),
  }),
  z.object({
    ...envelope,
    type: z.literal("aigate.session.turn_failed"),
    data: z.object({ ...Owner, detail: Text.optional() }),
  }),
  z.object({
    ...envelope,
    type: z.literal("aigate.session.upstream_error"),
    data: z.object({ ...Owner, status: z.int().min(0).max(999).optional(), code: Text.optional() }),
  }),
  z.object({
    ...envelope,
    type: z.literal("aigate.session.heartbeat"),
    data: z.object({ ...Owner, audio_ms: DurationMs }),
  }),
  z.object({
    ...envelope,
    type: z.literal("aigate.session.ended"),
    data: z.object({ ...Owner, audio_ms: DurationMs, reason: Text.optional() }),
  }),
]);
export type CloudEvent = z.infer<typeof CloudEvent>;

/** The compact form of an accepted event, as queued for the classifier. */
export const TelemetryEvent = z.object({
  id: z.string(),
  source: z.string(),
  type: z.enum(EVENT_TYPES),
  session_id: z.string(),
  user_id: z.string(),
  project_id: z.string(),
  /** Event time, epoch ms. */
  time: z.number(),
  connect_latency_ms: z.number().optional(),
  audio_ms: z.number().optional(),
  status: z.number().optional(),
  code: z.string().optional(),
  reason: z.string().optional(),
  detail: z.string().optional(),
});
export type TelemetryEvent = z.infer<typeof TelemetryEvent>;

export function toTelemetryEvent(e: CloudEvent): TelemetryEvent {
  const { user_id, project_id, ...rest } = e.data;
  return {
    id: e.id,
    source: e.source,
    type: e.type,
    session_id: e.subject,
    user_id,
    project_id,
    time: Date.parse(e.time),
    ...rest,
  };
}

export interface EventIssue {
  index: number;
  path: string;
  message: string;
}

/**
 * Validates a batch of CloudEvents. Accepted or rejected whole: either every event parses and
 * lies within the accepted time window, or the issues of every bad event are returned.
 */
export function parseEventBatch(
  input: unknown[],
  now: number,
): { ok: true; events: TelemetryEvent[] } | { ok: false; issues: EventIssue[] } {
  const issues: EventIssue[] = [];
  const events: TelemetryEvent[] = [];
  input.forEach((raw, index) => {
    const parsed = CloudEvent.safeParse(raw);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        issues.push({ index, path: formatPath(issue.path), message: issue.message });
      }
      return;
    }
    const event = toTelemetryEvent(parsed.data);
    const late = timeWindowIssue(event.time, now);
    if (late !== null) {
      issues.push({ index, path: "time", message: late });
    } else {
      events.push(event);
    }
  });
  return issues.length > 0 ? { ok: false, issues } : { ok: true, events };
}

/** Why an event's time (epoch ms) lies outside the accepted window, or null when it does not. */
export function timeWindowIssue(time: number, now: number): string | null {
  if (time > now + LIMITS.maxFutureSkewMs) return "time is more than 5 minutes in the future";
  if (time < now - LIMITS.maxAgeMs) return "time is older than 35 days";
  return null;
}

function formatPath(path: PropertyKey[]): string {
  return path
    .map((p) => (typeof p === "number" ? `[${p}]` : String(p)))
    .join(".")
    .replace(/\.\[/g, "[");
}
