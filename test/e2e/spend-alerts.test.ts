/**
 * Spend caps and alerts on the whole local stack: a pay-as-you-go user sets a cap and registers a
 * local receiver (a Node http server); admission refuses the session that would pass the cap;
 * the sessions that worked cross the thresholds, and each alert reaches the receiver signed, the
 * first delivery failing once and being retried by the queue.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { DEV_INGEST_KEY } from "@aigate/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asUser, eventually, postEvents, sessionEvents, stackUrl, stripeUrl } from "./helpers";

interface Received {
  signature: string;
  body: string;
  status: number;
}

const received: Received[] = [];
let server: Server;
let receiverUrl = "";

beforeAll(async () => {
  // fails the first delivery, accepts every later one
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const status = received.length === 0 ? 500 : 200;
      received.push({
        signature: String(req.headers["aigate-signature"] ?? ""),
        body: Buffer.concat(chunks).toString("utf8"),
        status,
      });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  receiverUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/aigate-alerts`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

/** A receiver's check of `AIGate-Signature: t=<unix>,v1=<hex>` (HMAC-SHA256 of "t.body"). */
function verify(header: string, body: string, secret: string): boolean {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!m?.[1] || !m[2]) return false;
  if (Math.abs(Date.now() / 1000 - Number(m[1])) > 300) return false;
  const expected = createHmac("sha256", secret).update(`${m[1]}.${body}`).digest();
  return timingSafeEqual(expected, Buffer.from(m[2], "hex"));
}

async function admit(userId: string, sessionId: string) {
  const res = await fetch(stackUrl("/v1/sessions/admit"), {
    method: "POST",
    headers: { authorization: `Bearer ${DEV_INGEST_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ session_id: sessionId, user_id: userId, project_id: "proj-1" }),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as { allowed: boolean; reason: string | null; used: number };
}

interface Limits {
  alerts: { threshold: number; delivery: string; usage_cents: number }[];
  usage_cents: number;
  cap_sessions: number | null;
}

describe("spend caps and alerts", () => {
  it("refuses the session past the cap and delivers signed alerts, retrying a failed delivery", async () => {
    const userId = `caps-${crypto.randomUUID()}`;
    const checkout = await asUser(userId, "/api/billing/checkout", {
      method: "POST",
      body: JSON.stringify({ plan: "payg" }),
    });
    const { id } = (await checkout.json()) as { id: string };
    expect(
      (await fetch(stripeUrl(`/_emulator/checkout/sessions/${id}/complete`), { method: "POST" })).status,
    ).toBe(200);
    await eventually(
      async () => (await (await asUser(userId, "/api/billing/usage")).json()) as { plan: string },
      (u) => u.plan === "payg",
    );

    // a cap of 30 c: three payg sessions; alerts at half the cap and at the cap
    const limits = await asUser(userId, "/api/billing/limits", {
      method: "PUT",
      body: JSON.stringify({ monthly_cap_cents: 30, alert_thresholds: [50, 100] }),
    });
    expect(limits.status).toBe(200);
    expect(((await limits.json()) as Limits).cap_sessions).toBe(3);
    const reg = await asUser(userId, "/api/billing/alert-endpoint", {
      method: "PUT",
      body: JSON.stringify({ url: receiverUrl }),
    });
    expect(reg.status).toBe(200);
    const { secret } = (await reg.json()) as { secret: string };

    // admission counts the admitted sessions not judged yet: the 4th would pass the cap
    const sessions = [1, 2, 3].map((i) => `${userId}-s${i}`);
    for (const s of sessions) expect(await admit(userId, s)).toMatchObject({ allowed: true, reason: null });
    expect(await admit(userId, `${userId}-s4`)).toMatchObject({
      allowed: false,
      reason: "spend_cap_reached",
      used: 3,
    });

    const start = Date.now() + 1000;
    for (const sessionId of sessions) {
      expect((await postEvents(sessionEvents({ sessionId, userId, start }))).status).toBe(202);
    }
    const done = await eventually(
      async () => (await (await asUser(userId, "/api/billing/limits")).json()) as Limits,
      (l) => l.alerts.length === 2 && l.alerts.every((a) => a.delivery === "delivered"),
      110_000,
      1000,
    );
    expect(done.usage_cents).toBe(30);
    expect(done.alerts.map((a) => a.threshold)).toEqual([50, 100]);

    // every request was signed with the secret; the first one failed and was delivered again
    expect(received.every((r) => verify(r.signature, r.body, secret))).toBe(true);
    expect(received.some((r) => verify(r.signature, r.body, "aigwhsec_wrong"))).toBe(false);
    const ids = received.map((r) => (JSON.parse(r.body) as { id: string }).id);
    const [first] = received;
    expect(first?.status).toBe(500);
    const firstId = ids[0];
    expect(ids.filter((i) => i === firstId)).toHaveLength(2);
    expect(new Set(ids).size).toBe(2);
    const bodies = received.map((r) => JSON.parse(r.body) as { type: string; data: Record<string, unknown> });
    expect(bodies.every((b) => b.type === "spend.threshold_crossed" && b.data.user_id === userId)).toBe(true);
    const byThreshold = new Map(bodies.map((b) => [b.data.threshold, b.data]));
    expect([...byThreshold.keys()].sort()).toEqual([100, 50]);
    expect(byThreshold.get(100)).toMatchObject({ plan: "payg", cap_cents: 30, usage_cents: 30, sessions: 3 });
  });
});
