import fc from "fast-check";
import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import {
  classifyStripeError,
  MAX_FUTURE_SECONDS,
  meterIdentifier,
  meterTimestamp,
  nextPostAt,
  POST_END_RESERVE_SECONDS,
  retryDelaySeconds,
  summaryWindow,
} from "./meter";

const MIN = 60_000;
const DAY = 86_400_000;
// A period that starts off a minute boundary, like Stripe's (creation time of the subscription).
const start = Date.UTC(2026, 0, 10, 12, 30, 17);
const end = Date.UTC(2026, 1, 10, 12, 30, 17);
const startS = start / 1000;
const endS = end / 1000;

describe("meterTimestamp", () => {
  it("uses the current second while the period runs", () => {
    const now = start + 3 * DAY + 1234;
    expect(meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: null })).toBe(
      Math.floor(now / 1000),
    );
  });

  it("goes strictly past the last reserved timestamp, even within the same second", () => {
    const now = start + 3 * DAY;
    const first = meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: null });
    const second = meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: first });
    expect(first).not.toBeNull();
    expect(second).toBe((first ?? 0) + 1);
  });

  it("skips the period's first partial minute so the next period's summary window never sees it", () => {
    const now = start + 5_000;
    const ts = meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: null });
    expect(ts).toBe(Math.ceil(startS / 60) * 60);
  });

  it("posts into the reserve at the period's end once the period is over, increasing strictly", () => {
    const now = end + 10 * MIN;
    const first = meterTimestamp({
      now,
      periodStart: start,
      periodEnd: end,
      lastTs: endS - (3 * DAY) / 1000,
    });
    expect(first).toBe(endS - POST_END_RESERVE_SECONDS);
    const second = meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: first });
    expect(second).toBe(endS - POST_END_RESERVE_SECONDS + 1);
  });

  it("falls back to the period's last second when the reserve is used up", () => {
    const now = end + 10 * MIN;
    expect(meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: endS - 1 })).toBe(endS - 1);
  });

  it("refuses a timestamp Stripe would reject as too far in the future", () => {
    const now = start + 3 * DAY;
    const nowS = Math.floor(now / 1000);
    expect(
      meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: nowS + MAX_FUTURE_SECONDS }),
    ).toBeNull();
  });

  it("always lands inside the period and after the last post unless the period's seconds are used up", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -40 * DAY, max: 40 * DAY }),
        fc.option(fc.integer({ min: -10 * 86_400, max: 40 * 86_400 }), { nil: null }),
        (offset, lastOffset) => {
          const now = start + offset;
          const lastTs = lastOffset === null ? null : startS + lastOffset;
          const ts = meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs });
          if (ts === null) {
            // only when every valid second is too far ahead: the period has not started yet,
            // or earlier posts already reserved the seconds up to Stripe's future limit
            const earliest = Math.max(startS, (lastTs ?? Number.NEGATIVE_INFINITY) + 1);
            expect(earliest).toBeGreaterThan(Math.floor(now / 1000) + MAX_FUTURE_SECONDS - 60);
            return;
          }
          expect(ts * 1000).toBeGreaterThanOrEqual(start);
          expect(ts * 1000).toBeLessThan(end);
          expect(ts).toBeLessThanOrEqual(Math.floor(now / 1000) + MAX_FUTURE_SECONDS);
          if (lastTs !== null && lastTs < endS - 1) expect(ts).toBeGreaterThan(lastTs);
        },
      ),
    );
  });
});

describe("summaryWindow", () => {
  it("is minute-aligned and covers the whole period", () => {
    const w = summaryWindow(start, end);
    expect(w.start % 60).toBe(0);
    expect(w.end % 60).toBe(0);
    expect(w.start).toBeLessThanOrEqual(startS);
    expect(w.end).toBeGreaterThanOrEqual(endS);
  });

  it("never contains a post of the next period", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 10 * DAY }),
        fc.integer({ min: 0, max: 5 * DAY }),
        (len, offset) => {
          const pStart = start + (len % 997) * 1000;
          const pEnd = pStart + MIN + len;
          const nextEnd = pEnd + 30 * DAY;
          const ts = meterTimestamp({
            now: pEnd + (offset % (30 * DAY)),
            periodStart: pEnd,
            periodEnd: nextEnd,
            lastTs: null,
          });
          if (ts !== null) expect(ts).toBeGreaterThanOrEqual(summaryWindow(pStart, pEnd).end);
        },
      ),
    );
  });
});

describe("meterIdentifier", () => {
  it("names the customer, the period and the absolute total, and marks repairs with their timestamp", () => {
    expect(meterIdentifier("cus_1", start, 42)).toBe(`cus_1:${start}:42`);
    expect(meterIdentifier("cus_1", start, 42, 1700000000)).toBe(`cus_1:${start}:42:r1700000000`);
    expect(meterIdentifier("cus_AbCdEfGhIjKlMn", start, 10_000_000, 1700000000).length).toBeLessThanOrEqual(
      100,
    );
  });
});

describe("classifyStripeError", () => {
  const generate = (raw: Parameters<typeof Stripe.errors.StripeError.generate>[0]) =>
    Stripe.errors.StripeError.generate(raw);

  it("treats a duplicate identifier as a total Stripe already holds", () => {
    const err = generate({
      statusCode: 400,
      type: "invalid_request_error",
      message: "An event already exists with identifier cus_1:1:5.",
      param: "identifier",
    });
    expect(classifyStripeError(err)).toEqual({ kind: "duplicate" });
  });

  it("rejects validation errors so the message is parked with the reason", () => {
    const err = generate({
      statusCode: 400,
      type: "invalid_request_error",
      message: "No such customer: 'cus_x'",
      code: "meter_event_customer_not_found",
      param: "payload[stripe_customer_id]",
    });
    expect(classifyStripeError(err)).toEqual({
      kind: "rejected",
      message: "meter_event_customer_not_found: No such customer: 'cus_x'",
    });
  });

  it("retries rate limits, API errors, connection errors and unknown throws", () => {
    expect(
      classifyStripeError(generate({ statusCode: 429, type: "rate_limit_error", message: "slow down" })).kind,
    ).toBe("transient");
    expect(classifyStripeError(generate({ statusCode: 500, type: "api_error", message: "boom" })).kind).toBe(
      "transient",
    );
    expect(classifyStripeError(new Stripe.errors.StripeConnectionError({ message: "reset" })).kind).toBe(
      "transient",
    );
    expect(classifyStripeError(new Error("D1 is down")).kind).toBe("transient");
    expect(classifyStripeError("weird").kind).toBe("transient");
  });

  it("retries an invalid request Stripe explicitly asks to retry", () => {
    const err = generate({
      statusCode: 400,
      type: "invalid_request_error",
      message: "lock timeout",
      headers: { "stripe-should-retry": "true" },
    });
    expect(classifyStripeError(err).kind).toBe("transient");
  });
});

describe("backoff", () => {
  it("doubles queue retry delays from 10 s up to 10 min", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 50].map(retryDelaySeconds)).toEqual([10, 20, 40, 80, 160, 320, 600, 600]);
  });

  it("doubles the sweep's wait for a failing period from 1 min up to 1 h", () => {
    expect([1, 2, 3, 7, 30].map((n) => nextPostAt(0, n))).toEqual([
      60_000, 120_000, 240_000, 3_600_000, 3_600_000,
    ]);
  });
});
