/**
 * Packing accepted events into as few queue messages as Cloudflare Queues allow, and those
 * messages into as few `sendBatch` calls as allowed. Pure functions; sizes are the UTF-8 byte
 * length of each message's JSON (messages are sent with contentType "json").
 */
import { type EventsMessage, QUEUE_LIMITS, type TelemetryEvent } from "@aigate/shared";

export interface PackLimits {
  maxMessageBytes: number;
  maxBatchMessages: number;
  maxBatchBytes: number;
}

export interface PackedMessage {
  body: EventsMessage;
  /** UTF-8 byte length of JSON.stringify(body). */
  bytes: number;
}

const encoder = new TextEncoder();

export function jsonBytes(value: unknown): number {
  return encoder.encode(JSON.stringify(value)).byteLength;
}

/**
 * Drops repeated (source, id) pairs within one request, keeping the first copy. Later copies are
 * retries or gateway bugs; the classifier deduplicates across requests anyway.
 */
export function dedupeEvents(events: TelemetryEvent[]): TelemetryEvent[] {
  // ids seen per source (a request's events usually share one source): no key strings built
  const seen = new Map<string, Set<string>>();
  const out: TelemetryEvent[] = [];
  for (const event of events) {
    let ids = seen.get(event.source);
    if (!ids) {
      ids = new Set();
      seen.set(event.source, ids);
    } else if (ids.has(event.id)) continue;
    ids.add(event.id);
    out.push(event);
  }
  return out;
}

/**
 * Splits events, in order, into the fewest messages of at most `maxMessageBytes` each (greedy
 * filling is optimal when order is kept). Throws when one event alone exceeds the limit, which
 * validated events cannot (their fields are length-bounded).
 */
export function packEvents(
  events: TelemetryEvent[],
  header: { request_id: string; received_at: number },
  limits: PackLimits = QUEUE_LIMITS,
): PackedMessage[] {
  const make = (slice: TelemetryEvent[]): EventsMessage => ({
    v: 1,
    kind: "events",
    request_id: header.request_id,
    received_at: header.received_at,
    events: slice,
  });
  // The usual request fits one message: measured whole, once.
  const whole = make(events);
  const wholeBytes = jsonBytes(whole);
  if (events.length > 0 && wholeBytes <= limits.maxMessageBytes) return [{ body: whole, bytes: wholeBytes }];
  // JSON of a message = JSON of the empty message + the events joined by commas.
  const emptyBytes = jsonBytes(make([]));
  const messages: PackedMessage[] = [];
  let current: TelemetryEvent[] = [];
  let currentBytes = emptyBytes;
  for (const event of events) {
    const eventBytes = jsonBytes(event);
    if (emptyBytes + eventBytes > limits.maxMessageBytes) {
      throw new RangeError(`one event of ${eventBytes} bytes exceeds the queue message limit`);
    }
    const added = eventBytes + (current.length > 0 ? 1 : 0);
    if (currentBytes + added > limits.maxMessageBytes) {
      messages.push({ body: make(current), bytes: currentBytes });
      current = [event];
      currentBytes = emptyBytes + eventBytes;
    } else {
      current.push(event);
      currentBytes += added;
    }
  }
  if (current.length > 0) messages.push({ body: make(current), bytes: currentBytes });
  return messages;
}

/** Groups messages, in order, into `sendBatch` calls within the count and byte limits. */
export function sendBatches(messages: PackedMessage[], limits: PackLimits = QUEUE_LIMITS): PackedMessage[][] {
  const batches: PackedMessage[][] = [];
  let current: PackedMessage[] = [];
  let currentBytes = 0;
  for (const message of messages) {
    if (message.bytes > limits.maxBatchBytes) throw new RangeError("message larger than a whole batch");
    if (current.length >= limits.maxBatchMessages || currentBytes + message.bytes > limits.maxBatchBytes) {
      batches.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(message);
    currentBytes += message.bytes;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}
