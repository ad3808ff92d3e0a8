import { describe, expect, it } from "vitest";
import { type Catalog, createCatalog, type Harness, subscribe, useEmulator } from "./testkit";

const h = useEmulator();
const MAR_10 = Date.UTC(2026, 2, 10, 9, 30, 0) / 1000;
const APR_10 = Date.UTC(2026, 3, 10, 9, 30, 0) / 1000;
const MAY_10 = Date.UTC(2026, 4, 10, 9, 30, 0) / 1000;

async function sendUsage(harness: Harness, customer: string, value: number, timestamp?: number) {
  await harness.stripe.billing.meterEvents.create({
    event_name: "aigate_sessions",
    payload: { stripe_customer_id: customer, value: String(value) },
    ...(timestamp ? { timestamp } : {}),
  });
}

async function subscribePro(catalog: Catalog, email: string) {
  return subscribe(
    h,
    [{ price: catalog.proMonthly.id, quantity: 1 }, { price: catalog.proSessions.id }],
    email,
  );
}

async function eventTypes(since: number): Promise<string[]> {
  return (await h.control.events()).slice(since).map((e) => e.type);
}

describe("billing periods and invoices", () => {
  it("bills pay-as-you-go usage at 10 cents per session for the closed period", async () => {
    await h.control.setClock(MAR_10, { frozen: true });
    const catalog = await createCatalog(h.stripe, "sum");
    const { subscription, invoice: first } = await subscribe(h, [{ price: catalog.payg.id }]);
    expect(first).toMatchObject({ total: 0, status: "paid" });

    await sendUsage(h, subscription.customer, 3);
    await sendUsage(h, subscription.customer, 4);
    await sendUsage(h, subscription.customer, 100, MAR_10 - 60); // before the period: not billed
    await h.control.advanceClock(20 * 86_400);
    await sendUsage(h, subscription.customer, 5);
    const before = (await h.control.events()).length;

    const { invoice, subscription: advanced } = await h.control.closePeriod(subscription.id);
    expect(invoice).toMatchObject({
      status: "paid",
      billing_reason: "subscription_cycle",
      period_start: MAR_10,
      period_end: APR_10,
      total: 120,
      amount_paid: 120,
    });
    expect(invoice.lines.data).toHaveLength(1);
    expect(invoice.lines.data[0]).toMatchObject({
      amount: 120,
      quantity: 12,
      period: { start: MAR_10, end: APR_10 },
      pricing: { price_details: { price: catalog.payg.id }, unit_amount_decimal: "10" },
    });
    expect(advanced.items.data[0]).toMatchObject({
      current_period_start: APR_10,
      current_period_end: MAY_10,
    });
    expect(await eventTypes(before)).toEqual([
      "invoice.created",
      "invoice.finalized",
      "invoice.paid",
      "invoice.payment_succeeded",
      "customer.subscription.updated",
    ]);
    const updated = (await h.control.events("customer.subscription.updated")).at(-1);
    expect(updated?.data.previous_attributes).toMatchObject({ items: expect.any(Object) });

    const listed = await h.stripe.invoices.list({ subscription: subscription.id });
    expect(listed.data.map((i) => i.id)).toEqual([invoice.id, first.id]);
    const lines = await h.stripe.invoices.listLineItems(invoice.id);
    expect(lines.data[0]?.amount).toBe(120);
  });

  it.each([
    [399, 2900],
    [400, 2900],
    [401, 2907],
    [450, 2900 + 50 * 7],
  ])("bills pro with %i sessions at %i cents (400 included, then 7 cents)", async (sessions, total) => {
    await h.control.setClock(MAR_10, { frozen: true });
    const catalog = await createCatalog(h.stripe, "last");
    const { subscription } = await subscribePro(catalog, `pro${sessions}@example.com`);
    // a `last` meter receives the absolute count: resending totals never double-charges
    await sendUsage(h, subscription.customer, sessions - 1);
    await sendUsage(h, subscription.customer, sessions);
    await sendUsage(h, subscription.customer, sessions);
    const { invoice } = await h.control.closePeriod(subscription.id);
    expect(invoice.total).toBe(total);
    expect(invoice.lines.data.map((l) => [l.pricing.price_details?.price, l.quantity, l.amount])).toEqual([
      [catalog.proMonthly.id, 1, 2900],
      [catalog.proSessions.id, sessions, total - 2900],
    ]);
    // licensed in advance for the next period, usage in arrears for the closed one
    expect(invoice.lines.data.map((l) => [l.period.start, l.period.end])).toEqual([
      [APR_10, MAY_10],
      [MAR_10, APR_10],
    ]);
  });

  it("fails a payment: past_due, then paying the invoice makes it active again", async () => {
    const catalog = await createCatalog(h.stripe, "sum");
    const { subscription } = await subscribePro(catalog, "late@example.com");
    await h.control.failNextPayment(subscription.customer);
    const before = (await h.control.events()).length;
    const { invoice, subscription: afterClose } = await h.control.closePeriod(subscription.id);
    expect(invoice).toMatchObject({
      status: "open",
      total: 2900,
      amount_paid: 0,
      amount_remaining: 2900,
      attempt_count: 1,
    });
    expect(invoice.next_payment_attempt).toBeTypeOf("number");
    expect(afterClose.status).toBe("past_due");
    expect(await eventTypes(before)).toEqual([
      "invoice.created",
      "invoice.finalized",
      "invoice.payment_failed",
      "customer.subscription.updated",
      "customer.subscription.updated",
    ]);
    const pastDue = (await h.control.events("customer.subscription.updated")).at(-2);
    expect(pastDue?.data.object).toMatchObject({ status: "past_due" });
    expect(pastDue?.data.previous_attributes).toEqual({ status: "active" });
    expect((await h.stripe.subscriptions.retrieve(subscription.id)).status).toBe("past_due");
    expect(
      (await h.stripe.invoices.list({ customer: subscription.customer, status: "open" })).data,
    ).toHaveLength(1);

    const mark = (await h.control.events()).length;
    const paid = await h.control.payInvoice(invoice.id);
    expect(paid.invoice).toMatchObject({ status: "paid", amount_paid: 2900, attempt_count: 2 });
    expect(paid.subscription?.status).toBe("active");
    expect(await eventTypes(mark)).toEqual([
      "invoice.paid",
      "invoice.payment_succeeded",
      "customer.subscription.updated",
    ]);
    await expect(h.control.payInvoice(invoice.id)).rejects.toMatchObject({ status: 400 });
  });

  it("closes a period early with `at`, moving the billing cycle anchor", async () => {
    await h.control.setClock(MAR_10, { frozen: true });
    const catalog = await createCatalog(h.stripe, "sum");
    const { subscription } = await subscribe(h, [{ price: catalog.payg.id }]);
    await sendUsage(h, subscription.customer, 2);
    const at = MAR_10 + 3600;
    const { invoice, subscription: sub } = await h.control.closePeriod(subscription.id, { at });
    expect(invoice).toMatchObject({ period_start: MAR_10, period_end: at, total: 20 });
    expect(sub).toMatchObject({ billing_cycle_anchor: at });
    expect(sub.items.data[0]).toMatchObject({ current_period_start: at, current_period_end: APR_10 + 3600 });
    await expect(h.control.closePeriod(subscription.id, { at: MAR_10 })).rejects.toMatchObject({
      status: 400,
    });
  });

  it("cancels now (DELETE) or at period end", async () => {
    const catalog = await createCatalog(h.stripe, "sum");
    const { subscription: a } = await subscribePro(catalog, "a@example.com");
    const canceled = await h.stripe.subscriptions.cancel(a.id);
    expect(canceled).toMatchObject({
      status: "canceled",
      cancellation_details: { reason: "cancellation_requested" },
    });
    expect(canceled.canceled_at).toBeTypeOf("number");
    expect(canceled.ended_at).toBe(canceled.canceled_at);
    const deleted = await h.control.events("customer.subscription.deleted");
    expect(deleted).toHaveLength(1);
    expect(deleted[0]?.request.id).toBe(canceled.lastResponse.requestId);
    await expect(h.stripe.subscriptions.update(a.id, { cancel_at_period_end: true })).rejects.toMatchObject({
      statusCode: 400,
    });
    expect((await h.stripe.subscriptions.update(a.id, { metadata: { note: "x" } })).metadata).toMatchObject({
      note: "x",
    });

    const { subscription: b } = await subscribePro(catalog, "b@example.com");
    const pending = await h.stripe.subscriptions.update(b.id, {
      cancel_at_period_end: true,
      metadata: { plan: "" },
    });
    const periodEnd = pending.items.data[0]?.current_period_end;
    expect(pending).toMatchObject({ cancel_at_period_end: true, cancel_at: periodEnd, status: "active" });
    expect(pending.metadata).toEqual({ user_id: "u_1" });
    const update = (await h.control.events("customer.subscription.updated")).at(-1);
    expect(update?.data.previous_attributes).toMatchObject({ cancel_at_period_end: false, cancel_at: null });

    await h.stripe.billing.meterEvents.create({
      event_name: "aigate_sessions",
      payload: { stripe_customer_id: b.customer, value: "401" },
    });
    const { invoice, subscription: ended } = await h.control.closePeriod(b.id);
    expect(invoice.lines.data.map((l) => l.amount)).toEqual([7]); // final usage only, no renewal
    expect(ended).toMatchObject({ status: "canceled", ended_at: periodEnd });
    expect((await h.control.events()).at(-1)?.type).toBe("customer.subscription.deleted");

    expect((await h.stripe.subscriptions.list()).data).toHaveLength(0);
    expect((await h.stripe.subscriptions.list({ status: "all" })).data).toHaveLength(2);
    expect(
      (await h.stripe.subscriptions.list({ status: "canceled", customer: b.customer })).data,
    ).toHaveLength(1);
  });

  it("swaps subscription item prices with `proration_behavior: none`", async () => {
    const catalog = await createCatalog(h.stripe, "sum");
    const { subscription } = await subscribe(h, [{ price: catalog.payg.id }]);
    const item = subscription.items.data[0];
    const upgraded = await h.stripe.subscriptions.update(subscription.id, {
      items: [
        { id: item?.id, deleted: true },
        { price: catalog.proMonthly.id, quantity: 1 },
        { price: catalog.proSessions.id },
      ],
      metadata: { plan: "pro" },
      proration_behavior: "none",
    });
    expect(upgraded.items.data.map((i) => i.price.id)).toEqual([
      catalog.proMonthly.id,
      catalog.proSessions.id,
    ]);
    expect(upgraded.items.data[0]?.current_period_end).toBe(item?.current_period_end);
    const { invoice } = await h.control.closePeriod(subscription.id);
    expect(invoice.total).toBe(2900);
  });
});
