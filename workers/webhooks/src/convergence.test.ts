import { PRICE_LOOKUP_KEYS } from "@aigate/shared";
import { describe, expect, it } from "vitest";
import {
  billingPeriods,
  chargedUsage,
  invoiceRow,
  planEffectiveFrom,
  planHistoryRows,
  planOfLookupKeys,
  subscriptionRow,
} from "./convergence";
import type { StripeInvoice, StripePrice, StripeSubscription } from "./stripeObjects";

const T0 = 1_780_000_000; // Stripe seconds
const MONTH = 30 * 86_400;

const prices: Record<string, StripePrice> = {
  price_payg: {
    id: "price_payg",
    lookup_key: PRICE_LOOKUP_KEYS.paygSession,
    recurring: { usage_type: "metered" },
  },
  price_pro_fee: {
    id: "price_pro_fee",
    lookup_key: PRICE_LOOKUP_KEYS.proMonthly,
    recurring: { usage_type: "licensed" },
  },
  price_pro_use: {
    id: "price_pro_use",
    lookup_key: PRICE_LOOKUP_KEYS.proSession,
    recurring: { usage_type: "metered" },
  },
};

function item(price: StripePrice, created = T0, start = T0, end = T0 + MONTH) {
  return { id: `si_${price.id}`, created, current_period_start: start, current_period_end: end, price };
}

function sub(over: Partial<StripeSubscription> = {}): StripeSubscription {
  return {
    id: "sub_1",
    customer: "cus_1",
    status: "active",
    created: T0,
    start_date: T0,
    ended_at: null,
    canceled_at: null,
    cancel_at_period_end: false,
    metadata: {},
    latest_invoice: "in_1",
    items: { data: [item(prices.price_payg as StripePrice)] },
    ...over,
  };
}

function invoice(over: Partial<StripeInvoice> = {}): StripeInvoice {
  return {
    id: "in_1",
    customer: "cus_1",
    status: "open",
    currency: "usd",
    created: T0 + MONTH,
    billing_reason: "subscription_cycle",
    subtotal: 1230,
    total: 1230,
    amount_paid: 0,
    period_start: T0,
    period_end: T0 + MONTH,
    parent: { subscription_details: { subscription: "sub_1" } },
    status_transitions: { finalized_at: T0 + MONTH + 60, paid_at: null },
    lines: {
      has_more: false,
      data: [
        {
          id: "il_1",
          amount: 1230,
          period: { start: T0, end: T0 + MONTH },
          pricing: { price_details: { price: "price_payg" } },
        },
      ],
    },
    ...over,
  };
}

const priceMap = new Map(Object.entries(prices));

describe("planOfLookupKeys", () => {
  it("maps the payg session price to payg", () => {
    expect(planOfLookupKeys([PRICE_LOOKUP_KEYS.paygSession])).toBe("payg");
  });
  it("maps pro's fee and session prices to pro, in any order", () => {
    expect(planOfLookupKeys([PRICE_LOOKUP_KEYS.proSession, PRICE_LOOKUP_KEYS.proMonthly])).toBe("pro");
    expect(planOfLookupKeys([PRICE_LOOKUP_KEYS.proMonthly])).toBe("pro");
  });
  it("returns null for prices that belong to no plan", () => {
    expect(planOfLookupKeys(["something_else", null, undefined])).toBeNull();
    expect(planOfLookupKeys([])).toBeNull();
  });
});

describe("plan history rows", () => {
  it("puts a new subscription's plan in force from its start date", () => {
    expect(planHistoryRows(sub(), "payg")).toEqual([
      { effective_from: T0 * 1000, plan: "payg", stripe_subscription_id: "sub_1" },
    ]);
  });
  it("returns the user to free from the time the subscription ended", () => {
    const ended = sub({ status: "canceled", ended_at: T0 + 10 * 86_400, canceled_at: T0 + 9 * 86_400 });
    expect(planHistoryRows(ended, "payg")).toEqual([
      { effective_from: T0 * 1000, plan: "payg", stripe_subscription_id: "sub_1" },
      { effective_from: (T0 + 10 * 86_400) * 1000, plan: "free", stripe_subscription_id: null },
    ]);
  });
  it("grants nothing for a subscription that never became active", () => {
    expect(planHistoryRows(sub({ status: "incomplete" }), "payg")).toEqual([]);
    expect(planHistoryRows(sub({ status: "incomplete_expired", ended_at: T0 + 3600 }), "payg")).toEqual([]);
  });
  it("dates a plan change inside a subscription from its new items' creation", () => {
    const changed = sub({ items: { data: [item(prices.price_pro_fee as StripePrice, T0 + 5000)] } });
    expect(planEffectiveFrom(changed)).toBe((T0 + 5000) * 1000);
  });
  it("keeps the original start when the subscription was backdated", () => {
    expect(planEffectiveFrom(sub({ start_date: T0 - 86_400 }))).toBe((T0 - 86_400) * 1000);
  });
});

describe("subscription row", () => {
  it("records past due from the failed invoice's finalization while Stripe says past_due", () => {
    const row = subscriptionRow(sub({ status: "past_due" }), "u1", "payg", 42_000, 99_000);
    expect(row.past_due_since).toBe(42_000);
  });
  it("falls back to now when the failing invoice is unknown", () => {
    expect(subscriptionRow(sub({ status: "unpaid" }), "u1", "payg", null, 99_000).past_due_since).toBe(
      99_000,
    );
  });
  it("clears past due once Stripe says active", () => {
    expect(subscriptionRow(sub(), "u1", "payg", 42_000, 99_000).past_due_since).toBeNull();
  });
  it("takes the current period from the subscription items, in milliseconds", () => {
    const row = subscriptionRow(sub(), "u1", "payg", null, 0);
    expect([row.current_period_start, row.current_period_end]).toEqual([T0 * 1000, (T0 + MONTH) * 1000]);
    expect(billingPeriods(sub())).toEqual([{ start: T0 * 1000, end: (T0 + MONTH) * 1000 }]);
  });
  it("marks a canceled subscription ended even when Stripe omits ended_at", () => {
    expect(
      subscriptionRow(sub({ status: "canceled", canceled_at: T0 + 5 }), "u1", "payg", null, 0).ended_at,
    ).toBe((T0 + 5) * 1000);
  });
});

describe("invoice row", () => {
  it("takes the usage period from the metered lines and the plan from their prices", () => {
    const withFee = invoice({
      lines: {
        has_more: false,
        data: [
          {
            id: "il_fee",
            amount: 2900,
            period: { start: T0 + MONTH, end: T0 + 2 * MONTH },
            pricing: { price_details: { price: "price_pro_fee" } },
          },
          {
            id: "il_use",
            amount: 70,
            period: { start: T0, end: T0 + MONTH },
            pricing: { price_details: { price: "price_pro_use" } },
          },
        ],
      },
    });
    const row = invoiceRow(withFee, "u1", "sub_1", priceMap);
    expect(row.plan).toBe("pro");
    expect([row.usage_period_start, row.usage_period_end]).toEqual([T0 * 1000, (T0 + MONTH) * 1000]);
    expect([row.total_cents, row.amount_paid_cents, row.finalized_at]).toEqual([
      1230,
      0,
      (T0 + MONTH + 60) * 1000,
    ]);
  });
  it("charges the sessions of a closed metered period once finalized", () => {
    expect(chargedUsage(invoiceRow(invoice(), "u1", "sub_1", priceMap))).toEqual({
      plan: "payg",
      periodStart: T0 * 1000,
    });
  });
  it("charges nothing for drafts, void invoices, or a subscription's first invoice", () => {
    const draft = invoice({ status: "draft", status_transitions: { finalized_at: null, paid_at: null } });
    expect(chargedUsage(invoiceRow(draft, "u1", "sub_1", priceMap))).toBeNull();
    expect(chargedUsage(invoiceRow(invoice({ status: "void" }), "u1", "sub_1", priceMap))).toBeNull();
    const first = invoice({ status: "paid", billing_reason: "subscription_create" });
    expect(chargedUsage(invoiceRow(first, "u1", "sub_1", priceMap))).toBeNull();
  });
});
