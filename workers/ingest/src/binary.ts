/**
 * The CloudEvents HTTP binary content mode (the default of the official SDKs): one event whose
 * context attributes travel in `ce-*` headers, percent-encoded, and whose data is the body.
 * Validated exactly as a structured event; problems with an attribute are reported on its
 * header name (`ce-type`), problems in the data on their path in it (`data.audio_ms`).
 */
import { type EventIssue, parseEventBatch, type TelemetryEvent } from "@aigate/shared";

/** The context attributes an event carries, in the order problems are listed. */
const ATTRIBUTES = ["specversion", "id", "source", "type", "subject", "time"] as const;
type Attribute = (typeof ATTRIBUTES)[number];
export type Attributes = Partial<Record<Attribute, string>>;

const header = (attribute: string) => `ce-${attribute}`;

/**
 * A request is in binary mode when it carries any of the attribute headers (not only
 * `ce-specversion`), so a request missing one of them is told which, instead of being read as a
 * structured event. Extension headers (`ce-traceparent`) alone do not count.
 */
export function isBinaryMode(headers: Headers): boolean {
  return ATTRIBUTES.some((a) => headers.has(header(a)));
}

/** The attributes from their headers, percent-decoded as UTF-8 (HTTP binding 3.1.3.2). */
export function binaryAttributes(headers: Headers): { attributes: Attributes; issues: EventIssue[] } {
  const attributes: Attributes = {};
  const issues: EventIssue[] = [];
  for (const attribute of ATTRIBUTES) {
    const value = headers.get(header(attribute));
    if (value === null) continue;
    try {
      attributes[attribute] = decodeURIComponent(value);
    } catch {
      issues.push({
        index: 0,
        path: header(attribute),
        message: "must be percent-encoded UTF-8 (e.g. %C3%A9 for é)",
      });
    }
  }
  return { attributes, issues };
}

/** An issue's path as the client sent it: an attribute by its header name. */
function headerPath(path: string): string {
  return (ATTRIBUTES as readonly string[]).includes(path) ? header(path) : path;
}

/** The one event of a binary-mode request, `data` being its parsed body; accepted or refused whole. */
export function parseBinaryEvent(
  headers: Headers,
  data: unknown,
  now: number,
): { ok: true; events: TelemetryEvent[] } | { ok: false; issues: EventIssue[] } {
  const { attributes, issues } = binaryAttributes(headers);
  const parsed = parseEventBatch([{ ...attributes, data }], now);
  if (parsed.ok && issues.length === 0) return parsed;
  const reported = new Set(issues.map((i) => i.path));
  const rest = parsed.ok
    ? []
    : parsed.issues.map((i) => ({ ...i, path: headerPath(i.path) })).filter((i) => !reported.has(i.path));
  return { ok: false, issues: [...issues, ...rest] };
}
