import { env } from "cloudflare:test";
import { calendarMonth, paidPeriodFor, planInForce } from "@aigate/shared";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type AccountSnapshot,
  acceptsUsageUntil,
  attribute,
  type BillingPeriodRow,
  type PlanHistoryRow,
  paidPeriodAt,
  periodKey,
  planAt,
} from "./attribution";
import { loadAccounts } from "./queries";

const DAY = 86_400_000;
const GRACE = 3_600_000;
const subStart = Date.UTC(2026, 2, 5, 9, 15, 0);
const p1 = {
  stripe_subscription_id: "sub_1",
  period_start: subStart,
  period_end: Date.UTC(2026, 3, 5, 9, 15, 0),
};
const p2 = {
  stripe_subscription_id: "sub_1",
  period_start: p1.period_end,
  period_end: Date.UTC(2026, 4, 5, 9, 15, 0),
};

function snapshot(over: Partial<AccountSnapshot> = {}): AccountSnapshot {
  return {
    history: new Map([
      [
        "u1",
        [
          { user_id: "u1", effective_from: 0, plan: "free", stripe_subscription_id: null },
          { user_id: "u1", effective_from: subStart, plan: "pro", stripe_subscription_id: "sub_1" },
        ],
      ],
    ]),
    customers: new Map([["u1", "cus_1"]]),
    periods: new Map([["sub_1", [p1, p2]]]),
    closed: new Set(),
    ...over,
  };
}

describe("attribute", () => {
  it("bills a session under the plan in force at its creation, not at its verdict", () => {
    const before = attribute(
      { user_id: "u1", created_at: subStart - 1 },
      snapshot(),
      subStart + 10 * DAY,
      GRACE,
    );
    expect(before).toEqual({
      ok: true,
      usage: {
        plan: "free",
        period: calendarMonth(subStart - 1),
        adjustedFrom: null,
        stripeCustomerId: null,
        subscriptionId: null,
      },
    });
    const after = attribute({ user_id: "u1", created_at: subStart }, snapshot(), subStart + 10 * DAY, GRACE);
    expect(after).toEqual({
      ok: true,
      usage: {
        plan: "pro",
        period: { start: p1.period_start, end: p1.period_end },
        adjustedFrom: null,
        stripeCustomerId: "cus_1",
        subscriptionId: "sub_1",
      },
    });
  });

  it("puts free usage in the calendar month (UTC) of the session's creation", () => {
    const t = Date.UTC(2026, 0, 31, 23, 59, 59);
    const r = attribute({ user_id: "nobody", created_at: t }, snapshot(), t + DAY, GRACE);
    expect(r.ok && r.usage.period).toEqual({ start: Date.UTC(2026, 0, 1), end: Date.UTC(2026, 1, 1) });
    expect(r.ok && r.usage.stripeCustomerId).toBeNull();
  });

  it("keeps a late session in its ended period while Stripe still takes usage for the invoice", () => {
    const t = p1.period_end - 1000;
    const now = acceptsUsageUntil(p1.period_end, GRACE) - 1;
    const r = attribute({ user_id: "u1", created_at: t }, snapshot(), now, GRACE);
    expect(r.ok && r.usage.period.start).toBe(p1.period_start);
    expect(r.ok && r.usage.adjustedFrom).toBeNull();
  });

  it("moves a session judged too late for its period's invoice into the next period as an adjustment", () => {
    const t = p1.period_end - 1000;
    const now = acceptsUsageUntil(p1.period_end, GRACE);
    const r = attribute({ user_id: "u1", created_at: t }, snapshot(), now, GRACE);
    expect(r.ok && r.usage.period).toEqual({ start: p2.period_start, end: p2.period_end });
    expect(r.ok && r.usage.adjustedFrom).toBe(p1.period_start);
  });

  it("moves a session out of a period already closed, even inside the grace window", () => {
    const closed = new Set([periodKey("u1", "pro", p1.period_start)]);
    const r = attribute(
      { user_id: "u1", created_at: subStart + DAY },
      snapshot({ closed }),
      p1.period_end,
      GRACE,
    );
    expect(r.ok && r.usage.period.start).toBe(p2.period_start);
    expect(r.ok && r.usage.adjustedFrom).toBe(p1.period_start);
  });

  it("extends the cycle monthly when the next period's webhook has not arrived", () => {
    const t = p2.period_end + DAY;
    const r = attribute({ user_id: "u1", created_at: t }, snapshot(), t + DAY, GRACE);
    expect(r.ok && r.usage.period).toEqual({ start: p2.period_end, end: Date.UTC(2026, 5, 5, 9, 15, 0) });
  });

  it("cannot attribute paid usage without a Stripe customer or a known period yet", () => {
    const noCustomer = attribute(
      { user_id: "u1", created_at: subStart },
      snapshot({ customers: new Map() }),
      0,
      GRACE,
    );
    expect(noCustomer.ok).toBe(false);
    const noPeriod = attribute(
      { user_id: "u1", created_at: subStart },
      snapshot({ periods: new Map() }),
      0,
      GRACE,
    );
    expect(noPeriod).toEqual({ ok: false, reason: `no billing period known for sub_1 at ${subStart}` });
  });
});

describe("planAt and paidPeriodAt agree with @aigate/shared's planInForce and paidPeriodFor", () => {
  const historyArb = fc.uniqueArray(
    fc.record({
      effective_from: fc.integer({ min: 0, max: 400 }).map((d) => subStart + (d - 200) * DAY),
      plan: fc.constantFrom("free" as const, "payg" as const, "pro" as const),
    }),
    { selector: (r) => r.effective_from, maxLength: 5 },
  );
  const periodsArb = fc.uniqueArray(fc.integer({ min: 0, max: 12 }), { maxLength: 4 });

  it("for random histories, periods and times", async () => {
    await fc.assert(
      fc.asyncProperty(
        historyArb,
        periodsArb,
        fc.array(fc.integer({ min: -250, max: 450 }), { maxLength: 6 }),
        async (hist, months, days) => {
          await env.DB.batch([
            env.DB.prepare("DELETE FROM plan_history"),
            env.DB.prepare("DELETE FROM billing_periods"),
            env.DB.prepare("DELETE FROM stripe_customers"),
          ]);
          const rows: PlanHistoryRow[] = hist.map((h) => ({
            user_id: "u1",
            effective_from: h.effective_from,
            plan: h.plan,
            stripe_subscription_id: h.plan === "free" ? null : "sub_1",
          }));
          const periods: BillingPeriodRow[] = months.map((m) => ({
            stripe_subscription_id: "sub_1",
            period_start: subStart + m * 31 * DAY,
            period_end: subStart + (m + 1) * 31 * DAY,
          }));
          // u2 always references sub_1, so the batch loader reads its periods whatever u1's history
          rows.push({ user_id: "u2", effective_from: 0, plan: "payg", stripe_subscription_id: "sub_1" });
          const stmts = [
            ...rows.map((r) =>
              env.DB.prepare(
                "INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at) VALUES (?1, ?2, ?3, ?4, 0)",
              ).bind(r.user_id, r.effective_from, r.plan, r.stripe_subscription_id),
            ),
            ...periods.map((p) =>
              env.DB.prepare(
                "INSERT INTO billing_periods (stripe_subscription_id, period_start, period_end) VALUES (?1, ?2, ?3)",
              ).bind(p.stripe_subscription_id, p.period_start, p.period_end),
            ),
          ];
          if (stmts.length > 0) await env.DB.batch(stmts);
          const loaded = await loadAccounts(env.DB, ["u1", "u2"], 0);
          for (const d of days) {
            const t = subStart + d * DAY;
            const shared = await planInForce(env.DB, "u1", t);
            expect(planAt(loaded.history.get("u1") ?? [], t)).toEqual(shared);
            expect(paidPeriodAt(loaded.periods.get("sub_1") ?? [], t)).toEqual(
              await paidPeriodFor(env.DB, "sub_1", t),
            );
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});
