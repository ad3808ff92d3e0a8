import { env } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { createBiller } from "./config";
import { postedRecently } from "./posting";
import { sweep } from "./sweep";
import {
  callMark,
  consume,
  createPaidCustomer,
  judge,
  meterEventCalls,
  meterUsage,
  setupCatalog,
  usagePeriods,
} from "./test/support";

const withInterval = (seconds: number): Env => ({ ...env, STRIPE_POST_INTERVAL_SECONDS: String(seconds) });

beforeEach(async () => {
  await setupCatalog();
});

describe("posting interval", () => {
  it("posts a customer's open series at most once per interval; the sweep posts what waited", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const slow = withInterval(60);
    const mark = await callMark();
    const t0 = Date.now();

    await consume([(await judge(c.userId, 3)).message], { env: slow, now: t0 });
    const later = await consume([(await judge(c.userId, 2)).message], { env: slow, now: t0 + 30_000 });
    // recorded and acked, but not posted yet: the first post was less than a minute ago
    expect(later.acked).toHaveLength(1);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 5, posted_total: 3 }]);
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(3);

    const b = createBiller(slow);
    // the sweep takes its turn a little early (cron runs are about a minute apart), never earlier
    await sweep(b, t0 + 45_000);
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(3);
    await sweep(b, t0 + 50_000);
    expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(5);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 5, posted_total: 5 }]);
    expect(await meterEventCalls(mark)).toBe(2);
  });

  it("waits only for open series, never for an ended one or a repair", () => {
    const now = 1_000_000;
    const open = { posted_at: now - 1000, period_end: now + 1000 };
    expect(postedRecently(open, now, { minIntervalMs: 60_000 })).toBe(true);
    expect(postedRecently(open, now, { minIntervalMs: 1000 })).toBe(false);
    expect(postedRecently(open, now, { minIntervalMs: 0 })).toBe(false);
    expect(postedRecently(open, now, { minIntervalMs: 60_000, repair: true })).toBe(false);
    expect(postedRecently({ posted_at: null, period_end: now + 1000 }, now, { minIntervalMs: 60_000 })).toBe(
      false,
    );
    expect(postedRecently({ posted_at: now - 1000, period_end: now }, now, { minIntervalMs: 60_000 })).toBe(
      false,
    );
  });
});
