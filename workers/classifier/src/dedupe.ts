/**
 * Dedupe on (`source`, `id`) while a session is open: the first payload of an event id is the one
 * merged; a later copy with another payload is a conflicting copy, counted and never merged.
 *
 * The session row keeps a digest of the event ids merged so far (`sessions.event_digest`), so no
 * row per event is stored: one 16-character entry per distinct event id, made of the first 11
 * base64 characters (66 bits) of SHA-256 over (`source`, `id`) and the first 5 (30 bits) of
 * SHA-256 over the event's canonical payload. Entries are only ever appended while the session is
 * open (the upsert refuses a stored digest that is not a prefix of the one it writes), and the
 * digest is cleared with the verdict, after which every event is late anyway.
 *
 * Which copy is first: the earliest received (`received_at`, stamped by ingest per request); of
 * copies received in the same millisecond, the one with the smallest payload hash. Across queue
 * batches, the copy merged first wins (a copy can reach the classifier after a later one only when
 * queue retries reorder them).
 */
import type { TelemetryEvent } from "@aigate/shared";

export const ID_HASH_CHARS = 11;
export const PAYLOAD_HASH_CHARS = 5;
export const DIGEST_ENTRY_CHARS = ID_HASH_CHARS + PAYLOAD_HASH_CHARS;
/**
 * Entries kept per session (128 KiB of text). Event ids beyond them are merged without being
 * recorded, so their copies merge as before (a conflicting copy is not caught): a bound on the row
 * for sessions that run for days, far above what heartbeats every few seconds for hours produce.
 */
export const MAX_DIGEST_ENTRIES = 8192;

/** What identifies an event (hash of source and id) and its content (hash of its payload). */
export interface EventKey {
  idHash: string;
  payloadHash: string;
}

/** The event's content, everything but its identity: type, time, owner and data fields. */
export function canonicalPayload(e: TelemetryEvent): string {
  return JSON.stringify([
    e.type,
    e.time,
    e.user_id,
    e.project_id,
    e.connect_latency_ms ?? null,
    e.audio_ms ?? null,
    e.status ?? null,
    e.code ?? null,
    e.reason ?? null,
    e.detail ?? null,
  ]);
}

const encoder = new TextEncoder();

async function base64Sha256(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
  return btoa(String.fromCharCode(...digest));
}

export async function eventKey(e: TelemetryEvent): Promise<EventKey> {
  const [id, payload] = await Promise.all([
    base64Sha256(JSON.stringify([e.source, e.id])),
    base64Sha256(canonicalPayload(e)),
  ]);
  return { idHash: id.slice(0, ID_HASH_CHARS), payloadHash: payload.slice(0, PAYLOAD_HASH_CHARS) };
}

/** The payload hash recorded for each event id hash. */
export function parseDigest(digest: string | null): Map<string, string> {
  const known = new Map<string, string>();
  if (digest === null) return known;
  for (let i = 0; i + DIGEST_ENTRY_CHARS <= digest.length; i += DIGEST_ENTRY_CHARS) {
    const id = digest.slice(i, i + ID_HASH_CHARS);
    if (!known.has(id)) known.set(id, digest.slice(i + ID_HASH_CHARS, i + DIGEST_ENTRY_CHARS));
  }
  return known;
}

export interface Keyed {
  receivedAt: number;
  key: EventKey;
}

export interface SessionDedupe<T> {
  /** First copies and copies identical to them (merging those again changes nothing). */
  merge: T[];
  /** Copies whose payload differs from the first copy of their id: counted, not merged. */
  conflicting: T[];
  /** The stored digest with the entries of this batch's new event ids appended. */
  digest: string;
}

/** The earlier copy: earliest received, then smallest payload hash. */
function isBefore(a: Keyed, b: Keyed): boolean {
  return (
    a.receivedAt < b.receivedAt || (a.receivedAt === b.receivedAt && a.key.payloadHash < b.key.payloadHash)
  );
}

/**
 * Splits one session's events of a batch against its stored digest. Pure; the result depends on
 * the events and their receipt times, not on their order.
 */
export function dedupeSession<T extends Keyed>(
  events: readonly T[],
  stored: string | null,
): SessionDedupe<T> {
  const known = parseDigest(stored);
  const firsts = new Map<string, Keyed>();
  for (const e of events) {
    if (known.has(e.key.idHash)) continue;
    const seen = firsts.get(e.key.idHash);
    if (seen === undefined || isBefore(e, seen)) firsts.set(e.key.idHash, e);
  }
  // Appended in a fixed order, so two runs of the same batch write the same digest.
  const entries = [...firsts.values()].map((e) => e.key.idHash + e.key.payloadHash).sort();
  const room = Math.max(0, MAX_DIGEST_ENTRIES - known.size);
  for (const e of firsts.values()) known.set(e.key.idHash, e.key.payloadHash);
  const merge: T[] = [];
  const conflicting: T[] = [];
  for (const e of events) {
    if (known.get(e.key.idHash) === e.key.payloadHash) merge.push(e);
    else conflicting.push(e);
  }
  return { merge, conflicting, digest: (stored ?? "") + entries.slice(0, room).join("") };
}
