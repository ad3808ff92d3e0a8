import { calendarMonth, type PlanId } from "@aigate/shared";
import { describe, expect, it } from "vitest";
import { usageBody } from "./usage";

const period = calendarMonth(Date.UTC(2026, 10, 15));
const body = (plan: PlanId, billable: number, limitsPlan: PlanId = plan) =>
  usageBody({
    plan,
    limitsPlan,
    period,
    billableSessions: billable,
    failedSessions: 3,
    activeSessions: 2,
    pendingPlan: null,
    pendingEffectiveAt: null,
  });

describe("usage body", () => {
  it("prices with the subscriber's own price when their series bills one that differs from the catalog", () => {
    const custom = { plan: "pro" as const, billable: 520 };
    const withPrice = usageBody({
      plan: custom.plan,
      limitsPlan: custom.plan,
      period,
      billableSessions: custom.billable,
      failedSessions: 0,
      activeSessions: 0,
      pendingPlan: null,
      pendingEffectiveAt: null,
      seriesPrice: {
        kind: "graduated",
        currency: "usd",
        tiers: [
          { up_to: 500, unit_amount: 0, flat_amount: 0 },
          { up_to: null, unit_amount: 5, flat_amount: 0 },
        ],
      },
    });
    // $29 fee + 20 sessions beyond 500 included at 5 cents
    expect(withPrice).toMatchObject({ estimated_cost_cents: 3000, estimated_cost: 30, quota: 500 });
    expect(withPrice.session_price).toEqual({
      tiers_mode: "graduated",
      tiers: [
        { up_to: 500, unit_amount_cents: 0 },
        { up_to: null, unit_amount_cents: 5 },
      ],
      catalog: false,
    });
    // the catalog's own price (as Stripe returns it: per unit) is marked as such
    const payg = usageBody({
      ...{
        plan: "payg" as const,
        limitsPlan: "payg" as const,
        period,
        billableSessions: 3,
        failedSessions: 0,
      },
      ...{ activeSessions: 0, pendingPlan: null, pendingEffectiveAt: null },
      seriesPrice: { kind: "per_unit", unit_amount: 10, currency: "usd" },
    });
    expect(payg.session_price).toEqual({
      tiers_mode: "per_unit",
      tiers: [{ up_to: null, unit_amount_cents: 10 }],
      catalog: true,
    });
    expect(body("free", 3).session_price).toBeNull();
    expect(body("pro", 3).session_price?.catalog).toBe(true);
  });

  it("estimates pro at $29 up to 400 sessions, then 7 cents each", () => {
    expect([399, 400, 401].map((n) => body("pro", n).estimated_cost_cents)).toEqual([2900, 2900, 2907]);
    expect(body("pro", 401).estimated_cost).toBe(29.07);
    expect(body("pro", 399).quota).toBe(400);
  });

  it("says the estimate is before tax (Stripe computes tax from the customer's address)", () => {
    for (const plan of ["free", "payg", "pro"] as const) {
      expect(body(plan, 500).estimated_cost_includes_tax).toBe(false);
    }
  });

  it("estimates payg at 10 cents a session with no quota and no warning", () => {
    expect(body("payg", 123)).toMatchObject({
      estimated_cost_cents: 1230,
      estimated_cost: 12.3,
      quota: null,
      warning: false,
    });
  });

  it("shows free as 100 sessions at no cost, warning from 85", () => {
    expect(body("free", 84)).toMatchObject({
      quota: 100,
      estimated_cost_cents: 0,
      estimated_cost: 0,
      warning: false,
    });
    expect(body("free", 85).warning).toBe(true);
  });

  it("has exactly the contract's fields, with RFC 3339 period bounds", () => {
    const b = body("free", 10);
    expect(Object.keys(b).sort()).toEqual(
      [
        "plan",
        "period_start",
        "period_end",
        "sessions_this_month",
        "failed_sessions",
        "quota",
        "estimated_cost",
        "estimated_cost_cents",
        "estimated_cost_includes_tax",
        "currency",
        "warning",
        "active_sessions",
        "concurrent_limit",
        "pending_plan",
        "pending_effective_at",
        "session_price",
      ].sort(),
    );
    expect([b.period_start, b.period_end]).toEqual(["2026-11-01T00:00:00.000Z", "2026-12-01T00:00:00.000Z"]);
    expect(b).toMatchObject({
      currency: "usd",
      failed_sessions: 3,
      active_sessions: 2,
      concurrent_limit: 5,
      pending_plan: null,
      pending_effective_at: null,
    });
  });

  it("shows what Stripe has scheduled: the plan taking over and when, as RFC 3339", () => {
    const at = Date.UTC(2026, 11, 1, 10, 30);
    const scheduled = (pendingPlan: PlanId) =>
      usageBody({
        plan: "pro",
        limitsPlan: "pro",
        period,
        billableSessions: 380,
        failedSessions: 0,
        activeSessions: 0,
        pendingPlan,
        pendingEffectiveAt: at,
      });
    expect(scheduled("payg")).toMatchObject({
      plan: "pro",
      pending_plan: "payg",
      pending_effective_at: "2026-12-01T10:30:00.000Z",
      estimated_cost_cents: 2900,
    });
    expect(scheduled("free")).toMatchObject({ plan: "pro", pending_plan: "free", quota: 400 });
  });

  it("reports free's concurrency limit for a paid plan whose payment failed beyond the grace period", () => {
    expect(body("payg", 10, "payg").concurrent_limit).toBeNull();
    expect(body("payg", 10, "free").concurrent_limit).toBe(5);
  });
});
