/**
 * Faults injected on purpose (local queues and the emulator never produce them by themselves):
 * every scenario ends with Stripe's meter total exactly equal to the billable sessions in D1.
 */
import { env } from "cloudflare:test";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  billableInD1,
  callMark,
  consume,
  createPaidCustomer,
  emulator,
  failedVerdict,
  failingDb,
  meterEventCalls,
  meterUsage,
  type PaidCustomer,
  setupCatalog,
  usagePeriods,
  verdict,
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
  expect((await meterUsage(c.customerId, c.period)).value).toBe(billable);
  expect(await usagePeriods(c.userId)).toMatchObject([
    { billable_sessions: billable, posted_total: billable },
  ]);
  return billable;
}

describe("Stripe failures", () => {
  it("retries the messages through a 429 storm longer than the SDK's retries, then posts the exact total", async () => {
    const c = await createPaidCustomer();
    const bodies = Array.from({ length: 6 }, () => verdict(c.userId));
    // the SDK makes 3 attempts per call (2 retries): 5 rate-limited answers outlast one delivery
    await emulator().addFault({ status: 429, count: 5, path_prefix: METER_EVENTS });
    const first = await consume(bodies);
    expect(first.retried.sort()).toEqual([...first.ids].sort());
    expect(await usagePeriods(c.userId)).toMatchObject([
      { billable_sessions: 6, posted_total: 0, post_failures: 1 },
    ]);
    expect((await meterUsage(c.customerId, c.period)).value).toBe(0);

    const second = await consume(bodies, { attempts: 2, ids: first.ids });
    expect(second.acked.sort()).toEqual([...first.ids].sort());
    expect((await emulator().faults()).faults).toEqual([]);
    expect(await expectExact(c)).toBe(6);
  });

  it("rides out 500s within the SDK's retries and acks on the first delivery", async () => {
    const c = await createPaidCustomer();
    await emulator().addFault({ status: 500, count: 2, path_prefix: METER_EVENTS });
    const result = await consume([verdict(c.userId), verdict(c.userId), failedVerdict(c.userId)]);
    expect(result.acked).toHaveLength(3);
    expect(await expectExact(c)).toBe(2);
  });

  it("retries after 503s outlast the SDK's retries and converges once Stripe is back", async () => {
    const c = await createPaidCustomer();
    const bodies = [verdict(c.userId), verdict(c.userId), verdict(c.userId)];
    await emulator().addFault({ status: 503, count: 3, path_prefix: METER_EVENTS });
    const first = await consume(bodies);
    expect(first.retried).toHaveLength(3);
    // more usage arrives before the retry: the post carries the current total
    const more = [verdict(c.userId), ...bodies];
    const second = await consume(more, { attempts: 2 });
    expect(second.acked).toHaveLength(4);
    expect(await expectExact(c)).toBe(4);
  });
});

describe("crashes", () => {
  it("converges when the worker dies between Stripe's success and our D1 write", async () => {
    const c = await createPaidCustomer();
    const bodies = Array.from({ length: 4 }, () => verdict(c.userId));
    const crash = failingDb(env.DB, /SET posted_total/);
    const first = await consume(bodies, { env: { ...env, DB: crash.db } });
    expect(crash.failures()).toBe(1);
    expect(first.retried).toHaveLength(4);
    // Stripe has the total, D1 does not know it
    expect((await meterUsage(c.customerId, c.period)).value).toBe(4);
    const [before] = await usagePeriods(c.userId);
    expect(before).toMatchObject({ billable_sessions: 4, posted_total: 0 });
    expect(before?.last_meter_ts).not.toBeNull();

    const second = await consume(bodies, { attempts: 2, ids: first.ids });
    expect(second.acked).toHaveLength(4);
    expect(await expectExact(c)).toBe(4);
    // the re-post of the same total was recognised by its identifier, not counted again
    expect(await meterUsage(c.customerId, c.period)).toMatchObject({
      value: 4,
      events: 1,
      duplicates_ignored: 1,
    });
  });

  it("converges when the worker dies after recording, before taking the meter lock", async () => {
    const c = await createPaidCustomer();
    const bodies = Array.from({ length: 3 }, () => verdict(c.userId));
    const crash = failingDb(env.DB, /INSERT INTO meter_locks/);
    const first = await consume(bodies, { env: { ...env, DB: crash.db } });
    expect(first.retried).toHaveLength(3);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 3, posted_total: 0 }]);
    await consume(bodies, { attempts: 2 });
    expect(await expectExact(c)).toBe(3);
  });

  it("converges when the recording transaction fails, leaving nothing half-written", async () => {
    const c = await createPaidCustomer();
    const bodies = Array.from({ length: 3 }, () => verdict(c.userId));
    const crash = failingDb(env.DB, /INSERT OR IGNORE INTO session_usage/);
    const first = await consume(bodies, { env: { ...env, DB: crash.db } });
    expect(first.retried).toHaveLength(3);
    expect(await billableInD1(c.userId)).toBe(0);
    expect(await usagePeriods(c.userId)).toEqual([]);
    await consume(bodies, { attempts: 2 });
    expect(await expectExact(c)).toBe(3);
  });

  it("converges when the meter lock was left behind by a crashed holder", async () => {
    const c = await createPaidCustomer();
    const crash = failingDb(env.DB, /RETURNING billable_sessions/);
    const bodies = [verdict(c.userId), verdict(c.userId)];
    const first = await consume(bodies, { env: { ...env, DB: crash.db } });
    expect(first.retried).toHaveLength(2);
    // the lock was released on the way out, so the redelivery posts at once
    const locks = await env.DB.prepare("SELECT count(*) AS n FROM meter_locks").first<{ n: number }>();
    expect(locks?.n).toBe(0);
    await consume(bodies, { attempts: 2 });
    expect(await expectExact(c)).toBe(2);
  });
});

describe("replays of any age", () => {
  it("does not double count a total re-posted after Stripe's 24 h identifier window (48 h later)", async () => {
    const c = await createPaidCustomer();
    const bodies = Array.from({ length: 5 }, () => verdict(c.userId));
    const crash = failingDb(env.DB, /SET posted_total/);
    await consume(bodies, { env: { ...env, DB: crash.db } });
    expect((await meterUsage(c.customerId, c.period)).value).toBe(5);

    await emulator().advanceClock(48 * 3600);
    const replay = await consume(bodies, { attempts: 3 });
    expect(replay.acked).toHaveLength(5);
    // Stripe took the same identifier again as a new event: with `last` it changes nothing
    expect(await meterUsage(c.customerId, c.period)).toMatchObject({
      value: 5,
      events: 2,
      duplicates_ignored: 0,
    });
    expect(await expectExact(c)).toBe(5);
  });

  it("makes no Stripe call when dead-lettered verdicts are replayed 48 h after they were billed", async () => {
    const c = await createPaidCustomer();
    const bodies = Array.from({ length: 3 }, () => verdict(c.userId));
    await consume(bodies);
    await emulator().advanceClock(48 * 3600);
    const mark = await callMark();
    const replay = await consume([...bodies, ...bodies]);
    expect(replay.acked).toHaveLength(6);
    expect(await meterEventCalls(mark)).toBe(0);
    expect(await expectExact(c)).toBe(3);
  });
});

describe("any order, any duplicates, any crashes", () => {
  it("never puts Stripe's total above the billable sessions, and ends exactly equal", async () => {
    const crashes = [
      /SET posted_total/,
      /INSERT INTO meter_locks/,
      /INSERT OR IGNORE INTO session_usage/,
      /RETURNING billable_sessions/,
    ];
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            picks: fc.array(fc.nat(13), { minLength: 1, maxLength: 8 }),
            crash: fc.option(fc.nat(crashes.length - 1), { nil: null }),
          }),
          { minLength: 1, maxLength: 5 },
        ),
        async (batches) => {
          const customers = [
            await createPaidCustomer({ plan: "payg" }),
            await createPaidCustomer({ plan: "pro" }),
          ];
          const pool = customers.flatMap((c) => [
            ...Array.from({ length: 6 }, () => verdict(c.userId)),
            failedVerdict(c.userId),
          ]);
          for (const { picks, crash } of batches) {
            const pattern = crash === null ? undefined : crashes[crash];
            const db = pattern ? failingDb(env.DB, pattern).db : env.DB;
            await consume(
              picks.map((i) => pool[i]),
              { env: { ...env, DB: db } },
            );
            for (const c of customers) {
              expect((await meterUsage(c.customerId, c.period)).value).toBeLessThanOrEqual(
                await billableInD1(c.userId),
              );
            }
          }
          // every message still retried is eventually redelivered: all of them, in any order
          await consume([...pool].reverse(), { attempts: 2 });
          for (const c of customers) {
            expect(await billableInD1(c.userId)).toBe(6);
            await expectExact(c);
          }
        },
      ),
      { numRuns: 12 },
    );
  });
});
