import { env } from "cloudflare:test";
import { beforeEach, expect, it } from "vitest";
import {
  callMark,
  consume,
  createPaidCustomer,
  meterEventCalls,
  meterUsage,
  type PaidCustomer,
  setupCatalog,
  verdict,
} from "./test/support";

beforeEach(async () => {
  await setupCatalog();
});

const CUSTOMERS = 50;
const SESSIONS = 40;
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
  const sessions = customers.flatMap((c) => Array.from({ length: SESSIONS }, () => verdict(c.userId)));
  // at-least-once delivery: a tenth of the verdicts arrive twice, and the whole stream is shuffled
  const stream = shuffle([...sessions, ...sessions.filter((_, i) => i % 10 === 3)], 7);
  const mark = await callMark();

  let allowedCalls = 0;
  let acked = 0;
  for (let i = 0; i < stream.length; i += BATCH) {
    const batch = stream.slice(i, i + BATCH);
    allowedCalls += new Set(batch.map((v) => v.user_id)).size;
    const result = await consume(batch);
    expect(result.retried).toEqual([]);
    acked += result.acked.length;
  }
  expect(acked).toBe(stream.length);

  const calls = await meterEventCalls(mark);
  expect(calls).toBeGreaterThanOrEqual(CUSTOMERS);
  expect(calls).toBeLessThanOrEqual(allowedCalls);

  for (const c of customers) {
    const usage = await meterUsage(c.customerId, c.period);
    expect(usage.value).toBe(SESSIONS);
  }
  const totals = await env.DB.prepare(
    `SELECT count(*) AS periods, sum(billable_sessions) AS billable, sum(posted_total) AS posted
     FROM usage_periods WHERE stripe_customer_id IS NOT NULL`,
  ).first<{ periods: number; billable: number; posted: number }>();
  expect(totals).toEqual({
    periods: CUSTOMERS,
    billable: CUSTOMERS * SESSIONS,
    posted: CUSTOMERS * SESSIONS,
  });
  const recorded = await env.DB.prepare("SELECT count(*) AS n FROM session_usage").first<{ n: number }>();
  expect(recorded?.n).toBe(CUSTOMERS * SESSIONS);
}, 120_000);
