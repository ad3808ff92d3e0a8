import { env } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { createBiller } from "./config";
import { postedRecently } from "./posting";
import { sweep } from "./sweep";
import {
  callMark,
  consume,
  createPaidCustomer,
  meterEventCalls,
  meterUsage,
  setupCatalog,
  usagePeriods,
  verdict,
} from "./test/support";

const withInterval = (seconds: number): Env => ({ ...env, STRIPE_POST_INTERVAL_SECONDS: String(seconds) });

beforeEach(async () => {
  await setupCatalog();
});

describe("posting interval", () => {
  it("posts a customer's open period at most once per interval; the sweep posts what waited", async () => {
    const c = await createPaidCustomer({ plan: "payg" });
    const slow = withInterval(60);
    const mark = await callMark();

    await consume(
      Array.from({ length: 3 }, () => verdict(c.userId)),
      { env: slow },
    );
    const later = await consume(
      Array.from({ length: 2 }, () => verdict(c.userId)),
      { env: slow },
    );
    // recorded and acked, but not posted yet: the first post was less than a minute ago
    expect(later.acked).toHaveLength(2);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 5, posted_total: 3 }]);
    expect((await meterUsage(c.customerId, c.period)).value).toBe(3);

    const b = createBiller(slow);
    await sweep(b, Date.now()); // too early for this customer
    expect((await meterUsage(c.customerId, c.period)).value).toBe(3);
    await sweep(b, Date.now() + 60_000);
    expect((await meterUsage(c.customerId, c.period)).value).toBe(5);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 5, posted_total: 5 }]);
    expect(await meterEventCalls(mark)).toBe(2);
  });

  it("waits only for open periods, never for an ended one or a repair", () => {
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
