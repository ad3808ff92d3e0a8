/**
 * How the chaos suite talks to the stack: as gateways (events, admission, with the retries the
 * contract tells gateways to make), as users (billing API), as Stripe (signed webhooks, delivered
 * duplicated and reordered), as operators (admin API), and to D1 through the api test build's
 * read-only SQL endpoint.
 */
import { createHmac } from "node:crypto";
import { mapLimit } from "@aigate/shared/chunks";
import { EmulatorClient } from "@aigate/stripe-emulator/client";
import { DEV_ADMIN_KEY, DEV_INGEST_KEY, DEV_SECRETS } from "@aigate/test-support";
import { userToken } from "../e2e/helpers";
import type { ChaosStats } from "./protocol";
import type { Rng } from "./random";
import type { EventRequest, WireEvent } from "./workload";

export { mapLimit, userToken };

export type Row = Record<string, unknown>;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * A `count(*) AS n` answered by /__chaos/sql: one row per D1 shard, added up (null when no shard
 * answered).
 */
export function count(rows: Row[] | undefined, key = "n"): number | null {
  if (!rows || rows.length === 0) return null;
  return rows.reduce((total, row) => total + num(row, key), 0);
}

export function num(row: Row, key: string): number {
  const v = row[key];
  if (typeof v !== "number") throw new Error(`column ${key} is not a number: ${JSON.stringify(v)}`);
  return v;
}

export function numOrNull(row: Row, key: string): number | null {
  const v = row[key];
  if (v === null || v === undefined) return null;
  if (typeof v !== "number") throw new Error(`column ${key} is not a number: ${JSON.stringify(v)}`);
  return v;
}

export function str(row: Row, key: string): string {
  const v = row[key];
  if (typeof v !== "string") throw new Error(`column ${key} is not a string: ${JSON.stringify(v)}`);
  return v;
}

export function strOrNull(row: Row, key: string): string | null {
  const v = row[key];
  if (v === null || v === undefined) return null;
  if (typeof v !== "string") throw new Error(`column ${key} is not a string: ${JSON.stringify(v)}`);
  return v;
}

/** A `Stripe-Signature` header for `payload`, as Stripe computes it (v1 = HMAC-SHA256 of "t.payload"). */
export function stripeSignature(
  payload: string,
  secret: string = DEV_SECRETS.STRIPE_WEBHOOK_SECRET,
  t = Math.floor(Date.now() / 1000),
) {
  const v1 = createHmac("sha256", secret).update(`${t}.${payload}`).digest("hex");
  return `t=${t},v1=${v1}`;
}

async function bodyOf(res: Response): Promise<unknown> {
  const text = await res.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return text;
  }
}

export interface Delivery {
  status: number;
  attempts: number;
  /** Attempts answered 5xx or lost: the events may have been enqueued anyway. */
  failedAttempts: number;
}

export class StackClient {
  readonly emulator: EmulatorClient;

  constructor(
    readonly url: string,
    readonly stripeUrl: string,
    readonly controlUrl: string,
  ) {
    this.emulator = new EmulatorClient(stripeUrl);
  }

  /**
   * Read-only SQL against the stack's D1, all queries in one batch per shard (a consistent
   * snapshot of each): each query's rows of every shard (a count is one row per shard: `count`).
   */
  async sql(queries: Array<{ sql: string; params?: unknown[] }>): Promise<Row[][]> {
    const res = await fetch(`${this.url}/__chaos/sql`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ queries: queries.map((q) => ({ sql: q.sql, params: q.params ?? [] })) }),
    });
    const body = await bodyOf(res);
    const results = isRecord(body) ? body.results : null;
    if (res.status !== 200 || !Array.isArray(results)) {
      throw new Error(`chaos sql failed (${res.status}): ${JSON.stringify(body).slice(0, 500)}`);
    }
    return results.map((rows) => (Array.isArray(rows) ? rows.filter(isRecord) : []));
  }

  async one(sql: string, params: unknown[] = []): Promise<Row[]> {
    const [rows] = await this.sql([{ sql, params }]);
    return rows ?? [];
  }

  /** POST /v1/events as a gateway does: a 5xx or a lost response is retried with the same events. */
  async sendEvents(req: EventRequest | { events: unknown[]; contentType: string }): Promise<Delivery> {
    const body = JSON.stringify(req.events);
    let failedAttempts = 0;
    for (let attempt = 1; ; attempt++) {
      let status = 0;
      try {
        const res = await fetch(`${this.url}/v1/events`, {
          method: "POST",
          headers: { authorization: `Bearer ${DEV_INGEST_KEY}`, "content-type": req.contentType },
          body,
        });
        status = res.status;
        await res.arrayBuffer();
      } catch {
        status = 0;
      }
      if (status !== 0 && status < 500) return { status, attempts: attempt, failedAttempts };
      failedAttempts += 1;
      if (attempt >= 12) return { status, attempts: attempt, failedAttempts };
      await sleep(100 * attempt);
    }
  }

  /** POST /v1/sessions/admit, retried on 5xx (the contract says a retry is safe). */
  async admit(
    sessionId: string,
    userId: string,
    projectId: string,
  ): Promise<{ status: number; body: unknown }> {
    for (let attempt = 1; ; attempt++) {
      let status = 0;
      let body: unknown = null;
      try {
        const res = await fetch(`${this.url}/v1/sessions/admit`, {
          method: "POST",
          headers: { authorization: `Bearer ${DEV_INGEST_KEY}`, "content-type": "application/json" },
          body: JSON.stringify({ session_id: sessionId, user_id: userId, project_id: projectId }),
        });
        status = res.status;
        body = await bodyOf(res);
      } catch {
        status = 0;
      }
      if ((status !== 0 && status < 500) || attempt >= 12) return { status, body };
      await sleep(100 * attempt);
    }
  }

  async asUser(
    userId: string,
    path: string,
    init: RequestInit = {},
  ): Promise<{ status: number; body: unknown }> {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${await userToken(userId)}`);
    if (init.body) headers.set("content-type", "application/json");
    const res = await fetch(`${this.url}${path}`, { ...init, headers });
    return { status: res.status, body: await bodyOf(res) };
  }

  async admin(path: string, init: RequestInit = {}): Promise<{ status: number; body: unknown }> {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${DEV_ADMIN_KEY}`);
    if (init.body) headers.set("content-type", "application/json");
    const res = await fetch(`${this.url}${path}`, { ...init, headers });
    return { status: res.status, body: await bodyOf(res) };
  }

  async control(path: string, body?: unknown): Promise<unknown> {
    const res = await fetch(`${this.controlUrl}${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return bodyOf(res);
  }

  async stats(): Promise<ChaosStats> {
    const body = await this.control("/stats");
    if (!isRecord(body) || typeof body.crashes !== "number" || !isRecord(body.crashesByPoint)) {
      throw new Error(`control stats unreadable: ${JSON.stringify(body)}`);
    }
    const counts = (v: unknown): Record<string, number> =>
      isRecord(v) ? Object.fromEntries(Object.entries(v).map(([k, n]) => [k, Number(n)])) : {};
    return {
      enabled: body.enabled === true,
      crashes: body.crashes,
      crashesByWorker: counts(body.crashesByWorker),
      crashesByPoint: counts(body.crashesByPoint),
      hardCrashes: Number(body.hardCrashes),
      refused: Number(body.refused),
      poisonFixed: body.poisonFixed === true,
    };
  }

  /** Runs a worker's cron now (as the scheduler would); a crashed run is not an error here. */
  async tick(worker: "classifier" | "biller"): Promise<void> {
    await fetch(`${this.url}/__dev/scheduled?worker=${worker}&cron=${encodeURIComponent("* * * * *")}`, {
      method: "POST",
    })
      .then((r) => r.arrayBuffer())
      .catch(() => undefined);
  }
}

export interface WebhookPayload {
  eventId: string;
  type: string;
  payload: string;
}

export interface WebhookStats {
  deliveries: number;
  duplicates: number;
  failures: number;
  byStatus: Record<string, number>;
}

/**
 * Delivers Stripe events as Stripe would on a bad day: each 1 to 3 times, shuffled, several at
 * once, re-signed at delivery time; a non-200 answer is retried later (Stripe resends), until
 * every event has been answered 200 at least once.
 */
export async function deliverWebhooks(
  client: StackClient,
  rng: Rng,
  events: readonly WebhookPayload[],
  stats: WebhookStats,
): Promise<void> {
  const copies = events.flatMap((e) => Array.from({ length: rng.int(1, 3) }, () => e));
  stats.duplicates += copies.length - events.length;
  const done = new Set<string>();
  let queue = rng.shuffle(copies);
  for (let round = 0; queue.length > 0; round++) {
    if (round >= 15) {
      throw new Error(
        `webhooks still failing after ${round} rounds: ${queue.map((e) => e.eventId).join(", ")}`,
      );
    }
    const failed: WebhookPayload[] = [];
    await mapLimit(queue, 4, async (e) => {
      stats.deliveries += 1;
      let status = 0;
      let outcome = "";
      try {
        const res = await fetch(`${client.url}/api/webhooks/stripe`, {
          method: "POST",
          headers: { "content-type": "application/json", "stripe-signature": stripeSignature(e.payload) },
          body: e.payload,
        });
        status = res.status;
        const body = await bodyOf(res);
        outcome = isRecord(body) && typeof body.status === "string" ? body.status : "";
      } catch {
        status = 0;
      }
      const key = `${status}${outcome ? `:${outcome}` : ""}`;
      stats.byStatus[key] = (stats.byStatus[key] ?? 0) + 1;
      if (status === 200) done.add(e.eventId);
      else {
        stats.failures += 1;
        failed.push(e);
      }
    });
    queue = rng.shuffle(failed.filter((e) => !done.has(e.eventId)));
    if (queue.length > 0) await sleep(300 * (round + 1));
  }
}

/** Drains the emulator's undelivered events (webhooks are not pushed in the chaos stack). */
export async function drainWebhooks(client: StackClient): Promise<WebhookPayload[]> {
  const drained = await client.emulator.drainWebhooks();
  return drained.map((d) => ({ eventId: d.event_id, type: d.type, payload: d.payload }));
}

export function eventIds(events: readonly WireEvent[]): string[] {
  return events.map((e) => e.id);
}
