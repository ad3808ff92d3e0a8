import { env } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { createBiller } from "./config";
import { type ReportEntry, reconcile } from "./reconcile";
import {
  callMark,
  consume,
  createPaidCustomer,
  DAY,
  meterEventCalls,
  meterUsage,
  setupCatalog,
  stripe,
  usagePeriods,
  verdict,
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

describe("reconciliation", () => {
  it("repairs a wrong total posted to Stripe behind our back and keeps a report", async () => {
    const c = await createPaidCustomer({ plan: "pro" });
    const ok = await createPaidCustomer({ plan: "payg" });
    await consume([...Array.from({ length: 7 }, () => verdict(c.userId)), verdict(ok.userId)]);
    const [posted] = await usagePeriods(c.userId);
    // someone posts a wrong absolute total, later than ours
    await stripe().billing.meterEvents.create({
      event_name: env.STRIPE_METER_EVENT_NAME,
      payload: { stripe_customer_id: c.customerId, value: "3" },
      timestamp: (posted?.last_meter_ts ?? 0) + 1,
    });
    expect((await meterUsage(c.customerId, c.period)).value).toBe(3);

    const result = await reconcile(createBiller(env), { now: Date.now() + 3000, settleMs: 0 });
    expect(result).toMatchObject({ checked: 2, mismatches: 1, repaired: 1 });
    expect((await meterUsage(c.customerId, c.period)).value).toBe(7);
    expect((await meterUsage(ok.customerId, ok.period)).value).toBe(1);
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
    const mark = await callMark();
    const again = await reconcile(createBiller(env), { now: Date.now() + 6000, settleMs: 0 });
    expect(again).toMatchObject({ checked: 2, mismatches: 0, repaired: 0, report: [] });
    expect(await meterEventCalls(mark)).toBe(0);
  });

  it("re-posts a total Stripe lost", async () => {
    const c = await createPaidCustomer();
    // our books say 5 were confirmed, Stripe holds nothing
    await env.DB.prepare(
      `INSERT INTO usage_periods (user_id, plan, period_start, period_end, stripe_customer_id, stripe_subscription_id,
         billable_sessions, posted_total, posted_at, updated_at) VALUES (?1, 'payg', ?2, ?3, ?4, ?5, 5, 5, 0, 0)`,
    )
      .bind(c.userId, c.period.start, c.period.end, c.customerId, c.subscriptionId)
      .run();
    const result = await reconcile(createBiller(env), { now: Date.now(), settleMs: 0 });
    expect(result).toMatchObject({ checked: 1, mismatches: 1, repaired: 1 });
    expect(result.report[0]).toMatchObject({ ours: 5, stripe: 0, action: "reposted" });
    expect((await meterUsage(c.customerId, c.period)).value).toBe(5);
  });

  it("reports, without re-posting, a difference in a period Stripe has already invoiced", async () => {
    const now = Date.now();
    const end = Math.floor((now - 2 * DAY) / 1000) * 1000;
    const c = await createPaidCustomer({ periodStart: end - 30 * DAY, periodEnd: end });
    await env.DB.prepare(
      `INSERT INTO usage_periods (user_id, plan, period_start, period_end, stripe_customer_id, stripe_subscription_id,
         billable_sessions, posted_total, posted_at, closed_at, updated_at) VALUES (?1, 'payg', ?2, ?3, ?4, ?5, 9, 9, 0, 0, 0)`,
    )
      .bind(c.userId, c.period.start, c.period.end, c.customerId, c.subscriptionId)
      .run();
    const mark = await callMark();
    const result = await reconcile(createBiller(env), { now, settleMs: 0 });
    expect(result).toMatchObject({ checked: 1, mismatches: 1, repaired: 0 });
    expect(result.report[0]).toMatchObject({ ours: 9, stripe: 0, action: "invoice_finalized" });
    expect(await meterEventCalls(mark)).toBe(0);
  });

  it("leaves unconfirmed totals to the sweep and skips totals posted too recently to be aggregated", async () => {
    const pending = await createPaidCustomer();
    const fresh = await createPaidCustomer();
    await env.DB.prepare(
      "INSERT INTO meter_locks (stripe_customer_id, holder, locked_until) VALUES (?1, 'x', ?2)",
    )
      .bind(pending.customerId, Date.now() + 60_000)
      .run();
    await consume([verdict(pending.userId), verdict(fresh.userId)]);
    const result = await reconcile(createBiller(env), { now: Date.now() });
    expect(result.checked).toBe(0);
    expect(result.report).toEqual([
      expect.objectContaining({ user_id: pending.userId, action: "awaiting_sweep" }),
    ]);
  });

  it("checks periods in their last chance to be repaired first, then rotates through the rest", async () => {
    const current = await createPaidCustomer();
    const end = Math.floor((Date.now() - 10 * 60_000) / 1000) * 1000;
    const ending = await createPaidCustomer({ periodStart: end - 30 * DAY, periodEnd: end });
    for (const c of [current, ending]) {
      await env.DB.prepare(
        `INSERT INTO usage_periods (user_id, plan, period_start, period_end, stripe_customer_id, stripe_subscription_id,
           billable_sessions, posted_total, posted_at, updated_at) VALUES (?1, 'payg', ?2, ?3, ?4, ?5, 2, 2, 0, 0)`,
      )
        .bind(c.userId, c.period.start, c.period.end, c.customerId, c.subscriptionId)
        .run();
    }
    const b = createBiller(env);
    const first = await reconcile(b, { now: Date.now(), settleMs: 0, limit: 1 });
    expect(first.report.map((e) => e.user_id)).toEqual([ending.userId]);
    expect((await meterUsage(ending.customerId, ending.period)).value).toBe(2);
    const second = await reconcile(b, { now: Date.now() + 1000, settleMs: 0, limit: 1 });
    // the ended period is still in its grace window, but it was checked since: the other comes up
    expect(second.report.map((e) => e.user_id)).toEqual([current.userId]);
    expect((await meterUsage(current.customerId, current.period)).value).toBe(2);
  });
});
