import { describe, expect, it } from "vitest";
import { createCatalog, useEmulator } from "./testkit";

const h = useEmulator();
const DAY = 86_400;
const HOUR = 3600;
/** Test clocks here live in 2024; the emulator clock stays at the real time. */
const JAN_1 = Date.UTC(2024, 0, 1) / 1000;
const FEB_1 = Date.UTC(2024, 1, 1) / 1000;
const MAR_1 = Date.UTC(2024, 2, 1) / 1000;
const APR_1 = Date.UTC(2024, 3, 1) / 1000;

async function clockWithPayg() {
  const catalog = await createCatalog(h.stripe, "sum");
  const clock = await h.stripe.testHelpers.testClocks.create({ frozen_time: JAN_1, name: "payg renewal" });
  const customer = await h.stripe.customers.create({ email: "clock@example.com", test_clock: clock.id });
  const session = await h.stripe.checkout.sessions.create({
    mode: "subscription",
    customer: customer.id,
    line_items: [{ price: catalog.payg.id }],
    success_url: "http://app.test/ok",
  });
  const { subscription, invoice } = await h.control.completeCheckout(session.id);
  return { catalog, clock, customer, subscription, invoice };
}

describe("test clocks", () => {
  // API reference: create (`frozen_time` "The initial frozen time for this test clock.", `name`),
  // retrieve, list, delete; events `test_helpers.test_clock.created|deleted`.
  it("creates, retrieves, lists and deletes clocks, deleting their customers", async () => {
    const clock = await h.stripe.testHelpers.testClocks.create({
      frozen_time: JAN_1,
      name: "Monthly renewal",
    });
    expect(clock.id).toMatch(/^clock_/);
    expect(clock).toMatchObject({
      object: "test_helpers.test_clock",
      frozen_time: JAN_1,
      name: "Monthly renewal",
      status: "ready",
      livemode: false,
    });
    expect(clock.deletes_after - clock.created).toBe(7 * DAY);
    expect((await h.stripe.testHelpers.testClocks.retrieve(clock.id)).frozen_time).toBe(JAN_1);
    expect((await h.stripe.testHelpers.testClocks.list()).data.map((c) => c.id)).toEqual([clock.id]);
    const customer = await h.stripe.customers.create({ test_clock: clock.id });
    expect(customer).toMatchObject({ test_clock: clock.id, created: JAN_1 });
    // Customers list: "The response will not include customers with test clocks if this parameter is not set."
    expect((await h.stripe.customers.list()).data).toEqual([]);
    expect((await h.stripe.customers.list({ test_clock: clock.id })).data.map((c) => c.id)).toEqual([
      customer.id,
    ]);

    const deleted = await h.stripe.testHelpers.testClocks.del(clock.id);
    expect(deleted).toMatchObject({ id: clock.id, deleted: true });
    await expect(h.stripe.customers.retrieve(customer.id)).rejects.toMatchObject({ statusCode: 404 });
    expect((await h.control.events()).map((e) => e.type).filter((t) => t.startsWith("test_helpers"))).toEqual(
      ["test_helpers.test_clock.created", "test_helpers.test_clock.deleted"],
    );
    await expect(h.stripe.customers.create({ test_clock: "clock_nope" })).rejects.toMatchObject({
      code: "resource_missing",
      param: "test_clock",
    });
  });

  // "With a test clock, you can create objects at a frozen time in the past or future, and advance
  // to a specific future time to observe webhooks and state changes." (API reference, test clock
  // object); advance: "Advancement is done when status changes to `Ready`."
  it("runs a clock customer's subscription at the clock's time and renews it when the clock advances", async () => {
    const { clock, customer, subscription, invoice } = await clockWithPayg();
    expect(subscription).toMatchObject({ created: JAN_1, start_date: JAN_1, test_clock: clock.id });
    expect(subscription.items.data[0]).toMatchObject({
      current_period_start: JAN_1,
      current_period_end: FEB_1,
    });
    expect(invoice).toMatchObject({ created: JAN_1, test_clock: clock.id, status: "paid" });

    // meter event timestamps are checked against the clock's time (see README)
    await h.stripe.billing.meterEvents.create({
      event_name: "aigate_sessions",
      payload: { stripe_customer_id: customer.id, value: "12" },
      timestamp: JAN_1 + 60,
    });
    const plain = await h.stripe.customers.create({});
    await expect(
      h.stripe.billing.meterEvents.create({
        event_name: "aigate_sessions",
        payload: { stripe_customer_id: plain.id, value: "1" },
        timestamp: JAN_1 + 60,
      }),
    ).rejects.toMatchObject({ code: "timestamp_too_far_in_past" });

    // moving the emulator clock does not touch customers on a test clock
    await h.control.advanceClock(0);
    expect((await h.stripe.invoices.list({ customer: customer.id })).data).toHaveLength(1);

    const mark = (await h.control.events()).length;
    const advancing = await h.stripe.testHelpers.testClocks.advance(clock.id, {
      frozen_time: FEB_1 + 2 * HOUR,
    });
    expect(advancing).toMatchObject({
      status: "advancing",
      status_details: { advancing: { target_frozen_time: FEB_1 + 2 * HOUR } },
    });
    const ready = await h.stripe.testHelpers.testClocks.retrieve(clock.id);
    expect(ready).toMatchObject({ status: "ready", frozen_time: FEB_1 + 2 * HOUR, status_details: {} });
    expect((await h.control.events()).slice(mark).map((e) => e.type)).toEqual([
      "test_helpers.test_clock.advancing",
      "invoice.created",
      "customer.subscription.updated",
      "invoice.finalized",
      "invoice.paid",
      "invoice.payment_succeeded",
      "test_helpers.test_clock.ready",
    ]);
    const renewal = (await h.stripe.invoices.list({ customer: customer.id })).data[0];
    expect(renewal).toMatchObject({
      created: FEB_1,
      period_start: JAN_1,
      period_end: FEB_1,
      total: 120,
      status: "paid",
      test_clock: clock.id,
      status_transitions: { finalized_at: FEB_1 + HOUR },
    });
    const canceled = await h.stripe.subscriptions.cancel(subscription.id);
    expect(canceled).toMatchObject({ canceled_at: FEB_1 + 2 * HOUR, ended_at: FEB_1 + 2 * HOUR });
  });

  // https://docs.stripe.com/billing/testing/test-clocks/api-advanced-usage: "Advance time in
  // intervals of up to two. The length of the interval is based on the shortest service period
  // associated with the subscription ... if you have a monthly subscription, you can only advance up
  // to two months at a time." API reference, advance `frozen_time`: "Must be after the test clock's
  // current frozen time. ... If there are no subscriptions in this test clock, it cannot be more
  // than two years in the future."
  it("advances at most two intervals of the shortest subscription, and only forward", async () => {
    const empty = await h.stripe.testHelpers.testClocks.create({ frozen_time: JAN_1 });
    await expect(
      h.stripe.testHelpers.testClocks.advance(empty.id, { frozen_time: Date.UTC(2026, 0, 1) / 1000 + 1 }),
    ).rejects.toMatchObject({ statusCode: 400, type: "StripeInvalidRequestError", param: "frozen_time" });
    await expect(
      h.stripe.testHelpers.testClocks.advance(empty.id, { frozen_time: JAN_1 }),
    ).rejects.toMatchObject({
      param: "frozen_time",
    });

    const { clock } = await clockWithPayg();
    await expect(
      h.stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: MAR_1 + 1 }),
    ).rejects.toMatchObject({
      statusCode: 400,
      param: "frozen_time",
    });
    await h.stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: MAR_1 });
    await h.stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: APR_1 + HOUR });
    expect((await h.stripe.testHelpers.testClocks.retrieve(clock.id)).frozen_time).toBe(APR_1 + HOUR);
  });
});
