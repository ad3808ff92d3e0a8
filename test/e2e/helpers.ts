/**
 * Small clients for the end-to-end suites: the stack's HTTP API as gateways, users, Stripe and
 * operators see it.
 */
import { shardBucket } from "@aigate/shared/shardKey";
import { DEV_INGEST_KEY, DEV_SECRETS, userToken as signUserToken } from "@aigate/test-support";
import { inject } from "vitest";

export function stackUrl(path = ""): string {
  return `${inject("stackUrl")}${path}`;
}

/** The stack's D1 shard holding a user's rows. */
export function shardOf(userId: string): number {
  return shardBucket(userId) % inject("stackShards");
}

/** Reads one D1 shard of the stack (SELECT only; default shard 0, the home database). */
export async function queryD1<T>(sql: string, shard = 0): Promise<T[]> {
  const res = await fetch(stackUrl("/__dev/query"), { method: "POST", body: JSON.stringify({ sql, shard }) });
  if (res.status !== 200) throw new Error(`query failed (${res.status}): ${await res.text()}`);
  return ((await res.json()) as { results: T[] }).results;
}

export function stripeUrl(path = ""): string {
  return `${inject("stripeUrl")}${path}`;
}

/** A user token the stack accepts (signed with the dev stack's secret, valid for an hour). */
export async function userToken(userId: string): Promise<string> {
  return signUserToken(userId, { secret: DEV_SECRETS.USER_TOKEN_SECRET });
}

export async function asUser(userId: string, path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${await userToken(userId)}`);
  if (init.body) headers.set("content-type", "application/json");
  return fetch(stackUrl(path), { ...init, headers });
}

export interface SessionScript {
  sessionId: string;
  userId: string;
  projectId?: string;
  source?: string;
  connectLatencyMs?: number | null;
  audioMs?: number;
  turnFailed?: boolean;
  upstreamError?: boolean;
  start?: number;
}

/** The CloudEvents a gateway sends for one session. */
export function sessionEvents(s: SessionScript) {
  const start = s.start ?? Date.now() - 60_000;
  const base = {
    specversion: "1.0",
    source: s.source ?? "gw-e2e",
    subject: s.sessionId,
  };
  const data = { user_id: s.userId, project_id: s.projectId ?? "proj-1" };
  const at = (ms: number) => new Date(start + ms).toISOString();
  const events: Array<Record<string, unknown>> = [
    { ...base, id: `${s.sessionId}-c`, type: "aigate.session.created", time: at(0), data },
  ];
  if (s.connectLatencyMs !== null) {
    events.push({
      ...base,
      id: `${s.sessionId}-k`,
      type: "aigate.session.connected",
      time: at(s.connectLatencyMs ?? 300),
      data: { ...data, connect_latency_ms: s.connectLatencyMs ?? 300 },
    });
  }
  if (s.turnFailed) {
    events.push({
      ...base,
      id: `${s.sessionId}-t`,
      type: "aigate.session.turn_failed",
      time: at(1000),
      data,
    });
  }
  if (s.upstreamError) {
    events.push({
      ...base,
      id: `${s.sessionId}-u`,
      type: "aigate.session.upstream_error",
      time: at(1500),
      data: { ...data, status: 500 },
    });
  }
  const audio = s.audioMs ?? 8000;
  events.push({
    ...base,
    id: `${s.sessionId}-h`,
    type: "aigate.session.heartbeat",
    time: at(2000),
    data: { ...data, audio_ms: Math.floor(audio / 2) },
  });
  events.push({
    ...base,
    id: `${s.sessionId}-e`,
    type: "aigate.session.ended",
    time: at(3000 + audio),
    data: { ...data, audio_ms: audio },
  });
  return events;
}

export async function postEvents(events: unknown[]): Promise<Response> {
  return fetch(stackUrl("/v1/events"), {
    method: "POST",
    headers: {
      authorization: `Bearer ${DEV_INGEST_KEY}`,
      "content-type": "application/cloudevents-batch+json",
    },
    body: JSON.stringify(events),
  });
}

/** Polls `probe` until it returns a value that `done` accepts, or fails after `timeoutMs`. */
export async function eventually<T>(
  probe: () => Promise<T>,
  done: (value: T) => boolean,
  timeoutMs = 30_000,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T = await probe();
  while (!done(last)) {
    if (Date.now() > deadline)
      throw new Error(`condition not reached in ${timeoutMs} ms; last value: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, intervalMs));
    last = await probe();
  }
  return last;
}
