import { env } from "cloudflare:test";
import type { UsageMessage } from "@aigate/shared";
import { beforeEach, expect, it } from "vitest";
import {
  callMark,
  consume,
  createPaidCustomer,
  judge,
  meterEventCalls,
  meterUsage,
  type PaidCustomer,
  setupCatalog,
} from "./test/support";

beforeEach(async () => {
  await setupCatalog();
});

const CUSTOMERS = 50;
const SESSIONS = 40;
const ROUNDS = 8; // judge runs per customer
const BATCH = 100; // max_batch_size in wrangler.jsonc

function shuffle<T>(items: T[], seed: number): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

it("bills 50 customers x 40 sessions exactly, with at most one Stripe call per customer per batch", async () => {
  const customers: PaidCustomer[] = [];
  for (let i = 0; i < CUSTOMERS; i++)
    customers.push(await createPaidCustomer({ plan: i % 2 === 0 ? "payg" : "pro" }));
  const mark = await callMark();

  let allowedCalls = 0;
  let delivered = 0;
  for (let round = 0; round < ROUNDS; round++) {
    // every customer's sessions are judged in runs; each run sends one usage message
    const messages: UsageMessage[] = [];
    for (const c of customers) {
      const run = await judge(c.userId, SESSIONS / ROUNDS);
      if (run.message) messages.push(run.message);
    }
    // at-least-once delivery: a tenth arrive twice, and the stream is shuffled
    const stream = shuffle([...messages, ...messages.filter((_, i) => i % 10 === 3)], round + 7);
    for (let i = 0; i < stream.length; i += BATCH) {
      const batch = stream.slice(i, i + BATCH);
      allowedCalls += new Set(batch.flatMap((m) => m.series.map((s) => s.user_id))).size;
      const result = await consume(batch);
      expect(result.retried).toEqual([]);
      expect(result.acked).toHaveLength(batch.length);
      delivered += batch.length;
    }
  }
  expect(delivered).toBeGreaterThan(CUSTOMERS * ROUNDS);

  const calls = await meterEventCalls(mark);
  expect(calls).toBeGreaterThanOrEqual(CUSTOMERS);
  expect(calls).toBeLessThanOrEqual(allowedCalls);

  for (const c of customers) {
    const usage = await meterUsage(c.customerId, c.plan, c.period);
    expect(usage.value).toBe(SESSIONS);
  }
  const totals = await env.DB.prepare(
    `SELECT count(*) AS series, sum(billable_sessions) AS billable, sum(posted_total) AS posted
     FROM usage_periods WHERE stripe_customer_id IS NOT NULL`,
  ).first<{ series: number; billable: number; posted: number }>();
  expect(totals).toEqual({
    series: CUSTOMERS,
    billable: CUSTOMERS * SESSIONS,
    posted: CUSTOMERS * SESSIONS,
  });
  // the sessions' rows are the usage record: no per-session copy is written any more
  const copies = await env.DB.prepare("SELECT count(*) AS n FROM session_usage").first<{ n: number }>();
  expect(copies?.n).toBe(0);
}, 120_000);
