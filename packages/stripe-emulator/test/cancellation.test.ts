import type Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { createCatalog, useEmulator } from "./testkit";

const h = useEmulator();
const DAY = 86_400;
const HOUR = 3600;
const JAN_1 = Date.UTC(2026, 0, 1) / 1000;
const JAN_10 = JAN_1 + 9 * DAY;
const JAN_16 = JAN_1 + 15 * DAY;
const JAN_20 = JAN_1 + 19 * DAY;
const FEB_1 = JAN_1 + 31 * DAY;

async function at(t: number) {
  return h.control.setClock(t, { frozen: true });
}

async function usage(customer: string, value: number, timestamp: number) {
  await h.stripe.billing.meterEvents.create({
    event_name: "aigate_sessions",
    payload: { stripe_customer_id: customer, value: String(value) },
    timestamp,
  });
}

/** Pro (2900 a month + 400 sessions included, then 7 cents) from January 1. */
async function pro(mode: "classic" | "flexible" = "flexible") {
  await at(JAN_1);
  const catalog = await createCatalog(h.stripe, "sum");
  const session = await h.stripe.checkout.sessions.create({
    mode: "subscription",
    customer_email: "cancel@example.com",
    line_items: [{ price: catalog.proMonthly.id, quantity: 1 }, { price: catalog.proSessions.id }],
    success_url: "http://app.test/ok",
    subscription_data: { billing_mode: { type: mode } },
  });
  const { subscription } = await h.control.completeCheckout(session.id);
  return { catalog, sub: subscription, customer: subscription.customer };
}

async function eventTypes(ids: string[]) {
  return (await h.control.events()).filter((e) => ids.includes(e.id)).map((e) => e.type);
}

const unused = (from: number) => -Math.round((2900 * (FEB_1 - from)) / (FEB_1 - JAN_1));

describe("cancel at the period end", () => {
  // https://docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup: "For
  // subscriptions that cancel at the end of the period, the final invoice at the end of the period
  // includes metered usage from the last billing period."
  it("ends with a final invoice holding the period's usage and no licensed renewal", async () => {
    const { catalog, sub, customer } = await pro();
    await at(JAN_16);
    const pending = await h.stripe.subscriptions.update(sub.id, { cancel_at_period_end: true });
    expect(pending).toMatchObject({ cancel_at_period_end: true, cancel_at: FEB_1, status: "active" });
    // "Setting cancel_at_period_end to true" is among the updates that "don't generate new invoices"
    expect((await h.stripe.invoices.list({ subscription: sub.id })).data).toHaveLength(1);
    await usage(customer, 450, JAN_16);
    const end = await at(FEB_1 + 60);
    expect(await eventTypes(end.events)).toEqual(["invoice.created", "customer.subscription.deleted"]);
    const ended = await h.stripe.subscriptions.retrieve(sub.id);
    expect(ended).toMatchObject({ status: "canceled", ended_at: FEB_1, cancel_at_period_end: true });
    const final = (await h.stripe.invoices.list({ subscription: sub.id })).data[0];
    expect(final).toMatchObject({
      status: "draft",
      period_end: FEB_1,
      automatically_finalizes_at: FEB_1 + HOUR,
    });
    expect(final?.lines.data.map((l) => [l.pricing?.price_details?.price, l.quantity, l.amount])).toEqual([
      [catalog.proSessions.id, 450, 350],
    ]);
    await at(FEB_1 + HOUR);
    expect(await h.stripe.invoices.retrieve(final?.id ?? "")).toMatchObject({ status: "paid", total: 350 });
  });

  // Same page: "If you use cancel_at_period_end to schedule the cancellation of a subscription, you
  // can reactivate the subscription at any time up to the end of the period. To do so, update
  // `cancel_at_period_end` to `false`." and "You can't reactivate canceled subscriptions."
  it("is undone by setting it to false before the end; a canceled subscription stays canceled", async () => {
    const { sub } = await pro();
    await at(JAN_16);
    await h.stripe.subscriptions.update(sub.id, { cancel_at_period_end: true });
    const resumed = await h.stripe.subscriptions.update(sub.id, { cancel_at_period_end: false });
    expect(resumed).toMatchObject({ cancel_at_period_end: false, cancel_at: null });
    await at(FEB_1 + HOUR);
    const renewed = await h.stripe.subscriptions.retrieve(sub.id);
    expect(renewed.status).toBe("active");
    expect((await h.stripe.invoices.list({ subscription: sub.id })).data[0]?.total).toBe(2900);

    await h.stripe.subscriptions.cancel(sub.id);
    await expect(
      h.stripe.subscriptions.update(sub.id, { cancel_at_period_end: false }),
    ).rejects.toMatchObject({
      statusCode: 400,
    });
  });
});

describe("cancel_at", () => {
  // https://docs.stripe.com/changelog/basil/2025-07-30/cancel-at-enums: "`max_period_end`:
  // Schedules cancelation of the subscription at the latest `items.data.current_period_end` across
  // all subscription items." ... "Unlike cancel_at_period_end, these values resolve to timestamps
  // immediately"
  it("resolves min_period_end and max_period_end to timestamps at once", async () => {
    const { sub } = await pro();
    const max = await h.stripe.subscriptions.update(sub.id, { cancel_at: "max_period_end" });
    expect(max).toMatchObject({ cancel_at: FEB_1, cancel_at_period_end: false });
    const min = await h.stripe.subscriptions.update(sub.id, { cancel_at: "min_period_end" });
    expect(min.cancel_at).toBe(FEB_1);
    const cleared = await h.stripe.subscriptions.update(sub.id, { cancel_at: "" });
    expect(cleared.cancel_at).toBeNull();
    await expect(h.stripe.subscriptions.update(sub.id, { cancel_at: JAN_1 - 1 })).rejects.toMatchObject({
      param: "cancel_at",
    });
    await expect(
      h.stripe.subscriptions.update(sub.id, { cancel_at: FEB_1, cancel_at_period_end: true }),
    ).rejects.toMatchObject({ statusCode: 400 });
  });

  // API reference, update a subscription, `cancel_at`: "If set to a date before the current period
  // ends, this will cause a proration if prorations have been enabled using `proration_behavior`."
  it("before the period end: credits the licensed time after it, then ends with the usage up to it", async () => {
    const { catalog, sub, customer } = await pro();
    await at(JAN_10);
    await usage(customer, 405, JAN_10);
    await h.stripe.subscriptions.update(sub.id, { cancel_at: JAN_20 });
    const [credit] = (await h.stripe.invoiceItems.list({ customer, pending: true })).data;
    expect(credit).toMatchObject({
      amount: unused(JAN_20),
      proration: true,
      period: { start: JAN_20, end: FEB_1 },
    });
    const end = await at(JAN_20 + 10);
    expect(await eventTypes(end.events)).toEqual(["invoice.created", "customer.subscription.deleted"]);
    expect(await h.stripe.subscriptions.retrieve(sub.id)).toMatchObject({
      status: "canceled",
      ended_at: JAN_20,
    });
    const final = (await h.stripe.invoices.list({ subscription: sub.id })).data[0];
    expect(final?.lines.data.map((l) => [l.pricing?.price_details?.price, l.amount, l.period.end])).toEqual([
      [catalog.proSessions.id, 35, JAN_20],
      [catalog.proMonthly.id, unused(JAN_20), FEB_1],
    ]);
  });
});

describe("cancel now (DELETE)", () => {
  // API reference, cancel a subscription: `invoice_now` "Will generate a final invoice that invoices
  // for any un-invoiced metered usage and new/pending proration invoice items. Defaults to
  // `false`." and "if the subscription is set to cancel immediately, pending prorations are removed
  // if invoice_now and prorate are both set to false."
  it("by default bills nothing and removes pending prorations, keeping other pending items", async () => {
    const { catalog, sub, customer } = await pro();
    await at(JAN_10);
    await usage(customer, 500, JAN_10);
    await h.stripe.subscriptions.update(sub.id, {
      items: [{ id: sub.items.data.find((i) => i.price.id === catalog.proMonthly.id)?.id, quantity: 2 }],
    });
    const manual = await h.stripe.invoiceItems.create({
      customer,
      subscription: sub.id,
      amount: 42,
      currency: "usd",
    });
    expect((await h.stripe.invoiceItems.list({ customer, pending: true })).data).toHaveLength(3);
    await h.stripe.subscriptions.cancel(sub.id);
    expect((await h.stripe.invoiceItems.list({ customer, pending: true })).data.map((i) => i.id)).toEqual([
      manual.id,
    ]);
    expect((await h.stripe.invoices.list({ subscription: sub.id })).data).toHaveLength(1);
    expect(await h.control.events("invoiceitem.deleted")).toHaveLength(2);
  });

  // `prorate`: "Will generate a proration invoice item that credits remaining unused time until the
  // subscription period end. Defaults to `false`."
  it("with invoice_now and prorate: a final invoice with the usage so far and the credit", async () => {
    const { catalog, sub, customer } = await pro();
    await at(JAN_10);
    await usage(customer, 420, JAN_10);
    await at(JAN_16);
    const canceled = await h.stripe.subscriptions.cancel(sub.id, {
      invoice_now: true,
      prorate: true,
      expand: ["latest_invoice"],
    });
    expect(canceled).toMatchObject({ status: "canceled", ended_at: JAN_16, canceled_at: JAN_16 });
    const final = canceled.latest_invoice as Stripe.Invoice;
    expect(final).toMatchObject({ status: "draft", period_end: JAN_16 });
    // usage reported during the grace period for times before the cancellation still counts
    await usage(customer, 10, JAN_16 - 60);
    await at(JAN_16 + HOUR);
    const paid = await h.stripe.invoices.retrieve(final.id);
    expect(paid.lines.data.map((l) => [l.pricing?.price_details?.price, l.quantity, l.amount])).toEqual([
      [catalog.proSessions.id, 430, 210],
      [catalog.proMonthly.id, 1, unused(JAN_16)],
    ]);
    expect(paid).toMatchObject({ status: "paid", total: 210 + unused(JAN_16), amount_due: 0 });
    expect((await h.stripe.customers.retrieve(customer)) as { balance: number }).toMatchObject({
      balance: 210 + unused(JAN_16),
    });
  });

  it("with prorate only: the credit stays pending", async () => {
    const { sub, customer } = await pro("classic");
    await at(JAN_16);
    await h.stripe.subscriptions.cancel(sub.id, { prorate: true });
    const pending = (await h.stripe.invoiceItems.list({ customer, pending: true })).data;
    expect(pending.map((i) => [i.amount, i.proration])).toEqual([[unused(JAN_16), true]]);
    await expect(h.stripe.subscriptions.cancel(sub.id)).rejects.toMatchObject({ statusCode: 400 });
  });
});
