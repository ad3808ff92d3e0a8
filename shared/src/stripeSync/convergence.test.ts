import { describe, expect, it } from "vitest";
import { PRICE_LOOKUP_KEYS } from "../plans";
import { amountFor } from "../pricing";
import {
  billingPeriods,
  invoiceLineRows,
  invoiceRow,
  meteredPriceOf,
  pendingChange,
  planEffectiveFrom,
  planHistoryRows,
  planOfLookupKeys,
  planOfPrice,
  planOfSubscription,
  subscriptionRow,
} from "./convergence";
import type { StripeInvoice, StripePrice, StripeSchedule, StripeSubscription } from "./objects";

const T0 = 1_780_000_000; // Stripe seconds
const MONTH = 30 * 86_400;

function price(id: string, plan: string, lookup: string | null, usage: "metered" | "licensed"): StripePrice {
  return {
    id,
    currency: "usd",
    lookup_key: lookup,
    metadata: { plan },
    product: { id: `prod_${plan}`, metadata: { plan } },
    unit_amount: plan === "payg" ? 10 : 2900,
    recurring: { usage_type: usage, meter: usage === "metered" ? `mtr_${plan}` : null },
  };
}

const prices: Record<string, StripePrice> = {
  price_payg: price("price_payg", "payg", PRICE_LOOKUP_KEYS.paygSession, "metered"),
  price_pro_fee: price("price_pro_fee", "pro", PRICE_LOOKUP_KEYS.proMonthly, "licensed"),
  price_pro_use: {
    ...price("price_pro_use", "pro", PRICE_LOOKUP_KEYS.proSession, "metered"),
    billing_scheme: "tiered",
    tiers_mode: "graduated",
    tiers: [
      { up_to: 400, unit_amount: 0, flat_amount: 0 },
      { up_to: null, unit_amount: 7, flat_amount: null },
    ],
  },
  // an older version of the payg price: its lookup key moved to the new version
  price_payg_v0: price("price_payg_v0", "payg", null, "metered"),
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
    cancel_at: null,
    schedule: null,
    billing_mode: { type: "flexible" },
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
          quantity: 123,
          period: { start: T0, end: T0 + MONTH },
          pricing: { price_details: { price: "price_payg" } },
          parent: { subscription_item_details: { subscription: "sub_1" } },
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

describe("plan of a price", () => {
  it("recognises an old price version by its metadata although the lookup key moved on", () => {
    expect(planOfPrice(prices.price_payg_v0 as StripePrice)).toBe("payg");
    const onlyProduct = { ...(prices.price_payg_v0 as StripePrice), metadata: {} };
    expect(planOfPrice(onlyProduct)).toBe("payg");
  });
  it("names a subscription's plan after its metered price", () => {
    const pro = sub({
      items: { data: [item(prices.price_pro_fee as StripePrice), item(prices.price_pro_use as StripePrice)] },
    });
    expect(planOfSubscription(pro)).toBe("pro");
  });
  it("reads tiers as the pricing maths needs them", () => {
    expect(amountFor(meteredPriceOf(prices.price_pro_use as StripePrice), 450)).toBe(350);
    expect(amountFor(meteredPriceOf(prices.price_payg as StripePrice), 3)).toBe(30);
  });
});

const paygRow = {
  effective_from: T0 * 1000,
  plan: "payg",
  stripe_subscription_id: "sub_1",
  stripe_price_id: "price_payg",
  meter_event_name: "aigate_payg_sessions",
};

describe("plan history rows", () => {
  it("puts a new subscription's plan in force from its start date, with its metered price and meter", () => {
    expect(planHistoryRows(sub(), "payg", "aigate_payg_sessions")).toEqual([paygRow]);
  });
  it("returns the user to free from the time the subscription ended", () => {
    const ended = sub({ status: "canceled", ended_at: T0 + 10 * 86_400, canceled_at: T0 + 9 * 86_400 });
    expect(planHistoryRows(ended, "payg", "aigate_payg_sessions")).toEqual([
      paygRow,
      {
        effective_from: (T0 + 10 * 86_400) * 1000,
        plan: "free",
        stripe_subscription_id: null,
        stripe_price_id: null,
        meter_event_name: null,
      },
    ]);
  });
  it("grants nothing for a subscription that never became active", () => {
    expect(planHistoryRows(sub({ status: "incomplete" }), "payg", null)).toEqual([]);
    expect(planHistoryRows(sub({ status: "incomplete_expired", ended_at: T0 + 3600 }), "payg", null)).toEqual(
      [],
    );
  });
  it("dates an in-place plan change from its new metered item's creation (a pro to payg downgrade)", () => {
    const changed = sub({ items: { data: [item(prices.price_payg as StripePrice, T0 + 5000)] } });
    expect(planEffectiveFrom(changed)).toBe((T0 + 5000) * 1000);
    expect(planHistoryRows(changed, "payg", "m")[0]?.effective_from).toBe((T0 + 5000) * 1000);
  });
  it("keeps the original start when the subscription was backdated", () => {
    expect(planEffectiveFrom(sub({ start_date: T0 - 86_400 }))).toBe((T0 - 86_400) * 1000);
  });
});

describe("subscription row", () => {
  it("records past due from the failed invoice's finalization while Stripe says past_due", () => {
    const row = subscriptionRow(sub({ status: "past_due" }), "u1", "payg", 42_000, null, 99_000);
    expect(row.past_due_since).toBe(42_000);
  });
  it("falls back to now when the failing invoice is unknown", () => {
    expect(subscriptionRow(sub({ status: "unpaid" }), "u1", "payg", null, null, 99_000).past_due_since).toBe(
      99_000,
    );
  });
  it("clears past due once Stripe says active", () => {
    expect(subscriptionRow(sub(), "u1", "payg", 42_000, null, 99_000).past_due_since).toBeNull();
  });
  it("takes the current period from the subscription items, in milliseconds", () => {
    const row = subscriptionRow(sub(), "u1", "payg", null, null, 0);
    expect([row.current_period_start, row.current_period_end]).toEqual([T0 * 1000, (T0 + MONTH) * 1000]);
    expect(billingPeriods(sub())).toEqual([{ start: T0 * 1000, end: (T0 + MONTH) * 1000 }]);
  });
  it("cuts the current period at the end of a subscription canceled at once", () => {
    const canceled = sub({ status: "canceled", ended_at: T0 + 86_400, canceled_at: T0 + 86_400 });
    expect(billingPeriods(canceled)).toEqual([{ start: T0 * 1000, end: (T0 + 86_400) * 1000 }]);
  });
  it("marks a canceled subscription ended even when Stripe omits ended_at", () => {
    expect(
      subscriptionRow(sub({ status: "canceled", canceled_at: T0 + 5 }), "u1", "payg", null, null, 0).ended_at,
    ).toBe((T0 + 5) * 1000);
  });
});

describe("pending change", () => {
  const plans = (id: string) => (id === "price_payg" ? "payg" : id.startsWith("price_pro") ? "pro" : null);
  it("is free at the period end when the subscription cancels at the period end", () => {
    expect(pendingChange(sub({ cancel_at_period_end: true }), null, plans)).toEqual({
      plan: "free",
      effectiveAt: (T0 + MONTH) * 1000,
    });
  });
  it("is the plan of the schedule's next phase, from its start", () => {
    const schedule: StripeSchedule = {
      id: "sub_sched_1",
      status: "active",
      subscription: "sub_1",
      current_phase: { start_date: T0, end_date: T0 + MONTH },
      phases: [
        {
          start_date: T0,
          end_date: T0 + MONTH,
          items: [{ price: "price_pro_fee" }, { price: "price_pro_use" }],
        },
        { start_date: T0 + MONTH, end_date: T0 + 2 * MONTH, items: [{ price: "price_payg" }] },
      ],
    };
    const onPro = sub({
      schedule: "sub_sched_1",
      items: { data: [item(prices.price_pro_fee as StripePrice), item(prices.price_pro_use as StripePrice)] },
    });
    expect(pendingChange(onPro, schedule, plans)).toEqual({
      plan: "payg",
      effectiveAt: (T0 + MONTH) * 1000,
    });
    expect(pendingChange(sub(), { ...schedule, status: "released" }, plans)).toBeNull();
  });
  it("is no change when the next phase keeps the plan and only swaps its price (a custom price from the period end)", () => {
    const schedule: StripeSchedule = {
      id: "sub_sched_2",
      status: "active",
      subscription: "sub_1",
      current_phase: { start_date: T0, end_date: T0 + MONTH },
      phases: [
        { start_date: T0, end_date: T0 + MONTH, items: [{ price: "price_payg" }] },
        { start_date: T0 + MONTH, end_date: T0 + 2 * MONTH, items: [{ price: "price_payg_custom" }] },
      ],
    };
    const withCustom = (id: string) => (id === "price_payg_custom" ? "payg" : plans(id));
    expect(pendingChange(sub({ schedule: "sub_sched_2" }), schedule, withCustom)).toBeNull();
  });
});

describe("invoice rows", () => {
  it("takes the usage period from the metered lines", () => {
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
            quantity: 410,
            period: { start: T0, end: T0 + MONTH },
            pricing: { price_details: { price: "price_pro_use" } },
          },
        ],
      },
    });
    const row = invoiceRow(withFee, "u1", "sub_1", priceMap);
    expect([row.usage_period_start, row.usage_period_end]).toEqual([T0 * 1000, (T0 + MONTH) * 1000]);
    expect([row.total_cents, row.amount_paid_cents, row.finalized_at]).toEqual([
      1230,
      0,
      (T0 + MONTH + 60) * 1000,
    ]);
    const lines = invoiceLineRows(withFee, priceMap);
    expect(lines.map((l) => [l.line_id, l.plan, l.metered, l.quantity])).toEqual([
      ["il_fee", "pro", 0, 0],
      ["il_use", "pro", 1, 410],
    ]);
  });
  it("records the tax as the sum of Stripe's total_taxes, and null when Stripe sent none", () => {
    // Invoices since API 2025-03-31.basil carry `total_taxes` ({amount, ...} per tax); `total` includes exclusive tax.
    const taxed = invoice({ subtotal: 2900, total: 3451, total_taxes: [{ amount: 551 }] });
    expect(invoiceRow(taxed, "u1", "sub_1", priceMap)).toMatchObject({
      subtotal_cents: 2900,
      tax_cents: 551,
      total_cents: 3451,
    });
    expect(invoiceRow(invoice({ total_taxes: [] }), "u1", "sub_1", priceMap).tax_cents).toBe(0);
    expect(invoiceRow(invoice({}), "u1", "sub_1", priceMap).tax_cents).toBeNull();
  });
  it("names the subscription and the invoice item of each line", () => {
    const item = invoice({
      lines: {
        has_more: false,
        data: [
          {
            id: "il_adj",
            amount: 30,
            quantity: 1,
            period: { start: T0, end: T0 + MONTH },
            pricing: null,
            parent: { invoice_item_details: { invoice_item: "ii_1", subscription: "sub_1" } },
          },
        ],
      },
    });
    expect(invoiceLineRows(item, priceMap)[0]).toMatchObject({
      stripe_subscription_id: "sub_1",
      stripe_invoice_item_id: "ii_1",
      plan: null,
      metered: 0,
    });
  });
});
