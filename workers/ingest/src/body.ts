/**
 * Reading request bodies at the edge: the content type decides what shape is expected, and the
 * size limit is enforced while streaming (a chunked request has no Content-Length), so an
 * oversized body is never buffered whole, and a refused body is left so that the client's
 * keep-alive connection stays usable.
 */
import {
  incompleteBody,
  invalidContentLength,
  invalidJson,
  payloadTooLarge,
  unsupportedMediaType,
} from "./errors";

/** What a request's media type says about its body: one event, an array, or either. */
export type BodyShape = "single" | "batch" | "either";

const EVENT_MEDIA_TYPES: Record<string, BodyShape> = {
  "application/cloudevents+json": "single",
  "application/cloudevents-batch+json": "batch",
  "application/json": "either",
};

export interface MediaType {
  type: string;
  charset: string | null;
}

/** Parses `type/subtype; charset=...` (case-insensitive), or null when absent or malformed. */
export function parseMediaType(header: string | null): MediaType | null {
  if (!header) return null;
  const [essence, ...params] = header.split(";");
  const type = essence?.trim().toLowerCase() ?? "";
  if (!/^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/.test(type)) return null;
  let charset: string | null = null;
  for (const param of params) {
    const eq = param.indexOf("=");
    if (eq < 0) continue;
    if (param.slice(0, eq).trim().toLowerCase() === "charset") {
      charset = param
        .slice(eq + 1)
        .trim()
        .replace(/^"(.*)"$/, "$1")
        .toLowerCase();
    }
  }
  return { type, charset };
}

function requireUtf8(media: MediaType): void {
  if (media.charset !== null && media.charset !== "utf-8" && media.charset !== "utf8") {
    throw unsupportedMediaType(`charset ${media.charset} is not supported; send UTF-8`);
  }
}

/** The body shape for POST /v1/events, or 415 for any other media type. */
export function eventBodyShape(header: string | null): BodyShape {
  const media = parseMediaType(header);
  const shape = media ? EVENT_MEDIA_TYPES[media.type] : undefined;
  if (!media || !shape) {
    throw unsupportedMediaType(
      "use application/cloudevents+json, application/cloudevents-batch+json or application/json",
    );
  }
  requireUtf8(media);
  return shape;
}

/** 415 unless the request says application/json (UTF-8). */
export function requireJsonMediaType(header: string | null): void {
  const media = parseMediaType(header);
  if (media?.type !== "application/json") throw unsupportedMediaType("use application/json");
  requireUtf8(media);
}

/**
 * How many bytes of an oversized chunked body are still read, and thrown away, before the 413:
 * a body left half-read makes the runtime drop the connection, so a client's next request on
 * the same keep-alive connection would fail. Past this, the rest is cancelled (and the
 * connection may close).
 */
export const MAX_DISCARD_BYTES = 16 * 1024 * 1024;

/** The Content-Length a request declares, null when it has none; 400 unless it is a non-negative integer. */
export function declaredLength(header: string | null): number | null {
  if (header === null) return null;
  const value = header.trim();
  if (!/^\d+$/.test(value)) throw invalidContentLength();
  return Number(value);
}

/**
 * The body as UTF-8 text, at most `maxBytes` bytes, never buffered past the limit.
 * - 413 as soon as Content-Length announces more, without touching the body: the runtime
 *   discards a body the worker never read and keeps the connection usable.
 * - A chunked body (no Content-Length) is counted while streaming; past the limit the rest is
 *   read and thrown away (up to MAX_DISCARD_BYTES) before the 413, for the same reason.
 * - A body that stops before its end (the client went away, or sent fewer bytes than it
 *   announced) is 400 `incomplete_body`: a client problem, not ours.
 */
export async function readBodyText(request: Request, maxBytes: number): Promise<string> {
  const declared = declaredLength(request.headers.get("content-length"));
  if (declared !== null && declared > maxBytes) throw payloadTooLarge(maxBytes);
  const stream = request.body;
  if (!stream) return "";
  // With a Content-Length within the limit the runtime delivers exactly that many bytes: read
  // them in one call. Without one (chunked), count while streaming.
  if (declared !== null) {
    let buffer: ArrayBuffer;
    try {
      buffer = await request.arrayBuffer();
    } catch {
      throw incompleteBody();
    }
    return decodeUtf8(new Uint8Array(buffer));
  }
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read().catch(() => {
      throw incompleteBody();
    });
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await discard(reader, MAX_DISCARD_BYTES);
      throw payloadTooLarge(maxBytes);
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return decodeUtf8(bytes);
}

/** Reads and drops the rest of a stream, at most `budget` bytes; cancels what is left past it. */
async function discard(reader: ReadableStreamDefaultReader<Uint8Array>, budget: number): Promise<void> {
  let dropped = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      dropped += value.byteLength;
      if (dropped > budget) {
        await reader.cancel();
        return;
      }
    }
  } catch {
    // the client went away while we discarded: the answer stays 413
  }
}

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw invalidJson("request body is not valid UTF-8");
  }
}

/** JSON.parse with the contract's 400 `invalid_json` on failure. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const reason = err instanceof Error ? err.message : "malformed JSON";
    throw invalidJson(`request body is not valid JSON: ${reason}`);
  }
}
