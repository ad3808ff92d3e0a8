import type Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { createCatalog, useEmulator } from "./testkit";

const h = useEmulator();
const DAY = 86_400;
const HOUR = 3600;
const JAN_1 = Date.UTC(2026, 0, 1) / 1000;
const JAN_10 = JAN_1 + 9 * DAY;
const JAN_16 = JAN_1 + 15 * DAY;
const FEB_1 = Date.UTC(2026, 1, 1) / 1000;
const MAR_1 = Date.UTC(2026, 2, 1) / 1000;
const APR_1 = Date.UTC(2026, 3, 1) / 1000;

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

/** A pay-as-you-go subscription from January 1 and a schedule made from it. */
async function paygWithSchedule(mode: "classic" | "flexible" = "flexible") {
  await at(JAN_1);
  const catalog = await createCatalog(h.stripe, "sum");
  const session = await h.stripe.checkout.sessions.create({
    mode: "subscription",
    customer_email: "schedule@example.com",
    line_items: [{ price: catalog.payg.id }],
    success_url: "http://app.test/ok",
    subscription_data: { billing_mode: { type: mode } },
  });
  const { subscription } = await h.control.completeCheckout(session.id);
  const schedule = await h.stripe.subscriptionSchedules.create({ from_subscription: subscription.id });
  return { catalog, sub: subscription, customer: subscription.customer, schedule };
}

/** The documented "change at the next period" update: keep phase 0, add Pro as the next phase. */
function toProNextPeriod(
  schedule: Stripe.SubscriptionSchedule,
  catalog: Awaited<ReturnType<typeof createCatalog>>,
  extra: Partial<Stripe.SubscriptionScheduleUpdateParams> = {},
) {
  const [phase] = schedule.phases;
  return h.stripe.subscriptionSchedules.update(schedule.id, {
    phases: [
      { items: [{ price: catalog.payg.id }], start_date: phase?.start_date, end_date: phase?.end_date },
      {
        items: [{ price: catalog.proMonthly.id, quantity: 1 }, { price: catalog.proSessions.id }],
        duration: { interval: "month", interval_count: 1 },
        metadata: { plan: "pro" },
      },
    ],
    ...extra,
  });
}

describe("subscription schedules", () => {
  // https://docs.stripe.com/billing/subscriptions/subscription-schedules: "Passing the subscription
  // IDs in this way creates a schedule with one phase that's based on the current billing period of
  // the subscription." API reference, `from_subscription`: "When using this parameter, other
  // parameters (such as phase values) cannot be set."
  it("creates a schedule from a subscription with one phase for the current period", async () => {
    const { catalog, sub, schedule } = await paygWithSchedule();
    expect(schedule.id).toMatch(/^sub_sched_/);
    expect(schedule).toMatchObject({
      object: "subscription_schedule",
      status: "active",
      subscription: sub.id,
      customer: sub.customer,
      end_behavior: "release",
      current_phase: { start_date: JAN_1, end_date: FEB_1 },
      billing_mode: { type: "flexible" },
    });
    expect(schedule.phases.map((p) => [p.start_date, p.end_date, p.items.map((i) => i.price)])).toEqual([
      [JAN_1, FEB_1, [catalog.payg.id]],
    ]);
    const expanded = await h.stripe.subscriptions.retrieve(sub.id, { expand: ["schedule"] });
    expect((expanded.schedule as Stripe.SubscriptionSchedule).id).toBe(schedule.id);
    expect((await h.control.events()).map((e) => e.type).slice(-2)).toEqual([
      "subscription_schedule.created",
      "customer.subscription.updated",
    ]);
    await expect(
      h.stripe.subscriptionSchedules.create({ from_subscription: sub.id, end_behavior: "cancel" }),
    ).rejects.toMatchObject({ statusCode: 400, param: "end_behavior" });
    await expect(h.stripe.subscriptionSchedules.create({ from_subscription: sub.id })).rejects.toMatchObject({
      param: "from_subscription",
    });
    expect(
      (await h.stripe.subscriptionSchedules.list({ customer: sub.customer })).data.map((s) => s.id),
    ).toEqual([schedule.id]);
  });

  // https://docs.stripe.com/billing/subscriptions/billing-mode/compare — flexible: "A single
  // consolidated invoice is generated. This invoice includes both usage-based and licensed items".
  // subscription-schedules: "Subscription schedules end after the last phase is complete. At this
  // point, the subscription is left in place and is no longer associated with the schedule."
  it("flexible: changes plan at the period end with one invoice, then completes and releases the subscription", async () => {
    const { catalog, sub, customer, schedule } = await paygWithSchedule();
    const updated = await toProNextPeriod(schedule, catalog);
    expect(updated.phases.map((p) => [p.start_date, p.end_date])).toEqual([
      [JAN_1, FEB_1],
      [FEB_1, MAR_1],
    ]);
    await at(JAN_10);
    await usage(customer, 30, JAN_10);
    const transition = await at(FEB_1 + 60);
    expect(
      (await h.control.events()).filter((e) => transition.events.includes(e.id)).map((e) => e.type),
    ).toEqual(["invoice.created", "customer.subscription.updated", "subscription_schedule.updated"]);
    const invoices = (await h.stripe.invoices.list({ subscription: sub.id })).data;
    expect(invoices).toHaveLength(2);
    const single = invoices[0];
    expect(
      single?.lines.data.map((l) => [
        l.pricing?.price_details?.price,
        l.quantity,
        l.amount,
        l.period.start,
        l.period.end,
      ]),
    ).toEqual([
      [catalog.payg.id, 30, 300, JAN_1, FEB_1],
      [catalog.proMonthly.id, 1, 2900, FEB_1, MAR_1],
    ]);
    const moved = await h.stripe.subscriptions.retrieve(sub.id);
    expect(moved.items.data.map((i) => [i.price.id, i.current_period_start, i.current_period_end])).toEqual([
      [catalog.proMonthly.id, FEB_1, MAR_1],
      [catalog.proSessions.id, FEB_1, MAR_1],
    ]);
    expect(moved.metadata).toMatchObject({ plan: "pro" });
    expect((await h.stripe.subscriptionSchedules.retrieve(schedule.id)).current_phase).toEqual({
      start_date: FEB_1,
      end_date: MAR_1,
    });

    await at(MAR_1 + HOUR);
    const done = await h.stripe.subscriptionSchedules.retrieve(schedule.id);
    expect(done).toMatchObject({ status: "completed", completed_at: MAR_1, current_phase: null });
    const after = await h.stripe.subscriptions.retrieve(sub.id);
    expect(after).toMatchObject({ status: "active", schedule: null });
    expect(after.items.data[0]?.current_period_end).toBe(APR_1);
  });

  // Same compare page — classic: "Two invoices are generated."
  it("classic: the removed metered item's usage is a separate invoice at the transition", async () => {
    const { catalog, sub, customer, schedule } = await paygWithSchedule("classic");
    await toProNextPeriod(schedule, catalog);
    await at(JAN_10);
    await usage(customer, 30, JAN_10);
    await at(FEB_1 + HOUR);
    const invoices = (await h.stripe.invoices.list({ subscription: sub.id })).data.slice(0, 2).reverse();
    expect(invoices.map((i) => i.lines.data.map((l) => [l.pricing?.price_details?.price, l.amount]))).toEqual(
      [[[catalog.payg.id, 300]], [[catalog.proMonthly.id, 2900]]],
    );
  });

  // subscription-schedules: "If you want to cancel a subscription after the last phase of a
  // schedule completes, you can set end_behavior to `cancel`. The subscription's cancel_on_date
  // isn't set until the subscription transitions into the final phase."
  it("end_behavior=cancel: cancel_at is set on entering the final phase and the subscription ends with it", async () => {
    const { catalog, sub, schedule } = await paygWithSchedule();
    await toProNextPeriod(schedule, catalog, { end_behavior: "cancel" });
    expect((await h.stripe.subscriptions.retrieve(sub.id)).cancel_at).toBeNull();
    await at(FEB_1 + HOUR);
    expect((await h.stripe.subscriptions.retrieve(sub.id)).cancel_at).toBe(MAR_1);
    await at(MAR_1 + HOUR);
    expect(await h.stripe.subscriptions.retrieve(sub.id)).toMatchObject({
      status: "canceled",
      ended_at: MAR_1,
    });
    expect(await h.stripe.subscriptionSchedules.retrieve(schedule.id)).toMatchObject({ status: "completed" });
    const final = (await h.stripe.invoices.list({ subscription: sub.id })).data[0];
    expect(final?.lines.data.map((l) => l.pricing?.price_details?.price)).toEqual([catalog.proSessions.id]);
    expect((await h.control.events("subscription_schedule.completed")).length).toBe(1);
  });

  // API reference, release: "Releases the subscription schedule immediately, which will stop
  // scheduling of its phases, but leave any existing subscription in place. ... releasing it will
  // remove its subscription property and set the subscription's ID to the released_subscription
  // property."
  it("release stops the phases and leaves the subscription as it is", async () => {
    const { catalog, sub, schedule } = await paygWithSchedule();
    await toProNextPeriod(schedule, catalog);
    const released = await h.stripe.subscriptionSchedules.release(schedule.id);
    expect(released).toMatchObject({
      status: "released",
      released_at: JAN_1,
      released_subscription: sub.id,
      subscription: null,
    });
    expect((await h.stripe.subscriptions.retrieve(sub.id)).schedule).toBeNull();
    expect(await h.control.events("subscription_schedule.released")).toHaveLength(1);
    await at(FEB_1 + HOUR);
    const renewed = await h.stripe.subscriptions.retrieve(sub.id);
    expect(renewed.items.data.map((i) => i.price.id)).toEqual([catalog.payg.id]);
    await expect(h.stripe.subscriptionSchedules.release(schedule.id)).rejects.toMatchObject({
      statusCode: 400,
    });
  });

  // API reference, cancel a schedule: "Cancels a subscription schedule and its associated
  // subscription immediately"; `invoice_now` and `prorate` each "Defaults to `true`."
  it("cancel ends the subscription now with a final invoice and a proration by default", async () => {
    await at(JAN_1);
    const catalog = await createCatalog(h.stripe, "sum");
    const session = await h.stripe.checkout.sessions.create({
      mode: "subscription",
      customer_email: "pro-schedule@example.com",
      line_items: [{ price: catalog.proMonthly.id, quantity: 1 }, { price: catalog.proSessions.id }],
      success_url: "http://app.test/ok",
    });
    const { subscription: sub } = await h.control.completeCheckout(session.id);
    const schedule = await h.stripe.subscriptionSchedules.create({ from_subscription: sub.id });
    await at(JAN_16);
    await usage(sub.customer, 410, JAN_10);
    const canceled = await h.stripe.subscriptionSchedules.cancel(schedule.id);
    expect(canceled).toMatchObject({ status: "canceled", canceled_at: JAN_16 });
    expect(await h.stripe.subscriptions.retrieve(sub.id)).toMatchObject({
      status: "canceled",
      ended_at: JAN_16,
    });
    const final = (await h.stripe.invoices.list({ subscription: sub.id })).data[0];
    const credit = -Math.round((2900 * (FEB_1 - JAN_16)) / (FEB_1 - JAN_1));
    expect(final?.lines.data.map((l) => l.amount)).toEqual([70, credit]);
    expect(await h.control.events("subscription_schedule.canceled")).toHaveLength(1);
  });

  // compare page, schedule phase transition in flexible mode, "Depending on the incoming phase's
  // `proration_behavior`: `create_prorations`: an invoice item is created for unbilled usage when
  // removing a usage-based subscription item. ... `none`: no invoice item is created."
  it.each([
    ["create_prorations", 1],
    ["none", 0],
  ] as const)("flexible mid-period transition with %s creates %i usage item(s)", async (behavior, count) => {
    const { catalog, sub, customer, schedule } = await paygWithSchedule();
    await h.stripe.subscriptionSchedules.update(schedule.id, {
      phases: [
        { items: [{ price: catalog.payg.id }], start_date: JAN_1, end_date: JAN_16 },
        {
          items: [{ price: catalog.proMonthly.id, quantity: 1 }],
          end_date: FEB_1,
          proration_behavior: behavior,
        },
      ],
    });
    await at(JAN_10);
    await usage(customer, 30, JAN_10);
    await at(JAN_16 + 60);
    const items = (await h.stripe.invoiceItems.list({ customer, pending: true })).data;
    expect(items.filter((i) => !i.proration).map((i) => [i.amount, i.period.start, i.period.end])).toEqual(
      count ? [[300, JAN_1, JAN_16]] : [],
    );
    const moved = await h.stripe.subscriptions.retrieve(sub.id);
    expect(moved.items.data.map((i) => i.price.id)).toEqual([catalog.proMonthly.id]);
  });

  it("validates phases", async () => {
    const { catalog, schedule } = await paygWithSchedule();
    await expect(
      h.stripe.subscriptionSchedules.update(schedule.id, {
        phases: [{ items: [{ price: catalog.payg.id }], start_date: JAN_10, end_date: FEB_1 }],
      }),
    ).rejects.toMatchObject({ param: "phases[0][start_date]" });
    await expect(
      h.stripe.subscriptionSchedules.update(schedule.id, {
        phases: [
          { items: [{ price: catalog.payg.id }], start_date: JAN_1, end_date: FEB_1 },
          { items: [{ price: catalog.payg.id }], start_date: FEB_1 + 1, end_date: MAR_1 },
        ],
      }),
    ).rejects.toMatchObject({ param: "phases[1][start_date]" });
    await expect(
      h.stripe.subscriptionSchedules.update(schedule.id, {
        phases: [{ items: [{ price: "price_nope" }], start_date: JAN_1, end_date: FEB_1 }],
      }),
    ).rejects.toMatchObject({ code: "resource_missing", param: "phases[0][items][0][price]" });
    await expect(
      h.stripe.subscriptionSchedules.update(schedule.id, {
        phases: [
          {
            items: [{ price: catalog.payg.id }],
            start_date: JAN_1,
            end_date: FEB_1,
            duration: { interval: "month" },
          },
        ],
      }),
    ).rejects.toMatchObject({ param: "phases[0][duration]" });
    await expect(
      h.stripe.subscriptionSchedules.update(schedule.id, {
        phases: [
          { items: [{ price: catalog.payg.id }], start_date: JAN_1, end_date: FEB_1 },
          { items: [{ price: catalog.payg.id }, { price: catalog.payg.id }], end_date: MAR_1 },
        ],
      }),
    ).rejects.toMatchObject({ param: "phases[1][items][1][price]" });
  });
});
