import { env } from "cloudflare:test";
import type { PaidPlanId } from "@aigate/shared";
import { beforeEach, describe, expect, it } from "vitest";
import { createBiller } from "./config";
import { type ReportEntry, reconcile } from "./reconcile";
import {
  callMark,
  consume,
  createPaidCustomer,
  DAY,
  judge,
  MIN,
  meterEventCalls,
  meteredPriceId,
  meterOf,
  meterUsage,
  type PaidCustomer,
  setupCatalog,
  stripe,
  stripeCalls,
  tick,
  usagePeriods,
} from "./test/support";

beforeEach(async () => {
  await setupCatalog();
});

async function runs() {
  const { results } = await env.DB.prepare(
    "SELECT periods_checked, mismatches, repaired, report, finished_at FROM reconciliation_runs",
  ).all<{
    periods_checked: number;
    mismatches: number;
    repaired: number;
    report: string;
    finished_at: number;
  }>();
  return results.map((r) => ({ ...r, report: JSON.parse(r.report) as ReportEntry[] }));
}

/** A series whose total our books say Stripe confirmed (posted long ago), without posting it. */
async function confirmedSeries(
  c: PaidCustomer,
  total: number,
  window: { start: number; end: number } = c.period,
  plan: PaidPlanId = c.plan,
) {
  await env.DB.prepare(
    `INSERT INTO usage_periods (user_id, plan, period_start, period_end, stripe_customer_id, stripe_subscription_id,
       stripe_price_id, meter_event_name, billable_sessions, seq_top, posted_total, posted_at, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9, 0, 0)`,
  )
    .bind(
      c.userId,
      plan,
      window.start,
      window.end,
      c.customerId,
      c.subscriptionId,
      meteredPriceId(plan),
      meterOf(plan),
      total,
    )
    .run();
}

describe("reconciliation", () => {
  it("repairs a wrong total posted to Stripe behind our back, on the series' own meter, and keeps a report", async () => {
    const c = await createPaidCustomer({ plan: "pro" });
    const ok = await createPaidCustomer({ plan: "payg" });
    await consume([(await judge(c.userId, 7)).message, (await judge(ok.userId, 1)).message]);
    const [posted] = await usagePeriods(c.userId);
    // someone posts a wrong absolute total, later than ours
    await stripe().billing.meterEvents.create({
      event_name: meterOf("pro"),
      payload: { stripe_customer_id: c.customerId, value: "3" },
      timestamp: (posted?.last_meter_ts ?? 0) + 1,
    });
    expect((await meterUsage(c.customerId, "pro", c.period)).value).toBe(3);

    const mark = await callMark();
    const result = await reconcile(createBiller(env), { now: tick() + 3000, settleMs: 0 });
    expect(result).toMatchObject({ checked: 2, mismatches: 1, repaired: 1 });
    expect((await meterUsage(c.customerId, "pro", c.period)).value).toBe(7);
    expect((await meterUsage(ok.customerId, "payg", ok.period)).value).toBe(1);
    // each series was read on its own plan's meter
    const summaries = await stripeCalls(mark, "GET", "/v1/billing/meters/");
    const { meters } = await setupCatalog();
    expect(new Set(summaries.map((s) => s.path))).toEqual(
      new Set([
        `/v1/billing/meters/${meters.pro.id}/event_summaries`,
        `/v1/billing/meters/${meters.payg.id}/event_summaries`,
      ]),
    );
    const [run] = await runs();
    expect(run).toMatchObject({ periods_checked: 2, mismatches: 1, repaired: 1 });
    expect(run?.report).toEqual([
      {
        user_id: c.userId,
        stripe_customer_id: c.customerId,
        plan: "pro",
        period_start: c.period.start,
        period_end: c.period.end,
        ours: 7,
        stripe: 3,
        action: "reposted",
      },
    ]);

    // the next run finds nothing to repair and makes no meter post
    const after = await callMark();
    const again = await reconcile(createBiller(env), { now: tick() + 6000, settleMs: 0 });
    expect(again).toMatchObject({ checked: 2, mismatches: 0, repaired: 0, report: [] });
    expect(await meterEventCalls(after)).toBe(0);
  });

  it("re-posts a total Stripe lost", async () => {
    const c = await createPaidCustomer();
    await confirmedSeries(c, 5);
    const result = await reconcile(createBiller(env), { now: tick(), settleMs: 0 });
    expect(result).toMatchObject({ checked: 1, mismatches: 1, repaired: 1 });
    expect(result.report[0]).toMatchObject({ ours: 5, stripe: 0, action: "reposted" });
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(5);
  });

  it("compares a payg and a pro series of one customer each with its own meter", async () => {
    // an immediate upgrade two days ago: the payg window ended there, the pro one started
    const change = Math.floor((Date.now() - 2 * DAY) / 1000) * 1000;
    const c = await createPaidCustomer({ plan: "payg", periodStart: change - 10 * DAY, periodEnd: change });
    await confirmedSeries(c, 4, { start: change - 10 * DAY, end: change }, "payg");
    await confirmedSeries(c, 2, { start: change, end: change + 30 * DAY }, "pro");
    // Stripe holds both totals, each on its meter
    for (const [plan, value, at] of [
      ["payg", "4", change - DAY],
      ["pro", "2", change + DAY],
    ] as const) {
      await stripe().billing.meterEvents.create({
        event_name: meterOf(plan),
        payload: { stripe_customer_id: c.customerId, value },
        timestamp: Math.floor(at / 1000),
      });
    }
    const mark = await callMark();
    const result = await reconcile(createBiller(env), { now: tick(), settleMs: 0 });
    expect(result).toMatchObject({ checked: 2, mismatches: 0, repaired: 0, report: [] });
    expect(await meterEventCalls(mark)).toBe(0);
  });

  it("reports, without re-posting, a difference in a series whose invoice Stripe has finalized", async () => {
    const now = Date.now();
    const end = Math.floor((now - 2 * DAY) / 1000) * 1000;
    const c = await createPaidCustomer({ periodStart: end - 30 * DAY, periodEnd: end });
    await confirmedSeries(c, 9);
    const mark = await callMark();
    const result = await reconcile(createBiller(env), { now, settleMs: 0 });
    expect(result).toMatchObject({ checked: 1, mismatches: 1, repaired: 0 });
    expect(result.report[0]).toMatchObject({ ours: 9, stripe: 0, action: "invoice_finalized" });
    expect(await meterEventCalls(mark)).toBe(0);
  });

  it("leaves frozen series out: what Stripe billed for them is the adjustments' business", async () => {
    const c = await createPaidCustomer();
    await confirmedSeries(c, 6);
    await env.DB.prepare("UPDATE usage_periods SET frozen_at = 1, stripe_billed = 6 WHERE user_id = ?1")
      .bind(c.userId)
      .run();
    const mark = await callMark();
    const result = await reconcile(createBiller(env), { now: tick(), settleMs: 0 });
    expect(result).toMatchObject({ checked: 0, mismatches: 0, report: [] });
    expect(await stripeCalls(mark, "GET", "/v1/billing/meters")).toEqual([]);
  });

  it("does not reconcile a series whose window lies inside one minute (no minute-aligned summary is its own)", async () => {
    const start = Math.floor((Date.now() - DAY) / MIN) * MIN + 10_000;
    const c = await createPaidCustomer({ periodStart: start, periodEnd: start + 30_000 });
    await confirmedSeries(c, 2);
    const mark = await callMark();
    const result = await reconcile(createBiller(env), { now: tick(), settleMs: 0 });
    expect(result).toMatchObject({ checked: 0, mismatches: 0, report: [] });
    expect(await stripeCalls(mark, "GET", "/v1/billing/meters")).toEqual([]);
    expect(await meterEventCalls(mark)).toBe(0);
  });

  it("leaves unconfirmed totals to the sweep and skips totals posted too recently to be aggregated", async () => {
    const pending = await createPaidCustomer();
    const fresh = await createPaidCustomer();
    await env.DB.prepare(
      "INSERT INTO meter_locks (stripe_customer_id, holder, locked_until) VALUES (?1, 'x', ?2)",
    )
      .bind(pending.customerId, Date.now() + 10 * MIN)
      .run();
    await consume([(await judge(pending.userId, 1)).message, (await judge(fresh.userId, 1)).message]);
    const result = await reconcile(createBiller(env), { now: tick() });
    expect(result.checked).toBe(0);
    expect(result.report).toEqual([
      expect.objectContaining({ user_id: pending.userId, action: "awaiting_sweep" }),
    ]);
  });

  it("checks series in their last chance to be repaired first, then rotates through the rest", async () => {
    const current = await createPaidCustomer();
    const end = Math.floor((Date.now() - 10 * MIN) / 1000) * 1000;
    const ending = await createPaidCustomer({ periodStart: end - 30 * DAY, periodEnd: end });
    for (const c of [current, ending]) await confirmedSeries(c, 2);
    const b = createBiller(env);
    const first = await reconcile(b, { now: tick(), settleMs: 0, limit: 1 });
    expect(first.report.map((e) => e.user_id)).toEqual([ending.userId]);
    expect((await meterUsage(ending.customerId, "payg", ending.period)).value).toBe(2);
    const second = await reconcile(b, { now: tick(), settleMs: 0, limit: 1 });
    // the ended series is still in its grace window, but it was checked since: the other comes up
    expect(second.report.map((e) => e.user_id)).toEqual([current.userId]);
    expect((await meterUsage(current.customerId, "payg", current.period)).value).toBe(2);
  });
});
