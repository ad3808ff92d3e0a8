import { env } from "cloudflare:test";
import { calendarMonth } from "@aigate/shared";
import {
  endSeriesAt,
  reattributeIfChanged,
  shortenSeries,
  upsertBillingPeriod,
  upsertPlanHistory,
} from "@aigate/shared/stripeSync/queries";
import { beforeEach, describe, expect, it } from "vitest";
import { createBiller } from "./config";
import { moveSession, sessionsBilledFrom } from "./queries";
import { REATTRIBUTE_SESSIONS, reattribute } from "./reattribute";
import { sweep } from "./sweep";
import {
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
  type PaidCustomer,
  sessionsOf,
  setupCatalog,
  tick,
  uniqueId,
  usagePeriods,
} from "./test/support";

beforeEach(async () => {
  await setupCatalog();
});

/** Series keyed by user and plan (each test's user has one window per plan). */
async function seriesOf(userId: string, plan: string) {
  return (await usagePeriods(userId)).find((p) => p.plan === plan);
}

/** Moves per D1 transaction in reattribute.ts. */
const MOVES_PER_BATCH = 30;

async function requests() {
  const { results } = await env.DB.prepare("SELECT user_id, from_ms FROM reattributions").all();
  return results;
}

/** Asks for re-attribution as the webhooks' convergence does, after a change reaching back to `from`. */
async function requestReattribution(userId: string, from: number) {
  await env.DB.prepare(
    `INSERT INTO reattributions (user_id, from_ms, requested_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (user_id) DO UPDATE SET from_ms = min(from_ms, excluded.from_ms), requested_at = excluded.requested_at`,
  )
    .bind(userId, from, Date.now())
    .run();
}

/** Every rank of a series' billable sessions is given once; the count is the number of its sessions. */
async function expectConsistent(userId: string) {
  const sessions = await sessionsOf(userId);
  for (const series of await usagePeriods(userId)) {
    const mine = sessions.filter(
      (s) => s.billable === 1 && s.plan === series.plan && s.period_start === series.period_start,
    );
    expect(series.billable_sessions).toBe(mine.length);
    const ranks = mine.map((s) => s.seq);
    expect(new Set(ranks).size).toBe(ranks.length);
    for (const r of ranks) {
      expect(r).toBeGreaterThanOrEqual(1);
      expect(r).toBeLessThanOrEqual(series.seq_top);
    }
  }
}

/**
 * An immediate plan change at `change`, as the convergence code writes it when its webhook comes:
 * the period ends there and the next starts, the plan-history row of the new plan, the running
 * series cut at the change, and the re-attribution request.
 */
async function changePlanAt(c: PaidCustomer, change: number, to: "payg" | "pro") {
  const db = env.DB;
  const now = Date.now();
  await db.batch([
    upsertBillingPeriod(db, c.subscriptionId, { start: c.period.start, end: change }),
    shortenSeries(db, c.subscriptionId, { start: c.period.start, end: change }),
    upsertBillingPeriod(db, c.subscriptionId, { start: change, end: change + 30 * DAY }),
    upsertPlanHistory(
      db,
      c.userId,
      {
        effective_from: change,
        plan: to,
        stripe_subscription_id: c.subscriptionId,
        stripe_price_id: meteredPriceId(to),
        meter_event_name: meterOf(to),
      },
      now,
    ),
    ...reattributeIfChanged(db, c.userId, change, now),
    endSeriesAt(db, c.subscriptionId, change),
  ]);
}

describe("re-attribution", () => {
  it("moves sessions judged before the subscription was recorded (the upgrade race) to the paid series and posts it", async () => {
    const userId = uniqueId("user");
    const at = Date.now() - 5 * MIN;
    await judge(userId, [{ at }, { at: at + 1000 }, { at: at + 2000 }, { at: at + 3000, billable: false }]);
    const month = calendarMonth(at);
    expect(await usagePeriods(userId)).toMatchObject([{ plan: "free", billable_sessions: 3 }]);
    // the subscription's webhooks arrive: plan history from Checkout's completion on
    const c = await createPaidCustomer({ userId, plan: "payg", periodStart: at - MIN });
    await requestReattribution(userId, at - MIN);

    const result = await sweep(createBiller(env), tick());
    expect(result).toMatchObject({ moved: 4 });
    expect(await seriesOf(userId, "payg")).toMatchObject({
      period_start: at - MIN,
      billable_sessions: 3,
      seq_top: 3,
      posted_total: 3,
    });
    expect(await seriesOf(userId, "free")).toMatchObject({ period_start: month.start, billable_sessions: 0 });
    expect((await sessionsOf(userId)).map((s) => [s.plan, s.seq])).toEqual([
      ["payg", 1],
      ["payg", 2],
      ["payg", 3],
      ["payg", null],
    ]);
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(3);
    expect(await requests()).toEqual([]);
    await expectConsistent(userId);
  });

  it("records the spend alert thresholds a move makes the paid series cross, once", async () => {
    const userId = uniqueId("user");
    const at = Date.now() - 5 * MIN;
    await judge(userId, [{ at }, { at: at + 1000 }, { at: at + 2000 }]);
    await env.DB.prepare(
      `INSERT INTO spend_limits (user_id, monthly_cap_cents, alert_thresholds, updated_at) VALUES (?1, 30, '[50,100]', 0)`,
    )
      .bind(userId)
      .run();
    await createPaidCustomer({ userId, plan: "payg", periodStart: at - MIN });
    await requestReattribution(userId, at - MIN);
    await sweep(createBiller(env), tick());
    await requestReattribution(userId, at - MIN);
    await sweep(createBiller(env), tick());
    const { results } = await env.DB.prepare(
      "SELECT plan, period_start, threshold, usage_cents, sessions FROM spend_alerts WHERE user_id = ?1 ORDER BY threshold",
    )
      .bind(userId)
      .all();
    expect(results).toEqual([
      { plan: "payg", period_start: at - MIN, threshold: 50, usage_cents: 30, sessions: 3 },
      { plan: "payg", period_start: at - MIN, threshold: 100, usage_cents: 30, sessions: 3 },
    ]);
  });

  it("attributes paid sessions judged without a series once the subscription's period is known", async () => {
    const c = await createPaidCustomer({ plan: "pro" });
    const { results: periods } = await env.DB.prepare(
      "DELETE FROM billing_periods WHERE stripe_subscription_id = ?1 RETURNING period_start, period_end",
    )
      .bind(c.subscriptionId)
      .all<{ period_start: number; period_end: number }>();
    const at = Date.now() - MIN;
    const run = await judge(c.userId, 2, { at });
    expect(run.message).toBeNull();
    expect((await sessionsOf(c.userId)).map((s) => s.plan)).toEqual([null, null]);
    expect(await requests()).toEqual([{ user_id: c.userId, from_ms: at }]);
    // not attributable yet: left alone, the request done (the period's webhook asks again)
    expect((await reattribute(createBiller(env), tick())).moved).toBe(0);
    expect(await requests()).toEqual([]);

    const period = periods[0];
    if (!period) throw new Error("no period");
    await env.DB.batch([
      upsertBillingPeriod(env.DB, c.subscriptionId, { start: period.period_start, end: period.period_end }),
      ...reattributeIfChanged(env.DB, c.userId, period.period_start, Date.now()),
    ]);
    const mark = await callMark();
    expect((await reattribute(createBiller(env), tick())).moved).toBe(2);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { plan: "pro", period_start: c.period.start, billable_sessions: 2, posted_total: 2 },
    ]);
    expect(await meterEventCalls(mark)).toBe(1);
    await expectConsistent(c.userId);
  });

  it("moves sessions billed after an immediate plan change to the new plan's series; the old one keeps its window", async () => {
    const start = Math.floor((Date.now() - 5 * DAY) / 1000) * 1000;
    const c = await createPaidCustomer({ plan: "payg", periodStart: start, periodEnd: start + 30 * DAY });
    const change = Math.floor((Date.now() - 10 * MIN) / 1000) * 1000;
    // posted before the change (the biller's clock, given)
    await consume([(await judge(c.userId, 3, { at: change - DAY })).message], { now: change - 5 * MIN });
    // judged as payg after the change but before its webhook came, and posted
    await consume([(await judge(c.userId, 2, { at: change + MIN })).message]);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { plan: "payg", billable_sessions: 5, posted_total: 5 },
    ]);

    await changePlanAt(c, change, "pro");
    const b = createBiller(env);
    expect((await sweep(b, tick())).moved).toBe(2);
    const [payg, pro] = await usagePeriods(c.userId);
    expect(pro).toMatchObject({
      plan: "pro",
      period_start: change,
      billable_sessions: 2,
      seq_top: 2,
      posted_total: 2,
    });
    expect((await meterUsage(c.customerId, "pro")).value).toBe(2);
    // payg's window ends at the change; its last post (5, made after the change) lies past it, so no
    // lower total can follow it inside the window: Stripe billed what was posted before the change,
    // and the series waits to be frozen with that quantity
    expect(payg).toMatchObject({ plan: "payg", period_end: change, billable_sessions: 3, posted_total: 5 });
    const paygEvents = await meterEvents(c.customerId, "payg");
    expect(paygEvents.map((e) => e.value)).toEqual([3, 5]);
    for (const e of paygEvents) expect(e.timestamp).toBeGreaterThanOrEqual(start / 1000);
    expect((await meterUsage(c.customerId, "payg", { start, end: change })).value).toBe(3);
    await expectConsistent(c.userId);
  });

  it("posts a total that went down at a later timestamp inside its window: the later post wins", async () => {
    const start = Math.floor((Date.now() - 5 * DAY) / 1000) * 1000;
    const c = await createPaidCustomer({ plan: "payg", periodStart: start, periodEnd: start + 30 * DAY });
    const change = Math.floor((Date.now() - 2 * DAY) / 1000) * 1000;
    // the sessions billed after the change were posted while the change was still unknown, with a
    // timestamp the shortened window still holds (the biller's clock, given)
    const run = await judge(c.userId, [{ at: change - DAY }, { at: change - DAY }, { at: change + MIN }]);
    await consume([run.message], { now: change - 3 * MIN });
    expect((await meterUsage(c.customerId, "payg", { start, end: change })).value).toBe(3);

    await changePlanAt(c, change, "pro");
    expect((await sweep(createBiller(env), tick())).moved).toBe(1);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { plan: "payg", billable_sessions: 2, posted_total: 2 },
      { plan: "pro", billable_sessions: 1, posted_total: 1 },
    ]);
    const paygEvents = await meterEvents(c.customerId, "payg");
    expect(paygEvents.map((e) => e.value)).toEqual([3, 2]);
    expect(paygEvents[1]?.timestamp).toBeGreaterThan(paygEvents[0]?.timestamp ?? 0);
    expect(paygEvents[1]?.timestamp).toBeLessThan(change / 1000);
    expect((await meterUsage(c.customerId, "payg", { start, end: change })).value).toBe(2);
    expect((await meterUsage(c.customerId, "pro", { start: change, end: change + 30 * DAY })).value).toBe(1);
  });

  it("leaves sessions of a frozen series where Stripe billed them", async () => {
    const start = Math.floor((Date.now() - 5 * DAY) / 1000) * 1000;
    const c = await createPaidCustomer({ plan: "payg", periodStart: start, periodEnd: start + 30 * DAY });
    const change = Math.floor((Date.now() - 2 * DAY) / 1000) * 1000;
    await judge(c.userId, 2, { at: change + MIN });
    // Stripe invoiced the window (with those sessions) before the change reached us
    await env.DB.prepare("UPDATE usage_periods SET frozen_at = 1, stripe_billed = 2 WHERE user_id = ?1")
      .bind(c.userId)
      .run();
    await changePlanAt(c, change, "pro");
    const result = await reattribute(createBiller(env), tick());
    expect(result).toMatchObject({ moved: 0, kept: 2 });
    expect(await usagePeriods(c.userId)).toMatchObject([
      // a frozen series keeps its window and its sessions
      { plan: "payg", period_end: start + 30 * DAY, billable_sessions: 2, stripe_billed: 2 },
    ]);
    expect((await sessionsOf(c.userId)).map((s) => [s.plan, s.period_start])).toEqual([
      ["payg", start],
      ["payg", start],
    ]);
  });

  it("moves each session once: every move is guarded by the attribution it was planned from", async () => {
    const userId = uniqueId("user");
    const at = Date.now() - 5 * MIN;
    await judge(userId, 3, { at });
    const c = await createPaidCustomer({ userId, plan: "payg", periodStart: at - MIN });
    const [planned] = await sessionsBilledFrom(env.DB, userId, 0, 10);
    if (!planned) throw new Error("no session");
    await requestReattribution(userId, at - MIN);
    // two runs at once (a slow cron run overlapping the next): each session moves once
    await Promise.all([reattribute(createBiller(env), tick()), reattribute(createBiller(env), tick())]);
    expect(await seriesOf(userId, "payg")).toMatchObject({ billable_sessions: 3, seq_top: 3 });
    expect(await seriesOf(userId, "free")).toMatchObject({ billable_sessions: 0 });
    // a move planned from the old attribution changes nothing any more
    const target = { plan: "pro" as const, period_start: c.period.start };
    await env.DB.batch(moveSession(env.DB, planned, target, Date.now()));
    expect(await seriesOf(userId, "payg")).toMatchObject({ billable_sessions: 3, seq_top: 3 });
    expect(await seriesOf(userId, "free")).toMatchObject({ billable_sessions: 0 });
    await expectConsistent(userId);
  });

  it("works through many sessions in chunks, resuming where it stopped, also after a crash", async () => {
    const userId = uniqueId("user");
    const t0 = Date.now() - 2 * DAY;
    const total = REATTRIBUTE_SESSIONS + 100;
    for (let i = 0; i < total; i += 200) {
      await judge(
        userId,
        Array.from({ length: Math.min(200, total - i) }, (_, k) => ({ at: t0 + (i + k) * 1000 })),
      );
    }
    await createPaidCustomer({ userId, plan: "payg", periodStart: t0 - MIN });
    await requestReattribution(userId, t0 - MIN);

    // the first run dies after two chunks of moves: what moved is moved whole, the request stays
    const crash = failingDb(env.DB, /UPDATE sessions SET plan/, 1, 2);
    await expect(reattribute(createBiller({ ...env, DB: crash.db }), tick())).rejects.toThrow(/injected/);
    expect(crash.failures()).toBe(1);
    const movedBefore = (await seriesOf(userId, "payg"))?.billable_sessions ?? 0;
    expect(movedBefore).toBe(2 * MOVES_PER_BATCH);
    expect(await requests()).toEqual([{ user_id: userId, from_ms: t0 - MIN }]);
    await expectConsistent(userId);

    // the next run takes up to REATTRIBUTE_SESSIONS sessions (those moved already stay) and goes on later
    const first = await reattribute(createBiller(env), tick());
    expect(first.moved).toBe(REATTRIBUTE_SESSIONS - movedBefore);
    expect(await requests()).toEqual([{ user_id: userId, from_ms: t0 + (REATTRIBUTE_SESSIONS - 1) * 1000 }]);
    await expectConsistent(userId);
    const second = await reattribute(createBiller(env), tick());
    expect(second.moved).toBe(100);
    expect(await requests()).toEqual([]);
    expect(await seriesOf(userId, "payg")).toMatchObject({ billable_sessions: total, seq_top: total });
    expect(await seriesOf(userId, "free")).toMatchObject({ billable_sessions: 0 });
    await expectConsistent(userId);
  });
});
