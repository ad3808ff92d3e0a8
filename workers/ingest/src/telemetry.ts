/**
 * POST /v1/events: CloudEvents (structured, batch or binary content mode) validated whole at the
 * edge, packed into few queue messages and enqueued. No D1 write on this path. 202 only once
 * every message is sent; a refused send is 503 and the gateway retries with the same event ids
 * (the classifier deduplicates on source + id).
 */
import {
  CloudEvent,
  errorFields,
  LIMITS,
  type Logger,
  parseEventBatch,
  type TelemetryEvent,
  timeWindowIssue,
  toTelemetryEvent,
} from "@aigate/shared";
import { acceptor, REJECT } from "./acceptor";
import { isBinaryMode, parseBinaryEvent } from "./binary";
import { type BodyShape, eventBodyShape, parseJson, readBodyText } from "./body";
import { invalidEvent, invalidRequest, queueUnavailable, tooManyEvents } from "./errors";
import { dedupeEvents, packEvents, sendBatches } from "./packing";

/** At most this many per-event issues are returned in `details`. */
export const MAX_ISSUE_DETAILS = 100;

/** The list of raw events a body holds, checked against what its media type announced. */
export function eventList(body: unknown, shape: BodyShape): unknown[] {
  if (Array.isArray(body)) {
    if (shape === "single") {
      throw invalidRequest(
        "application/cloudevents+json carries one event; send arrays as application/cloudevents-batch+json",
      );
    }
    if (body.length === 0) throw invalidRequest("the batch holds no events");
    return body;
  }
  if (shape === "batch")
    throw invalidRequest("application/cloudevents-batch+json needs a JSON array of events");
  if (body === null || typeof body !== "object") {
    throw invalidRequest("the body must be a CloudEvent object or an array of them");
  }
  return [body];
}

const acceptCloudEvent = acceptor(CloudEvent);

/**
 * Validates a batch as parseEventBatch does, accepted or refused whole. The usual batch, every
 * event valid, goes through the schema's fast acceptor; as soon as one event is not accepted
 * there, the whole batch is parsed by the schema itself, which finds and explains every issue.
 */
export function parseEvents(raw: unknown[], now: number): ReturnType<typeof parseEventBatch> {
  const events: TelemetryEvent[] = [];
  for (const value of raw) {
    const accepted = acceptCloudEvent(value);
    if (accepted === REJECT) return parseEventBatch(raw, now);
    const event = toTelemetryEvent(accepted);
    if (timeWindowIssue(event.time, now) !== null) return parseEventBatch(raw, now);
    events.push(event);
  }
  return { ok: true, events };
}

/** Events sent whole in the body (structured mode, one or a batch): at most 500, each validated. */
function parseStructured(raw: unknown[], now: number) {
  if (raw.length > LIMITS.maxEventsPerRequest) throw tooManyEvents(LIMITS.maxEventsPerRequest, raw.length);
  return parseEvents(raw, now);
}

export interface AcceptDeps {
  queue: Queue;
  now: number;
  requestId: string;
  log: Logger;
}

export interface Accepted {
  accepted: number;
  enqueued: number;
  messages: number;
}

export async function acceptEvents(request: Request, deps: AcceptDeps): Promise<Accepted> {
  const shape = eventBodyShape(request.headers.get("content-type"));
  const binary = shape === "either" && isBinaryMode(request.headers);
  const body = parseJson(await readBodyText(request, LIMITS.maxBodyBytes));
  const parsed = binary
    ? parseBinaryEvent(request.headers, body, deps.now)
    : parseStructured(eventList(body, shape), deps.now);
  if (!parsed.ok) {
    const shown = parsed.issues.slice(0, MAX_ISSUE_DETAILS);
    const more = parsed.issues.length - shown.length;
    throw invalidEvent(
      `${parsed.issues.length} problem(s) in the events; nothing was accepted${more > 0 ? ` (first ${shown.length} shown)` : ""}`,
      shown,
    );
  }
  const accepted = parsed.events.length;

  const events = dedupeEvents(parsed.events);
  const messages = packEvents(events, { request_id: deps.requestId, received_at: deps.now });
  try {
    for (const batch of sendBatches(messages)) {
      await deps.queue.sendBatch(batch.map((m) => ({ body: m.body, contentType: "json" as const })));
    }
  } catch (err) {
    deps.log.error("telemetry queue refused events", {
      ...errorFields(err),
      events: events.length,
      messages: messages.length,
    });
    throw queueUnavailable();
  }
  return { accepted, enqueued: events.length, messages: messages.length };
}
