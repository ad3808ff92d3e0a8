import { createScheduledController, env } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { createBiller } from "./config";
import worker from "./index";
import { sweep } from "./sweep";
import {
  billableInD1,
  callMark,
  consume,
  createPaidCustomer,
  DAY,
  emulator,
  meterEventCalls,
  meterUsage,
  setupCatalog,
  usagePeriods,
  verdict,
} from "./test/support";

const MIN = 60_000;
const GRACE = 3600 * 1000; // STRIPE_INVOICE_GRACE_SECONDS in wrangler.jsonc

beforeEach(async () => {
  await setupCatalog();
});

/** A customer whose previous period ended `endedAgo` ms ago, and the current one. */
async function customerAcrossPeriods(endedAgo: number) {
  const end = Math.floor((Date.now() - endedAgo) / 1000) * 1000;
  const p1 = { start: end - 30 * DAY, end };
  const p2 = { start: end, end: end + 30 * DAY };
  const c = await createPaidCustomer({ plan: "pro", periods: [p1, p2] });
  return { c, p1, p2 };
}

describe("period close", () => {
  it("posts a late session into its ended period during Stripe's grace window, then closes the period", async () => {
    const { c, p1, p2 } = await customerAcrossPeriods(10 * MIN);
    const early = Array.from({ length: 3 }, () => verdict(c.userId, { created_at: p1.end - 2 * DAY }));
    await consume(early);
    // judged 10 min after the period ended (settle window, stale sessions): still the old period
    await consume([verdict(c.userId, { created_at: p1.end - 30_000 })]);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { period_start: p1.start, billable_sessions: 4, posted_total: 4, closed_at: null },
    ]);
    expect((await meterUsage(c.customerId, p1)).value).toBe(4);

    const b = createBiller(env);
    // intake is open for the first half of the grace window
    expect((await sweep(b, p1.end + GRACE / 2 - 1)).closed).toBe(0);
    const closedAt = p1.end + GRACE / 2;
    expect((await sweep(b, closedAt)).closed).toBe(1);
    expect(await usagePeriods(c.userId)).toMatchObject([{ period_start: p1.start, closed_at: closedAt }]);

    // a session of the closed period judged now is recorded as an adjustment of the next one
    const late = verdict(c.userId, { created_at: p1.end - 10_000 });
    await consume([late]);
    const row = await env.DB.prepare(
      "SELECT period_start, period_end, adjusted_from_period FROM session_usage WHERE id = ?1",
    )
      .bind(late.session_id)
      .first();
    expect(row).toEqual({ period_start: p2.start, period_end: p2.end, adjusted_from_period: p1.start });
    expect((await meterUsage(c.customerId, p1)).value).toBe(4);
    expect((await meterUsage(c.customerId, p2)).value).toBe(1);
  });

  it("sends sessions judged after the invoice's intake window to the next period as adjustments", async () => {
    const { c, p1, p2 } = await customerAcrossPeriods(GRACE / 2 + MIN);
    const v = verdict(c.userId, { created_at: p1.end - 5 * MIN });
    await consume([v]);
    const rows = await usagePeriods(c.userId);
    expect(rows).toMatchObject([{ period_start: p2.start, billable_sessions: 1, posted_total: 1 }]);
    const row = await env.DB.prepare("SELECT adjusted_from_period FROM session_usage WHERE id = ?1")
      .bind(v.session_id)
      .first<{ adjusted_from_period: number }>();
    expect(row?.adjusted_from_period).toBe(p1.start);
    expect((await meterUsage(c.customerId, p2)).value).toBe(1);
    expect((await meterUsage(c.customerId, p1)).events).toBe(0);
  });

  it("keeps an ended period open until its final total is confirmed, posting it before closing", async () => {
    const { c, p1 } = await customerAcrossPeriods(GRACE / 2 + MIN);
    // recorded earlier into p1, but Stripe never confirmed it (e.g. an outage)
    await env.DB.prepare(
      "INSERT INTO meter_locks (stripe_customer_id, holder, locked_until) VALUES (?1, 'x', ?2)",
    )
      .bind(c.customerId, Date.now() + MIN)
      .run();
    await env.DB.prepare(
      `INSERT INTO usage_periods (user_id, plan, period_start, period_end, stripe_customer_id, stripe_subscription_id,
         billable_sessions, posted_total, updated_at) VALUES (?1, 'pro', ?2, ?3, ?4, ?5, 7, 0, 0)`,
    )
      .bind(c.userId, p1.start, p1.end, c.customerId, c.subscriptionId)
      .run();
    const b = createBiller(env);
    expect(await sweep(b, Date.now())).toMatchObject({ posted: 0, closed: 0 });
    await env.DB.prepare("DELETE FROM meter_locks").run();
    expect(await sweep(b, Date.now())).toMatchObject({ posted: 1, closed: 1 });
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 7, posted_total: 7 }]);
    expect((await usagePeriods(c.userId))[0]?.closed_at).not.toBeNull();
    // the final total lands inside the period, at its end's reserve
    expect((await meterUsage(c.customerId, p1)).value).toBe(7);
  });

  it("backs off a period whose posts keep failing instead of calling Stripe every minute", async () => {
    const { c } = await customerAcrossPeriods(-10 * DAY);
    await env.DB.prepare("UPDATE stripe_customers SET stripe_customer_id = 'cus_gone' WHERE user_id = ?1")
      .bind(c.userId)
      .run();
    await consume([verdict(c.userId)]);
    const mark = await callMark();
    const b = createBiller(env);
    expect((await sweep(b, Date.now())).attempted).toBe(0);
    expect(await meterEventCalls(mark)).toBe(0);
    const [row] = await usagePeriods(c.userId);
    expect(row).toMatchObject({ billable_sessions: 1, posted_total: 0, post_failures: 1 });
    // a minute later it is due again
    await emulator().advanceClock(61);
    try {
      expect((await sweep(b, Date.now() + 61_000)).failed).toBe(1);
    } finally {
      await emulator().advanceClock(-61);
    }
    expect((await usagePeriods(c.userId))[0]?.post_failures).toBe(2);
    expect(await billableInD1(c.userId)).toBe(1);
  });
});

describe("scheduled handler", () => {
  it("runs the sweep on the minute cron", async () => {
    const c = await createPaidCustomer();
    await env.DB.prepare(
      "INSERT INTO meter_locks (stripe_customer_id, holder, locked_until) VALUES (?1, 'x', ?2)",
    )
      .bind(c.customerId, Date.now() + MIN)
      .run();
    await consume([verdict(c.userId), verdict(c.userId)]);
    await env.DB.prepare("DELETE FROM meter_locks").run();
    await worker.scheduled(createScheduledController({ cron: "* * * * *", scheduledTime: Date.now() }), env);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 2, posted_total: 2 }]);
    expect((await meterUsage(c.customerId, c.period)).value).toBe(2);
  });

  it("runs reconciliation on the hourly cron and keeps its report", async () => {
    await worker.scheduled(createScheduledController({ cron: "17 * * * *", scheduledTime: Date.now() }), env);
    const run = await env.DB.prepare(
      "SELECT periods_checked, mismatches, report, finished_at FROM reconciliation_runs",
    ).first();
    expect(run).toMatchObject({ periods_checked: 0, mismatches: 0, report: "[]" });
    expect(run?.finished_at).not.toBeNull();
  });
});
