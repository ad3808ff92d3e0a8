import { createScheduledController, env } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { createBiller } from "./config";
import worker from "./index";
import { POST_LAG_SECONDS } from "./meter";
import { sweep } from "./sweep";
import {
  billableInD1,
  callMark,
  consume,
  createPaidCustomer,
  customerAcrossPeriods,
  DAY,
  finalizedInvoice,
  judge,
  MIN,
  meterEventCalls,
  meterEvents,
  meteredPriceId,
  meterUsage,
  setupCatalog,
  tick,
  usagePeriods,
} from "./test/support";

const GRACE = 3600 * 1000; // STRIPE_INVOICE_GRACE_SECONDS in wrangler.jsonc

beforeEach(async () => {
  await setupCatalog();
});

describe("ended windows", () => {
  it("posts a late session into its ended window during Stripe's grace, in the reserve before its last minute", async () => {
    const { c, p1, p2 } = await customerAcrossPeriods(10 * MIN);
    await consume([(await judge(c.userId, 3, { at: p1.end - 2 * DAY })).message]);
    // judged 10 min after the window ended (settle window, stale sessions): still the old window
    const late = await judge(c.userId, 1, { at: p1.end - 30_000 });
    expect(late.series).toEqual([{ user_id: c.userId, plan: "pro", period_start: p1.start }]);
    expect((await sweep(createBiller(env), tick())).posted).toBe(1);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { period_start: p1.start, billable_sessions: 4, posted_total: 4, frozen_at: null },
    ]);
    const events = await meterEvents(c.customerId, "pro");
    const boundary = Math.floor(p1.end / MIN) * 60;
    // both posts came after the window ended: the reserve's first seconds, in order
    expect(events.map((e) => [e.value, e.timestamp])).toEqual([
      [3, boundary - POST_LAG_SECONDS],
      [4, boundary - POST_LAG_SECONDS + 1],
    ]);
    expect((await meterUsage(c.customerId, "pro", p1)).value).toBe(4);
    expect((await meterUsage(c.customerId, "pro", p2)).events).toBe(0);
  });

  it("does not let a series with no valid timestamp left hold back the customer's other series", async () => {
    const { c, p1, p2 } = await customerAcrossPeriods(10 * MIN, "payg");
    await consume([(await judge(c.userId, 2, { at: p1.end - DAY })).message]);
    // the ended window's reserve is used up: its next total waits to be frozen and adjusted
    const boundary = Math.floor(p1.end / MIN) * 60;
    await env.DB.prepare(
      "UPDATE usage_periods SET last_meter_ts = ?2 WHERE user_id = ?1 AND period_start = ?3",
    )
      .bind(c.userId, boundary - 1, p1.start)
      .run();
    await judge(c.userId, 1, { at: p1.end - DAY });
    await judge(c.userId, 3, { at: p2.start + MIN });
    const mark = await callMark();
    expect((await sweep(createBiller(env), tick())).posted).toBe(1);
    expect(await meterEventCalls(mark)).toBe(1);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { period_start: p1.start, billable_sessions: 3, posted_total: 2, last_meter_ts: boundary - 1 },
      { period_start: p2.start, billable_sessions: 3, posted_total: 3 },
    ]);
    expect((await meterUsage(c.customerId, "payg", p2)).value).toBe(3);
  });

  it("counts an ended series still unconfirmed after Stripe's grace as overdue", async () => {
    const { c, p1 } = await customerAcrossPeriods(GRACE + 10 * MIN);
    await env.DB.prepare(
      "INSERT INTO meter_locks (stripe_customer_id, holder, locked_until) VALUES (?1, 'x', ?2)",
    )
      .bind(c.customerId, Date.now() + 10 * MIN)
      .run();
    await judge(c.userId, 2, { at: p1.end - DAY });
    expect(await sweep(createBiller(env), tick())).toMatchObject({ posted: 0, overdue: 1 });
    await env.DB.prepare("DELETE FROM meter_locks").run();
    // no invoice is recorded yet: it is still posted (Stripe may hold the invoice open longer)
    expect(await sweep(createBiller(env), tick())).toMatchObject({ posted: 1, overdue: 0 });
  });

  it("backs off a series whose posts keep failing instead of calling Stripe every minute", async () => {
    const c = await createPaidCustomer();
    await env.DB.prepare("UPDATE subscriptions SET stripe_customer_id = 'cus_gone' WHERE user_id = ?1")
      .bind(c.userId)
      .run();
    await consume([(await judge(c.userId, 1)).message]);
    const mark = await callMark();
    const b = createBiller(env);
    const t = tick();
    expect((await sweep(b, t)).attempted).toBe(0);
    expect(await meterEventCalls(mark)).toBe(0);
    const [row] = await usagePeriods(c.userId);
    expect(row).toMatchObject({ billable_sessions: 1, posted_total: 0, post_failures: 1 });
    // a minute later it is due again
    expect((await sweep(b, t + 61_000)).failed).toBe(1);
    expect((await usagePeriods(c.userId))[0]?.post_failures).toBe(2);
    expect(await billableInD1(c.userId)).toBe(1);
  });
});

describe("freezing series Stripe has billed", () => {
  it("freezes a series once a finalized invoice of its subscription covers its end, with the invoice's quantity", async () => {
    const { c, p1, p2 } = await customerAcrossPeriods(2 * GRACE, "payg");
    await consume([(await judge(c.userId, 4, { at: p1.end - DAY })).message]);
    await judge(c.userId, 1, { at: p2.start + MIN });
    const invoice = await finalizedInvoice(c, { created: p1.end + GRACE, window: p1, quantity: 4 });
    const mark = await callMark();
    const result = await sweep(createBiller(env), tick());
    expect(result.frozen).toBe(1);
    expect(result.adjusted).toBe(0);
    const [billed, open] = await usagePeriods(c.userId);
    expect(billed).toMatchObject({
      period_start: p1.start,
      billable_sessions: 4,
      stripe_billed: 4,
      stripe_invoice_id: invoice,
      adjusted: 0,
    });
    expect(billed?.frozen_at).not.toBeNull();
    // the open window is not frozen and is posted as usual
    expect(open).toMatchObject({ period_start: p2.start, frozen_at: null, posted_total: 1 });
    expect(await meterEventCalls(mark)).toBe(1);
  });

  it("freezes a series created after its invoice was finalized (a session judged late); its difference is adjusted", async () => {
    const { c, p1 } = await customerAcrossPeriods(2 * GRACE, "pro");
    // the invoice billed nothing of this plan in the window: no series existed when it was finalized
    await finalizedInvoice(c, { created: p1.end + GRACE, window: p1, quantity: 0 });
    await judge(c.userId, 2, { at: p1.end - DAY });
    const b = createBiller(env);
    expect((await sweep(b, tick())).frozen).toBe(1);
    const [series] = await usagePeriods(c.userId);
    expect(series).toMatchObject({ billable_sessions: 2, stripe_billed: 0, adjusted: 2 });
    expect(series?.frozen_at).not.toBeNull();
    // the difference is an adjustment (pro's included sessions: nothing to charge, no Stripe call)
    const adjustment = await env.DB.prepare(
      "SELECT sessions, from_seq, to_seq, amount_cents, state FROM usage_adjustments WHERE user_id = ?1",
    )
      .bind(c.userId)
      .first();
    expect(adjustment).toEqual({ sessions: 2, from_seq: 0, to_seq: 2, amount_cents: 0, state: "created" });
    // from then on the series is never posted again
    await judge(c.userId, 1, { at: p1.end - DAY });
    const mark = await callMark();
    expect(await sweep(b, tick())).toMatchObject({ attempted: 0, frozen: 0 });
    expect(await meterEventCalls(mark)).toBe(0);
  });

  it("freezes the series of a subscription that ended with no draft invoice left, not before", async () => {
    const { c, p1 } = await customerAcrossPeriods(2 * DAY, "payg");
    await consume([(await judge(c.userId, 3, { at: p1.end - DAY })).message]);
    await env.DB.prepare("UPDATE subscriptions SET ended_at = ?2, status = 'canceled' WHERE user_id = ?1")
      .bind(c.userId, p1.end)
      .run();
    // its final invoice is still a draft: Stripe may yet bill usage
    const draft = await finalizedInvoice(c, { created: p1.end, window: p1, quantity: 0, status: "draft" });
    const b = createBiller(env);
    expect((await sweep(b, tick())).frozen).toBe(0);
    expect((await usagePeriods(c.userId))[0]?.frozen_at).toBeNull();
    await env.DB.prepare(
      "UPDATE invoices SET status = 'paid', finalized_at = ?2 WHERE stripe_invoice_id = ?1",
    )
      .bind(draft, p1.end + GRACE)
      .run();
    await env.DB.prepare("UPDATE invoice_lines SET quantity = 3 WHERE stripe_invoice_id = ?1")
      .bind(draft)
      .run();
    expect((await sweep(b, tick())).frozen).toBe(1);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 3, stripe_billed: 3 }]);
  });

  it("freezes only the window an invoice covers: an immediate plan change leaves the new plan's window open", async () => {
    // payg -> pro with the billing cycle anchor reset at `change`: Stripe invoiced the payg usage then
    const change = Math.floor((Date.now() - 2 * GRACE) / 1000) * 1000;
    const c = await createPaidCustomer({ plan: "payg", periodStart: change - 10 * DAY, periodEnd: change });
    await env.DB.batch([
      env.DB.prepare(
        `INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at, stripe_price_id,
           meter_event_name) VALUES (?1, ?2, 'pro', ?3, 0, ?4, 'aigate_pro_sessions')`,
      ).bind(c.userId, change, c.subscriptionId, meteredPriceId("pro")),
      env.DB.prepare(
        "INSERT INTO billing_periods (stripe_subscription_id, period_start, period_end) VALUES (?1, ?2, ?3)",
      ).bind(c.subscriptionId, change, change + 30 * DAY),
    ]);
    await consume([(await judge(c.userId, 3, { at: change - DAY })).message]);
    await consume([(await judge(c.userId, 2, { at: change + MIN })).message]);
    await finalizedInvoice(c, {
      created: change,
      window: { start: change - 10 * DAY, end: change },
      quantity: 3,
    });
    expect((await sweep(createBiller(env), tick())).frozen).toBe(1);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { plan: "payg", period_end: change, stripe_billed: 3, adjusted: 0 },
      { plan: "pro", period_start: change, frozen_at: null, stripe_billed: null, posted_total: 2 },
    ]);
    expect((await usagePeriods(c.userId))[0]?.frozen_at).not.toBeNull();
  });
});

describe("scheduled handler", () => {
  it("runs the sweep on the minute cron: posts what the consumer left", async () => {
    const c = await createPaidCustomer();
    await judge(c.userId, 2);
    await worker.scheduled(createScheduledController({ cron: "* * * * *", scheduledTime: Date.now() }), env);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 2, posted_total: 2 }]);
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(2);
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
