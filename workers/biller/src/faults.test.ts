/**
 * Faults injected on purpose (local queues and the emulator never produce them by themselves):
 * every scenario ends with Stripe's meter total exactly equal to the billable sessions in D1.
 */
import { env } from "cloudflare:test";
import type { UsageMessage } from "@aigate/shared";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createBiller } from "./config";
import { sweep } from "./sweep";
import {
  billableInD1,
  callMark,
  consume,
  createPaidCustomer,
  emulator,
  failingDb,
  judge,
  meterEventCalls,
  meterUsage,
  type PaidCustomer,
  setupCatalog,
  tick,
  usagePeriods,
} from "./test/support";

const METER_EVENTS = "/v1/billing/meter_events";

beforeEach(async () => {
  await setupCatalog();
});

afterEach(async () => {
  const emu = emulator();
  await emu.clearFaults();
  const clock = await emu.clock();
  if (clock.offset_seconds !== 0) await emu.advanceClock(-clock.offset_seconds);
});

async function expectExact(c: PaidCustomer) {
  const billable = await billableInD1(c.userId);
  expect((await meterUsage(c.customerId, c.plan, c.period)).value).toBe(billable);
  expect(await usagePeriods(c.userId)).toMatchObject([
    { billable_sessions: billable, posted_total: billable },
  ]);
  return billable;
}

function message(run: { message: UsageMessage | null }): UsageMessage {
  if (!run.message) throw new Error("no paid series grew");
  return run.message;
}

describe("Stripe failures", () => {
  it("retries the message through a 429 storm longer than the SDK's retries, then posts the exact total", async () => {
    const c = await createPaidCustomer();
    const run = await judge(c.userId, 6);
    // the SDK makes 3 attempts per call (2 retries): 5 rate-limited answers outlast one delivery
    await emulator().addFault({ status: 429, count: 5, path_prefix: METER_EVENTS });
    const first = await consume([run.message]);
    expect(first.retried).toEqual(first.ids);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { billable_sessions: 6, posted_total: 0, post_failures: 1 },
    ]);
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(0);

    const second = await consume([run.message], { attempts: 2, ids: first.ids });
    expect(second.acked).toEqual(first.ids);
    expect((await emulator().faults()).faults).toEqual([]);
    expect(await expectExact(c)).toBe(6);
  });

  it("rides out 500s within the SDK's retries and acks on the first delivery", async () => {
    const c = await createPaidCustomer();
    const run = await judge(c.userId, [{}, {}, { billable: false }]);
    await emulator().addFault({ status: 500, count: 2, path_prefix: METER_EVENTS });
    const result = await consume([run.message]);
    expect(result.acked).toHaveLength(1);
    expect(await expectExact(c)).toBe(2);
  });

  it("retries after 503s outlast the SDK's retries and converges once Stripe is back", async () => {
    const c = await createPaidCustomer();
    const run = await judge(c.userId, 3);
    await emulator().addFault({ status: 503, count: 3, path_prefix: METER_EVENTS });
    const first = await consume([run.message]);
    expect(first.retried).toHaveLength(1);
    // more usage is recorded before the retry: the post carries the current total
    const more = await judge(c.userId, 1);
    const second = await consume([more.message, run.message], { attempts: 2 });
    expect(second.acked).toHaveLength(2);
    expect(await expectExact(c)).toBe(4);
  });
});

describe("crashes", () => {
  it("converges when the worker dies between Stripe's success and our D1 write", async () => {
    const c = await createPaidCustomer();
    const run = await judge(c.userId, 4);
    const crash = failingDb(env.DB, /SET posted_total/);
    const first = await consume([run.message], { env: { ...env, DB: crash.db } });
    expect(crash.failures()).toBe(1);
    expect(first.retried).toHaveLength(1);
    // Stripe has the total, D1 does not know it; the timestamp was reserved before the call
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(4);
    const [before] = await usagePeriods(c.userId);
    expect(before).toMatchObject({ billable_sessions: 4, posted_total: 0 });
    expect(before?.last_meter_ts).not.toBeNull();

    const second = await consume([run.message], { attempts: 2, ids: first.ids });
    expect(second.acked).toHaveLength(1);
    expect(await expectExact(c)).toBe(4);
    // the re-post carries a later timestamp, hence a new identifier: counted, and `last` keeps 4
    const [after] = await usagePeriods(c.userId);
    expect(after?.last_meter_ts).toBeGreaterThan(before?.last_meter_ts ?? 0);
    expect(await meterUsage(c.customerId, "payg", c.period)).toMatchObject({ value: 4, events: 2 });
  });

  it("records a post Stripe already holds (same identifier: same total at the same timestamp) as posted", async () => {
    const c = await createPaidCustomer();
    const run = await judge(c.userId, 3);
    const crash = failingDb(env.DB, /SET posted_total/);
    const now = tick();
    await consume([run.message], { env: { ...env, DB: crash.db }, now });
    const [reserved] = await usagePeriods(c.userId);
    // the reservation taken back (as if it had never been written): the same post is made again
    await env.DB.prepare("UPDATE usage_periods SET last_meter_ts = last_meter_ts - 1 WHERE user_id = ?1")
      .bind(c.userId)
      .run();
    const again = await consume([run.message], { now });
    expect(again.acked).toHaveLength(1);
    expect((await usagePeriods(c.userId))[0]?.last_meter_ts).toBe(reserved?.last_meter_ts);
    expect(await meterUsage(c.customerId, "payg", c.period)).toMatchObject({
      value: 3,
      events: 1,
      duplicates_ignored: 1,
    });
    expect(await expectExact(c)).toBe(3);
  });

  it("converges when the worker dies before taking the meter lock", async () => {
    const c = await createPaidCustomer();
    const run = await judge(c.userId, 3);
    const crash = failingDb(env.DB, /INSERT INTO meter_locks/);
    const first = await consume([run.message], { env: { ...env, DB: crash.db } });
    expect(first.retried).toHaveLength(1);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 3, posted_total: 0 }]);
    await consume([run.message], { attempts: 2 });
    expect(await expectExact(c)).toBe(3);
  });

  it("converges when the timestamp reservation fails, releasing the lock on the way out", async () => {
    const c = await createPaidCustomer();
    const crash = failingDb(env.DB, /RETURNING billable_sessions/);
    const run = await judge(c.userId, 2);
    const mark = await callMark();
    const first = await consume([run.message], { env: { ...env, DB: crash.db } });
    expect(first.retried).toHaveLength(1);
    expect(await meterEventCalls(mark)).toBe(0);
    // the lock was released, so the redelivery posts at once
    const locks = await env.DB.prepare("SELECT count(*) AS n FROM meter_locks").first<{ n: number }>();
    expect(locks?.n).toBe(0);
    await consume([run.message], { attempts: 2 });
    expect(await expectExact(c)).toBe(2);
  });

  it("loses nothing when the usage message itself is lost: the minute sweep posts the series", async () => {
    const c = await createPaidCustomer();
    await judge(c.userId, 5); // the classifier's send failed
    const result = await sweep(createBiller(env), tick());
    expect(result).toMatchObject({ attempted: 1, posted: 1 });
    expect(await expectExact(c)).toBe(5);
  });
});

describe("replays of any age", () => {
  it("does not double count a total re-posted after Stripe's 24 h identifier window (48 h later)", async () => {
    const c = await createPaidCustomer();
    const run = await judge(c.userId, 5);
    const crash = failingDb(env.DB, /SET posted_total/);
    await consume([run.message], { env: { ...env, DB: crash.db } });
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(5);

    await emulator().advanceClock(48 * 3600);
    const replay = await consume([run.message], { attempts: 3 });
    expect(replay.acked).toHaveLength(1);
    // Stripe took the total again as a new event: with `last` it changes nothing
    expect(await meterUsage(c.customerId, "payg", c.period)).toMatchObject({
      value: 5,
      events: 2,
      duplicates_ignored: 0,
    });
    expect(await expectExact(c)).toBe(5);
  });

  it("makes no Stripe call when dead-lettered messages are replayed 48 h after they were billed", async () => {
    const c = await createPaidCustomer();
    const run = await judge(c.userId, 3);
    await consume([run.message]);
    await emulator().advanceClock(48 * 3600);
    const mark = await callMark();
    const replay = await consume([run.message, run.message]);
    expect(replay.acked).toHaveLength(2);
    expect(await meterEventCalls(mark)).toBe(0);
    expect(await expectExact(c)).toBe(3);
  });
});

describe("any order, any duplicates, any crashes", () => {
  it("never puts Stripe's total above the billable sessions, and ends exactly equal", async () => {
    const crashes = [/SET posted_total/, /INSERT INTO meter_locks/, /RETURNING billable_sessions/];
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            // sessions judged before this delivery, per customer
            judged: fc.tuple(fc.nat(4), fc.nat(4)),
            picks: fc.array(fc.nat(20), { minLength: 1, maxLength: 8 }),
            crash: fc.option(fc.nat(crashes.length - 1), { nil: null }),
          }),
          { minLength: 1, maxLength: 5 },
        ),
        async (steps) => {
          const customers = [
            await createPaidCustomer({ plan: "payg" }),
            await createPaidCustomer({ plan: "pro" }),
          ];
          const sent: UsageMessage[] = [];
          for (const { judged, picks, crash } of steps) {
            for (const [k, n] of judged.entries()) {
              const c = customers[k];
              if (c && n > 0) sent.push(message(await judge(c.userId, n)));
            }
            if (sent.length === 0) continue;
            const pattern = crash === null ? undefined : crashes[crash];
            const db = pattern ? failingDb(env.DB, pattern).db : env.DB;
            await consume(
              picks.map((i) => sent[i % sent.length]),
              { env: { ...env, DB: db } },
            );
            for (const c of customers) {
              expect((await meterUsage(c.customerId, c.plan, c.period)).value).toBeLessThanOrEqual(
                await billableInD1(c.userId),
              );
            }
          }
          // every message still retried is eventually redelivered, in any order; the sweep takes
          // whatever was deferred
          await consume([...sent].reverse(), { attempts: 2 });
          await sweep(createBiller(env), tick());
          for (const c of customers) {
            const judged = await billableInD1(c.userId);
            if (judged > 0) expect(await expectExact(c)).toBe(judged);
            else expect((await meterUsage(c.customerId, c.plan, c.period)).events).toBe(0);
          }
        },
      ),
      { numRuns: 12 },
    );
  });
});
