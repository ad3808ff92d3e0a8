import { env, SELF } from "cloudflare:test";
import { clearKeyCache, EventsMessage, LIMITS } from "@aigate/shared";
import { DEV_ADMIN_KEY, DEV_INGEST_KEY } from "@aigate/test-support";
import { beforeEach, describe, expect, it, vi } from "vitest";
import {
  cloudEvent,
  dbSnapshot,
  errorBody,
  harness,
  postJson,
  type RecordingQueue,
  seedDevKeys,
} from "./test/support";

const MiB = 1024 * 1024;
const NOW = Date.UTC(2026, 10, 20, 12, 0, 0);
const MIN = 60_000;
const DAY = 24 * 60 * MIN;

beforeEach(seedDevKeys);

function queued(rec: RecordingQueue): EventsMessage[] {
  return rec.batches.flat().map((m) => {
    expect(m.contentType).toBe("json");
    return EventsMessage.parse(m.body);
  });
}

function post(body: unknown, contentType: string, key: string | null = DEV_INGEST_KEY): RequestInit {
  return postJson(body, { contentType, key });
}

describe("POST /v1/events accepts valid events", () => {
  it("enqueues one application/cloudevents+json event in its compact form and answers 202", async () => {
    const h = harness({ now: () => NOW });
    const event = cloudEvent({
      type: "aigate.session.connected",
      id: "e-1",
      session: "sess_a",
      time: NOW - 1000,
    });
    const res = await h.fetch("/v1/events", post(event, "application/cloudevents+json"));
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ accepted: 1 });
    const messages = queued(h.rec);
    expect(messages).toHaveLength(1);
    expect(messages[0]).toEqual({
      v: 1,
      kind: "events",
      request_id: res.headers.get("x-request-id"),
      received_at: NOW,
      events: [
        {
          id: "e-1",
          source: "gw-test-1",
          type: "aigate.session.connected",
          session_id: "sess_a",
          user_id: "user_1",
          project_id: "proj_1",
          time: NOW - 1000,
          connect_latency_ms: 420,
        },
      ],
    });
  });

  it("accepts a batch as application/cloudevents-batch+json", async () => {
    const h = harness({ now: () => NOW });
    const events = ["created", "connected", "heartbeat", "ended"].map((t, i) =>
      cloudEvent({ type: `aigate.session.${t}` as "aigate.session.created", time: NOW - 10_000 + i }),
    );
    const res = await h.fetch(
      "/v1/events",
      post(events, "application/cloudevents-batch+json; charset=utf-8"),
    );
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ accepted: 4 });
    expect(queued(h.rec).flatMap((m) => m.events.map((e) => e.type))).toEqual(events.map((e) => e.type));
  });

  it("accepts one object or an array as application/json", async () => {
    const h = harness({ now: () => NOW });
    const one = await h.fetch(
      "/v1/events",
      post(cloudEvent({ time: NOW }), "application/json; charset=UTF-8"),
    );
    const many = await h.fetch(
      "/v1/events",
      post([cloudEvent({ time: NOW }), cloudEvent({ time: NOW })], "application/json"),
    );
    expect([one.status, many.status]).toEqual([202, 202]);
    expect(await many.json()).toEqual({ accepted: 2 });
    expect(queued(h.rec).flatMap((m) => m.events)).toHaveLength(3);
  });

  it("enqueues a 50-event request as a single queue message (<= 0.05 messages per event)", async () => {
    const h = harness({ now: () => NOW });
    const events = Array.from({ length: 50 }, (_, i) =>
      cloudEvent({ session: `sess_${i % 7}`, time: NOW - i }),
    );
    const res = await h.fetch("/v1/events", post(events, "application/cloudevents-batch+json"));
    expect(res.status).toBe(202);
    expect(h.rec.attempts).toBe(1);
    const messages = queued(h.rec);
    expect(messages).toHaveLength(1);
    expect(messages.length / events.length).toBeLessThanOrEqual(0.05);
    expect(messages[0]?.events.map((e) => e.id)).toEqual(events.map((e) => e.id));
  });

  it("drops repeated (source, id) pairs within one request before enqueueing, and counts them accepted", async () => {
    const h = harness({ now: () => NOW });
    const a = cloudEvent({ id: "dup", time: NOW });
    const b = cloudEvent({ id: "dup", source: "gw-other", time: NOW });
    const res = await h.fetch("/v1/events", post([a, b, a, a], "application/json"));
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ accepted: 4 });
    expect(queued(h.rec)[0]?.events.map((e) => [e.source, e.id])).toEqual([
      ["gw-test-1", "dup"],
      ["gw-other", "dup"],
    ]);
  });

  it("accepts times up to 5 minutes ahead and up to 35 days old", async () => {
    const h = harness({ now: () => NOW });
    const events = [cloudEvent({ time: NOW + 5 * MIN }), cloudEvent({ time: NOW - 35 * DAY })];
    const res = await h.fetch("/v1/events", post(events, "application/json"));
    expect(res.status).toBe(202);
  });

  it("accepts 500 events", async () => {
    const h = harness({ now: () => NOW });
    const events = Array.from({ length: LIMITS.maxEventsPerRequest }, () => cloudEvent({ time: NOW }));
    const res = await h.fetch("/v1/events", post(events, "application/json"));
    expect(res.status).toBe(202);
    expect(queued(h.rec).flatMap((m) => m.events)).toHaveLength(500);
  });

  it("accepts a body of exactly 1 MiB", async () => {
    const h = harness({ now: () => NOW });
    const json = JSON.stringify([cloudEvent({ time: NOW })]);
    const body = json + " ".repeat(MiB - json.length);
    expect(new TextEncoder().encode(body).byteLength).toBe(MiB);
    const res = await h.fetch("/v1/events", post(body, "application/json"));
    expect(res.status).toBe(202);
  });

  it("enqueues on the real telemetry queue binding through the deployed entry point", async () => {
    const res = await SELF.fetch(
      "http://ingest.test/v1/events",
      post(
        [cloudEvent(), cloudEvent({ type: "aigate.session.ended" })],
        "application/cloudevents-batch+json",
      ),
    );
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ accepted: 2 });
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("POST /v1/events when the queue refuses", () => {
  it("answers 503 queue_unavailable with Retry-After and the envelope", async () => {
    const h = harness({ now: () => NOW, refuse: () => true });
    const res = await h.fetch("/v1/events", post([cloudEvent({ time: NOW })], "application/json"));
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("1");
    expect((await errorBody(res)).code).toBe("queue_unavailable");
    expect(h.rec.batches).toHaveLength(0);
  });

  it("answers 503 when a later sendBatch of a large request fails; the retry enqueues the same event ids", async () => {
    const events = Array.from({ length: 400 }, (_, i) =>
      cloudEvent({
        id: `big-${i}`,
        time: NOW,
        type: "aigate.session.turn_failed",
        data: { detail: "d".repeat(490) },
      }),
    );
    const failing = harness({ now: () => NOW, refuse: (attempt) => attempt === 2 });
    const first = await failing.fetch("/v1/events", post(events, "application/json"));
    expect(first.status).toBe(503);
    expect(failing.rec.attempts).toBe(2);
    const partial = queued(failing.rec).flatMap((m) => m.events.map((e) => e.id));
    expect(partial.length).toBeGreaterThan(0);
    expect(partial.length).toBeLessThan(events.length);

    const retry = harness({ now: () => NOW + 1000 });
    const second = await retry.fetch("/v1/events", post(events, "application/json"));
    expect(second.status).toBe(202);
    const retried = queued(retry.rec).flatMap((m) => m.events.map((e) => `${e.source}/${e.id}`));
    expect(retried).toEqual(events.map((e) => `${e.source}/${e.id}`));
    // what the failed attempt already enqueued is a prefix of the retry, with the same (source, id)
    expect(retried.slice(0, partial.length)).toEqual(partial.map((id) => `gw-test-1/${id}`));
  });
});

interface BadCase {
  name: string;
  init: () => RequestInit;
  status: number;
  code: string;
  details?: { index: number; path: string }[];
}

const valid = () => cloudEvent({ time: NOW });

/** A body whose stream fails after its first bytes, as the runtime reports a client that went away. */
function lostConnectionBody(): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent) return controller.error(new Error("Network connection lost."));
      sent = true;
      controller.enqueue(new TextEncoder().encode('[{"specversion": "1.0", "id": "cut'));
    },
  });
}
const withData = (data: Record<string, unknown>) => ({ ...valid(), data });

const badCases: BadCase[] = [
  {
    name: "malformed JSON",
    init: () => post('{"specversion": "1.0",', "application/json"),
    status: 400,
    code: "invalid_json",
  },
  { name: "an empty body", init: () => post("", "application/json"), status: 400, code: "invalid_json" },
  {
    name: "missing envelope fields",
    init: () => {
      const { id: _id, subject: _subject, ...rest } = valid();
      return post(rest, "application/cloudevents+json");
    },
    status: 400,
    code: "invalid_event",
    details: [
      { index: 0, path: "id" },
      { index: 0, path: "subject" },
    ],
  },
  {
    name: "missing data.user_id",
    init: () => post(withData({ project_id: "p", audio_ms: 1 }), "application/json"),
    status: 400,
    code: "invalid_event",
    details: [{ index: 0, path: "data.user_id" }],
  },
  {
    name: "mistyped fields",
    init: () =>
      post(
        { ...withData({ user_id: "u", project_id: "p", audio_ms: "12" }), specversion: 1 },
        "application/json",
      ),
    status: 400,
    code: "invalid_event",
    details: [
      { index: 0, path: "specversion" },
      { index: 0, path: "data.audio_ms" },
    ],
  },
  {
    name: "a negative or fractional duration",
    init: () =>
      post(
        [
          {
            ...valid(),
            type: "aigate.session.connected",
            data: { user_id: "u", project_id: "p", connect_latency_ms: -1 },
          },
          {
            ...valid(),
            type: "aigate.session.ended",
            data: { user_id: "u", project_id: "p", audio_ms: 1.5 },
          },
        ],
        "application/json",
      ),
    status: 400,
    code: "invalid_event",
    details: [
      { index: 0, path: "data.connect_latency_ms" },
      { index: 1, path: "data.audio_ms" },
    ],
  },
  {
    name: "an unknown type",
    init: () => post({ ...valid(), type: "aigate.session.paused" }, "application/json"),
    status: 400,
    code: "invalid_event",
    details: [{ index: 0, path: "type" }],
  },
  {
    name: "a time more than 5 minutes in the future",
    init: () => post(cloudEvent({ time: NOW + 5 * MIN + 1000 }), "application/json"),
    status: 400,
    code: "invalid_event",
    details: [{ index: 0, path: "time" }],
  },
  {
    name: "a time older than 35 days",
    init: () => post(cloudEvent({ time: NOW - 35 * DAY - 1000 }), "application/json"),
    status: 400,
    code: "invalid_event",
    details: [{ index: 0, path: "time" }],
  },
  {
    name: "a time that is not RFC 3339",
    init: () => post({ ...valid(), time: "20 Nov 2026 12:00" }, "application/json"),
    status: 400,
    code: "invalid_event",
    details: [{ index: 0, path: "time" }],
  },
  {
    name: "one bad event among good ones (the whole request is rejected)",
    init: () => post([valid(), valid(), valid(), { ...valid(), source: "" }, valid()], "application/json"),
    status: 400,
    code: "invalid_event",
    details: [{ index: 3, path: "source" }],
  },
  {
    name: "an array sent as application/cloudevents+json",
    init: () => post([valid()], "application/cloudevents+json"),
    status: 400,
    code: "invalid_request",
  },
  {
    name: "an object sent as application/cloudevents-batch+json",
    init: () => post(valid(), "application/cloudevents-batch+json"),
    status: 400,
    code: "invalid_request",
  },
  { name: "an empty batch", init: () => post([], "application/json"), status: 400, code: "invalid_request" },
  { name: "a JSON scalar", init: () => post("42", "application/json"), status: 400, code: "invalid_request" },
  {
    name: "too many events (501)",
    init: () => post(Array.from({ length: 501 }, valid), "application/json"),
    status: 413,
    code: "too_many_events",
  },
  {
    name: "a body over 1 MiB with Content-Length",
    init: () => {
      const json = JSON.stringify([valid()]);
      return post(json + " ".repeat(MiB + 1 - json.length), "application/json");
    },
    status: 413,
    code: "payload_too_large",
  },
  {
    name: "a chunked body over 1 MiB (no Content-Length)",
    init: () => {
      const bytes = new TextEncoder().encode(`[${JSON.stringify(valid())}${" ".repeat(MiB)}]`);
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < bytes.byteLength; i += 16_384)
            controller.enqueue(bytes.subarray(i, i + 16_384));
          controller.close();
        },
      });
      return {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${DEV_INGEST_KEY}` },
        body,
      };
    },
    status: 413,
    code: "payload_too_large",
  },
  {
    name: "a body cut off mid-upload (the connection was lost)",
    init: () => ({
      method: "POST",
      headers: {
        "content-type": "application/json",
        "content-length": "4096",
        authorization: `Bearer ${DEV_INGEST_KEY}`,
      },
      body: lostConnectionBody(),
    }),
    status: 400,
    code: "incomplete_body",
  },
  {
    name: "a chunked body cut off mid-upload",
    init: () => ({
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${DEV_INGEST_KEY}` },
      body: lostConnectionBody(),
    }),
    status: 400,
    code: "incomplete_body",
  },
  {
    name: "Content-Length: -1",
    init: () => ({
      ...post([valid()], "application/json"),
      headers: {
        "content-type": "application/json",
        "content-length": "-1",
        authorization: `Bearer ${DEV_INGEST_KEY}`,
      },
    }),
    status: 400,
    code: "invalid_request",
  },
  {
    name: "a text/plain body",
    init: () => post(valid(), "text/plain"),
    status: 415,
    code: "unsupported_media_type",
  },
  {
    name: "no content type",
    init: () => ({
      method: "POST",
      headers: { authorization: `Bearer ${DEV_INGEST_KEY}` },
      body: JSON.stringify(valid()),
    }),
    status: 415,
    code: "unsupported_media_type",
  },
  { name: "no key", init: () => post(valid(), "application/json", null), status: 401, code: "unauthorized" },
  {
    name: "an unknown key",
    init: () => post(valid(), "application/json", "aig_not_a_real_key"),
    status: 401,
    code: "unauthorized",
  },
  {
    name: "a non-Bearer Authorization header",
    init: () => ({
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Basic ${btoa(`x:${DEV_INGEST_KEY}`)}` },
      body: JSON.stringify(valid()),
    }),
    status: 401,
    code: "unauthorized",
  },
  {
    name: "an admin key (wrong scope)",
    init: () => post(valid(), "application/json", DEV_ADMIN_KEY),
    status: 403,
    code: "forbidden",
  },
];

describe("POST /v1/events rejects bad input whole and changes nothing", () => {
  it.each(badCases)("rejects $name with $status $code", async (c) => {
    const h = harness({ now: () => NOW });
    const before = await dbSnapshot();
    const res = await h.fetch("/v1/events", c.init());
    expect(res.status).toBe(c.status);
    const error = await errorBody(res);
    expect(error.code).toBe(c.code);
    if (c.details) {
      expect(error.details).toEqual(c.details.map((d) => ({ ...d, message: expect.any(String) })));
    } else {
      expect(error.details).toBeUndefined();
    }
    if (c.status === 401) expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(h.rec.attempts).toBe(0);
    expect(await dbSnapshot()).toBe(before);
  });

  it("logs a body cut off mid-upload as a rejected request (a client problem), never as an error", async () => {
    const errors = vi.spyOn(console, "error");
    const infos = vi.spyOn(console, "log");
    try {
      const h = harness({ now: () => NOW });
      const res = await h.fetch("/v1/events", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${DEV_INGEST_KEY}` },
        body: lostConnectionBody(),
      });
      expect(res.status).toBe(400);
      expect(errors).not.toHaveBeenCalled();
      const lines = infos.mock.calls.map((args) => JSON.parse(String(args[0])) as Record<string, unknown>);
      expect(lines).toContainEqual(
        expect.objectContaining({
          level: "info",
          msg: "request rejected",
          code: "incomplete_body",
          status: 400,
        }),
      );
    } finally {
      errors.mockRestore();
      infos.mockRestore();
    }
  });

  it("rejects a revoked key with 401 once its cached lookup expires", async () => {
    const h = harness({ now: () => NOW });
    await env.DB.prepare("UPDATE api_keys SET revoked_at = ?1 WHERE id = 'key_dev_ingest'").bind(NOW).run();
    clearKeyCache();
    const res = await h.fetch("/v1/events", post(valid(), "application/json"));
    expect(res.status).toBe(401);
    expect((await errorBody(res)).code).toBe("unauthorized");
    expect(h.rec.attempts).toBe(0);
  });

  it("caps the details at 100 issues but counts them all in the message", async () => {
    const h = harness({ now: () => NOW });
    const res = await h.fetch(
      "/v1/events",
      post(
        Array.from({ length: 150 }, () => ({ ...valid(), id: "" })),
        "application/json",
      ),
    );
    expect(res.status).toBe(400);
    const error = await errorBody(res);
    expect(error.details).toHaveLength(100);
    expect(error.message).toContain("150");
  });
});

describe("routing", () => {
  it("answers 405 with Allow: POST for GET /v1/events", async () => {
    const res = await SELF.fetch("http://ingest.test/v1/events");
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBe("POST");
    expect((await errorBody(res)).code).toBe("method_not_allowed");
  });

  it("answers 404 in the envelope for an unknown /v1 path", async () => {
    const res = await SELF.fetch("http://ingest.test/v1/nope", { method: "POST" });
    expect(res.status).toBe(404);
    expect((await errorBody(res)).code).toBe("not_found");
  });
});
