/**
 * Test helpers for the ingest worker (imported by *.test.ts only): the dev keys seeded, events, a queue
 * double that records (and can refuse) sends, and a snapshot of the tables a request could touch.
 */
import { env } from "cloudflare:test";
import type { EventType } from "@aigate/shared";
import { DEV_INGEST_KEY, seedKeys } from "@aigate/test-support";
import { expect } from "vitest";
import { z } from "zod";
import { createApp } from "../app";

/** Seeds the dev keys (scripts/dev-seed.sql) into the test database. */
export async function seedDevKeys(): Promise<void> {
  await seedKeys(env.DB);
}

let eventCounter = 0;

export interface EventOptions {
  type?: EventType;
  id?: string;
  source?: string;
  session?: string;
  user?: string;
  project?: string;
  time?: number;
  data?: Record<string, unknown>;
}

const DEFAULT_DATA: Record<EventType, Record<string, unknown>> = {
  "aigate.session.created": {},
  "aigate.session.connected": { connect_latency_ms: 420 },
  "aigate.session.turn_failed": { detail: "allocation timeout" },
  "aigate.session.upstream_error": { status: 502, code: "bad_gateway" },
  "aigate.session.heartbeat": { audio_ms: 3000 },
  "aigate.session.ended": { audio_ms: 61000, reason: "hangup" },
};

/** A valid CloudEvent (as JSON-ready object). */
export function cloudEvent(o: EventOptions = {}): Record<string, unknown> {
  const type = o.type ?? "aigate.session.heartbeat";
  eventCounter += 1;
  return {
    specversion: "1.0",
    id: o.id ?? `evt_${eventCounter}`,
    source: o.source ?? "gw-test-1",
    type,
    subject: o.session ?? "sess_1",
    time: new Date(o.time ?? Date.now()).toISOString(),
    data: {
      user_id: o.user ?? "user_1",
      project_id: o.project ?? "proj_1",
      ...DEFAULT_DATA[type],
      ...o.data,
    },
  };
}

export interface RecordingQueue {
  queue: Queue;
  /** Every sendBatch call that succeeded, with its messages. */
  batches: MessageSendRequest[][];
  /** Every sendBatch call attempted (including refused ones). */
  attempts: number;
}

/** A queue binding double: records sends, forwards them to the real queue, and refuses the
 * calls whose 1-based attempt number `refuse` returns true for. */
export function recordingQueue(refuse: (attempt: number) => boolean = () => false): RecordingQueue {
  const rec: RecordingQueue = {
    batches: [],
    attempts: 0,
    queue: {
      metrics: () => env.TELEMETRY.metrics(),
      send: () => Promise.reject(new Error("ingest must use sendBatch")),
      sendBatch: async (messages, options) => {
        rec.attempts += 1;
        if (refuse(rec.attempts)) throw new Error("Queue sendBatch failed: injected outage");
        const list = [...messages];
        const response = await env.TELEMETRY.sendBatch(list, options);
        rec.batches.push(list);
        return response;
      },
    },
  };
  return rec;
}

/** An app and env whose telemetry queue is recorded; `now` optionally fixed or movable. */
export function harness(
  opts: { refuse?: (attempt: number) => boolean; now?: () => number; vars?: Partial<Env> } = {},
) {
  const rec = recordingQueue(opts.refuse);
  const app = createApp(opts.now ? { now: opts.now } : {});
  const testEnv: Env = { ...env, ...opts.vars, TELEMETRY: rec.queue };
  const fetch = async (path: string, init: RequestInit = {}): Promise<Response> =>
    app.fetch(new Request(`http://ingest.test${path}`, init), testEnv);
  return { app, rec, env: testEnv, fetch };
}

export function postJson(
  body: unknown,
  opts: { key?: string | null; contentType?: string } = {},
): RequestInit {
  const headers: Record<string, string> = { "content-type": opts.contentType ?? "application/json" };
  const key = opts.key === undefined ? DEV_INGEST_KEY : opts.key;
  if (key !== null) headers.authorization = `Bearer ${key}`;
  return { method: "POST", headers, body: typeof body === "string" ? body : JSON.stringify(body) };
}

/** Everything a request could change in D1, to assert that a rejected request changed nothing. */
export async function dbSnapshot(): Promise<string> {
  const tables = ["sessions", "api_keys", "usage_periods", "dead_letters"];
  const dump: Record<string, unknown[]> = {};
  for (const table of tables) {
    dump[table] = (await env.DB.prepare(`SELECT * FROM ${table} ORDER BY 1`).all()).results;
  }
  return JSON.stringify(dump);
}

const ErrorEnvelope = z
  .object({
    error: z
      .object({
        code: z.string().min(1),
        message: z.string().min(1),
        details: z.array(z.unknown()).optional(),
      })
      .strict(),
  })
  .strict();

/** The error of a response, failing unless the body is exactly the contract's envelope. */
export async function errorBody(res: Response): Promise<z.infer<typeof ErrorEnvelope>["error"]> {
  expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  return ErrorEnvelope.parse(await res.json()).error;
}
