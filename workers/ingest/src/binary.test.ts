/**
 * POST /v1/events in the CloudEvents HTTP binary content mode (the default of the official
 * `cloudevents` SDK: `HTTP.binary`, `emitterFor(httpTransport(url))`): the event's attributes in
 * `ce-*` headers, its data as the body. The requests below are built as that SDK builds them;
 * test/e2e/ingest-http.test.ts sends them with the SDK itself.
 */
import { EventsMessage } from "@aigate/shared";
import { DEV_INGEST_KEY } from "@aigate/test-support";
import { beforeEach, describe, expect, it } from "vitest";
import { type Attributes, binaryAttributes, isBinaryMode } from "./binary";
import { cloudEvent, dbSnapshot, errorBody, harness, type RecordingQueue, seedDevKeys } from "./test/support";

const NOW = Date.UTC(2026, 10, 20, 12, 0, 0);
const MiB = 1024 * 1024;

beforeEach(seedDevKeys);

function queued(rec: RecordingQueue): EventsMessage[] {
  return rec.batches.flat().map((m) => EventsMessage.parse(m.body));
}

interface BinaryOptions {
  /** Attributes left out of the headers. */
  omit?: string[];
  /** Headers added or replacing the SDK's. */
  headers?: Record<string, string>;
  /** The body instead of JSON.stringify(event.data). */
  body?: string;
}

/** The request `HTTP.binary(event)` describes: ce-* headers, `content-type: application/json; charset=utf-8`, data as the body. */
function binary(event: Record<string, unknown> = cloudEvent({ time: NOW }), opts: BinaryOptions = {}) {
  const headers: Record<string, string> = {
    "content-type": "application/json; charset=utf-8",
    authorization: `Bearer ${DEV_INGEST_KEY}`,
  };
  for (const name of ["id", "time", "type", "source", "specversion", "subject"]) {
    if (!opts.omit?.includes(name)) headers[`ce-${name}`] = String(event[name]);
  }
  Object.assign(headers, opts.headers);
  return { method: "POST", headers, body: opts.body ?? JSON.stringify(event.data) };
}

describe("isBinaryMode", () => {
  it("is binary mode for application/json with any CloudEvents attribute header", () => {
    expect(isBinaryMode(new Headers({ "ce-specversion": "1.0" }))).toBe(true);
    expect(isBinaryMode(new Headers({ "CE-Type": "aigate.session.created" }))).toBe(true);
    expect(isBinaryMode(new Headers({ "ce-id": "e-1" }))).toBe(true);
  });

  it("is not binary mode without one (extension headers alone do not count)", () => {
    expect(isBinaryMode(new Headers({ "content-type": "application/json" }))).toBe(false);
    expect(isBinaryMode(new Headers({ "ce-traceparent": "00-abc" }))).toBe(false);
  });
});

describe("binaryAttributes", () => {
  it("percent-decodes header values as UTF-8", () => {
    const { attributes, issues } = binaryAttributes(
      new Headers({ "ce-subject": "sess%20%C3%A9%25+1", "ce-id": "plain" }),
    );
    expect(issues).toEqual([]);
    expect(attributes).toEqual<Attributes>({ subject: "sess é%+1", id: "plain" });
  });

  it("reports a value that is not valid percent-encoded UTF-8 on its header name", () => {
    const { attributes, issues } = binaryAttributes(
      new Headers({ "ce-source": "gw%E0%A4%A", "ce-id": "bad%FFbyte", "ce-type": "ok" }),
    );
    expect(attributes).toEqual({ type: "ok" });
    expect(issues.map((i) => i.path)).toEqual(["ce-id", "ce-source"]);
  });
});

describe("POST /v1/events in binary content mode", () => {
  it("accepts an event whose attributes are ce-* headers and whose body is its data, as in structured mode", async () => {
    const event = cloudEvent({
      type: "aigate.session.ended",
      id: "bin-1",
      session: "sess_bin",
      time: NOW - 500,
    });
    const viaBinary = harness({ now: () => NOW });
    const res = await viaBinary.fetch("/v1/events", binary(event));
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ accepted: 1 });

    const viaStructured = harness({ now: () => NOW });
    const structured = await viaStructured.fetch("/v1/events", {
      method: "POST",
      headers: { "content-type": "application/cloudevents+json", authorization: `Bearer ${DEV_INGEST_KEY}` },
      body: JSON.stringify(event),
    });
    expect(structured.status).toBe(202);
    const [a] = queued(viaBinary.rec);
    const [b] = queued(viaStructured.rec);
    expect(a?.events).toEqual(b?.events);
    expect(a?.events).toEqual([
      {
        id: "bin-1",
        source: "gw-test-1",
        type: "aigate.session.ended",
        session_id: "sess_bin",
        user_id: "user_1",
        project_id: "proj_1",
        time: NOW - 500,
        audio_ms: 61000,
        reason: "hangup",
      },
    ]);
  });

  it("reads header names case-insensitively, percent-decodes values and ignores extensions", async () => {
    const h = harness({ now: () => NOW });
    const event = cloudEvent({ time: NOW });
    const res = await h.fetch("/v1/events", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Authorization: `Bearer ${DEV_INGEST_KEY}`,
        "CE-SpecVersion": "1.0",
        "CE-ID": "bin%202",
        "Ce-Source": "gw%2Fe%C3%BC",
        "ce-type": "aigate.session.heartbeat",
        "ce-subject": "sess_%E2%9C%93",
        "ce-time": new Date(NOW).toISOString(),
        "ce-traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "ce-dataschema": "https://example.com/schema",
      },
      body: JSON.stringify(event.data),
    });
    expect(res.status).toBe(202);
    expect(queued(h.rec)[0]?.events[0]).toMatchObject({ id: "bin 2", source: "gw/eü", session_id: "sess_✓" });
  });

  it("keeps structured mode for application/cloudevents+json even with ce-* headers", async () => {
    const h = harness({ now: () => NOW });
    const event = cloudEvent({ time: NOW, id: "from-body" });
    const res = await h.fetch("/v1/events", {
      method: "POST",
      headers: {
        "content-type": "application/cloudevents+json",
        authorization: `Bearer ${DEV_INGEST_KEY}`,
        "ce-id": "from-header",
        "ce-type": "not.a.type",
      },
      body: JSON.stringify(event),
    });
    expect(res.status).toBe(202);
    expect(queued(h.rec)[0]?.events[0]?.id).toBe("from-body");
  });

  const valid = () => cloudEvent({ time: NOW });
  const bad: Array<{
    name: string;
    init: () => RequestInit;
    status: number;
    code: string;
    paths?: string[];
  }> = [
    {
      name: "no ce-type",
      init: () => binary(valid(), { omit: ["type"] }),
      status: 400,
      code: "invalid_event",
      paths: ["ce-type"],
    },
    {
      name: "an unknown ce-type",
      init: () => binary(valid(), { headers: { "ce-type": "aigate.session.paused" } }),
      status: 400,
      code: "invalid_event",
      paths: ["ce-type"],
    },
    {
      name: "no ce-id and no ce-subject",
      init: () => binary(valid(), { omit: ["id", "subject"] }),
      status: 400,
      code: "invalid_event",
      paths: ["ce-id", "ce-subject"],
    },
    {
      name: "no ce-specversion (binary mode told by the other ce-* headers)",
      init: () => binary(valid(), { omit: ["specversion"] }),
      status: 400,
      code: "invalid_event",
      paths: ["ce-specversion"],
    },
    {
      name: "ce-specversion 0.3",
      init: () => binary(valid(), { headers: { "ce-specversion": "0.3" } }),
      status: 400,
      code: "invalid_event",
      paths: ["ce-specversion"],
    },
    {
      name: "a ce-time that is not RFC 3339",
      init: () => binary(valid(), { headers: { "ce-time": "20 Nov 2026 12:00" } }),
      status: 400,
      code: "invalid_event",
      paths: ["ce-time"],
    },
    {
      name: "a ce-time more than 5 minutes ahead",
      init: () => binary(valid(), { headers: { "ce-time": new Date(NOW + 6 * 60_000).toISOString() } }),
      status: 400,
      code: "invalid_event",
      paths: ["ce-time"],
    },
    {
      name: "a ce-source that is not valid percent-encoding",
      init: () => binary(valid(), { headers: { "ce-source": "gw%E0%A4%A" } }),
      status: 400,
      code: "invalid_event",
      paths: ["ce-source"],
    },
    {
      name: "a blank ce-subject",
      init: () => binary(valid(), { headers: { "ce-subject": "%20%20" } }),
      status: 400,
      code: "invalid_event",
      paths: ["ce-subject"],
    },
    {
      name: "data without user_id",
      init: () => binary(valid(), { body: JSON.stringify({ project_id: "p", audio_ms: 1 }) }),
      status: 400,
      code: "invalid_event",
      paths: ["data.user_id"],
    },
    {
      name: "a body that is an array of events (binary mode carries one event's data)",
      init: () => binary(valid(), { body: JSON.stringify([valid()]) }),
      status: 400,
      code: "invalid_event",
      paths: ["data"],
    },
    {
      name: "a body that is not JSON",
      init: () => binary(valid(), { body: '{"user_id": ' }),
      status: 400,
      code: "invalid_json",
    },
    {
      name: "an empty body",
      init: () => binary(valid(), { body: "" }),
      status: 400,
      code: "invalid_json",
    },
    {
      name: "data as text/plain",
      init: () => binary(valid(), { headers: { "content-type": "text/plain" } }),
      status: 415,
      code: "unsupported_media_type",
    },
    {
      name: "data of more than 1 MiB",
      init: () => binary(valid(), { body: JSON.stringify({ pad: "x".repeat(MiB) }) }),
      status: 413,
      code: "payload_too_large",
    },
    {
      name: "no key",
      init: () => {
        const init = binary(valid());
        const { authorization: _, ...headers } = init.headers;
        return { ...init, headers };
      },
      status: 401,
      code: "unauthorized",
    },
  ];

  it.each(bad)("rejects $name with $status $code, whole, changing nothing", async (c) => {
    const h = harness({ now: () => NOW });
    const before = await dbSnapshot();
    const res = await h.fetch("/v1/events", c.init());
    expect(res.status).toBe(c.status);
    const error = await errorBody(res);
    expect(error.code).toBe(c.code);
    if (c.paths) {
      expect(error.details).toEqual(c.paths.map((path) => ({ index: 0, path, message: expect.any(String) })));
    } else {
      expect(error.details).toBeUndefined();
    }
    expect(h.rec.attempts).toBe(0);
    expect(await dbSnapshot()).toBe(before);
  });
});
