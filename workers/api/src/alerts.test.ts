/**
 * Spend alert delivery as a unit on the local runtime: the cron hands due alerts to the queue
 * once per lease, the consumer POSTs them signed (checked here with an independent HMAC), a
 * failure is retried with backoff, the last attempt parks the message as a dead letter, and a
 * replay delivers it.
 */

import { createExecutionContext, createMessageBatch, env, getQueueResult } from "cloudflare:test";
import { createHmac, timingSafeEqual } from "node:crypto";
import { createLogger, type SpendAlertMessage, shardsOf } from "@aigate/shared";
import { describe, expect, it } from "vitest";
import {
  ALERT_LEASE_MS,
  alertRetryDelaySeconds,
  deliverAlerts,
  enqueueDueAlerts,
  MAX_ALERT_ATTEMPTS,
} from "./alerts";
import { replayDeadLetters } from "./deadLetters";
import { deadLetterRows, recordingProducers } from "./test/admin";

const log = createLogger("api-test");
const PERIOD = Date.UTC(2026, 10, 3);
const NOW = Date.UTC(2026, 10, 20, 12);
const SECRET = "aigwhsec_0123456789abcdef";

let seq = 0;
const newUser = () => `alert_user_${++seq}_${Math.random().toString(36).slice(2, 8)}`;

async function seedAlert(
  user: string,
  opts: { threshold?: number; url?: string | null; nextAt?: number } = {},
) {
  const url = opts.url === undefined ? "https://hooks.example.com/aigate" : opts.url;
  await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO spend_limits (user_id, monthly_cap_cents, alert_thresholds, alert_url, alert_secret, updated_at)
       VALUES (?1, 1000, '[50,80,100]', ?2, ?3, 0) ON CONFLICT (user_id) DO NOTHING`,
    ).bind(user, url, url === null ? null : SECRET),
    env.DB.prepare(
      `INSERT INTO spend_alerts (user_id, plan, period_start, threshold, cap_cents, usage_cents, sessions, crossed_at,
         delivery, next_attempt_at) VALUES (?1, 'payg', ?2, ?3, 1000, 500, 50, ?4, 'pending', ?5)`,
    ).bind(user, PERIOD, opts.threshold ?? 50, NOW - 1000, opts.nextAt ?? NOW - 1000),
  ]);
}

const alertMessage = (user: string, threshold = 50): SpendAlertMessage => ({
  v: 1,
  kind: "spend_alert",
  user_id: user,
  plan: "payg",
  period_start: PERIOD,
  threshold,
});

async function alertRow(user: string, threshold = 50) {
  return env.DB.prepare(
    `SELECT delivery, attempts, next_attempt_at, delivered_at, error FROM spend_alerts
     WHERE user_id = ?1 AND threshold = ?2`,
  )
    .bind(user, threshold)
    .first();
}

/** Verifies `t=<unix>,v1=<hex>` as a receiver would, with node's HMAC (not the code under test). */
function verify(header: string | null, body: string, secret: string, nowSeconds: number): boolean {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header ?? "");
  if (!m?.[1] || !m[2]) return false;
  if (Math.abs(nowSeconds - Number(m[1])) > 300) return false;
  const expected = createHmac("sha256", secret).update(`${m[1]}.${body}`).digest();
  return timingSafeEqual(expected, Buffer.from(m[2], "hex"));
}

interface Received {
  url: string;
  headers: Headers;
  body: string;
}

function endpoint(statuses: number[]) {
  const received: Received[] = [];
  const fetchFn = (async (input: RequestInfo | URL, init?: RequestInit) => {
    received.push({ url: String(input), headers: new Headers(init?.headers), body: String(init?.body) });
    return new Response("ok", { status: statuses.shift() ?? 200 });
  }) as typeof fetch;
  return { received, fetchFn };
}

async function deliver(
  messages: { id: string; body: unknown; attempts?: number }[],
  fetchFn: typeof fetch,
  now = NOW,
) {
  const batch = createMessageBatch(
    "aigate-alerts",
    messages.map((m) => ({ id: m.id, timestamp: new Date(now), attempts: m.attempts ?? 1, body: m.body })),
  );
  const ctx = createExecutionContext();
  await deliverAlerts(batch, { shards: shardsOf(env), fetch: fetchFn, now: () => now, log });
  return getQueueResult(batch, ctx);
}

describe("enqueueDueAlerts (cron)", () => {
  it("hands each due alert to the queue once per lease, and leaves alerts not due alone", async () => {
    const a = newUser();
    const b = newUser();
    await seedAlert(a, { threshold: 50 });
    await seedAlert(a, { threshold: 80 });
    await seedAlert(b, { threshold: 50, nextAt: NOW + 60_000 });
    const { producers, sent } = recordingProducers();
    const queue = producers["aigate-alerts"];
    expect(await enqueueDueAlerts(env.DB, queue, NOW, log)).toBe(2);
    const bodies = sent.flatMap((s) => s.messages.map((m) => m.body as SpendAlertMessage));
    expect(
      bodies
        .filter((m) => m.user_id === a)
        .map((m) => m.threshold)
        .sort(),
    ).toEqual([50, 80]);
    expect(bodies.some((m) => m.user_id === b)).toBe(false);
    expect(await alertRow(a)).toMatchObject({ delivery: "pending", next_attempt_at: NOW + ALERT_LEASE_MS });
    // the next minute sends nothing again while the lease holds
    expect(await enqueueDueAlerts(env.DB, queue, NOW + 60_000, log)).toBe(1); // b is due now
    expect(await enqueueDueAlerts(env.DB, queue, NOW + 120_000, log)).toBe(0);
  });

  it("gives the lease back when the queue refuses the batch", async () => {
    const a = newUser();
    await seedAlert(a);
    const { producers } = recordingProducers("aigate-alerts");
    await expect(enqueueDueAlerts(env.DB, producers["aigate-alerts"], NOW, log)).rejects.toThrow(
      /unavailable/,
    );
    expect(await alertRow(a)).toMatchObject({ delivery: "pending", next_attempt_at: NOW });
  });
});

describe("deliverAlerts (queue consumer)", () => {
  it("POSTs the alert signed with the endpoint's secret and marks it delivered", async () => {
    const user = newUser();
    await seedAlert(user);
    const { received, fetchFn } = endpoint([200]);
    const result = await deliver([{ id: "m1", body: alertMessage(user) }], fetchFn);
    expect(result.explicitAcks).toEqual(["m1"]);
    expect(received).toHaveLength(1);
    const [req] = received;
    expect(req?.url).toBe("https://hooks.example.com/aigate");
    expect(req?.headers.get("content-type")).toBe("application/json");
    expect(verify(req?.headers.get("aigate-signature") ?? null, req?.body ?? "", SECRET, NOW / 1000)).toBe(
      true,
    );
    expect(verify(req?.headers.get("aigate-signature") ?? null, `${req?.body} `, SECRET, NOW / 1000)).toBe(
      false,
    );
    expect(
      verify(req?.headers.get("aigate-signature") ?? null, req?.body ?? "", "aigwhsec_other", NOW / 1000),
    ).toBe(false);
    expect(JSON.parse(req?.body ?? "")).toEqual({
      id: `spa_payg_${PERIOD}_50`,
      type: "spend.threshold_crossed",
      created: Math.floor((NOW - 1000) / 1000),
      data: {
        user_id: user,
        plan: "payg",
        period_start: new Date(PERIOD).toISOString(),
        threshold: 50,
        cap_cents: 1000,
        usage_cents: 500,
        sessions: 50,
        currency: "usd",
        crossed_at: new Date(NOW - 1000).toISOString(),
      },
    });
    expect(await alertRow(user)).toEqual({
      delivery: "delivered",
      attempts: 1,
      next_attempt_at: null,
      delivered_at: NOW,
      error: null,
    });
    // a duplicate message delivers nothing again
    const again = await deliver([{ id: "m2", body: alertMessage(user) }], fetchFn);
    expect(again.explicitAcks).toEqual(["m2"]);
    expect(received).toHaveLength(1);
  });

  it("retries a failed delivery with backoff, then delivers", async () => {
    const user = newUser();
    await seedAlert(user);
    const { received, fetchFn } = endpoint([503, 200]);
    const first = await deliver([{ id: "m1", body: alertMessage(user) }], fetchFn);
    expect(first.retryMessages).toEqual([{ msgId: "m1" }]);
    // the queue redelivers after the backoff; the cron leaves it alone until then plus a lease
    expect(await alertRow(user)).toMatchObject({
      delivery: "pending",
      attempts: 1,
      error: "the endpoint answered 503",
      next_attempt_at: NOW + alertRetryDelaySeconds(1) * 1000 + ALERT_LEASE_MS,
    });
    const second = await deliver(
      [{ id: "m1", body: alertMessage(user), attempts: 2 }],
      fetchFn,
      NOW + 30_000,
    );
    expect(second.explicitAcks).toEqual(["m1"]);
    expect(received).toHaveLength(2);
    expect(await alertRow(user)).toMatchObject({ delivery: "delivered", attempts: 2, error: null });
    expect([1, 2, 3, 8].map(alertRetryDelaySeconds)).toEqual([30, 60, 120, 3600]);
  });

  it("parks the last failed attempt as a dead letter, and a replay delivers it", async () => {
    const user = newUser();
    await seedAlert(user);
    const { fetchFn } = endpoint([500]);
    const id = `last-${user}`;
    const r = await deliver([{ id, body: alertMessage(user), attempts: MAX_ALERT_ATTEMPTS }], fetchFn);
    expect(r.explicitAcks).toEqual([id]);
    expect(await alertRow(user)).toMatchObject({ delivery: "failed", error: "the endpoint answered 500" });
    const letter = (await deadLetterRows(env.DB)).find((l) => l.id === `aigate-alerts:${id}`);
    expect(letter).toMatchObject({
      queue: "aigate-alerts",
      error: `spend alert not delivered after ${MAX_ALERT_ATTEMPTS} attempts: the endpoint answered 500`,
    });

    const { producers, sent } = recordingProducers();
    const replay = await replayDeadLetters(
      env.DB,
      producers,
      { kind: "ids", ids: [`aigate-alerts:${id}`], force: false },
      NOW,
      log,
    );
    expect(replay.replayed).toBe(1);
    expect(sent).toEqual([
      { queue: "aigate-alerts", messages: [{ body: alertMessage(user), contentType: "json" }] },
    ]);
    const ok = endpoint([200]);
    await deliver([{ id: "replayed", body: sent[0]?.messages[0]?.body }], ok.fetchFn, NOW + 60_000);
    expect(await alertRow(user)).toMatchObject({ delivery: "delivered", delivered_at: NOW + 60_000 });
  });

  it("treats an unreachable endpoint as a failed attempt", async () => {
    const user = newUser();
    await seedAlert(user);
    const failing = (async () => {
      throw new TypeError("connection refused");
    }) as typeof fetch;
    const r = await deliver([{ id: "m1", body: alertMessage(user) }], failing);
    expect(r.retryMessages).toHaveLength(1);
    expect(await alertRow(user)).toMatchObject({
      delivery: "pending",
      error: "the endpoint could not be reached: connection refused",
    });
  });

  it("marks an alert whose endpoint was removed as not deliverable, and parks a malformed message", async () => {
    const user = newUser();
    await seedAlert(user, { url: null });
    const { received, fetchFn } = endpoint([]);
    const r = await deliver(
      [
        { id: "m1", body: alertMessage(user) },
        { id: "bad", body: { v: 1, kind: "spend_alert", user_id: user } },
      ],
      fetchFn,
    );
    expect(r.explicitAcks.sort()).toEqual(["bad", "m1"]);
    expect(received).toEqual([]);
    expect(await alertRow(user)).toMatchObject({ delivery: "none", next_attempt_at: null });
    const letter = (await deadLetterRows(env.DB)).find((l) => l.id === "aigate-alerts:bad");
    expect(letter?.error).toMatch(/^invalid spend alert message: /);
  });
});
