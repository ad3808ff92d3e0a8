import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type AccountHistory,
  attribute,
  billedAt,
  CREATION_SKEW_MS,
  type PlanHistoryEntry,
  periodAt,
  planAt,
} from "./attribution";
import { addMonths, calendarMonth } from "./periods";

const A = Date.UTC(2026, 2, 5, 9, 15, 0);
const E = addMonths(A, 1);
const S = A + 10 * 86_400_000; // an immediate plan change (anchor reset) ten days in

const paid = (from: number, plan: "payg" | "pro", sub: string, price: string): PlanHistoryEntry => ({
  effective_from: from,
  plan,
  stripe_subscription_id: sub,
  stripe_price_id: price,
  meter_event_name: `aigate_${plan}_sessions`,
});
const free = (from: number): PlanHistoryEntry => ({
  effective_from: from,
  plan: "free",
  stripe_subscription_id: null,
  stripe_price_id: null,
  meter_event_name: null,
});

/** payg from A, pro from S (anchor reset: the payg period ends at S, pro's starts there). */
function upgraded(): AccountHistory {
  return {
    history: [paid(A, "payg", "sub_1", "price_payg"), paid(S, "pro", "sub_1", "price_pro")],
    periods: new Map([
      [
        "sub_1",
        [
          { period_start: A, period_end: S },
          { period_start: S, period_end: addMonths(S, 1) },
        ],
      ],
    ]),
    subscriptions: new Map([
      [
        "sub_1",
        { stripe_subscription_id: "sub_1", stripe_customer_id: "cus_1", ended_at: null, cancel_at: null },
      ],
    ]),
  };
}

describe("attribute", () => {
  it("bills free usage in the calendar month (UTC) and never before the first paid plan", () => {
    const r = attribute(upgraded(), A - 1);
    expect(r).toEqual({
      ok: true,
      series: expect.objectContaining({ plan: "free", ...{ start: calendarMonth(A - 1).start } }),
    });
  });

  it("gives each plan of a subscription its own series when the plan changes at once", () => {
    const before = attribute(upgraded(), S - 1);
    const after = attribute(upgraded(), S);
    expect(before).toEqual({
      ok: true,
      series: expect.objectContaining({ plan: "payg", start: A, end: S, priceId: "price_payg" }),
    });
    expect(after).toEqual({
      ok: true,
      series: expect.objectContaining({ plan: "pro", start: S, end: addMonths(S, 1), priceId: "price_pro" }),
    });
  });

  it("cuts a window at a plan change Stripe made inside one period (no anchor reset)", () => {
    const account = upgraded();
    account.periods.set("sub_1", [{ period_start: A, period_end: E }]);
    const payg = attribute(account, S - 1);
    const pro = attribute(account, S + 1);
    expect(payg.ok && payg.series).toMatchObject({ plan: "payg", start: A, end: S });
    expect(pro.ok && pro.series).toMatchObject({ plan: "pro", start: S, end: E });
  });

  it("continues Stripe's monthly cycle from the latest period while a renewal webhook is late", () => {
    const account = upgraded();
    const t = addMonths(S, 1) + 5;
    const r = attribute(account, t);
    expect(r.ok && r.series).toMatchObject({
      plan: "pro",
      start: addMonths(S, 1),
      end: addMonths(S, 2),
      guessed: true,
    });
  });

  it("never continues a cycle past the subscription's end or its scheduled cancellation", () => {
    const periods = [{ period_start: A, period_end: E }];
    expect(periodAt(periods, { ended_at: E, cancel_at: null }, E + 1)).toBeNull();
    expect(periodAt(periods, { ended_at: null, cancel_at: E }, E)).toBeNull();
    expect(periodAt(periods, { ended_at: null, cancel_at: addMonths(E, 1) - 10 }, E + 1)).toEqual({
      period: { start: E, end: addMonths(E, 1) - 10 },
      guessed: true,
    });
  });

  it("waits (no attribution) for a paid plan whose subscription or period is not recorded", () => {
    const account = upgraded();
    account.subscriptions.clear();
    expect(attribute(account, S).ok).toBe(false);
  });

  it("puts every instant in exactly one series, inside its window, and windows of one plan never overlap", () => {
    const account: AccountHistory = {
      ...upgraded(),
      history: [...upgraded().history, free(addMonths(S, 1) + 3600_000)],
    };
    account.subscriptions.set("sub_1", {
      stripe_subscription_id: "sub_1",
      stripe_customer_id: "cus_1",
      ended_at: addMonths(S, 1) + 3600_000,
      cancel_at: null,
    });
    const seen = new Map<string, { start: number; end: number }>();
    fc.assert(
      fc.property(fc.integer({ min: A - 40 * 86_400_000, max: addMonths(S, 2) }), (t) => {
        const r = attribute(account, t);
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        const { series } = r;
        expect(series.start <= t && t < series.end).toBe(true);
        expect(series.plan).toBe(planAt(account.history, t));
        const key = `${series.plan}|${series.start}`;
        const known = seen.get(key);
        if (known) expect(known).toEqual({ start: series.start, end: series.end });
        for (const [k, w] of seen) {
          if (k === key || !k.startsWith(`${series.plan}|`)) continue;
          expect(series.end <= w.start || w.end <= series.start).toBe(true);
        }
        seen.set(key, { start: series.start, end: series.end });
      }),
      { numRuns: 500 },
    );
  });

  it("lets a paid plan win over free at the same instant (one subscription ends as another starts)", () => {
    const history = [free(S), paid(S, "payg", "sub_2", "price_payg")];
    expect(planAt(history, S)).toBe("payg");
    expect(planAt([...history].reverse(), S)).toBe("payg");
  });
});

describe("billedAt", () => {
  const seen = 1_800_000_000_000;
  it("takes the reported creation time when it is consistent with what we observed", () => {
    expect(billedAt({ created_at: seen - 2000, first_seen_at: seen, admitted_at: seen - 3000 })).toBe(
      seen - 2000,
    );
  });
  it("refuses a creation time after the first receipt", () => {
    expect(billedAt({ created_at: seen + 60_000, first_seen_at: seen, admitted_at: null })).toBe(seen);
  });
  it("refuses a backdated creation time beyond the clock skew", () => {
    expect(billedAt({ created_at: seen - 20 * 86_400_000, first_seen_at: seen, admitted_at: null })).toBe(
      seen - CREATION_SKEW_MS,
    );
    expect(
      billedAt({ created_at: seen - 20 * 86_400_000, first_seen_at: seen, admitted_at: seen - 600_000 }),
    ).toBe(seen - 600_000 - CREATION_SKEW_MS);
  });
  it("uses the first receipt when no creation time was reported", () => {
    expect(billedAt({ created_at: null, first_seen_at: seen, admitted_at: null })).toBe(seen);
  });
});
