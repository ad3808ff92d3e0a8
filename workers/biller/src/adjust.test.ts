/**
 * Adjustments on the emulator: real subscriptions (Checkout, flexible billing mode) converged into
 * D1 by the webhooks' code, invoices finalized by Stripe, and the invoice items the biller makes for
 * what a frozen series counted beyond (or short of) what Stripe billed.
 */
import { env } from "cloudflare:test";
import type Stripe from "stripe";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { adjust } from "./adjust";
import { createBiller } from "./config";
import { sweep } from "./sweep";
import {
  callMark,
  consume,
  emulator,
  failingDb,
  judge,
  meterOf,
  type PaidCustomer,
  setupCatalog,
  stripe,
  stripeCalls,
  subscribe,
  syncStripe,
  tick,
  usagePeriods,
} from "./test/support";

beforeEach(async () => {
  await setupCatalog();
});

afterEach(async () => {
  const emu = emulator();
  await emu.clearFaults();
  const clock = await emu.clock();
  if (clock.offset_seconds !== 0) await emu.advanceClock(-clock.offset_seconds, { process: false });
});

interface AdjustmentRow {
  id: string;
  sessions: number;
  from_seq: number;
  to_seq: number;
  amount_cents: number;
  currency: string;
  state: string;
  stripe_invoice_item_id: string | null;
  stripe_invoice_id: string | null;
  attempts: number;
}

async function adjustments(userId: string): Promise<AdjustmentRow[]> {
  const { results } = await env.DB.prepare(
    `SELECT id, sessions, from_seq, to_seq, amount_cents, currency, state, stripe_invoice_item_id, stripe_invoice_id,
       attempts FROM usage_adjustments WHERE user_id = ?1 ORDER BY created_at`,
  )
    .bind(userId)
    .all<AdjustmentRow>();
  return results;
}

async function invoiceItems(customer: string): Promise<Stripe.InvoiceItem[]> {
  return (await stripe().invoiceItems.list({ customer, limit: 100 })).data;
}

/** Ends the subscription's current period now (Stripe finalizes its invoice) and converges D1 on it. */
async function invoicePeriod(c: PaidCustomer) {
  const closed = await emulator().closePeriod(c.subscriptionId);
  await syncStripe({ subscriptionId: c.subscriptionId, invoiceId: closed.invoice.id, userId: c.userId });
  return closed.invoice;
}

/** Sessions judged and posted as the pipeline does. */
async function used(c: PaidCustomer, n: number) {
  const run = await judge(c.userId, n);
  await consume([run.message]);
}

describe("adjustments", () => {
  it("bills a session judged after its period's invoice on the next invoice, at the series' price (worked example 6)", async () => {
    const c = await subscribe("payg");
    await used(c, 3);
    const invoice = await invoicePeriod(c);
    expect(invoice.status).not.toBe("draft");
    const [series] = await usagePeriods(c.userId);
    expect(series).toMatchObject({
      plan: "payg",
      billable_sessions: 3,
      stripe_billed: 3,
      stripe_invoice_id: invoice.id,
    });
    expect(series?.frozen_at).not.toBeNull();

    // two sessions of that period judged late: the series is frozen, so they are never posted
    const late = await judge(c.userId, 2);
    expect(late.series).toEqual([{ user_id: c.userId, plan: "payg", period_start: c.period.start }]);
    const mark = await callMark();
    expect((await consume([late.message])).acked).toHaveLength(1);
    expect((await sweep(createBiller(env), tick())).adjusted).toBe(2); // reserved, then billed
    expect(await stripeCalls(mark, "POST", "/v1/billing/meter_events")).toEqual([]);

    const [row] = await adjustments(c.userId);
    expect(row).toMatchObject({
      sessions: 2,
      from_seq: 3,
      to_seq: 5,
      amount_cents: 20,
      currency: "usd",
      state: "created",
      attempts: 0,
    });
    expect(await usagePeriods(c.userId)).toMatchObject([
      { billable_sessions: 5, stripe_billed: 3, adjusted: 2, billed_seq: 3 },
    ]);
    // the customer stays on payg: the item waits on the subscription for its next invoice
    const [item] = await invoiceItems(c.customerId);
    expect(item).toMatchObject({
      id: row?.stripe_invoice_item_id,
      amount: 20,
      currency: "usd",
      // since 2025-03-31.basil an item's subscription is `parent.subscription_details.subscription`
      parent: { type: "subscription_details", subscription_details: { subscription: c.subscriptionId } },
      invoice: null,
      metadata: { aigate_adjustment: row?.id, plan: "payg", sessions: "2", from_seq: "3", to_seq: "5" },
    });
    expect(await stripeCalls(mark, "POST", "/v1/invoices")).toEqual([]);

    // nothing more to do: the next sweep makes no Stripe call
    const again = await callMark();
    expect((await sweep(createBiller(env), tick())).adjusted).toBe(0);
    expect((await emulator().calls()).slice(again).filter((call) => call.method === "POST")).toEqual([]);

    // the next invoice carries it; the webhook links it to the adjustment
    const next = await invoicePeriod(c);
    const lines = (await stripe().invoices.listLineItems(next.id)).data;
    expect(
      lines.filter((l) => l.parent?.invoice_item_details?.invoice_item === item?.id).map((l) => l.amount),
    ).toEqual([20]);
    expect((await adjustments(c.userId))[0]?.stripe_invoice_id).toBe(next.id);
  });

  it("prices late pro sessions with the series' tiers: only those beyond the 400 included cost $0.07", async () => {
    const c = await subscribe("pro");
    await used(c, 398);
    await invoicePeriod(c);
    expect(await usagePeriods(c.userId)).toMatchObject([{ plan: "pro", stripe_billed: 398 }]);
    await judge(c.userId, 5);
    await sweep(createBiller(env), tick());
    // ranks 399 and 400 are included, 401 to 403 cost 7 cents each
    expect(await adjustments(c.userId)).toMatchObject([
      { sessions: 5, from_seq: 398, to_seq: 403, amount_cents: 21, state: "created" },
    ]);
    expect((await invoiceItems(c.customerId)).map((i) => i.amount)).toEqual([21]);
  });

  it("freezes a series from Stripe's invoices, not from D1's partial copy of them (found by chaos:seeds)", async () => {
    const c = await subscribe("payg");
    await used(c, 3);
    // Stripe's renewal bills the 3 sessions, but its webhooks are not applied yet ...
    const closed = await emulator().closePeriod(c.subscriptionId);
    expect(closed.invoice.status).not.toBe("draft");
    // ... while the period's end and another finalized invoice covering the window are (webhooks
    // come in any order)
    const end = closed.invoice.period_end * 1000;
    await env.DB.prepare("UPDATE usage_periods SET period_end = ?2 WHERE user_id = ?1")
      .bind(c.userId, end)
      .run();
    await env.DB.prepare(
      `INSERT INTO invoices (stripe_invoice_id, user_id, stripe_customer_id, stripe_subscription_id, status, currency,
         subtotal_cents, total_cents, amount_paid_cents, period_start, period_end, finalized_at, stripe_created,
         updated_at, billing_reason)
       VALUES ('in_other', ?1, ?2, ?3, 'paid', 'usd', 0, 0, 0, ?4, ?5, ?5, ?5, 0, 'manual')`,
    )
      .bind(c.userId, c.customerId, c.subscriptionId, c.period.start, end + 1000)
      .run();
    await sweep(createBiller(env), Math.max(tick(), end + 2000));
    // frozen with what Stripe billed (the renewal's lines, read from Stripe), nothing adjusted
    expect(await usagePeriods(c.userId)).toMatchObject([
      { billable_sessions: 3, stripe_billed: 3, adjusted: 0 },
    ]);
    expect(await adjustments(c.userId)).toEqual([]);
  });

  it("credits what Stripe billed beyond the sessions we counted", async () => {
    const c = await subscribe("payg");
    await used(c, 3);
    const [posted] = await usagePeriods(c.userId);
    // a total of 5 reached the meter behind our back, later than ours: Stripe bills 5
    await stripe().billing.meterEvents.create({
      event_name: meterOf("payg"),
      payload: { stripe_customer_id: c.customerId, value: "5" },
      timestamp: (posted?.last_meter_ts ?? 0) + 1,
    });
    await invoicePeriod(c);
    expect(await usagePeriods(c.userId)).toMatchObject([{ billable_sessions: 3, stripe_billed: 5 }]);
    await sweep(createBiller(env), tick());
    const [row] = await adjustments(c.userId);
    expect(row).toMatchObject({ sessions: -2, from_seq: 3, to_seq: 3, amount_cents: -20, state: "created" });
    const [item] = await invoiceItems(c.customerId);
    expect(item).toMatchObject({
      amount: -20,
      parent: { subscription_details: { subscription: c.subscriptionId } },
    });
    expect(item?.description).toMatch(/credit for 2 session/);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { billable_sessions: 3, stripe_billed: 5, adjusted: -2 },
    ]);
  });

  it("records an adjustment that costs nothing without a Stripe call", async () => {
    const c = await subscribe("pro");
    await used(c, 2);
    await invoicePeriod(c);
    await judge(c.userId, 3);
    const mark = await callMark();
    await sweep(createBiller(env), tick());
    expect(await adjustments(c.userId)).toMatchObject([
      {
        sessions: 3,
        from_seq: 2,
        to_seq: 5,
        amount_cents: 0,
        state: "created",
        stripe_invoice_item_id: "none",
      },
    ]);
    expect(await stripeCalls(mark, "POST", "/v1/invoiceitems")).toEqual([]);
    expect(await invoiceItems(c.customerId)).toEqual([]);
  });

  it("invoices at once the usage Stripe dropped when the subscription ended without a final invoice", async () => {
    const c = await subscribe("payg");
    await used(c, 4);
    // cancelled now without invoice_now: Stripe does not bill the period's metered usage
    await stripe().subscriptions.cancel(c.subscriptionId);
    await syncStripe({ subscriptionId: c.subscriptionId, userId: c.userId });
    const [series] = await usagePeriods(c.userId);
    expect(series).toMatchObject({ billable_sessions: 4, stripe_billed: 0 });
    expect(series?.frozen_at).not.toBeNull();

    await sweep(createBiller(env), tick());
    const [row] = await adjustments(c.userId);
    expect(row).toMatchObject({ sessions: 4, amount_cents: 40, state: "created" });
    // no live subscription: the item belongs to none, and a one-off invoice takes it now
    const [item] = await invoiceItems(c.customerId);
    expect(item).toMatchObject({ amount: 40, parent: null });
    expect(item?.invoice).toEqual(expect.any(String));
    const invoice = await stripe().invoices.retrieve(String(item?.invoice));
    expect(invoice).toMatchObject({
      customer: c.customerId,
      billing_reason: "manual",
      auto_advance: true,
      metadata: { aigate_adjustment: row?.id },
    });
    expect(invoice.lines.data.map((l) => l.amount)).toEqual([40]);
  });

  it("taxes the one-off invoice of an adjustment like the subscription's own (Stripe Tax, STRIPE_TAX=on)", async () => {
    const c = await subscribe("payg");
    // Checkout collected a German address (the emulator taxes DE at its configured 19 %)
    await stripe().customers.update(c.customerId, { address: { country: "DE" } });
    await used(c, 4);
    await stripe().subscriptions.cancel(c.subscriptionId);
    await syncStripe({ subscriptionId: c.subscriptionId, userId: c.userId });
    await sweep(createBiller(env), tick());
    const [item] = await invoiceItems(c.customerId);
    // tax is computed when the invoice is finalized (Stripe finalizes auto_advance drafts itself)
    const invoice = await stripe().invoices.finalizeInvoice(String(item?.invoice));
    // "Set automatic_tax[enabled] to true" on the invoice (docs.stripe.com/tax/invoicing)
    expect(invoice.automatic_tax.enabled).toBe(true);
    expect(invoice).toMatchObject({ subtotal: 40, total: 48 });
    expect(invoice.total_taxes?.map((t) => t.amount)).toEqual([8]);

    // with STRIPE_TAX=off the biller asks for no tax
    const d = await subscribe("payg");
    await stripe().customers.update(d.customerId, { address: { country: "DE" } });
    await used(d, 2);
    await stripe().subscriptions.cancel(d.subscriptionId);
    await syncStripe({ subscriptionId: d.subscriptionId, userId: d.userId });
    await sweep(createBiller({ ...env, STRIPE_TAX: "off" }), tick());
    const [untaxedItem] = await invoiceItems(d.customerId);
    const untaxed = await stripe().invoices.finalizeInvoice(String(untaxedItem?.invoice));
    expect(untaxed.automatic_tax.enabled).toBe(false);
    expect(untaxed).toMatchObject({ subtotal: 20, total: 20 });
  });

  it("invoices at once, on the live subscription, a plan's usage Stripe dropped at an immediate change (worked example 3)", async () => {
    const c = await subscribe("pro");
    await used(c, 430);
    // pro -> payg now: items replaced, anchor reset, no proration (no refund); Stripe drops pro's usage
    const sub = await stripe().subscriptions.retrieve(c.subscriptionId);
    const { data: payg } = await stripe().prices.list({ lookup_keys: ["aigate_payg_session"], active: true });
    const updated = await stripe().subscriptions.update(c.subscriptionId, {
      items: [...sub.items.data.map((i) => ({ id: i.id, deleted: true })), { price: payg[0]?.id }],
      billing_cycle_anchor: { type: "now" } as never,
      proration_behavior: "none",
    });
    await syncStripe({
      subscriptionId: c.subscriptionId,
      invoiceId: typeof updated.latest_invoice === "string" ? updated.latest_invoice : undefined,
      userId: c.userId,
    });
    const pro = (await usagePeriods(c.userId)).find((p) => p.plan === "pro");
    expect(pro).toMatchObject({ billable_sessions: 430, stripe_billed: 0 });
    expect(pro?.frozen_at).not.toBeNull();

    await sweep(createBiller(env), tick());
    const [row] = await adjustments(c.userId);
    // 30 sessions beyond the 400 included, at $0.07
    expect(row).toMatchObject({ sessions: 430, amount_cents: 210, state: "created" });
    const [item] = await invoiceItems(c.customerId);
    expect(item).toMatchObject({
      amount: 210,
      parent: { subscription_details: { subscription: c.subscriptionId } },
    });
    const invoice = await stripe().invoices.retrieve(String(item?.invoice));
    expect(invoice).toMatchObject({ billing_reason: "manual", metadata: { aigate_adjustment: row?.id } });
    expect(invoice.lines.data.map((l) => l.amount)).toEqual([210]);
  });
});

describe("adjustments across failures", () => {
  /** A payg customer with one late session to adjust (10 cents). */
  async function lateSession() {
    const c = await subscribe("payg");
    await used(c, 1);
    await invoicePeriod(c);
    await judge(c.userId, 1);
    return c;
  }

  it("retries when Stripe fails beyond the SDK's retries, and makes one item", async () => {
    const c = await lateSession();
    await emulator().addFault({ status: 500, count: 3, path_prefix: "/v1/invoiceitems" });
    const b = createBiller(env);
    const t = tick();
    expect(await adjust(b, t)).toMatchObject({ reserved: 1, created: 0, failed: 1 });
    expect(await adjustments(c.userId)).toMatchObject([{ state: "pending", attempts: 1 }]);
    // not due yet; a minute later it is
    expect(await adjust(b, t + 1000)).toMatchObject({ reserved: 0, created: 0, failed: 0 });
    expect(await adjust(b, t + 61_000)).toMatchObject({ reserved: 0, created: 1 });
    expect((await invoiceItems(c.customerId)).map((i) => i.amount)).toEqual([10]);
    expect(await usagePeriods(c.userId)).toMatchObject([
      { billable_sessions: 2, stripe_billed: 1, adjusted: 1 },
    ]);
  });

  it("reserves once when the reservation races itself", async () => {
    const c = await lateSession();
    const b = createBiller(env);
    await Promise.all([adjust(b, tick()), adjust(createBiller(env), tick())]);
    expect(await adjustments(c.userId)).toHaveLength(1);
    expect((await invoiceItems(c.customerId)).map((i) => i.amount)).toEqual([10]);
  });

  it("makes one item when the worker dies after Stripe's success, retried at once", async () => {
    const c = await lateSession();
    const crash = failingDb(env.DB, /SET state = 'created'|SET attempts = attempts \+ 1/, 2);
    await adjust(createBiller({ ...env, DB: crash.db }), tick());
    expect(crash.failures()).toBe(2);
    expect(await adjustments(c.userId)).toMatchObject([{ state: "pending", attempts: 0 }]);
    expect(await invoiceItems(c.customerId)).toHaveLength(1);
    await adjust(createBiller(env), tick());
    expect(await adjustments(c.userId)).toMatchObject([{ state: "created" }]);
    expect((await invoiceItems(c.customerId)).map((i) => i.amount)).toEqual([10]);
  });

  it("makes one item when the worker dies after Stripe's success and the retry comes after Stripe's 24 h", async () => {
    const c = await lateSession();
    const crash = failingDb(env.DB, /SET state = 'created'|SET attempts = attempts \+ 1/, 2);
    await adjust(createBiller({ ...env, DB: crash.db }), tick());
    const [first] = await invoiceItems(c.customerId);
    // the idempotency key is forgotten: the item is found by its metadata
    await emulator().advanceClock(48 * 3600, { process: false });
    await adjust(createBiller(env), tick() + 48 * 3600_000);
    expect(await adjustments(c.userId)).toMatchObject([
      { state: "created", stripe_invoice_item_id: first?.id },
    ]);
    expect((await invoiceItems(c.customerId)).map((i) => i.id)).toEqual([first?.id]);
  });
});
