import { describe, expect, it } from "vitest";
import { type Catalog, createCatalog, type Harness, subscribe, useEmulator } from "./testkit";

const h = useEmulator();
const MAR_10 = Date.UTC(2026, 2, 10, 9, 30, 0) / 1000;
const APR_10 = Date.UTC(2026, 3, 10, 9, 30, 0) / 1000;
const MAY_10 = Date.UTC(2026, 4, 10, 9, 30, 0) / 1000;
const HOUR = 3600;

async function usage(harness: Harness, customer: string, value: number, timestamp: number) {
  await harness.stripe.billing.meterEvents.create({
    event_name: "aigate_sessions",
    payload: { stripe_customer_id: customer, value: String(value) },
    timestamp,
  });
}

async function payg(catalog: Catalog) {
  return (await subscribe(h, [{ price: catalog.payg.id }])).subscription;
}

describe("invoice finalization grace period", () => {
  // https://docs.stripe.com/billing/subscriptions/usage-based/configure-grace-period
  // "All invoices have a default finalization grace period of 1 hour. During the finalization grace
  // period, you can continue to report usage for the previous billing period."
  it("renews at the period end into a draft that finalizes an hour later with the usage reported meanwhile", async () => {
    await h.control.setClock(MAR_10, { frozen: true });
    const catalog = await createCatalog(h.stripe, "sum");
    const sub = await payg(catalog);
    await usage(h, sub.customer, 3, MAR_10 + 60);

    const moved = await h.control.setClock(APR_10 + 60, { frozen: true });
    const renewal = (await h.stripe.invoices.list({ subscription: sub.id, status: "draft" })).data[0];
    expect(renewal).toMatchObject({
      status: "draft",
      billing_reason: "subscription_cycle",
      created: APR_10,
      period_start: MAR_10,
      period_end: APR_10,
      automatically_finalizes_at: APR_10 + HOUR,
      number: null,
      attempted: false,
    });
    expect(renewal?.lines.data[0]).toMatchObject({ quantity: 3, period: { start: MAR_10, end: APR_10 } });
    const types = (await h.control.events()).filter((e) => moved.events.includes(e.id)).map((e) => e.type);
    expect(types).toEqual(["invoice.created", "customer.subscription.updated"]);
    const advanced = await h.stripe.subscriptions.retrieve(sub.id);
    expect(advanced.items.data[0]).toMatchObject({
      current_period_start: APR_10,
      current_period_end: MAY_10,
    });

    // late usage for the closed period, reported during the grace period
    await usage(h, sub.customer, 4, APR_10 - 60);
    await h.control.advanceClock(30 * 60);
    expect((await h.stripe.invoices.retrieve(renewal?.id ?? "")).status).toBe("draft");
    const finalizing = await h.control.setClock(APR_10 + HOUR, { frozen: true });
    expect(
      (await h.control.events()).filter((e) => finalizing.events.includes(e.id)).map((e) => e.type),
    ).toEqual(["invoice.finalized", "invoice.paid", "invoice.payment_succeeded"]);
    const final = await h.stripe.invoices.retrieve(renewal?.id ?? "");
    expect(final).toMatchObject({
      status: "paid",
      total: 70,
      automatically_finalizes_at: null,
      status_transitions: { finalized_at: APR_10 + HOUR, paid_at: APR_10 + HOUR },
    });
    expect(final.lines.data[0]?.quantity).toBe(7);

    // after finalization: not on the finalized invoice, and outside the next period's window
    await usage(h, sub.customer, 100, APR_10 - 30);
    await h.control.setClock(MAY_10 + 2 * HOUR, { frozen: true });
    const next = (await h.stripe.invoices.list({ subscription: sub.id })).data[0];
    expect(next).toMatchObject({ period_start: APR_10, period_end: MAY_10, status: "paid", total: 0 });
    expect((await h.stripe.invoices.retrieve(renewal?.id ?? "")).total).toBe(70);
  });

  // Same page: "You can set a delay of up to 72 hours (3 days)." (a Dashboard setting on Stripe,
  // a control here)
  it("uses the configured grace period, up to 72 hours", async () => {
    await expect(
      h.control.setInvoiceSettings({ finalization_grace_seconds: 72 * HOUR + 1 }),
    ).rejects.toMatchObject({
      status: 400,
    });
    expect(await h.control.invoiceSettings()).toEqual({ finalization_grace_seconds: HOUR });
    await h.control.setInvoiceSettings({ finalization_grace_seconds: 72 * HOUR });
    await h.control.setClock(MAR_10, { frozen: true });
    const catalog = await createCatalog(h.stripe, "sum");
    const sub = await payg(catalog);
    await h.control.setClock(APR_10 + 71 * HOUR, { frozen: true });
    const draft = (await h.stripe.invoices.list({ subscription: sub.id })).data[0];
    expect(draft).toMatchObject({ status: "draft", automatically_finalizes_at: APR_10 + 72 * HOUR });
    await h.control.advanceClock(HOUR);
    expect((await h.stripe.invoices.retrieve(draft?.id ?? "")).status).toBe("paid");
  });

  it("processes several periods in time order in one clock move", async () => {
    await h.control.setClock(MAR_10, { frozen: true });
    const catalog = await createCatalog(h.stripe, "sum");
    const sub = await payg(catalog);
    await usage(h, sub.customer, 2, MAR_10 + 60);
    await h.control.setClock(APR_10 + 1, { frozen: true });
    await usage(h, sub.customer, 5, APR_10 + 60);
    await h.control.setClock(MAY_10 + 2 * HOUR, { frozen: true });
    const invoices = (await h.stripe.invoices.list({ subscription: sub.id })).data.reverse();
    expect(invoices.map((i) => [i.billing_reason, i.created, i.status, i.total])).toEqual([
      ["subscription_create", MAR_10, "paid", 0],
      ["subscription_cycle", APR_10, "paid", 20],
      ["subscription_cycle", MAY_10, "paid", 50],
    ]);
    expect(invoices.map((i) => i.status_transitions.finalized_at)).toEqual([
      MAR_10,
      APR_10 + HOUR,
      MAY_10 + HOUR,
    ]);
  });

  it("moves the clock without running due work when asked (`process: false`), and catches up later", async () => {
    await h.control.setClock(MAR_10, { frozen: true });
    const catalog = await createCatalog(h.stripe, "sum");
    const sub = await payg(catalog);
    const quiet = await h.control.setClock(APR_10 + 10, { frozen: true, process: false });
    expect(quiet.events).toEqual([]);
    expect((await h.stripe.invoices.list({ subscription: sub.id })).data).toHaveLength(1);
    await h.control.advanceClock(0);
    const renewal = (await h.stripe.invoices.list({ subscription: sub.id })).data[0];
    expect(renewal).toMatchObject({ period_end: APR_10, created: APR_10 + 10, status: "draft" });
  });

  it("keeps close_period as an immediate close: invoice finalized and paid at once", async () => {
    const catalog = await createCatalog(h.stripe, "sum");
    const sub = await payg(catalog);
    const { invoice } = await h.control.closePeriod(sub.id);
    expect(invoice).toMatchObject({ status: "paid", automatically_finalizes_at: null });
  });
});
