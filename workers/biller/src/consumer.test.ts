import { createExecutionContext, createMessageBatch, env, getQueueResult } from "cloudflare:test";
import { calendarMonth } from "@aigate/shared";
import { beforeEach, describe, expect, it } from "vitest";
import { createBiller } from "./config";
import { consumeVerdicts } from "./consumer";
import worker from "./index";
import { POST_LAG_SECONDS } from "./meter";
import { sweep } from "./sweep";
import {
  billableInD1,
  callMark,
  consume,
  createPaidCustomer,
  DAY,
  failingDb,
  judge,
  MIN,
  meterEventCalls,
  meterEvents,
  meteredPriceId,
  meterOf,
  meterUsage,
  setupCatalog,
  tick,
  uniqueId,
  usageMessage,
  usagePeriods,
  verdictMessage,
} from "./test/support";

beforeEach(async () => {
  await setupCatalog();
});

describe("usage messages", () => {
  it("posts each named series' absolute total to its plan's meter, identified by series, total and timestamp", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const run = await judge(c.userId, [{}, {}, {}, {}, {}, { billable: false }, { billable: false }]);
    expect(run.message).toEqual({
      v: 2,
      kind: "usage",
      series: [{ user_id: c.userId, plan: "payg", period_start: c.period.start }],
      judged: 7,
      judged_at: expect.any(Number),
    });
    const now = tick();
    const result = await consume([run.message], { now });
    expect(result.acked).toEqual(result.ids);
    expect(result.retried).toEqual([]);

    const [series] = await usagePeriods(c.userId);
    expect(series).toMatchObject({
      plan: "payg",
      period_start: c.period.start,
      billable_sessions: 5,
      posted_total: 5,
      post_failures: 0,
    });
    // 600 s behind the current second while the window runs (docs/billing.md "Posting")
    const ts = Math.floor(now / 1000) - POST_LAG_SECONDS;
    expect(series?.last_meter_ts).toBe(ts);
    expect(await meterEvents(c.customerId, "payg")).toEqual([
      expect.objectContaining({
        identifier: `${c.customerId}:payg:${c.period.start}:5:${ts}`,
        value: 5,
        timestamp: ts,
        counted: true,
      }),
    ]);
    // the other plan's meter never hears of this customer
    expect((await meterUsage(c.customerId, "pro")).events).toBe(0);
  });

  it("sends each series to its own plan's meter, one Stripe call per customer per batch", async () => {
    // an immediate upgrade: the payg window ended at the change, the pro window starts there
    const now = Date.now();
    const change = Math.floor((now - 2 * MIN) / 1000) * 1000;
    const payg = await createPaidCustomer({ plan: "payg", periodStart: change - 5 * DAY, periodEnd: change });
    await env.DB.batch([
      env.DB.prepare(
        `INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at, stripe_price_id,
           meter_event_name) SELECT user_id, ?2, 'pro', stripe_subscription_id, 0, ?3, ?4 FROM plan_history WHERE user_id = ?1`,
      ).bind(payg.userId, change, meteredPriceId("pro"), meterOf("pro")),
      env.DB.prepare(
        "INSERT INTO billing_periods (stripe_subscription_id, period_start, period_end) VALUES (?1, ?2, ?3)",
      ).bind(payg.subscriptionId, change, change + 30 * DAY),
    ]);
    const before = await judge(payg.userId, 3, { at: change - MIN });
    const after = await judge(payg.userId, 2, { at: change + 1000 });
    const mark = await callMark();
    const first = await consume([before.message, after.message]);
    expect(first.acked).toHaveLength(2);
    expect(await meterEventCalls(mark)).toBe(1);
    expect(await usagePeriods(payg.userId)).toMatchObject([
      { plan: "payg", period_end: change, billable_sessions: 3, posted_total: 3 },
      { plan: "pro", period_start: change, billable_sessions: 2, posted_total: 0 },
    ]);
    // the sweep posts the other series (the totals are in D1: the message was acked)
    await sweep(createBiller(env), tick());
    expect(await meterEventCalls(mark)).toBe(2);
    expect((await meterUsage(payg.customerId, "payg")).value).toBe(3);
    expect((await meterUsage(payg.customerId, "pro")).value).toBe(2);
  });

  it("makes no Stripe call for a message whose series Stripe already confirmed, however often it comes", async () => {
    const c = await createPaidCustomer({ plan: "pro" });
    const a = await judge(c.userId, 3);
    const first = await consume([a.message, a.message]);
    expect(first.acked).toHaveLength(2);
    const mark = await callMark();
    const again = await consume([a.message, a.message, a.message]);
    expect(again.acked).toHaveLength(3);
    expect(await meterEventCalls(mark)).toBe(0);
    // more sessions in the same series: the next message carries the new total, once
    const b = await judge(c.userId, 2);
    await consume([a.message, b.message]);
    expect(await meterEventCalls(mark)).toBe(1);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 5, posted_total: 5 }]);
    expect(await meterUsage(c.customerId, "pro", c.period)).toMatchObject({ value: 5, events: 2 });
  });

  it("posts nothing for free usage, which the classifier never names in a message", async () => {
    const user = uniqueId("free");
    const mark = await callMark();
    const t = Date.now() - 3_600_000;
    const run = await judge(user, [{ at: t }, { at: t }, { at: t, billable: false }]);
    expect(run.message).toBeNull();
    const month = calendarMonth(t);
    expect(await usagePeriods(user)).toMatchObject([
      {
        plan: "free",
        period_start: month.start,
        period_end: month.end,
        billable_sessions: 2,
        posted_total: 0,
      },
    ]);
    expect((await sweep(createBiller(env), tick())).attempted).toBe(0);
    // a message naming a free series is not a usage message: parked, not posted
    const bad = await consume([
      usageMessage([{ user_id: user, plan: "free", period_start: month.start } as never]),
    ]);
    expect(bad.acked).toEqual(bad.ids);
    expect(await meterEventCalls(mark)).toBe(0);
    const parked = await env.DB.prepare("SELECT error FROM dead_letters").first<{ error: string }>();
    expect(parked?.error).toMatch(/^invalid verdict message: .*plan/);
  });

  it("acks a message whose series Stripe has billed (frozen) and never posts that series again", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const run = await judge(c.userId, 2);
    await env.DB.prepare("UPDATE usage_periods SET frozen_at = 1, stripe_billed = 0 WHERE user_id = ?1")
      .bind(c.userId)
      .run();
    const mark = await callMark();
    const result = await consume([run.message]);
    expect(result.acked).toEqual(result.ids);
    expect((await sweep(createBiller(env), tick())).attempted).toBe(0);
    expect(await meterEventCalls(mark)).toBe(0);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 2, posted_total: 0 }]);
  });

  it("goes through the queue handler with the current time", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const run = await judge(c.userId, 2);
    const batch = createMessageBatch<unknown>("aigate-verdicts", [
      { id: "m1", timestamp: new Date(), attempts: 1, body: run.message },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(batch, env);
    expect((await getQueueResult(batch, ctx)).explicitAcks).toEqual(["m1"]);
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(2);
  });
});

describe("version 1 verdict messages (old dead letters replayed)", () => {
  it("posts the series its session was recorded in, and acks unbillable and free ones", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const paid = await judge(c.userId, 3);
    const failed = await judge(c.userId, 1, { billable: false });
    const free = uniqueId("free");
    const freeRun = await judge(free, 1);
    const [first] = paid.ids;
    const result = await consume([
      verdictMessage(first ?? "", c.userId),
      verdictMessage(failed.ids[0] ?? "", c.userId, false),
      verdictMessage(freeRun.ids[0] ?? "", free),
    ]);
    expect(result.acked).toEqual(result.ids);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { plan: "payg", billable_sessions: 3, posted_total: 3 },
    ]);
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(3);
  });

  it("retries a verdict whose session has no verdict recorded yet", async () => {
    const result = await consume([verdictMessage(uniqueId("sess"), uniqueId("user"))]);
    expect(result.retried).toEqual(result.ids);
  });

  it("acks a session judged without a series and asks for its re-attribution", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    // the subscription's webhook has not come yet: no billing period contains the session
    await env.DB.prepare("DELETE FROM billing_periods WHERE stripe_subscription_id = ?1")
      .bind(c.subscriptionId)
      .run();
    const at = Date.now() - MIN;
    const run = await judge(c.userId, 1, { at });
    expect(run.message).toBeNull();
    await env.DB.prepare("DELETE FROM reattributions").run();
    const result = await consume([verdictMessage(run.ids[0] ?? "", c.userId)]);
    expect(result.acked).toEqual(result.ids);
    const request = await env.DB.prepare("SELECT user_id, from_ms FROM reattributions").first();
    expect(request).toEqual({ user_id: c.userId, from_ms: at });
  });

  it("retries a verdict whose re-attribution request could not be recorded", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    await env.DB.prepare("DELETE FROM billing_periods WHERE stripe_subscription_id = ?1")
      .bind(c.subscriptionId)
      .run();
    const at = Date.now() - MIN;
    const run = await judge(c.userId, 1, { at });
    await env.DB.prepare("DELETE FROM reattributions").run();
    const crash = failingDb(env.DB, /INSERT INTO reattributions/);
    const message = verdictMessage(run.ids[0] ?? "", c.userId);
    const first = await consume([message], { env: { ...env, DB: crash.db } });
    expect(crash.failures()).toBe(1);
    expect(first.retried).toEqual(first.ids);
    expect(await env.DB.prepare("SELECT count(*) AS n FROM reattributions").first("n")).toBe(0);
    const again = await consume([message], { attempts: 2 });
    expect(again.acked).toEqual(again.ids);
    const request = await env.DB.prepare("SELECT user_id, from_ms FROM reattributions").first();
    expect(request).toEqual({ user_id: c.userId, from_ms: at });
  });
});

describe("messages that cannot be billed as they are", () => {
  it("parks a malformed message at once with the reason and acks it", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const good = await judge(c.userId, 1);
    const result = await consume([
      { v: 2, kind: "usage", series: [{ user_id: c.userId, plan: "payg", period_start: "soon" }] },
      good.message,
      "not json at all",
    ]);
    expect(result.acked).toHaveLength(3);
    const { results } = await env.DB.prepare(
      "SELECT id, queue, message_id, error FROM dead_letters ORDER BY id",
    ).all<{ id: string; queue: string; message_id: string; error: string }>();
    const ids = [result.ids[0], result.ids[2]].map((id) => `aigate-verdicts:${id}`).sort();
    expect(results.map((r) => r.id)).toEqual(ids);
    for (const r of results) {
      expect(r.queue).toBe("aigate-verdicts");
      expect(r.error).toMatch(/^invalid verdict message: /);
    }
    expect(results.find((r) => r.message_id === result.ids[0])?.error).toContain("period_start");
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(1);
  });

  it("parks a message naming a series that was never recorded", async () => {
    const result = await consume([
      usageMessage([{ user_id: uniqueId("user"), plan: "payg", period_start: 0 }]),
    ]);
    expect(result.acked).toEqual(result.ids);
    const parked = await env.DB.prepare("SELECT error FROM dead_letters").first<{ error: string }>();
    expect(parked?.error).toMatch(/no paid usage series recorded/);
  });

  it("parks a message Stripe rejects, keeping its usage recorded and unconfirmed", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    // the series names the customer its subscription was recorded with
    await env.DB.prepare(
      "UPDATE subscriptions SET stripe_customer_id = 'cus_doesnotexist' WHERE user_id = ?1",
    )
      .bind(c.userId)
      .run();
    const run = await judge(c.userId, 2);
    const result = await consume([run.message, run.message]);
    expect(result.acked).toHaveLength(2);
    const { results } = await env.DB.prepare("SELECT error FROM dead_letters").all<{ error: string }>();
    expect(results).toHaveLength(2);
    for (const r of results)
      expect(r.error).toMatch(/Stripe rejected the meter post: meter_event_customer_not_found/);
    const [series] = await usagePeriods(c.userId);
    expect(series).toMatchObject({ billable_sessions: 2, posted_total: 0, post_failures: 1 });
    expect(series?.post_error).toMatch(/No such customer/);

    // the streak is parked: later rejections (the next message, the sweep's retries) park nothing more
    const later = await judge(c.userId, 1);
    expect((await consume([later.message])).acked).toHaveLength(1);
    await sweep(createBiller(env), tick() + 2 * DAY);
    expect(await env.DB.prepare("SELECT count(*) AS n FROM dead_letters").first()).toEqual({ n: 2 });
    expect((await usagePeriods(c.userId))[0]).toMatchObject({ billable_sessions: 3, post_failures: 3 });
  });

  it("parks the series once when the sweep meets Stripe's rejection first, as a usage message to replay", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    await env.DB.prepare(
      "UPDATE subscriptions SET stripe_customer_id = 'cus_doesnotexist' WHERE user_id = ?1",
    )
      .bind(c.userId)
      .run();
    const run = await judge(c.userId, 2);
    await sweep(createBiller(env), tick());
    const { results } = await env.DB.prepare("SELECT id, queue, body, error FROM dead_letters").all<{
      id: string;
      queue: string;
      body: string;
      error: string;
    }>();
    expect(results).toHaveLength(1);
    const [letter] = results;
    expect(letter?.queue).toBe("aigate-verdicts");
    expect(letter?.error).toMatch(/Stripe rejected the meter post: meter_event_customer_not_found/);
    expect(JSON.parse(letter?.body ?? "")).toMatchObject({
      v: 2,
      kind: "usage",
      series: run.series,
      judged: 0,
    });
    // the classifier's message meets the same rejection: acked, nothing more parked
    expect((await consume([run.message])).acked).toHaveLength(1);
    await sweep(createBiller(env), tick() + 2 * DAY);
    expect(await env.DB.prepare("SELECT count(*) AS n FROM dead_letters").first()).toEqual({ n: 1 });
  });
});

describe("one Stripe call per customer", () => {
  it("acks and leaves the post to the sweep while another consumer holds the customer's meter lock", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const mark = await callMark();
    await env.DB.prepare(
      "INSERT INTO meter_locks (stripe_customer_id, holder, locked_until) VALUES (?1, 'other', ?2)",
    )
      .bind(c.customerId, Date.now() + 10 * MIN)
      .run();
    const run = await judge(c.userId, 3);
    const result = await consume([run.message]);
    expect(result.acked).toHaveLength(1);
    expect(await meterEventCalls(mark)).toBe(0);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 3, posted_total: 0 }]);

    // still locked: the sweep leaves it too
    const b = createBiller(env);
    expect((await sweep(b, tick())).posted).toBe(0);
    // the holder died: its lease ends and the sweep posts the current total
    await env.DB.prepare("UPDATE meter_locks SET locked_until = 0").run();
    expect((await sweep(b, tick())).posted).toBe(1);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 3, posted_total: 3 }]);
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(3);
    const locks = await env.DB.prepare("SELECT count(*) AS n FROM meter_locks").first<{ n: number }>();
    expect(locks?.n).toBe(0);
  });

  it("posts one series per customer per batch, the oldest first, and leaves the other to the sweep", async () => {
    const now = Date.now();
    const p1 = {
      start: Math.floor((now - 30 * DAY) / 1000) * 1000,
      end: Math.floor((now - 10 * MIN) / 1000) * 1000,
    };
    const p2 = { start: p1.end, end: p1.end + 30 * DAY };
    const c = await createPaidCustomer({ plan: "payg", periods: [p1, p2] });
    const mark = await callMark();
    // one session late for the ended window (still inside Stripe's grace), two in the current one
    const late = await judge(c.userId, 1, { at: p1.end - MIN });
    const current = await judge(c.userId, 2, { at: p2.start + MIN });
    const result = await consume([current.message, late.message]);
    expect(result.acked).toHaveLength(2);
    expect(await meterEventCalls(mark)).toBe(1);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { period_start: p1.start, billable_sessions: 1, posted_total: 1 },
      { period_start: p2.start, billable_sessions: 2, posted_total: 0 },
    ]);
    await sweep(createBiller(env), tick());
    expect(await meterEventCalls(mark)).toBe(2);
    expect((await meterUsage(c.customerId, "payg", p1)).value).toBe(1);
    expect((await meterUsage(c.customerId, "payg", p2)).value).toBe(2);
  });
});

describe("cost per batch", () => {
  it("reads about the same number of D1 rows per batch whatever the customer's history", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const readsFor = async (messages: number) => {
      const run = await judge(c.userId, 10);
      const b = createBiller(env);
      const batch = createMessageBatch<unknown>(
        "aigate-verdicts",
        Array.from({ length: messages }, () => ({
          id: uniqueId("msg"),
          timestamp: new Date(),
          attempts: 1,
          body: run.message,
        })),
      );
      await consumeVerdicts(b, batch.messages, tick());
      return b.d1.rowsRead;
    };
    const early = await readsFor(10);
    for (let i = 0; i < 10; i++) await judge(c.userId, 100); // 1000 sessions of history
    const late = await readsFor(10);
    expect(await billableInD1(c.userId)).toBe(1020);
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(1020);
    // a scan of the customer's sessions would read 1000+ more rows
    expect(late).toBeLessThan(early + 50);
  });
});
