import fc from "fast-check";
import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import {
  classifyStripeError,
  meterIdentifier,
  meterTimestamp,
  nextPostAt,
  POST_LAG_SECONDS,
  retryDelaySeconds,
  summaryWindow,
} from "./meter";

const MIN = 60_000;
const DAY = 86_400_000;
// A window that starts and ends off a minute boundary, like Stripe's periods (the subscription's
// creation second) and like a window cut by a plan change.
const start = Date.UTC(2026, 0, 10, 12, 30, 17);
const end = Date.UTC(2026, 1, 10, 12, 30, 17);
const startS = start / 1000;
const endS = end / 1000;
/** The last whole minute boundary inside the window: every post lies before it. */
const boundaryS = Math.floor(end / MIN) * 60;

describe("meterTimestamp", () => {
  it("stays 600 s behind the current second while the window runs", () => {
    const now = start + 3 * DAY + 1234;
    expect(meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: null })).toBe(
      Math.floor(now / 1000) - POST_LAG_SECONDS,
    );
  });

  it("goes strictly past the last reserved timestamp, and waits rather than go into the future", () => {
    const now = start + 3 * DAY;
    const nowS = Math.floor(now / 1000);
    expect(meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: nowS - 700 })).toBe(
      nowS - POST_LAG_SECONDS,
    );
    expect(meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: nowS - 5 })).toBe(nowS - 4);
    // no second left before the current one: the sweep posts it later
    expect(meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: nowS - 1 })).toBeNull();
    expect(meterTimestamp({ now: now + 1000, periodStart: start, periodEnd: end, lastTs: nowS - 1 })).toBe(
      nowS,
    );
  });

  it("leaves a window cut short right after a post the seconds for its final invoice's grace", () => {
    // a cancellation now, one second after a post: the window ends there, and what is judged during
    // its final invoice's grace (an hour) still has a timestamp inside it, after that post
    const wStart = Date.UTC(2027, 1, 1, 5, 45, 39);
    const wEnd = Date.UTC(2027, 2, 1, 5, 45, 39);
    const postedAt = Date.UTC(2027, 1, 16, 8, 49, 28, 400);
    const cutEnd = Date.UTC(2027, 1, 16, 8, 49, 29);
    const lastTs = meterTimestamp({ now: postedAt, periodStart: wStart, periodEnd: wEnd, lastTs: null });
    expect(lastTs).toBe(Math.floor(postedAt / 1000) - POST_LAG_SECONDS);
    let ts = lastTs;
    const cutBoundary = Math.floor(cutEnd / MIN) * 60;
    for (let k = 1; k <= 60; k++) {
      const next = meterTimestamp({
        now: cutEnd + k * MIN,
        periodStart: wStart,
        periodEnd: cutEnd,
        lastTs: ts,
      });
      expect(next).not.toBeNull();
      expect(next).toBeGreaterThan(ts ?? 0);
      expect(next).toBeLessThan(cutBoundary);
      ts = next;
    }
  });

  it("waits for the window's first whole second to be over", () => {
    expect(meterTimestamp({ now: start + 500, periodStart: start, periodEnd: end, lastTs: null })).toBeNull();
    expect(meterTimestamp({ now: start + 1000, periodStart: start, periodEnd: end, lastTs: null })).toBe(
      startS,
    );
    // a window starting mid-second starts at its next whole second
    expect(
      meterTimestamp({ now: start + 2500, periodStart: start + 300, periodEnd: end, lastTs: null }),
    ).toBe(startS + 1);
  });

  it("posts into the reserve before the window's last minute boundary once it ended, increasing strictly", () => {
    const now = end + 10 * MIN;
    const first = meterTimestamp({
      now,
      periodStart: start,
      periodEnd: end,
      lastTs: endS - (3 * DAY) / 1000,
    });
    expect(first).toBe(boundaryS - POST_LAG_SECONDS);
    const second = meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: first });
    expect(second).toBe(boundaryS - POST_LAG_SECONDS + 1);
    // also in the window's last partial minute, before it ended
    expect(meterTimestamp({ now: end - 5000, periodStart: start, periodEnd: end, lastTs: null })).toBe(
      boundaryS - POST_LAG_SECONDS,
    );
  });

  it("has no timestamp left once the reserve is used up: the series waits to be frozen and adjusted", () => {
    const now = end + 10 * MIN;
    expect(meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: boundaryS - 2 })).toBe(
      boundaryS - 1,
    );
    expect(meterTimestamp({ now, periodStart: start, periodEnd: end, lastTs: boundaryS - 1 })).toBeNull();
  });

  it("uses the window's own seconds when it lies inside one minute", () => {
    const s = Date.UTC(2026, 0, 10, 12, 30, 10);
    const e = Date.UTC(2026, 0, 10, 12, 30, 40);
    expect(meterTimestamp({ now: e + DAY, periodStart: s, periodEnd: e, lastTs: null })).toBe(s / 1000);
    expect(meterTimestamp({ now: e + DAY, periodStart: s, periodEnd: e, lastTs: e / 1000 - 1 })).toBeNull();
  });

  it("is never in the future, always inside the window before its last minute boundary, strictly after the last post", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3 * 86_400 }),
        fc.integer({ min: 1, max: 40 * 86_400 }),
        fc.integer({ min: -2 * 86_400, max: 45 * 86_400 }),
        fc.option(fc.integer({ min: -86_400, max: 45 * 86_400 }), { nil: null }),
        fc.integer({ min: 0, max: 999 }),
        (startOffsetS, lengthS, nowOffsetS, lastOffsetS, ms) => {
          // windows are whole seconds (Stripe's periods and plan changes); the clock is not
          const periodStart = start + startOffsetS * 1000;
          const periodEnd = periodStart + lengthS * 1000;
          const now = periodStart + nowOffsetS * 1000 + ms;
          const lastTs = lastOffsetS === null ? null : Math.floor(periodStart / 1000) + lastOffsetS;
          const ts = meterTimestamp({ now, periodStart, periodEnd, lastTs });
          const nowS = Math.floor(now / 1000);
          const lastBoundary = Math.floor(periodEnd / MIN) * 60;
          if (ts === null) {
            // only when no second is valid: none before now-1 s after the window's start and the last
            // post, or none left before the window's end (or its last minute boundary)
            const earliest = Math.max(
              Math.ceil(periodStart / 1000),
              (lastTs ?? Number.NEGATIVE_INFINITY) + 1,
            );
            const stop =
              lastBoundary * 1000 > periodStart ? lastBoundary - 1 : Math.ceil(periodEnd / 1000) - 1;
            expect(earliest > nowS - 1 || earliest > stop).toBe(true);
            return;
          }
          expect(ts).toBeLessThanOrEqual(nowS - 1);
          expect(ts * 1000).toBeGreaterThanOrEqual(periodStart);
          expect(ts * 1000).toBeLessThan(periodEnd);
          if (lastBoundary * 1000 > periodStart) expect(ts).toBeLessThan(lastBoundary);
          if (lastTs !== null) expect(ts).toBeGreaterThan(lastTs);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe("summaryWindow", () => {
  it("is minute-aligned, from the window's start minute to its last minute boundary", () => {
    const w = summaryWindow(start, end);
    expect(w).toEqual({ start: Math.floor(startS / 60) * 60, end: boundaryS });
  });

  it("is null for a window inside one minute (such a series is not reconciled)", () => {
    const s = Date.UTC(2026, 0, 10, 12, 30, 10);
    expect(summaryWindow(s, s + 30_000)).toBeNull();
    expect(summaryWindow(s, Date.UTC(2026, 0, 10, 12, 31, 0))).not.toBeNull();
  });

  it("holds every post of its series and none of the next series' posts", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 86_400 }),
        fc.integer({ min: 1, max: 10 * 86_400 }),
        fc.integer({ min: 1, max: 30 * 86_400 }),
        fc.integer({ min: 0, max: 40 * 86_400 }),
        fc.integer({ min: 0, max: 40 * 86_400 }),
        (offsetS, lengthS, nextLengthS, postAtS, nextPostAtS) => {
          const pStart = start + offsetS * 1000;
          const pEnd = pStart + lengthS * 1000;
          const w = summaryWindow(pStart, pEnd);
          if (w === null) return;
          const own = meterTimestamp({
            now: pStart + postAtS * 1000,
            periodStart: pStart,
            periodEnd: pEnd,
            lastTs: null,
          });
          if (own !== null) {
            expect(own).toBeGreaterThanOrEqual(w.start);
            expect(own).toBeLessThan(w.end);
          }
          const next = meterTimestamp({
            now: pEnd + nextPostAtS * 1000,
            periodStart: pEnd,
            periodEnd: pEnd + nextLengthS * 1000,
            lastTs: null,
          });
          if (next !== null) expect(next).toBeGreaterThanOrEqual(w.end);
        },
      ),
    );
  });
});

describe("meterIdentifier", () => {
  it("names the customer, the series, the absolute total and the post's timestamp", () => {
    expect(meterIdentifier("cus_1", "payg", start, 42, 1_700_000_000)).toBe(
      `cus_1:payg:${start}:42:1700000000`,
    );
    // the same total posted again later (after it went down and up) is a different post
    expect(meterIdentifier("cus_1", "pro", start, 42, 1_700_000_001)).not.toBe(
      meterIdentifier("cus_1", "pro", start, 42, 1_700_000_000),
    );
    expect(meterIdentifier("cus_1", "payg", start, 42, 1_700_000_000)).not.toBe(
      meterIdentifier("cus_1", "pro", start, 42, 1_700_000_000),
    );
    expect(
      meterIdentifier("cus_AbCdEfGhIjKlMnOpQrStUv", "payg", start, 10_000_000, 1_700_000_000).length,
    ).toBeLessThanOrEqual(100);
  });
});

describe("classifyStripeError", () => {
  const generate = (raw: Parameters<typeof Stripe.errors.StripeError.generate>[0]) =>
    Stripe.errors.StripeError.generate(raw);

  it("treats a duplicate identifier as a total Stripe already holds", () => {
    const err = generate({
      statusCode: 400,
      type: "invalid_request_error",
      message: "An event already exists with identifier cus_1:payg:1:5:1700000000.",
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

  it("doubles the sweep's wait for a failing series from 1 min up to 1 h", () => {
    expect([1, 2, 3, 7, 30].map((n) => nextPostAt(0, n))).toEqual([
      60_000, 120_000, 240_000, 3_600_000, 3_600_000,
    ]);
  });
});
