/**
 * The spend cap as a new pay-as-you-go customer lives it, end to end on the whole stack and the
 * Stripe emulator: a $1.00 cap with alerts at 50, 80 and 100 %, sessions admitted one by one as a
 * gateway asks until admission refuses with `spend_cap_reached`, the three alerts received signed
 * at a local endpoint, and, after the period closes, the invoice's session CSV adding up to the
 * invoice's metered amount (docs/billing.md "Spend caps and alerts", "Checking an invoice session
 * by session").
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { DEV_INGEST_KEY } from "@aigate/test-support";
import { parse } from "csv-parse/sync";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { eventually, postEvents, sessionEvents } from "../e2e/helpers";
import {
  advance,
  asUser,
  finalizeWithoutGrace,
  invoices,
  now,
  stripe,
  subscribe,
  usage,
  waitPosted,
} from "./harness";

interface Received {
  signature: string;
  body: string;
}

const received: Received[] = [];
let server: Server;
let receiverUrl = "";

beforeAll(async () => {
  await finalizeWithoutGrace();
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received.push({
        signature: String(req.headers["aigate-signature"] ?? ""),
        body: Buffer.concat(chunks).toString("utf8"),
      });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  receiverUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/alerts`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

/**
 * The receiver's check of `AIGate-Signature: t=<unix>,v1=<hex>` (HMAC-SHA256 of "t.body"), with
 * `t` within 5 minutes of its clock (here the shared clock the stack runs on).
 */
function verify(header: string, body: string, secret: string, clockMs: number): boolean {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!m?.[1] || !m[2]) return false;
  if (Math.abs(clockMs / 1000 - Number(m[1])) > 300) return false;
  const expected = createHmac("sha256", secret).update(`${m[1]}.${body}`).digest();
  return timingSafeEqual(expected, Buffer.from(m[2], "hex"));
}

async function admit(userId: string, sessionId: string) {
  const res = await fetch(`${inject("stackUrl")}/v1/sessions/admit`, {
    method: "POST",
    headers: { authorization: `Bearer ${DEV_INGEST_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ session_id: sessionId, user_id: userId, project_id: "proj-1" }),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as { allowed: boolean; reason: string | null };
}

interface Limits {
  monthly_cap_cents: number | null;
  cap_sessions: number | null;
  usage_cents: number;
  alerts: { threshold: number; delivery: string }[];
}

describe("a spend cap, as a pay-as-you-go customer lives it", () => {
  it("caps at $1.00, alerts at 50/80/100 % signed, and the closed period's session CSV adds up to its invoice", async () => {
    const user = `cap-journey-${Date.now()}`;
    const { customer } = await subscribe(user, "payg");

    const set = await asUser(user, "/api/billing/limits", {
      method: "PUT",
      body: JSON.stringify({ monthly_cap_cents: 100, alert_thresholds: [50, 80, 100] }),
    });
    expect(set.status).toBe(200);
    expect((await set.json()) as Limits).toMatchObject({ monthly_cap_cents: 100, cap_sessions: 10 });
    const reg = await asUser(user, "/api/billing/alert-endpoint", {
      method: "PUT",
      body: JSON.stringify({ url: receiverUrl }),
    });
    expect(reg.status).toBe(200);
    const { secret } = (await reg.json()) as { secret: string };

    // a gateway asks before each session and runs it when allowed, until admission refuses
    const admitted: string[] = [];
    let refusal: string | null = null;
    for (let i = 1; i <= 20 && refusal === null; i++) {
      const sessionId = `${user}-s${i}`;
      const decision = await admit(user, sessionId);
      if (!decision.allowed) {
        refusal = decision.reason;
        break;
      }
      admitted.push(sessionId);
      const events = sessionEvents({ sessionId, userId: user, start: await now() });
      expect((await postEvents(events)).status).toBe(202);
    }
    expect(refusal).toBe("spend_cap_reached");
    expect(admitted).toHaveLength(10);

    // the three alerts, each once, signed with the endpoint's secret
    const limits = await eventually(
      async () => (await (await asUser(user, "/api/billing/limits")).json()) as Limits,
      (l) => l.alerts.length === 3 && l.alerts.every((a) => a.delivery === "delivered"),
      120_000,
      1000,
    );
    expect(limits.usage_cents).toBe(100);
    const clock = await now();
    const mine = received
      .map((r) => ({ ...r, json: JSON.parse(r.body) as { id: string; data: Record<string, unknown> } }))
      .filter((r) => r.json.data.user_id === user);
    expect(mine.map((r) => r.json.data.threshold).sort((a, b) => Number(a) - Number(b))).toEqual([
      50, 80, 100,
    ]);
    expect(new Set(mine.map((r) => r.json.id)).size).toBe(3);
    for (const r of mine) expect(verify(r.signature, r.body, secret, clock)).toBe(true);
    expect(mine.some((r) => verify(r.signature, r.body, "aigwhsec_wrong", clock))).toBe(false);

    // the period closes: its invoice bills the ten sessions, and their CSV adds up to it
    await waitPosted(user, "payg", 10);
    const u = await usage(user);
    await advance(Math.ceil((Date.parse(u.period_end) - (await now())) / 1000) + 1);
    const [cycle] = await eventually(
      async () => (await invoices(customer)).filter((i) => i.billing_reason === "subscription_cycle"),
      (list) => list.length === 1 && list[0]?.status !== "draft",
    );
    let metered = 0;
    for await (const line of stripe().invoices.listLineItems(cycle?.id ?? "", { limit: 100 })) {
      const price = line.pricing?.price_details?.price;
      if (!price) continue;
      const p = await stripe().prices.retrieve(typeof price === "string" ? price : price.id);
      if (p.recurring?.usage_type === "metered") metered += line.amount;
    }
    expect(metered).toBe(100);
    const csv = await eventually(
      async () => {
        const res = await asUser(user, `/api/billing/invoices/${cycle?.id}/sessions?format=csv`);
        return res.status === 200 ? (parse(await res.text()) as string[][]) : [];
      },
      (rows) => rows.length === 11,
      60_000,
    );
    const [header, ...rows] = csv;
    const priceAt = header?.indexOf("price_cents") ?? -1;
    expect(priceAt).toBeGreaterThan(-1);
    expect(rows.map((r) => r[0]).sort()).toEqual([...admitted].sort());
    expect(rows.reduce((n, r) => n + Number(r[priceAt]), 0)).toBe(metered);
  });
});
