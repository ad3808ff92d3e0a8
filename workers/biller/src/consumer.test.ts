import { createMessageBatch, env } from "cloudflare:test";
import { calendarMonth } from "@aigate/shared";
import { beforeEach, describe, expect, it } from "vitest";
import { createBiller } from "./config";
import { consumeVerdicts } from "./consumer";
import { sweep } from "./sweep";
import {
  billableInD1,
  callMark,
  consume,
  createPaidCustomer,
  DAY,
  failedVerdict,
  meterEventCalls,
  meterUsage,
  setupCatalog,
  stripe,
  uniqueId,
  usagePeriods,
  verdict,
} from "./test/support";

beforeEach(async () => {
  await setupCatalog();
});

describe("recording verdicts", () => {
  it("records every verdict once in the subscription's period and posts the period's absolute total", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const bodies = [
      ...Array.from({ length: 5 }, () => verdict(c.userId)),
      failedVerdict(c.userId),
      failedVerdict(c.userId, { reason: "turn_failed" }),
    ];
    const result = await consume(bodies);
    expect(result.acked.sort()).toEqual([...result.ids].sort());
    expect(result.retried).toEqual([]);

    const { results } = await env.DB.prepare(
      "SELECT status, plan, period_start, period_end, adjusted_from_period, charged FROM session_usage WHERE user_id = ?1",
    )
      .bind(c.userId)
      .all<{
        status: string;
        plan: string;
        period_start: number;
        period_end: number;
        adjusted_from_period: null;
      }>();
    expect(results).toHaveLength(7);
    expect(results.filter((r) => r.status === "success")).toHaveLength(5);
    for (const r of results) {
      // equal to the Stripe subscription period, so invoice.finalized can mark the sessions
      expect(r).toMatchObject({ plan: "payg", period_start: c.period.start, period_end: c.period.end });
      expect(r.adjusted_from_period).toBeNull();
    }
    expect(await usagePeriods(c.userId)).toMatchObject([
      { billable_sessions: 5, posted_total: 5, post_failures: 0 },
    ]);
    expect(await meterUsage(c.customerId, c.period)).toEqual({ value: 5, events: 1, duplicates_ignored: 0 });
  });

  it("bills a session once when its verdict arrives twice in a batch and again in later batches", async () => {
    const c = await createPaidCustomer({ plan: "pro" });
    const a = verdict(c.userId);
    const b = verdict(c.userId);
    const first = await consume([a, a, b, verdict(c.userId)]);
    expect(first.acked).toHaveLength(4);
    const second = await consume([b, a, a]);
    expect(second.acked).toHaveLength(3);
    const third = await consume([verdict(c.userId), b]);
    expect(third.acked).toHaveLength(2);

    expect(await billableInD1(c.userId)).toBe(4);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 4, posted_total: 4 }]);
    const usage = await meterUsage(c.customerId, c.period);
    expect(usage.value).toBe(4);
    // the redelivered-only batch found the total confirmed and made no Stripe call
    expect(usage.events).toBe(2);
  });

  it("never sends free usage to Stripe, even for a user who has a Stripe customer", async () => {
    const mark = await callMark();
    const freeUser = uniqueId("free");
    const downgraded = await stripe().customers.create({ metadata: { user_id: "downgraded" } });
    const downgradedUser = uniqueId("downgraded");
    await env.DB.prepare(
      `INSERT INTO stripe_customers (user_id, stripe_customer_id, plan, created_at, updated_at)
       VALUES (?1, ?2, 'free', 0, 0)`,
    )
      .bind(downgradedUser, downgraded.id)
      .run();
    const t = Date.now() - 3_600_000;
    const result = await consume([
      verdict(freeUser, { created_at: t }),
      verdict(freeUser, { created_at: t }),
      verdict(downgradedUser, { created_at: t }),
      failedVerdict(freeUser, { created_at: t }),
    ]);
    expect(result.acked).toHaveLength(4);
    const month = calendarMonth(t);
    expect(await usagePeriods(freeUser)).toMatchObject([
      {
        plan: "free",
        period_start: month.start,
        period_end: month.end,
        billable_sessions: 2,
        posted_total: 0,
      },
    ]);
    const rows = await env.DB.prepare(
      "SELECT count(*) AS n FROM usage_periods WHERE stripe_customer_id IS NOT NULL",
    ).first<{ n: number }>();
    expect(rows?.n).toBe(0);
    expect(await meterEventCalls(mark)).toBe(0);
    expect((await meterUsage(downgraded.id)).events).toBe(0);
  });

  it("bills sessions created before an upgrade as free and those after it on the paid plan", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const before = c.period.start - 5 * 60_000;
    await env.DB.prepare(
      "INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at) VALUES (?1, 0, 'free', NULL, 0)",
    )
      .bind(c.userId)
      .run();
    await consume([
      verdict(c.userId, { created_at: before }),
      verdict(c.userId, { created_at: c.period.start + 1 }),
    ]);
    const periods = await usagePeriods(c.userId);
    // ordered by period start: the free month begins before the paid period
    expect(periods.map((p) => [p.plan, p.period_start, p.billable_sessions, p.posted_total])).toEqual([
      ["free", calendarMonth(before).start, 1, 0],
      ["payg", c.period.start, 1, 1],
    ]);
    expect((await meterUsage(c.customerId, c.period)).value).toBe(1);
  });

  it("clears the admission flag of billable sessions once they are recorded", async () => {
    const user = uniqueId("free");
    const billable = verdict(user);
    const failed = failedVerdict(user);
    await env.DB.batch(
      [billable, failed].map((v) =>
        env.DB.prepare(
          `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, admitted_at, open)
           VALUES (?1, ?2, 'proj_1', 0, 0, 0, 1)`,
        ).bind(v.session_id, user),
      ),
    );
    await consume([billable, failed]);
    const { results } = await env.DB.prepare("SELECT session_id, open FROM sessions WHERE user_id = ?1")
      .bind(user)
      .all<{ session_id: string; open: number }>();
    const open = Object.fromEntries(results.map((r) => [r.session_id, r.open]));
    expect(open[billable.session_id]).toBe(0);
    // unbillable sessions are released by the classifier with its verdict, not here
    expect(open[failed.session_id]).toBe(1);
  });
});

describe("messages that cannot be billed as they are", () => {
  it("parks a malformed verdict at once with the reason and acks it", async () => {
    const good = verdict(uniqueId("free"));
    const result = await consume([{ v: 1, kind: "verdict", session_id: 42 }, good, "not json at all"]);
    expect(result.acked).toHaveLength(3);
    const { results } = await env.DB.prepare(
      "SELECT id, queue, message_id, error, body FROM dead_letters ORDER BY id",
    ).all<{ id: string; queue: string; message_id: string; error: string; body: string }>();
    expect(results).toHaveLength(2);
    const ids = [result.ids[0], result.ids[2]].map((id) => `aigate-verdicts:${id}`).sort();
    expect(results.map((r) => r.id)).toEqual(ids);
    for (const r of results) {
      expect(r.queue).toBe("aigate-verdicts");
      expect(r.error).toMatch(/^invalid verdict message: /);
    }
    expect(results.find((r) => r.message_id === result.ids[0])?.error).toContain("session_id");
    expect(await billableInD1(good.user_id)).toBe(1);
  });

  it("retries a paid verdict whose billing period is not known yet, then parks it after many attempts", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    await env.DB.prepare("DELETE FROM billing_periods WHERE stripe_subscription_id = ?1")
      .bind(c.subscriptionId)
      .run();
    const v = verdict(c.userId);
    const early = await consume([v], { attempts: 1 });
    expect(early.retried).toEqual(early.ids);
    expect(early.acked).toEqual([]);
    expect(await billableInD1(c.userId)).toBe(0);

    const late = await consume([v], { attempts: 8 });
    expect(late.acked).toEqual(late.ids);
    const parked = await env.DB.prepare("SELECT error FROM dead_letters WHERE id = ?1")
      .bind(`aigate-verdicts:${late.ids[0]}`)
      .first<{ error: string }>();
    expect(parked?.error).toMatch(/cannot attribute after 8 attempts: no billing period known/);
    expect(await billableInD1(c.userId)).toBe(0);
  });

  it("parks a verdict Stripe rejects, keeping its usage recorded and unconfirmed", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    await env.DB.prepare(
      "UPDATE stripe_customers SET stripe_customer_id = 'cus_doesnotexist' WHERE user_id = ?1",
    )
      .bind(c.userId)
      .run();
    const result = await consume([verdict(c.userId), verdict(c.userId)]);
    expect(result.acked).toHaveLength(2);
    const { results } = await env.DB.prepare("SELECT error FROM dead_letters").all<{ error: string }>();
    expect(results).toHaveLength(2);
    for (const r of results)
      expect(r.error).toMatch(/Stripe rejected the meter post: meter_event_customer_not_found/);
    const [period] = await usagePeriods(c.userId);
    expect(period).toMatchObject({ billable_sessions: 2, posted_total: 0, post_failures: 1 });
    expect(period?.post_error).toMatch(/No such customer/);
  });
});

describe("one Stripe call per customer", () => {
  it("acks and leaves the post to the sweep while another consumer holds the customer's meter lock", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const mark = await callMark();
    await env.DB.prepare(
      "INSERT INTO meter_locks (stripe_customer_id, holder, locked_until) VALUES (?1, 'other', ?2)",
    )
      .bind(c.customerId, Date.now() + 60_000)
      .run();
    const result = await consume([verdict(c.userId), verdict(c.userId), verdict(c.userId)]);
    expect(result.acked).toHaveLength(3);
    expect(await meterEventCalls(mark)).toBe(0);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 3, posted_total: 0 }]);

    // still locked: the sweep leaves it too
    const b = createBiller(env);
    expect((await sweep(b, Date.now())).posted).toBe(0);
    // the holder died: its lease ends and the sweep posts the current total
    await env.DB.prepare("UPDATE meter_locks SET locked_until = ?1")
      .bind(Date.now() - 1)
      .run();
    expect((await sweep(b, Date.now())).posted).toBe(1);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 3, posted_total: 3 }]);
    expect((await meterUsage(c.customerId, c.period)).value).toBe(3);
    const locks = await env.DB.prepare("SELECT count(*) AS n FROM meter_locks").first<{ n: number }>();
    expect(locks?.n).toBe(0);
  });

  it("posts one period per customer per batch and leaves the other to the sweep", async () => {
    const now = Date.now();
    const p1 = {
      start: Math.floor((now - 30 * DAY) / 1000) * 1000,
      end: Math.floor((now - 10 * 60_000) / 1000) * 1000,
    };
    const p2 = { start: p1.end, end: p1.end + 30 * DAY };
    const c = await createPaidCustomer({ plan: "payg", periods: [p1, p2] });
    const mark = await callMark();
    // one session late for the ended period (still inside Stripe's grace), two in the current one
    const result = await consume([
      verdict(c.userId, { created_at: p1.end - 60_000 }),
      verdict(c.userId, { created_at: p2.start + 60_000 }),
      verdict(c.userId, { created_at: p2.start + 120_000 }),
    ]);
    expect(result.acked).toHaveLength(3);
    expect(await meterEventCalls(mark)).toBe(1);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { period_start: p1.start, billable_sessions: 1, posted_total: 1 },
      { period_start: p2.start, billable_sessions: 2, posted_total: 0 },
    ]);
    await sweep(createBiller(env), Date.now());
    expect(await meterEventCalls(mark)).toBe(2);
    expect((await meterUsage(c.customerId, p1)).value).toBe(1);
    expect((await meterUsage(c.customerId, p2)).value).toBe(2);
  });
});

describe("cost per batch", () => {
  it("reads about the same number of D1 rows per batch whatever the customer's history", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const readsFor = async (n: number) => {
      const b = createBiller(env);
      const batch = createMessageBatch<unknown>(
        "aigate-verdicts",
        Array.from({ length: n }, () => ({
          id: uniqueId("msg"),
          timestamp: new Date(),
          attempts: 1,
          body: verdict(c.userId),
        })),
      );
      await consumeVerdicts(b, batch.messages, Date.now());
      return b.d1.rowsRead;
    };
    const early = await readsFor(10);
    for (let i = 0; i < 10; i++) await readsFor(100); // 1000 sessions of history
    const late = await readsFor(10);
    expect(await billableInD1(c.userId)).toBe(1020);
    // a scan of the customer's sessions would read 1000+ more rows
    expect(late).toBeLessThan(early + 50);
  });
});
