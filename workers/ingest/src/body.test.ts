import { ApiError } from "@aigate/shared";
import { describe, expect, it } from "vitest";
import {
  eventBodyShape,
  MAX_DISCARD_BYTES,
  parseJson,
  parseMediaType,
  readBodyText,
  requireJsonMediaType,
} from "./body";

const MiB = 1024 * 1024;

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<ApiError> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error("expected an ApiError");
}

/**
 * A chunked body (no Content-Length) of `total` bytes in 64 KiB chunks, counting what was pulled
 * and whether it was cancelled; `failAfter` makes the stream fail (a lost connection) after that
 * many bytes.
 */
function chunkedRequest(total: number, opts: { failAfter?: number } = {}) {
  const chunk = new Uint8Array(64 * 1024).fill(0x20);
  const state = { pulled: 0, cancelled: false };
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (opts.failAfter !== undefined && state.pulled >= opts.failAfter) {
        return controller.error(new Error("Network connection lost."));
      }
      const left = total - state.pulled;
      if (left <= 0) return controller.close();
      const piece = left >= chunk.byteLength ? chunk : chunk.subarray(0, left);
      state.pulled += piece.byteLength;
      controller.enqueue(piece);
    },
    cancel() {
      state.cancelled = true;
    },
  });
  const request = new Request("http://ingest.test/v1/events", { method: "POST", body });
  return { request, state };
}

describe("parseMediaType", () => {
  it("reads the type and charset case-insensitively", () => {
    expect(parseMediaType('Application/CloudEvents+JSON; Charset="UTF-8"')).toEqual({
      type: "application/cloudevents+json",
      charset: "utf-8",
    });
    expect(parseMediaType("application/json")).toEqual({ type: "application/json", charset: null });
  });

  it("returns null for a missing or malformed header", () => {
    expect(parseMediaType(null)).toBeNull();
    expect(parseMediaType("")).toBeNull();
    expect(parseMediaType("json")).toBeNull();
  });
});

describe("eventBodyShape", () => {
  it("maps the three accepted media types to the shapes the contract gives them", () => {
    expect(eventBodyShape("application/cloudevents+json")).toBe("single");
    expect(eventBodyShape("application/cloudevents-batch+json; charset=utf-8")).toBe("batch");
    expect(eventBodyShape("application/json;charset=UTF-8")).toBe("either");
  });

  it.each([
    null,
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/cloudevents+xml",
    "multipart/form-data",
  ])("rejects %s with 415 unsupported_media_type", async (header) => {
    const err = await rejection(() => eventBodyShape(header));
    expect([err.status, err.code]).toEqual([415, "unsupported_media_type"]);
  });

  it("rejects a charset other than UTF-8 with 415", async () => {
    const err = await rejection(() => eventBodyShape("application/json; charset=iso-8859-1"));
    expect([err.status, err.code]).toEqual([415, "unsupported_media_type"]);
  });

  it("accepts only application/json for admission bodies", async () => {
    expect(() => requireJsonMediaType("application/json; charset=utf-8")).not.toThrow();
    const err = await rejection(() => requireJsonMediaType("application/cloudevents+json"));
    expect(err.status).toBe(415);
  });
});

describe("readBodyText", () => {
  it("reads a body of exactly the limit", async () => {
    const { request, state } = chunkedRequest(MiB);
    expect((await readBodyText(request, MiB)).length).toBe(MiB);
    expect(state.pulled).toBe(MiB);
  });

  it("answers 413 for a chunked body (no Content-Length) past the limit after reading the rest to its end, unbuffered", async () => {
    // A half-read body would leave the client's connection unusable for its next request; read
    // to its end (and thrown away) it keeps a keep-alive connection open.
    const { request, state } = chunkedRequest(3 * MiB);
    expect(request.headers.get("content-length")).toBeNull();
    const err = await rejection(readBodyText(request, MiB));
    expect([err.status, err.code]).toEqual([413, "payload_too_large"]);
    expect(state.pulled).toBe(3 * MiB);
    expect(state.cancelled).toBe(false);
  });

  it("stops discarding an oversized chunked body after MAX_DISCARD_BYTES more and cancels the rest", async () => {
    const { request, state } = chunkedRequest(MiB + MAX_DISCARD_BYTES + 4 * MiB);
    const err = await rejection(readBodyText(request, MiB));
    expect(err.status).toBe(413);
    expect(state.pulled).toBeGreaterThan(MiB + MAX_DISCARD_BYTES);
    // a few 64 KiB chunks of slack: the stream pulls one ahead of the reader
    expect(state.pulled).toBeLessThanOrEqual(MiB + MAX_DISCARD_BYTES + 4 * 64 * 1024);
    expect(state.cancelled).toBe(true);
  });

  it("rejects a body of the limit plus one byte", async () => {
    const { request } = chunkedRequest(MiB + 1);
    const err = await rejection(readBodyText(request, MiB));
    expect(err.status).toBe(413);
  });

  it("rejects from Content-Length alone, leaving the body unread and not cancelled", async () => {
    // The runtime discards a body the worker never touched and keeps the connection usable; a
    // cancelled one breaks the client's keep-alive connection (its next request fails).
    const { request, state } = chunkedRequest(2 * MiB);
    const withLength = new Request(request, { headers: { "content-length": String(2 * MiB) } });
    const err = await rejection(readBodyText(withLength, MiB));
    expect(err.status).toBe(413);
    expect(state.pulled).toBeLessThanOrEqual(64 * 1024);
    expect(state.cancelled).toBe(false);
    expect(withLength.bodyUsed).toBe(false);
  });

  it.each(["-1", "abc", "+12", "1 0", "12, 13", "1e3", ""])(
    "rejects Content-Length %j with 400 invalid_request",
    async (value) => {
      const request = new Request("http://ingest.test/v1/events", {
        method: "POST",
        headers: { "content-length": value },
        body: "[]",
      });
      expect(request.headers.get("content-length")).toBe(value);
      const err = await rejection(readBodyText(request, MiB));
      expect([err.status, err.code]).toEqual([400, "invalid_request"]);
      expect(err.message).toContain("Content-Length");
    },
  );

  it("accepts a Content-Length with surrounding spaces", async () => {
    const request = new Request("http://ingest.test/v1/events", {
      method: "POST",
      headers: { "content-length": " 2 " },
      body: "[]",
    });
    expect(await readBodyText(request, MiB)).toBe("[]");
  });

  it("answers 400 incomplete_body when the connection is lost mid-body (chunked)", async () => {
    const { request } = chunkedRequest(MiB, { failAfter: 128 * 1024 });
    const err = await rejection(readBodyText(request, MiB));
    expect([err.status, err.code]).toEqual([400, "incomplete_body"]);
  });

  it("answers 400 incomplete_body when the connection is lost before Content-Length bytes arrived", async () => {
    const { request } = chunkedRequest(MiB, { failAfter: 128 * 1024 });
    const withLength = new Request(request, { headers: { "content-length": String(MiB) } });
    const err = await rejection(readBodyText(withLength, MiB));
    expect([err.status, err.code]).toEqual([400, "incomplete_body"]);
  });

  it("rejects bytes that are not UTF-8 with 400 invalid_json", async () => {
    const request = new Request("http://ingest.test/", {
      method: "POST",
      body: new Uint8Array([0x7b, 0xff, 0x7d]),
    });
    const err = await rejection(readBodyText(request, MiB));
    expect([err.status, err.code]).toEqual([400, "invalid_json"]);
  });
});

describe("parseJson", () => {
  it.each(["", "{", "{'a':1}", "[1,]", "nul"])("rejects %j with 400 invalid_json", async (text) => {
    const err = await rejection(() => parseJson(text));
    expect([err.status, err.code]).toEqual([400, "invalid_json"]);
  });

  it("parses valid JSON", () => {
    expect(parseJson(' [ {"a": 1} ] ')).toEqual([{ a: 1 }]);
  });
});
