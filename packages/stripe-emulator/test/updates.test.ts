import type Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { type Catalog, createCatalog, useEmulator } from "./testkit";

const h = useEmulator();
const DAY = 86_400;
const HOUR = 3600;
const JAN_1 = Date.UTC(2026, 0, 1) / 1000;
const JAN_5 = JAN_1 + 4 * DAY;
const JAN_10 = JAN_1 + 9 * DAY;
const JAN_16 = JAN_1 + 15 * DAY;
const JAN_20 = JAN_1 + 19 * DAY;
const FEB_1 = JAN_1 + 31 * DAY;
const FEB_16 = JAN_16 + 31 * DAY;
/** Share of January (31 days) left on January 16: 16/31. */
const LEFT = [FEB_1 - JAN_16, FEB_1 - JAN_1] as const;

async function at(t: number) {
  await h.control.setClock(t, { frozen: true });
}

async function usage(customer: string, value: number, timestamp: number) {
  await h.stripe.billing.meterEvents.create({
    event_name: "aigate_sessions",
    payload: { stripe_customer_id: customer, value: String(value) },
    timestamp,
  });
}

/** Price B: a new version of pay-as-you-go at 12 cents a session, on the same meter. */
async function priceB(catalog: Catalog): Promise<Stripe.Price> {
  return h.stripe.prices.create({
    currency: "usd",
    unit_amount: 12,
    recurring: { interval: "month", usage_type: "metered", meter: catalog.meter.id },
    product: typeof catalog.payg.product === "string" ? catalog.payg.product : catalog.payg.product.id,
  });
}

async function setup(mode: "classic" | "flexible", items: Stripe.Checkout.SessionCreateParams.LineItem[]) {
  await at(JAN_1);
  const catalog = await createCatalog(h.stripe, "sum");
  const lineItems = items.map((i) => ({
    ...i,
    price:
      i.price === "payg"
        ? catalog.payg.id
        : i.price === "pro"
          ? catalog.proMonthly.id
          : catalog.proSessions.id,
  }));
  const session = await h.stripe.checkout.sessions.create({
    mode: "subscription",
    customer_email: "update@example.com",
    line_items: lineItems,
    success_url: "http://app.test/ok",
    subscription_data: { billing_mode: { type: mode } },
  });
  const { subscription } = await h.control.completeCheckout(session.id);
  return { catalog, sub: subscription, customer: subscription.customer };
}

function itemOf(sub: { items: { data: { id: string; price: { id: string } }[] } }, price: string): string {
  const item = sub.items.data.find((i) => i.price.id === price);
  if (!item) throw new Error(`no item with ${price}`);
  return item.id;
}

async function renewal(subId: string) {
  await at(FEB_1 + HOUR);
  const invoice = (await h.stripe.invoices.list({ subscription: subId })).data[0];
  if (!invoice) throw new Error("no renewal invoice");
  expect(invoice).toMatchObject({ billing_reason: "subscription_cycle", status: "paid" });
  return invoice;
}

const lineSummary = (inv: Stripe.Invoice) =>
  inv.lines.data.map((l) => ({
    kind: l.parent?.type,
    price: l.pricing?.price_details?.price,
    quantity: l.quantity,
    amount: l.amount,
    period: [l.period.start, l.period.end],
  }));

describe("metered price replaced mid-period", () => {
  // https://docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup
  // "say you have a monthly subscription that you switch from price A to price B on January 16. On
  // January 16, we create an invoice item billing for usage from January 1 to January 16. When the
  // subscription renews on February 1, we bill for price B from January 16 to February 1."
  it("flexible: bills usage so far at price A as an invoice item, then price B from the switch", async () => {
    const { catalog, sub, customer } = await setup("flexible", [{ price: "payg" }]);
    const b = await priceB(catalog);
    await at(JAN_5);
    await usage(customer, 100, JAN_5);
    await at(JAN_16);
    const updated = await h.stripe.subscriptions.update(sub.id, {
      items: [{ id: itemOf(sub, catalog.payg.id), price: b.id }],
    });
    expect(updated.items.data[0]?.price.id).toBe(b.id);
    const [item] = (await h.stripe.invoiceItems.list({ customer, pending: true })).data;
    expect(item).toMatchObject({
      amount: 1000,
      quantity: 100,
      period: { start: JAN_1, end: JAN_16 },
      proration: false,
      parent: {
        type: "subscription_details",
        subscription_details: { subscription: sub.id, subscription_item: itemOf(sub, catalog.payg.id) },
      },
      pricing: { price_details: { price: catalog.payg.id } },
    });
    // reported after the switch with an earlier timestamp: the invoice item is already fixed
    await usage(customer, 7, JAN_10);
    await at(JAN_20);
    await usage(customer, 50, JAN_20);
    const inv = await renewal(sub.id);
    expect(lineSummary(inv)).toEqual([
      { kind: "subscription_item_details", price: b.id, quantity: 50, amount: 600, period: [JAN_16, FEB_1] },
      {
        kind: "invoice_item_details",
        price: catalog.payg.id,
        quantity: 100,
        amount: 1000,
        period: [JAN_1, JAN_16],
      },
    ]);
    expect(inv.total).toBe(1600);
  });

  // Same page: "If you want to remove a metered price without billing for it, set
  // `proration_behavior` to `none`."
  it("flexible with proration_behavior=none: pre-switch usage is not billed", async () => {
    const { catalog, sub, customer } = await setup("flexible", [{ price: "payg" }]);
    const b = await priceB(catalog);
    await at(JAN_5);
    await usage(customer, 100, JAN_5);
    await at(JAN_16);
    await h.stripe.subscriptions.update(sub.id, {
      items: [{ id: itemOf(sub, catalog.payg.id), price: b.id }],
      proration_behavior: "none",
    });
    expect((await h.stripe.invoiceItems.list({ customer })).data).toEqual([]);
    await usage(customer, 50, JAN_16 + 60);
    expect((await renewal(sub.id)).total).toBe(600);
  });

  // Same page, classic: "On future invoices, we reflect only usage that occurs after the update. ...
  // At the end of the month, the invoice includes usage from January 16 to January 31 at price B.
  // Usage from January 1 to January 16 isn't billed."
  it("classic: usage before the switch is not billed", async () => {
    const { catalog, sub, customer } = await setup("classic", [{ price: "payg" }]);
    const b = await priceB(catalog);
    await at(JAN_5);
    await usage(customer, 100, JAN_5);
    await at(JAN_16);
    await h.stripe.subscriptions.update(sub.id, {
      items: [{ id: itemOf(sub, catalog.payg.id), price: b.id }],
    });
    expect((await h.stripe.invoiceItems.list({ customer })).data).toEqual([]);
    await at(JAN_20);
    await usage(customer, 50, JAN_20);
    const inv = await renewal(sub.id);
    expect(lineSummary(inv)).toEqual([
      { kind: "subscription_item_details", price: b.id, quantity: 50, amount: 600, period: [JAN_16, FEB_1] },
    ]);
  });

  // https://docs.stripe.com/billing/subscriptions/billing-mode/compare: "An invoice item is
  // generated for unbilled usage when removing a usage-based subscription item." The item is priced
  // with the removed price, tiers included (400 sessions included, then 7 cents).
  it("flexible: removing a tiered metered item bills its usage at its tiers", async () => {
    const { catalog, sub, customer } = await setup("flexible", [
      { price: "pro", quantity: 1 },
      { price: "sessions" },
    ]);
    await at(JAN_5);
    await usage(customer, 450, JAN_5);
    await at(JAN_16);
    await h.stripe.subscriptions.update(sub.id, {
      items: [{ id: itemOf(sub, catalog.proSessions.id), deleted: true }],
    });
    const [item] = (await h.stripe.invoiceItems.list({ customer, pending: true })).data;
    expect(item).toMatchObject({
      quantity: 450,
      amount: 350,
      pricing: { price_details: { price: catalog.proSessions.id } },
    });
  });

  // https://docs.stripe.com/billing/subscriptions/prorations: "To bill a customer immediately for a
  // change to a subscription on the same billing period, set `proration_behavior` to
  // `always_invoice` ... This calculates the proration, then immediately generates an invoice."
  // (For the unbilled-usage item of a metered price this is UNCONFIRMED; the compare page confirms
  // it for schedule phase transitions: "an invoice item for unbilled usage is created and
  // immediately invoiced".)
  it("flexible with always_invoice: the usage item is invoiced at once", async () => {
    const { catalog, sub, customer } = await setup("flexible", [{ price: "payg" }]);
    const b = await priceB(catalog);
    await at(JAN_5);
    await usage(customer, 100, JAN_5);
    await at(JAN_16);
    const updated = await h.stripe.subscriptions.update(sub.id, {
      items: [{ id: itemOf(sub, catalog.payg.id), price: b.id }],
      proration_behavior: "always_invoice",
      expand: ["latest_invoice"],
    });
    const inv = updated.latest_invoice as Stripe.Invoice;
    expect(inv).toMatchObject({
      billing_reason: "subscription_update",
      status: "paid",
      total: 1000,
      created: JAN_16,
    });
    expect((await h.stripe.invoiceItems.list({ customer, pending: true })).data).toEqual([]);
  });

  // manage-billing-setup: "we bill for price B from January 16 to February 1" — an item added mid
  // period reads usage from when it was added.
  it("a metered item added mid-period bills usage from when it was added", async () => {
    const { catalog, sub, customer } = await setup("flexible", [{ price: "pro", quantity: 1 }]);
    await at(JAN_10);
    await usage(customer, 5, JAN_10);
    await at(JAN_16);
    const updated = await h.stripe.subscriptions.update(sub.id, { items: [{ price: catalog.payg.id }] });
    expect(updated.items.data).toHaveLength(2);
    await at(JAN_20);
    await usage(customer, 7, JAN_20);
    const inv = await renewal(sub.id);
    expect(lineSummary(inv)).toEqual([
      {
        kind: "subscription_item_details",
        price: catalog.proMonthly.id,
        quantity: 1,
        amount: 2900,
        period: [FEB_1, FEB_1 + 28 * DAY],
      },
      {
        kind: "subscription_item_details",
        price: catalog.payg.id,
        quantity: 7,
        amount: 70,
        period: [JAN_16, FEB_1],
      },
    ]);
  });
});

describe("licensed prorations", () => {
  const credit = -Math.round((2900 * LEFT[0]) / LEFT[1]); // unused time on 1 × Pro: -1497
  const debit = Math.round((3 * 2900 * LEFT[0]) / LEFT[1]); // remaining time on 3 × Pro: 4490

  // https://docs.stripe.com/billing/subscriptions/prorations: "The default parameter for
  // `proration_behavior` is `create_prorations`, which creates proration invoice items when
  // applicable."
  it("create_prorations (default): credits unused time and debits the new quantity as pending items", async () => {
    expect([credit, debit]).toEqual([-1497, 4490]);
    const { catalog, sub, customer } = await setup("flexible", [{ price: "pro", quantity: 1 }]);
    await at(JAN_16);
    await h.stripe.subscriptions.update(sub.id, {
      items: [{ id: itemOf(sub, catalog.proMonthly.id), quantity: 3 }],
    });
    const pending = (await h.stripe.invoiceItems.list({ customer, pending: true })).data.reverse();
    expect(
      pending.map((i) => [i.amount, i.quantity, i.proration, i.period.start, i.period.end, i.description]),
    ).toEqual([
      [credit, 1, true, JAN_16, FEB_1, "Unused time on AI Gate Pro after 16 Jan 2026"],
      [debit, 3, true, JAN_16, FEB_1, "Remaining time on 3 × AI Gate Pro after 16 Jan 2026"],
    ]);
    const inv = await renewal(sub.id);
    expect(inv.total).toBe(3 * 2900 + credit + debit);
  });

  // https://docs.stripe.com/billing/subscriptions/billing-mode/compare — classic: "the credit
  // proration amounts are calculated based on the value of the subscription item's current price,
  // tax, quantity, and the last discounts used"; flexible: "these prorations use the original
  // debited amount instead of current subscription values".
  it.each([
    ["classic", -Math.round((3 * 2900 * LEFT[0]) / LEFT[1])],
    ["flexible", -Math.round((2900 * LEFT[0]) / LEFT[1])],
  ] as const)("%s credits %i for 3 × Pro that was only ever charged for 1", async (mode, expected) => {
    const { catalog, sub, customer } = await setup(mode, [{ price: "pro", quantity: 1 }]);
    const id = itemOf(sub, catalog.proMonthly.id);
    await at(JAN_10);
    await h.stripe.subscriptions.update(sub.id, { items: [{ id, quantity: 3 }], proration_behavior: "none" });
    await at(JAN_16);
    await h.stripe.subscriptions.update(sub.id, { items: [{ id, quantity: 2 }] });
    const items = (await h.stripe.invoiceItems.list({ customer, pending: true })).data;
    expect(items.filter((i) => i.amount < 0).map((i) => i.amount)).toEqual([expected]);
    expect(items.filter((i) => i.amount > 0).map((i) => i.amount)).toEqual([
      Math.round((2 * 2900 * LEFT[0]) / LEFT[1]),
    ]);
  });

  it("always_invoice: invoices the prorations at once", async () => {
    const { catalog, sub } = await setup("flexible", [{ price: "pro", quantity: 1 }]);
    await at(JAN_16);
    const updated = await h.stripe.subscriptions.update(sub.id, {
      items: [{ id: itemOf(sub, catalog.proMonthly.id), quantity: 3 }],
      proration_behavior: "always_invoice",
      expand: ["latest_invoice"],
    });
    expect(updated.latest_invoice).toMatchObject({
      billing_reason: "subscription_update",
      status: "paid",
      total: credit + debit,
    });
    expect((await renewal(sub.id)).total).toBe(3 * 2900);
  });

  // prorations page: "When prorations are disabled, customers are billed the full amount at the new
  // price when the next invoice is generated."
  it("none: no prorations; the next invoice bills the new quantity in full", async () => {
    const { catalog, sub, customer } = await setup("classic", [{ price: "pro", quantity: 1 }]);
    await at(JAN_16);
    await h.stripe.subscriptions.update(sub.id, {
      items: [{ id: itemOf(sub, catalog.proMonthly.id), quantity: 3 }],
      proration_behavior: "none",
    });
    expect((await h.stripe.invoiceItems.list({ customer })).data).toEqual([]);
    expect((await renewal(sub.id)).total).toBe(3 * 2900);
  });
});

describe("billing_cycle_anchor {type: now}", () => {
  // https://docs.stripe.com/billing/subscriptions/billing-cycle: "This sets the billing cycle
  // anchor to the time of the update request. After you reset the billing cycle anchor, Stripe
  // immediately sends an invoice." and "When changing the billing period results in ending a
  // subscription's service period early, you charge the customer for the usage accrued during the
  // shortened billing period."
  it("restarts the period now and invoices licensed items in advance, credits and the shortened period's usage", async () => {
    const { catalog, sub, customer } = await setup("flexible", [
      { price: "pro", quantity: 1 },
      { price: "sessions" },
    ]);
    await at(JAN_5);
    await usage(customer, 450, JAN_5);
    await at(JAN_16);
    const updated = await h.stripe.subscriptions.update(sub.id, {
      billing_cycle_anchor: { type: "now" },
      proration_behavior: "create_prorations",
      expand: ["latest_invoice"],
    });
    expect(updated.billing_cycle_anchor).toBe(JAN_16);
    for (const item of updated.items.data) {
      expect(item).toMatchObject({ current_period_start: JAN_16, current_period_end: FEB_16 });
    }
    const inv = updated.latest_invoice as Stripe.Invoice;
    expect(inv).toMatchObject({ billing_reason: "subscription_update", status: "paid", created: JAN_16 });
    expect(lineSummary(inv)).toEqual([
      {
        kind: "subscription_item_details",
        price: catalog.proMonthly.id,
        quantity: 1,
        amount: 2900,
        period: [JAN_16, FEB_16],
      },
      {
        kind: "subscription_item_details",
        price: catalog.proSessions.id,
        quantity: 450,
        amount: 350,
        period: [JAN_1, JAN_16],
      },
      {
        kind: "invoice_item_details",
        price: catalog.proMonthly.id,
        quantity: 1,
        amount: credit(),
        period: [JAN_16, FEB_1],
      },
    ]);
    expect(inv.total).toBe(2900 + 350 + credit());
    // the next period reads usage from the reset on
    await at(JAN_20);
    await usage(customer, 401, JAN_20);
    await at(FEB_16 + HOUR);
    const next = (await h.stripe.invoices.list({ subscription: sub.id })).data[0];
    expect(next).toMatchObject({ period_start: JAN_16, period_end: FEB_16, total: 2900 + 7 });

    function credit() {
      return -Math.round((2900 * LEFT[0]) / LEFT[1]);
    }
  });

  // The design's upgrade: pay-as-you-go -> Pro now. Flexible: the removed metered item's usage is an
  // invoice item, and "Pending invoice items are always included on all invoices a subscription
  // generates." (compare page)
  it("payg -> pro now (flexible): one invoice with Pro in advance and the pay-as-you-go usage so far", async () => {
    const { catalog, sub, customer } = await setup("flexible", [{ price: "payg" }]);
    await at(JAN_10);
    await usage(customer, 30, JAN_10);
    await at(JAN_16);
    const updated = await h.stripe.subscriptions.update(sub.id, {
      items: [
        { id: itemOf(sub, catalog.payg.id), deleted: true },
        { price: catalog.proMonthly.id, quantity: 1 },
        { price: catalog.proSessions.id },
      ],
      billing_cycle_anchor: { type: "now" },
      proration_behavior: "create_prorations",
      expand: ["latest_invoice"],
    });
    const inv = updated.latest_invoice as Stripe.Invoice;
    expect(lineSummary(inv)).toEqual([
      {
        kind: "subscription_item_details",
        price: catalog.proMonthly.id,
        quantity: 1,
        amount: 2900,
        period: [JAN_16, FEB_16],
      },
      {
        kind: "invoice_item_details",
        price: catalog.payg.id,
        quantity: 30,
        amount: 300,
        period: [JAN_1, JAN_16],
      },
    ]);
    expect(inv).toMatchObject({ total: 3200, status: "paid" });
    expect(updated.items.data.map((i) => [i.price.id, i.current_period_start])).toEqual([
      [catalog.proMonthly.id, JAN_16],
      [catalog.proSessions.id, JAN_16],
    ]);
  });

  // compare page, classic: "Billing cycle anchor reset invoices include pending items only when
  // `proration behavior` isn't `always_invoice`."; flexible: "Pending invoice items are always
  // included on all invoices a subscription generates."
  it.each([
    ["classic", false],
    ["flexible", true],
  ] as const)(
    "%s with always_invoice: earlier pending items on the reset invoice: %s",
    async (mode, included) => {
      const { sub, customer } = await setup(mode, [{ price: "pro", quantity: 1 }]);
      await at(JAN_16);
      const manual = await h.stripe.invoiceItems.create({
        customer,
        subscription: sub.id,
        amount: 111,
        currency: "usd",
      });
      await h.stripe.subscriptions.update(sub.id, {
        billing_cycle_anchor: { type: "now" },
        proration_behavior: "always_invoice",
      });
      expect((await h.stripe.invoiceItems.retrieve(manual.id)).invoice !== null).toBe(included);
    },
  );

  // https://docs.stripe.com/changelog/endive/2026-09-30/polymorphic-billing-cycle-anchor: "The
  // `billing_cycle_anchor` field now requires an object with a `type` field instead of a string
  // value (for example, `{type: 'now'}`)."
  it("rejects the pre-Endive string form and unknown types", async () => {
    const { sub } = await setup("flexible", [{ price: "pro", quantity: 1 }]);
    const legacy = { billing_cycle_anchor: "now" } as unknown as Stripe.SubscriptionUpdateParams;
    await expect(h.stripe.subscriptions.update(sub.id, legacy)).rejects.toMatchObject({
      statusCode: 400,
      param: "billing_cycle_anchor",
    });
    const odd = { billing_cycle_anchor: { type: "later" } } as unknown as Stripe.SubscriptionUpdateParams;
    await expect(h.stripe.subscriptions.update(sub.id, odd)).rejects.toMatchObject({
      param: "billing_cycle_anchor[type]",
    });
    const kept = await h.stripe.subscriptions.update(sub.id, { billing_cycle_anchor: { type: "unchanged" } });
    expect(kept.billing_cycle_anchor).toBe(JAN_1);
  });
});

describe("payment_behavior", () => {
  // API reference, update a subscription: "Use `error_if_incomplete` if you want Stripe to return an
  // HTTP 402 status code if a subscription's invoice cannot be paid." and "Use `allow_incomplete` to
  // transition the subscription to `status=past_due` if a payment is required but cannot be paid."
  it("error_if_incomplete answers 402 and changes nothing; allow_incomplete goes past_due", async () => {
    const { catalog, sub, customer } = await setup("flexible", [{ price: "pro", quantity: 1 }]);
    await at(JAN_16);
    await h.control.failNextPayment(customer);
    const change = {
      items: [{ id: itemOf(sub, catalog.proMonthly.id), quantity: 3 }],
      proration_behavior: "always_invoice" as const,
    };
    await expect(
      h.stripe.subscriptions.update(sub.id, { ...change, payment_behavior: "error_if_incomplete" }),
    ).rejects.toMatchObject({ statusCode: 402, type: "StripeCardError", code: "card_declined" });
    const unchanged = await h.stripe.subscriptions.retrieve(sub.id);
    expect(unchanged.items.data[0]?.quantity).toBe(1);
    expect((await h.stripe.invoiceItems.list({ customer })).data).toEqual([]);

    await h.control.failNextPayment(customer);
    const updated = await h.stripe.subscriptions.update(sub.id, {
      ...change,
      payment_behavior: "allow_incomplete",
    });
    expect(updated.status).toBe("past_due");
    expect(updated.items.data[0]?.quantity).toBe(3);
    await expect(
      h.stripe.subscriptions.update(sub.id, {
        metadata: { a: "b" },
        payment_behavior: "pending_if_incomplete",
      }),
    ).rejects.toMatchObject({ statusCode: 400, param: "payment_behavior" });
  });
});

describe("update validation", () => {
  it("rejects unknown items, duplicate prices and metered quantities", async () => {
    const { catalog, sub } = await setup("flexible", [{ price: "pro", quantity: 1 }, { price: "sessions" }]);
    await expect(
      h.stripe.subscriptions.update(sub.id, { items: [{ id: "si_nope", quantity: 2 }] }),
    ).rejects.toMatchObject({
      code: "resource_missing",
      param: "items[0][id]",
    });
    await expect(
      h.stripe.subscriptions.update(sub.id, { items: [{ price: catalog.proMonthly.id }] }),
    ).rejects.toMatchObject({
      statusCode: 400,
      param: "items",
    });
    await expect(
      h.stripe.subscriptions.update(sub.id, {
        items: [{ id: itemOf(sub, catalog.proSessions.id), quantity: 2 }],
      }),
    ).rejects.toMatchObject({ param: "items[0][quantity]" });
    await expect(
      h.stripe.subscriptions.update(sub.id, { proration_behavior: "sometimes" as "none" }),
    ).rejects.toMatchObject({ param: "proration_behavior" });
  });
});
