/**
 * More bad input for the ingest endpoints, in the shape of the corpus in corpus.ts: CloudEvents
 * in binary content mode (attributes in `ce-*` headers, data as the body) that the contract
 * refuses, and oversized bodies that must be refused while leaving the client's keep-alive
 * connection usable for the next case. Each must get the contract's 4xx error envelope and leave
 * D1 unchanged.
 *
 * Bad input that `fetch` cannot send (a negative Content-Length, a body cut off mid-upload) is
 * covered by test/e2e/ingest-http.test.ts over raw sockets.
 */
import { DEV_INGEST_KEY } from "@aigate/test-support";
import type { BadRequest } from "./corpus";

const MiB = 1024 * 1024;

const validData = { user_id: "corpus-user", project_id: "proj-corpus", audio_ms: 1000 };

/** The headers the CloudEvents SDK sends in binary mode (`HTTP.binary`), with `overrides` (null removes one). */
function binaryHeaders(overrides: Record<string, string | null> = {}): Record<string, string> {
  const headers: Record<string, string | null> = {
    authorization: `Bearer ${DEV_INGEST_KEY}`,
    "content-type": "application/json; charset=utf-8",
    "ce-specversion": "1.0",
    "ce-id": "evt-corpus-binary-1",
    "ce-source": "gw-corpus",
    "ce-type": "aigate.session.heartbeat",
    "ce-subject": "sess-corpus-binary-1",
    "ce-time": new Date().toISOString(),
    ...overrides,
  };
  return Object.fromEntries(
    Object.entries(headers).filter((entry): entry is [string, string] => entry[1] !== null),
  );
}

function binary(
  name: string,
  overrides: Record<string, string | null>,
  body: BadRequest["body"],
  status: number[],
  code: string,
): BadRequest {
  return {
    name: `events (binary mode): ${name}`,
    method: "POST",
    path: "/v1/events",
    headers: binaryHeaders(overrides),
    body,
    status,
    code,
  };
}

/** A chunked body (no Content-Length) of about `bytes` bytes of JSON padding. */
function chunkedPadding(bytes: number): () => ReadableStream<Uint8Array> {
  return () =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        const chunk = new TextEncoder().encode(" ".repeat(64 * 1024));
        controller.enqueue(new TextEncoder().encode('{"pad":"'));
        for (let sent = 0; sent < bytes; sent += chunk.byteLength) controller.enqueue(chunk);
        controller.enqueue(new TextEncoder().encode('"}'));
        controller.close();
      },
    });
}

const data = JSON.stringify(validData);

export const INGEST_HARDENING_CORPUS: BadRequest[] = [
  binary("no ce-type", { "ce-type": null }, data, [400], "invalid_event"),
  binary("unknown ce-type", { "ce-type": "aigate.session.exploded" }, data, [400], "invalid_event"),
  binary("no ce-specversion", { "ce-specversion": null }, data, [400], "invalid_event"),
  binary("ce-specversion 0.3", { "ce-specversion": "0.3" }, data, [400], "invalid_event"),
  binary("no ce-id", { "ce-id": null }, data, [400], "invalid_event"),
  binary("ce-id of 201 characters", { "ce-id": "e".repeat(201) }, data, [400], "invalid_event"),
  binary("ce-time not a date", { "ce-time": "yesterday" }, data, [400], "invalid_event"),
  binary("ce-time in the year 2999", { "ce-time": "2999-01-01T00:00:00Z" }, data, [400], "invalid_event"),
  binary("ce-source badly percent-encoded", { "ce-source": "gw%E0%A4%A" }, data, [400], "invalid_event"),
  binary(
    "ce-subject a lone surrogate, percent-encoded",
    { "ce-subject": "%ED%A0%80" },
    data,
    [400],
    "invalid_event",
  ),
  binary("ce-subject blank once decoded", { "ce-subject": "%20%09" }, data, [400], "invalid_event"),
  binary(
    "data without user_id",
    {},
    JSON.stringify({ project_id: "p", audio_ms: 1 }),
    [400],
    "invalid_event",
  ),
  binary("data an array", {}, JSON.stringify([validData]), [400], "invalid_event"),
  binary("data null", {}, "null", [400], "invalid_event"),
  binary("audio_ms 1e308", {}, '{"user_id":"u","project_id":"p","audio_ms":1e308}', [400], "invalid_event"),
  binary("data not JSON", {}, '{"user_id":', [400], "invalid_json"),
  binary("no data at all", {}, "", [400], "invalid_json"),
  binary("data as text/plain", { "content-type": "text/plain" }, data, [415], "unsupported_media_type"),
  binary(
    "data in latin1",
    { "content-type": "application/json; charset=latin1" },
    data,
    [415],
    "unsupported_media_type",
  ),
  binary("no key", { authorization: null }, data, [401], "unauthorized"),
  binary(
    "data over 1 MiB",
    {},
    JSON.stringify({ ...validData, pad: "x".repeat(2 * MiB) }),
    [413],
    "payload_too_large",
  ),
  binary("chunked data over 1 MiB", {}, chunkedPadding(2 * MiB), [413], "payload_too_large"),
  {
    name: "events: a 3 MiB chunked batch (read to its end and discarded)",
    method: "POST",
    path: "/v1/events",
    headers: {
      authorization: `Bearer ${DEV_INGEST_KEY}`,
      "content-type": "application/cloudevents-batch+json",
    },
    body: chunkedPadding(3 * MiB),
    status: [413],
    code: "payload_too_large",
  },
  {
    name: "admit: a chunked body over 16 KiB",
    method: "POST",
    path: "/v1/sessions/admit",
    headers: { authorization: `Bearer ${DEV_INGEST_KEY}`, "content-type": "application/json" },
    body: chunkedPadding(64 * 1024),
    status: [413],
    code: "payload_too_large",
  },
];
