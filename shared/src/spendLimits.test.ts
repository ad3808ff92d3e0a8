import { env } from "cloudflare:test";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { amountFor, type MeteredPrice } from "./pricing";
import {
  alertSignature,
  capSessions,
  meteredAmountSql,
  SpendLimitsBody,
  usageChargeCents,
} from "./spendLimits";

describe("meteredAmountSql", () => {
  const tiers = [
    { up_to: 1000, unit_amount: 10, flat_amount: 0 },
    { up_to: 5000, unit_amount: 8, flat_amount: 0 },
    { up_to: null, unit_amount: 6, flat_amount: 0 },
  ];
  const prices: MeteredPrice[] = [
    { kind: "per_unit", unit_amount: 10, currency: "usd" },
    { kind: "graduated", currency: "usd", tiers },
    { kind: "volume", currency: "usd", tiers },
    {
      kind: "graduated",
      currency: "usd",
      tiers: [
        { up_to: 400, unit_amount: 0, flat_amount: 0 },
        { up_to: null, unit_amount: 7, flat_amount: 0 },
      ],
    },
  ];
  it("computes in D1 the cents amountFor computes, at and around every tier bound", async () => {
    const ns = [0, 1, 399, 400, 401, 999, 1000, 1001, 4999, 5000, 5001, 123_456];
    for (const price of prices) {
      const { results } = await env.DB.prepare(
        `SELECT n.value AS n, ${meteredAmountSql(price, "n.value")} AS cents FROM json_each(?1) n`,
      )
        .bind(JSON.stringify(ns))
        .all<{ n: number; cents: number }>();
      expect(results.map((r) => [r.n, r.cents])).toEqual(ns.map((n) => [n, amountFor(price, n)]));
    }
  });
});

describe("capSessions", () => {
  it("is the most sessions whose usage charges stay within the cap (property, both paid plans)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("payg" as const, "pro" as const),
        fc.integer({ min: 0, max: 100_000 }),
        (plan, cap) => {
          const n = capSessions(plan, cap);
          expect(usageChargeCents(plan, n)).toBeLessThanOrEqual(cap);
          expect(usageChargeCents(plan, n + 1)).toBeGreaterThan(cap);
        },
      ),
    );
  });

  it("prices payg at 10 c and pro's overage at 7 c beyond its 400 included sessions", () => {
    expect(capSessions("payg", 5000)).toBe(500);
    expect(capSessions("payg", 55)).toBe(5);
    expect(capSessions("pro", 0)).toBe(400);
    expect(capSessions("pro", 70)).toBe(410);
    expect(capSessions("pro", 76)).toBe(410);
    expect(() => capSessions("payg", -1)).toThrow(RangeError);
  });
});

describe("SpendLimitsBody", () => {
  it("takes a cap or null, and defaults the thresholds to 50, 80, 100", () => {
    expect(SpendLimitsBody.parse({ monthly_cap_cents: 5000 })).toEqual({
      monthly_cap_cents: 5000,
      alert_thresholds: [50, 80, 100],
    });
    expect(SpendLimitsBody.parse({ monthly_cap_cents: null, alert_thresholds: [] })).toEqual({
      monthly_cap_cents: null,
      alert_thresholds: [],
    });
  });

  it.each([
    ["a negative cap", { monthly_cap_cents: -1 }],
    ["a fractional cap", { monthly_cap_cents: 10.5 }],
    ["a cap in dollars as a string", { monthly_cap_cents: "50" }],
    ["no cap field", { alert_thresholds: [50] }],
    ["a threshold of 0", { monthly_cap_cents: 100, alert_thresholds: [0, 50] }],
    ["a threshold over 100", { monthly_cap_cents: 100, alert_thresholds: [50, 101] }],
    ["unsorted thresholds", { monthly_cap_cents: 100, alert_thresholds: [80, 50] }],
    ["duplicated thresholds", { monthly_cap_cents: 100, alert_thresholds: [50, 50] }],
    ["an unknown field", { monthly_cap_cents: 100, currency: "usd" }],
  ])("refuses %s", (_, body) => {
    expect(SpendLimitsBody.safeParse(body).success).toBe(false);
  });
});

describe("alertSignature", () => {
  it("matches the test vector of docs/api-billing.md (HMAC-SHA256 of t.body, as Stripe signs)", async () => {
    const body = JSON.stringify({ id: "spa_payg_1793700000000_80" });
    expect(await alertSignature("aigwhsec_example", body, 1795000867)).toBe(
      "t=1795000867,v1=798c36c0b4694a894e3c2b9fce71b3e06b149d1b917c0a34422d671a80082c51",
    );
  });
});
