/**
 * The webhook endpoint against the Stripe emulator: real checkouts, payment failures, renewals,
 * plan changes (items replaced, anchor resets, schedules), cancellations and one-off invoices,
 * driven through the official SDK; their events delivered twice, swapped with their neighbours,
 * late, and after a crash. Customers whose story needs time to pass live on their own test clock,
 * so tests never move each other's time. Every assertion reads D1 through the same queries the
 * other workers use, or the rows they read.
 */

import { applyD1Migrations, env, reset, SELF } from "cloudflare:test";
import { accountStatus, addMonths, PLANS, PRICE_LOOKUP_KEYS, planInForce } from "@aigate/shared";
import { meterEventName } from "@aigate/shared/stripeCatalog";
import type Stripe from "stripe";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { type Delivery, neighbourSwaps, StripeScenario, webhookRequest } from "./test/support";

const scenario = new StripeScenario(env, env.STRIPE_WEBHOOK_SECRET);
const { stripe } = scenario;
const DAY = 86_400_000;
const DAY_S = 86_400;

const deliver = (payload: string, signature: string | null) => SELF.fetch(webhookRequest(payload, signature));

let userSeq = 0;
const newUser = () => `user_wh_${Date.now().toString(36)}_${++userSeq}`;

/** Stripe seconds of a UTC date (test clocks start there). */
const utc = (y: number, m: number, d: number) => Date.UTC(y, m - 1, d) / 1000;

beforeAll(async () => {
  await scenario.setup();
});

async function freshDatabase() {
  await reset();
  await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);
}

const rows = async (sql: string) => (await env.DB.prepare(sql).all()).results;

/** Everything the webhooks write, without receipt times. */
async function billingState() {
  return {
    customers: await rows("SELECT user_id, stripe_customer_id, plan FROM stripe_customers ORDER BY user_id"),
    subscriptions: await rows(
      `SELECT stripe_subscription_id, user_id, stripe_customer_id, plan, status, current_period_start, current_period_end,
              cancel_at_period_end, past_due_since, started_at, ended_at, billing_mode, cancel_at, schedule_id,
              pending_plan, pending_effective_at
       FROM subscriptions ORDER BY 1`,
    ),
    planHistory: await rows(
      `SELECT user_id, effective_from, plan, stripe_subscription_id, stripe_price_id, meter_event_name
       FROM plan_history ORDER BY 1, 2`,
    ),
    periods: await rows("SELECT * FROM billing_periods ORDER BY 1, 2"),
    invoices: await rows(
      `SELECT stripe_invoice_id, user_id, stripe_subscription_id, status, currency, subtotal_cents, total_cents,
              amount_paid_cents, period_start, period_end, usage_period_start, usage_period_end, finalized_at, paid_at,
              billing_reason
       FROM invoices ORDER BY stripe_created, 1`,
    ),
    lines: await rows(
      `SELECT stripe_invoice_id, stripe_subscription_id, stripe_price_id, plan, metered, stripe_invoice_item_id,
              period_start, period_end, quantity, amount_cents
       FROM invoice_lines ORDER BY stripe_invoice_id, metered DESC, line_id`,
    ),
    series: await rows(
      `SELECT user_id, plan, period_start, period_end, stripe_subscription_id, billable_sessions,
              frozen_at IS NOT NULL AS frozen, stripe_billed, stripe_invoice_id
       FROM usage_periods ORDER BY 1, 2, 3`,
    ),
    adjustments: await rows("SELECT id, stripe_invoice_id FROM usage_adjustments ORDER BY id"),
    reattributions: await rows("SELECT user_id, from_ms FROM reattributions ORDER BY user_id"),
  };
}
type State = Awaited<ReturnType<typeof billingState>>;

/**
 * Delivers `prior` then `stage` in order, once each, and records the state. Then, starting each
 * time from an empty database (and `seed`), delivers the same events with every event twice: in
 * order, and with each pair of neighbours swapped (the last prior event counts as the stage's
 * neighbour), and checks the state is identical. Leaves the database in the in-order state.
 */
async function expectOrderIndependent(
  prior: Delivery[],
  stage: Delivery[],
  seed?: () => Promise<void>,
): Promise<State> {
  const run = async (order: Delivery[]) => {
    await freshDatabase();
    await seed?.();
    await scenario.deliverAll(deliver, order);
    return billingState();
  };
  const head = prior.slice(0, -1);
  const window = [...prior.slice(-1), ...stage];
  const inOrder = await run([...head, ...window]);
  for (const order of neighbourSwaps(window)) {
    expect(await run([...head, ...order]), order.map((d) => d.type).join(" > ")).toEqual(inOrder);
  }
  await run([...head, ...window]);
  return inOrder;
}

const TABLES = [
  "stripe_customers",
  "subscriptions",
  "plan_history",
  "billing_periods",
  "invoices",
  "invoice_lines",
  "usage_periods",
  "usage_adjustments",
  "reattributions",
  "processed_stripe_events",
] as const;

/**
 * The rows of every table the webhooks touch, to restore later: the state D1 held before a change
 * in Stripe (the events delivered then re-fetch Stripe's state as it was, which later re-fetches
 * cannot reproduce).
 */
async function snapshot(): Promise<() => Promise<void>> {
  const saved = new Map<string, Record<string, unknown>[]>();
  for (const table of TABLES)
    saved.set(table, (await env.DB.prepare(`SELECT * FROM ${table}`).all()).results);
  return async () => {
    const statements = [];
    for (const [table, list] of saved) {
      for (const row of list) {
        const cols = Object.keys(row);
        statements.push(
          env.DB.prepare(
            `INSERT INTO ${table} (${cols.join(", ")}) VALUES (${cols.map((_, i) => `?${i + 1}`).join(", ")})`,
          ).bind(...cols.map((c) => row[c] ?? null)),
        );
      }
    }
    if (statements.length > 0) await env.DB.batch(statements);
  };
}

/** A usage series as the classifier creates it (its count as the classifier left it). */
async function seedSeries(s: {
  user: string;
  plan: "free" | "payg" | "pro";
  start: number;
  end: number;
  subscriptionId?: string | null;
  customerId?: string | null;
  billable: number;
}) {
  const paid = s.plan !== "free";
  await env.DB.prepare(
    `INSERT INTO usage_periods (user_id, plan, period_start, period_end, stripe_customer_id, stripe_subscription_id,
       meter_event_name, billable_sessions, seq_top, posted_total, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8, 0)`,
  )
    .bind(
      s.user,
      s.plan,
      s.start,
      s.end,
      paid ? (s.customerId ?? null) : null,
      paid ? (s.subscriptionId ?? null) : null,
      s.plan === "free" ? null : meterEventName(s.plan),
      s.billable,
    )
    .run();
}

/** Reports a series total to its plan's meter, as the biller does (`last` aggregation). */
async function reportUsage(plan: "payg" | "pro", customerId: string, total: number, timestamp: number) {
  await stripe.billing.meterEvents.create({
    event_name: meterEventName(plan),
    payload: { stripe_customer_id: customerId, value: String(total) },
    timestamp,
  });
}

/** The same event as a new delivery (another event id, as Stripe sends for a new change). */
function copyOf(d: Delivery): Delivery {
  const event = JSON.parse(d.payload) as { id: string };
  const id = `${event.id}_copy${Date.now().toString(36)}`;
  return { ...d, id, payload: JSON.stringify({ ...event, id }) };
}

async function clearReattributions() {
  await env.DB.prepare("DELETE FROM reattributions").run();
}

/** Items that replace every current item with a plan's current prices. */
async function replaceWith(sub: Stripe.Subscription, plan: "payg" | "pro") {
  const { data } = await stripe.prices.list({ lookup_keys: PLANS[plan].stripeLookupKeys, active: true });
  return [
    ...sub.items.data.map((i) => ({ id: i.id, deleted: true })),
    ...data.map((p) =>
      p.recurring?.usage_type === "metered" ? { price: p.id } : { price: p.id, quantity: 1 },
    ),
  ];
}

async function meteredPriceId(plan: "payg" | "pro"): Promise<string> {
  const key = plan === "payg" ? PRICE_LOOKUP_KEYS.paygSession : PRICE_LOOKUP_KEYS.proSession;
  const { data } = await stripe.prices.list({ lookup_keys: [key], active: true });
  const id = data[0]?.id;
  if (!id) throw new Error(`no ${key} price`);
  return id;
}

const types = (ds: Delivery[]) => ds.map((d) => d.type);
const ms = (seconds: number) => seconds * 1000;
const firstItem = (sub: {
  items: { data: { current_period_start: number; current_period_end: number }[] };
}) => {
  const item = sub.items.data[0];
  if (!item) throw new Error("subscription without items");
  return { start: ms(item.current_period_start), end: ms(item.current_period_end) };
};

/** A subscriber on a test clock starting at `t0`, with the checkout's events applied. */
async function subscribedOnClock(plan: "payg" | "pro", t0: number) {
  const user = newUser();
  const clock = await scenario.clock(t0);
  const sub = await scenario.subscribe(user, plan, { clock });
  await scenario.deliverAll(deliver, sub.events);
  return { user, clock, ...sub, period: firstItem(sub.subscription) };
}

describe("checkout completion", () => {
  it("makes the user payg from the subscription's start with the price and meter it bills, whatever the order and copies of its events", async () => {
    const user = newUser();
    const { subscription, events, invoice } = await scenario.subscribe(user, "payg");
    expect(types(events)).toEqual(
      expect.arrayContaining([
        "checkout.session.completed",
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
      ]),
    );
    const state = await expectOrderIndependent([], events);

    const start = ms(subscription.start_date);
    const priceId = await meteredPriceId("payg");
    expect(state.customers).toEqual([
      { user_id: user, stripe_customer_id: subscription.customer, plan: "payg" },
    ]);
    expect(state.planHistory).toEqual([
      {
        user_id: user,
        effective_from: start,
        plan: "payg",
        stripe_subscription_id: subscription.id,
        stripe_price_id: priceId,
        meter_event_name: "aigate_payg_sessions",
      },
    ]);
    expect(state.subscriptions).toMatchObject([
      {
        stripe_subscription_id: subscription.id,
        status: "active",
        past_due_since: null,
        billing_mode: "flexible",
        schedule_id: null,
        pending_plan: null,
        pending_effective_at: null,
        cancel_at: null,
      },
    ]);
    expect(state.invoices).toMatchObject([
      { stripe_invoice_id: invoice.id, status: "paid", user_id: user, billing_reason: "subscription_create" },
    ]);
    // the first invoice is final: its (zero) usage line is stored; it bills no series
    expect(state.lines).toEqual([
      expect.objectContaining({ stripe_invoice_id: invoice.id, plan: "payg", metered: 1, quantity: 0 }),
    ]);
    expect(state.periods).toHaveLength(1);
    expect(state.reattributions).toEqual([{ user_id: user, from_ms: start }]);

    expect(await planInForce(env.DB, user, start)).toEqual({ plan: "payg", subscriptionId: subscription.id });
    expect((await planInForce(env.DB, user, start - 1)).plan).toBe("free");
    const account = await accountStatus(env.DB, user, start + 1000, 7);
    expect(account).toMatchObject({ plan: "payg", limitsPlan: "payg", subscriptionId: subscription.id });
    expect(account.currentPeriod.start).toBe(start);
    expect(account.series).toMatchObject({
      plan: "payg",
      start,
      priceId,
      meterEventName: "aigate_payg_sessions",
    });
  });

  it("records pro's invoice amounts in cents", async () => {
    const user = newUser();
    const { events, invoice, subscription } = await scenario.subscribe(user, "pro");
    await scenario.deliverAll(deliver, events);
    const row = await env.DB.prepare(
      "SELECT total_cents, amount_paid_cents, currency FROM invoices WHERE stripe_invoice_id = ?1",
    )
      .bind(invoice.id)
      .first();
    expect(row).toEqual({ total_cents: 2900, amount_paid_cents: 2900, currency: "usd" });
    expect((await accountStatus(env.DB, user, ms(subscription.start_date) + 1000, 7)).plan).toBe("pro");
  });

  it("recognises the plan of a price whose lookup key moved to a newer version, and of a custom price on the plan's product", async () => {
    const { data } = await stripe.prices.list({ lookup_keys: [PRICE_LOOKUP_KEYS.paygSession], active: true });
    const current = data[0];
    if (!current?.recurring?.meter) throw new Error("no payg price");
    const product = typeof current.product === "string" ? current.product : current.product.id;
    const older = await scenario.subscribe(newUser(), "payg", { prices: [current.id] });
    // stripe:setup creates a changed price as a new version: the lookup key moves to it
    await stripe.prices.create({
      product,
      currency: "usd",
      unit_amount: PLANS.payg.perSessionCents,
      recurring: { interval: "month", usage_type: "metered", meter: current.recurring.meter },
      lookup_key: PRICE_LOOKUP_KEYS.paygSession,
      transfer_lookup_key: true,
      metadata: { plan: "payg" },
    });
    expect((await stripe.prices.retrieve(current.id)).lookup_key).toBeNull();
    // a price made in the Dashboard on the payg product: no lookup key, no metadata of its own
    const custom = await stripe.prices.create({
      product,
      currency: "usd",
      unit_amount: 8,
      recurring: { interval: "month", usage_type: "metered", meter: current.recurring.meter },
    });
    const onCustom = await scenario.subscribe(newUser(), "payg", { prices: [custom.id] });

    for (const [sub, priceId] of [
      [older, current.id],
      [onCustom, custom.id],
    ] as const) {
      await scenario.deliverAll(deliver, sub.events);
      const history = await env.DB.prepare(
        "SELECT plan, stripe_price_id, meter_event_name FROM plan_history WHERE stripe_subscription_id = ?1",
      )
        .bind(sub.subscription.id)
        .all();
      expect(history.results).toEqual([
        { plan: "payg", stripe_price_id: priceId, meter_event_name: "aigate_payg_sessions" },
      ]);
      expect(
        await env.DB.prepare("SELECT plan FROM subscriptions WHERE stripe_subscription_id = ?1")
          .bind(sub.subscription.id)
          .first(),
      ).toEqual({ plan: "payg" });
    }
  });
});

describe("payment failure, grace and recovery", () => {
  it("makes the account past due from the failed invoice, applies free limits after the grace period, and a later payment restores the plan", async () => {
    const user = newUser();
    const sub = await scenario.subscribe(user, "pro");
    await scenario.emulator.failNextPayment(sub.customerId);
    const closed = await scenario.emulator.closePeriod(sub.subscription.id);
    const failing = await scenario.eventsById(closed.events);
    expect(types(failing)).toEqual(
      expect.arrayContaining([
        "invoice.finalized",
        "invoice.payment_failed",
        "customer.subscription.updated",
      ]),
    );
    const afterFailure = await expectOrderIndependent(sub.events, failing);

    const failedAt = (closed.invoice.status_transitions.finalized_at ?? 0) * 1000;
    expect(afterFailure.subscriptions).toMatchObject([{ status: "past_due", past_due_since: failedAt }]);
    const statuses = Object.fromEntries(afterFailure.invoices.map((i) => [i.stripe_invoice_id, i.status]));
    expect(statuses).toEqual({ [sub.invoice.id]: "paid", [closed.invoice.id]: "open" });
    const within = await accountStatus(env.DB, user, failedAt + 7 * DAY, 7);
    expect([within.plan, within.limitsPlan]).toEqual(["pro", "pro"]);
    const beyond = await accountStatus(env.DB, user, failedAt + 7 * DAY + 1, 7);
    expect([beyond.plan, beyond.limitsPlan]).toEqual(["pro", "free"]);

    const paid = await scenario.emulator.payInvoice(closed.invoice.id);
    const recovery = await scenario.eventsById(paid.events);
    expect(types(recovery)).toEqual(
      expect.arrayContaining(["invoice.paid", "invoice.payment_succeeded", "customer.subscription.updated"]),
    );
    const afterPayment = await expectOrderIndependent([...sub.events, ...failing], recovery);
    expect(afterPayment.subscriptions).toMatchObject([{ status: "active", past_due_since: null }]);
    const restored = await accountStatus(env.DB, user, failedAt + 30 * DAY, 7);
    expect([restored.plan, restored.limitsPlan]).toEqual(["pro", "pro"]);
  });
});

describe("renewal invoices", () => {
  it("stores the finalized renewal's lines, freezes the period's series with the quantity Stripe billed, and links our adjustment on it, whatever the order", async () => {
    const user = newUser();
    const other = newUser();
    const sub = await scenario.subscribe(user, "payg");
    const { start, end } = firstItem(sub.subscription);
    const next = addMonths(start, 2);
    // the biller reported 7 sessions; D1 counts 8 (one judged after the report): Stripe bills 7
    await reportUsage("payg", sub.customerId, 7, sub.subscription.start_date + 1);
    // an adjustment of an earlier series rides on the subscription's next invoice
    const item = await stripe.invoiceItems.create({
      customer: sub.customerId,
      subscription: sub.subscription.id,
      amount: 30,
      currency: "usd",
      metadata: { aigate_adjustment: "adj_1" },
    });
    const seed = async () => {
      const series = { subscriptionId: sub.subscription.id, customerId: sub.customerId };
      await seedSeries({ user, plan: "payg", start, end, billable: 8, ...series });
      await seedSeries({ user, plan: "payg", start: end, end: next, billable: 2, ...series });
      await seedSeries({ user, plan: "free", start: start - 30 * DAY, end: start, billable: 40 });
      await seedSeries({ user: other, plan: "payg", start, end, billable: 5, subscriptionId: "sub_other" });
      await env.DB.prepare(
        `INSERT INTO usage_adjustments (id, user_id, plan, period_start, stripe_customer_id, sessions, from_seq, to_seq,
           amount_cents, currency, state, stripe_invoice_item_id, created_at, updated_at)
         VALUES ('adj_1', ?1, 'payg', ?2, ?3, 3, 4, 7, 30, 'usd', 'created', ?4, 0, 0)`,
      )
        .bind(user, start - 30 * DAY, sub.customerId, item.id)
        .run();
    };
    const closed = await scenario.emulator.closePeriod(sub.subscription.id);
    const renewal = await scenario.eventsById(closed.events);
    const state = await expectOrderIndependent(sub.events, renewal, seed);

    const invoiceId = closed.invoice.id;
    const priceId = await meteredPriceId("payg");
    expect(state.lines.filter((l) => l.stripe_invoice_id === invoiceId)).toEqual([
      {
        stripe_invoice_id: invoiceId,
        stripe_subscription_id: sub.subscription.id,
        stripe_price_id: priceId,
        plan: "payg",
        metered: 1,
        stripe_invoice_item_id: null,
        period_start: start,
        period_end: end,
        quantity: 7,
        amount_cents: 70,
      },
      {
        stripe_invoice_id: invoiceId,
        stripe_subscription_id: sub.subscription.id,
        stripe_price_id: null,
        plan: null,
        metered: 0,
        stripe_invoice_item_id: item.id,
        period_start: expect.any(Number),
        period_end: expect.any(Number),
        quantity: 1,
        amount_cents: 30,
      },
    ]);
    expect(state.series).toEqual([
      expect.objectContaining({ user_id: user, plan: "free", frozen: 0, stripe_billed: null }),
      expect.objectContaining({
        user_id: user,
        plan: "payg",
        period_start: start,
        billable_sessions: 8,
        frozen: 1,
        stripe_billed: 7,
        stripe_invoice_id: invoiceId,
      }),
      expect.objectContaining({
        user_id: user,
        plan: "payg",
        period_start: end,
        frozen: 0,
        stripe_billed: null,
      }),
      expect.objectContaining({ user_id: other, frozen: 0 }),
    ]);
    expect(state.adjustments).toEqual([{ id: "adj_1", stripe_invoice_id: invoiceId }]);
    const renewed = state.invoices.find((i) => i.stripe_invoice_id === invoiceId);
    expect(renewed).toMatchObject({
      usage_period_start: start,
      usage_period_end: end,
      status: "paid",
      total_cents: 100,
      billing_reason: "subscription_cycle",
    });
    // the new period is recorded next to the first one
    expect(state.periods.map((p) => p.period_start)).toEqual([start, end]);
  });

  it("records a renewal draft without lines and freezes nothing until Stripe finalizes it", async () => {
    const t0 = utc(2026, 1, 10);
    const sub = await subscribedOnClock("payg", t0);
    const { start, end } = sub.period;
    await scenario.advanceClock(sub.clock, t0 + 2 * DAY_S);
    await reportUsage("payg", sub.customerId, 3, t0 + DAY_S);
    await seedSeries({
      user: sub.user,
      plan: "payg",
      start,
      end,
      billable: 3,
      subscriptionId: sub.subscription.id,
      customerId: sub.customerId,
    });
    const mark = await scenario.mark();
    await scenario.advanceClock(sub.clock, end / 1000 + 60); // the renewal is a draft for the grace period
    const drafted = await scenario.eventsSince(mark, sub.customerId);
    expect(types(drafted)).toContain("invoice.created");
    expect(types(drafted)).not.toContain("invoice.finalized");
    await scenario.deliverAll(deliver, drafted);
    const draft = await billingState();
    expect(draft.invoices.at(-1)).toMatchObject({
      status: "draft",
      finalized_at: null,
      usage_period_end: end,
    });
    expect(
      draft.lines.filter((l) => l.stripe_invoice_id === draft.invoices.at(-1)?.stripe_invoice_id),
    ).toEqual([]);
    expect(draft.series).toEqual([expect.objectContaining({ period_start: start, frozen: 0 })]);

    const graceEnds = await scenario.mark();
    await scenario.advanceClock(sub.clock, end / 1000 + 3600 + 60);
    const finalized = await scenario.eventsSince(graceEnds, sub.customerId);
    expect(types(finalized)).toContain("invoice.finalized");
    await scenario.deliverAll(deliver, finalized);
    const final = await billingState();
    const invoiceId = final.invoices.at(-1)?.stripe_invoice_id;
    expect(final.invoices.at(-1)).toMatchObject({ status: "paid", total_cents: 30 });
    expect(final.series).toEqual([
      expect.objectContaining({
        period_start: start,
        frozen: 1,
        stripe_billed: 3,
        stripe_invoice_id: invoiceId,
      }),
    ]);
  });
});

describe("plan changes inside the subscription", () => {
  /** payg from t0, 12 sessions counted and reported, then replaced by pro with the anchor reset 10 days in. */
  async function upgradeMidPeriod() {
    const t0 = utc(2026, 3, 1);
    const sub = await subscribedOnClock("payg", t0);
    const { start, end } = sub.period;
    await seedSeries({
      user: sub.user,
      plan: "payg",
      start,
      end,
      billable: 12,
      subscriptionId: sub.subscription.id,
      customerId: sub.customerId,
    });
    const changeAt = t0 + 10 * DAY_S;
    await scenario.advanceClock(sub.clock, changeAt);
    await reportUsage("payg", sub.customerId, 12, t0 + 5 * DAY_S);
    await clearReattributions();
    const before = await snapshot();
    const mark = await scenario.mark();
    const current = await stripe.subscriptions.retrieve(sub.subscription.id);
    const updated = await stripe.subscriptions.update(sub.subscription.id, {
      items: await replaceWith(current, "pro"),
      billing_cycle_anchor: { type: "now" },
      proration_behavior: "create_prorations",
    });
    const stage = await scenario.eventsSince(mark, sub.customerId);
    const invoiceId = typeof updated.latest_invoice === "string" ? updated.latest_invoice : "";
    return { ...sub, start, end, change: ms(changeAt), before, stage, invoiceId };
  }

  it("records pro from the new metered item's creation with its own price and meter, and ends and freezes the payg series at the change with what Stripe billed, whatever the order", async () => {
    const up = await upgradeMidPeriod();
    expect(types(up.stage)).toEqual(
      expect.arrayContaining(["customer.subscription.updated", "invoice.finalized", "invoice.paid"]),
    );
    const state = await expectOrderIndependent([], up.stage, up.before);

    const subId = up.subscription.id;
    expect(state.planHistory).toEqual([
      {
        user_id: up.user,
        effective_from: up.start,
        plan: "payg",
        stripe_subscription_id: subId,
        stripe_price_id: await meteredPriceId("payg"),
        meter_event_name: "aigate_payg_sessions",
      },
      {
        user_id: up.user,
        effective_from: up.change,
        plan: "pro",
        stripe_subscription_id: subId,
        stripe_price_id: await meteredPriceId("pro"),
        meter_event_name: "aigate_pro_sessions",
      },
    ]);
    expect(state.periods).toEqual([
      { stripe_subscription_id: subId, period_start: up.start, period_end: up.change },
      { stripe_subscription_id: subId, period_start: up.change, period_end: addMonths(up.change, 1) },
    ]);
    // Stripe billed the 12 payg sessions reported before the change on the upgrade's invoice
    expect(state.series).toEqual([
      expect.objectContaining({
        plan: "payg",
        period_start: up.start,
        period_end: up.change,
        frozen: 1,
        stripe_billed: 12,
        stripe_invoice_id: up.invoiceId,
      }),
    ]);
    expect(state.invoices.at(-1)).toMatchObject({
      stripe_invoice_id: up.invoiceId,
      total_cents: 2900 + 120,
      billing_reason: "subscription_update",
    });
    expect(
      state.lines.map((l) => [l.plan, l.metered, l.quantity, l.amount_cents, l.period_start, l.period_end]),
    ).toEqual(
      expect.arrayContaining([
        ["pro", 0, 1, 2900, up.change, addMonths(up.change, 1)],
        ["payg", 1, 12, 120, up.start, up.change],
      ]),
    );
    expect(state.subscriptions).toMatchObject([{ plan: "pro", current_period_start: up.change }]);
    expect(state.customers).toMatchObject([{ plan: "pro" }]);
    // the period it shortened asks the biller to look at the user's sessions again, from its start
    expect(state.reattributions).toEqual([{ user_id: up.user, from_ms: up.start }]);
    const account = await accountStatus(env.DB, up.user, up.change + 1000, 7);
    expect(account.series).toMatchObject({ plan: "pro", start: up.change, end: addMonths(up.change, 1) });
  });

  it("leaves the new plan's series open when the upgrade's invoice arrives after its first sessions were counted", async () => {
    const up = await upgradeMidPeriod();
    await freshDatabase();
    await up.before();
    // the api applies its own change at once (here: the subscription's event), then pro sessions are counted
    const updated = up.stage.filter((d) => d.type === "customer.subscription.updated");
    await scenario.deliverAll(deliver, updated);
    await seedSeries({
      user: up.user,
      plan: "pro",
      start: up.change,
      end: addMonths(up.change, 1),
      billable: 3,
      subscriptionId: up.subscription.id,
      customerId: up.customerId,
    });
    await scenario.deliverAll(
      deliver,
      up.stage.filter((d) => d.type.startsWith("invoice.")),
    );
    const state = await billingState();
    expect(state.series).toEqual([
      expect.objectContaining({ plan: "payg", period_end: up.change, frozen: 1, stripe_billed: 12 }),
      expect.objectContaining({ plan: "pro", period_start: up.change, frozen: 0, stripe_billed: null }),
    ]);
  });

  it("shortens the period and its series when the anchor is reset, asks for re-attribution once, and nothing when the same state is applied again", async () => {
    const t0 = utc(2026, 4, 1);
    const sub = await subscribedOnClock("payg", t0);
    const { start, end } = sub.period;
    await seedSeries({
      user: sub.user,
      plan: "payg",
      start,
      end,
      billable: 4,
      subscriptionId: sub.subscription.id,
      customerId: sub.customerId,
    });
    const resetAt = t0 + 12 * DAY_S;
    await scenario.advanceClock(sub.clock, resetAt);
    await reportUsage("payg", sub.customerId, 4, t0 + DAY_S);
    await clearReattributions();
    const before = await snapshot();
    const mark = await scenario.mark();
    const updated = await stripe.subscriptions.update(sub.subscription.id, {
      billing_cycle_anchor: { type: "now" },
      proration_behavior: "none",
    });
    const stage = await scenario.eventsSince(mark, sub.customerId);
    const state = await expectOrderIndependent([], stage, before);

    const change = ms(resetAt);
    expect(state.planHistory).toEqual([expect.objectContaining({ effective_from: start, plan: "payg" })]);
    expect(state.periods).toEqual([
      { stripe_subscription_id: sub.subscription.id, period_start: start, period_end: change },
      { stripe_subscription_id: sub.subscription.id, period_start: change, period_end: addMonths(change, 1) },
    ]);
    expect(state.series).toEqual([
      expect.objectContaining({
        period_start: start,
        period_end: change,
        frozen: 1,
        stripe_billed: 4,
        stripe_invoice_id: updated.latest_invoice,
      }),
    ]);
    expect(state.reattributions).toEqual([{ user_id: sub.user, from_ms: start }]);

    await clearReattributions();
    const again = stage.find((d) => d.type === "customer.subscription.updated");
    if (!again) throw new Error("no customer.subscription.updated");
    await scenario.deliverAll(deliver, [copyOf(again)]);
    expect(await billingState()).toEqual({ ...state, reattributions: [] });
  });
});

describe("scheduled changes", () => {
  /** A pro subscriber who schedules payg for the period end (as POST /api/billing/plan does). */
  async function downgradeScheduled() {
    const t0 = utc(2026, 5, 1);
    const sub = await subscribedOnClock("pro", t0);
    await scenario.advanceClock(sub.clock, t0 + 5 * DAY_S);
    await clearReattributions();
    const before = await snapshot();
    const mark = await scenario.mark();
    const schedule = await stripe.subscriptionSchedules.create({ from_subscription: sub.subscription.id });
    const current = schedule.phases[0];
    if (!current) throw new Error("schedule without phase");
    const { data: proPrices } = await stripe.prices.list({
      lookup_keys: PLANS.pro.stripeLookupKeys,
      active: true,
    });
    await stripe.subscriptionSchedules.update(schedule.id, {
      end_behavior: "release",
      phases: [
        {
          items: proPrices.map((p) =>
            p.recurring?.usage_type === "metered" ? { price: p.id } : { price: p.id, quantity: 1 },
          ),
          start_date: current.start_date,
          end_date: current.end_date,
        },
        { items: [{ price: await meteredPriceId("payg") }], proration_behavior: "none" },
      ],
    });
    const stage = await scenario.eventsSince(mark, sub.customerId);
    return { ...sub, before, stage, scheduleId: schedule.id };
  }

  it("shows the schedule's next phase as the pending plan from the period end, whatever the order, and clears it when the schedule is released", async () => {
    const down = await downgradeScheduled();
    expect(types(down.stage)).toEqual(
      expect.arrayContaining(["subscription_schedule.created", "subscription_schedule.updated"]),
    );
    const state = await expectOrderIndependent([], down.stage, down.before);
    expect(state.subscriptions).toMatchObject([
      {
        plan: "pro",
        schedule_id: down.scheduleId,
        pending_plan: "payg",
        pending_effective_at: down.period.end,
        cancel_at: null,
      },
    ]);
    expect(state.planHistory).toEqual([
      expect.objectContaining({ plan: "pro", effective_from: down.period.start }),
    ]);
    // nothing in force changed: no re-attribution
    expect(state.reattributions).toEqual([]);
    const account = await accountStatus(env.DB, down.user, down.period.start + DAY, 7);
    expect(account).toMatchObject({ plan: "pro", pendingPlan: "payg", pendingEffectiveAt: down.period.end });

    const mark = await scenario.mark();
    await stripe.subscriptionSchedules.release(down.scheduleId);
    const released = await scenario.eventsSince(mark, down.customerId);
    expect(types(released)).toContain("subscription_schedule.released");
    // the schedule's own event is enough: it names the subscription it released
    await scenario.deliverAll(
      deliver,
      released.filter((d) => d.type === "subscription_schedule.released"),
    );
    expect((await billingState()).subscriptions).toMatchObject([
      { plan: "pro", schedule_id: null, pending_plan: null, pending_effective_at: null },
    ]);
  });

  it("records the next phase's plan from the period end once Stripe enters it, and freezes the ended period's series", async () => {
    const down = await downgradeScheduled();
    await scenario.deliverAll(deliver, down.stage);
    const { start, end } = down.period;
    await seedSeries({
      user: down.user,
      plan: "pro",
      start,
      end,
      billable: 380,
      subscriptionId: down.subscription.id,
      customerId: down.customerId,
    });
    await reportUsage("pro", down.customerId, 380, start / 1000 + 4 * DAY_S);
    const mark = await scenario.mark();
    await scenario.advanceClock(down.clock, end / 1000 + 3600 + 60); // the phase, then the grace period
    const entered = await scenario.eventsSince(mark, down.customerId);
    expect(types(entered)).toEqual(expect.arrayContaining(["invoice.created", "invoice.finalized"]));
    await scenario.deliverAll(deliver, entered);

    const state = await billingState();
    expect(state.planHistory).toEqual([
      expect.objectContaining({
        effective_from: start,
        plan: "pro",
        meter_event_name: "aigate_pro_sessions",
      }),
      expect.objectContaining({
        effective_from: end,
        plan: "payg",
        stripe_price_id: await meteredPriceId("payg"),
        meter_event_name: "aigate_payg_sessions",
      }),
    ]);
    expect(state.subscriptions).toMatchObject([
      { plan: "payg", schedule_id: down.scheduleId, pending_plan: null, pending_effective_at: null },
    ]);
    const invoice = state.invoices.find((i) => i.billing_reason === "subscription_cycle");
    // 380 sessions within pro's 400 included: Stripe billed them at $0, and no pro fee for the next period
    expect(invoice).toMatchObject({ status: "paid", total_cents: 0 });
    expect(state.series).toEqual([
      expect.objectContaining({
        plan: "pro",
        period_end: end,
        frozen: 1,
        stripe_billed: 380,
        stripe_invoice_id: invoice?.stripe_invoice_id,
      }),
    ]);
  });

  it("shows a cancellation at the period end as free pending from then, and clears it when taken back", async () => {
    const t0 = utc(2026, 6, 1);
    const sub = await subscribedOnClock("payg", t0);
    await scenario.advanceClock(sub.clock, t0 + 3 * DAY_S);
    await clearReattributions();
    const before = await snapshot();
    const mark = await scenario.mark();
    await stripe.subscriptions.update(sub.subscription.id, { cancel_at_period_end: true });
    const stage = await scenario.eventsSince(mark, sub.customerId);
    const state = await expectOrderIndependent([], stage, before);
    expect(state.subscriptions).toMatchObject([
      {
        status: "active",
        cancel_at_period_end: 1,
        cancel_at: sub.period.end,
        pending_plan: "free",
        pending_effective_at: sub.period.end,
        ended_at: null,
      },
    ]);
    expect(state.customers).toMatchObject([{ plan: "payg" }]);
    expect(state.reattributions).toEqual([]);

    const undo = await scenario.mark();
    await stripe.subscriptions.update(sub.subscription.id, { cancel_at_period_end: false });
    await scenario.deliverAll(deliver, await scenario.eventsSince(undo, sub.customerId));
    expect((await billingState()).subscriptions).toMatchObject([
      { cancel_at_period_end: 0, cancel_at: null, pending_plan: null, pending_effective_at: null },
    ]);
  });
});

describe("cancellation", () => {
  it("returns the user to free from the subscription's end, ends its period and series there and freezes them when no invoice is left to bill them, whatever the order", async () => {
    const t0 = utc(2026, 7, 1);
    const sub = await subscribedOnClock("payg", t0);
    const { start, end } = sub.period;
    const endedAt = t0 + 3600; // an hour on payg, then canceled
    await scenario.advanceClock(sub.clock, endedAt);
    await reportUsage("payg", sub.customerId, 2, t0 + 60);
    const mark = await scenario.mark();
    const canceled = await stripe.subscriptions.cancel(sub.subscription.id);
    const deletion = await scenario.eventsSince(mark, sub.customerId);
    expect(types(deletion)).toEqual(["customer.subscription.deleted"]);
    const seed = () =>
      seedSeries({
        user: sub.user,
        plan: "payg",
        start,
        end,
        billable: 2,
        subscriptionId: sub.subscription.id,
        customerId: sub.customerId,
      });
    const state = await expectOrderIndependent(sub.events, deletion, seed);

    expect(canceled.ended_at).toBe(endedAt);
    const ended = ms(endedAt);
    expect(state.customers).toMatchObject([{ user_id: sub.user, plan: "free" }]);
    expect(state.planHistory.map((r) => [r.effective_from, r.plan])).toEqual([
      [start, "payg"],
      [ended, "free"],
    ]);
    expect(state.periods).toEqual([
      { stripe_subscription_id: sub.subscription.id, period_start: start, period_end: ended },
    ]);
    // without invoice_now Stripe bills none of it: the series is frozen with 0 billed
    expect(state.series).toEqual([
      expect.objectContaining({ period_start: start, period_end: ended, frozen: 1, stripe_billed: 0 }),
    ]);
    expect((await planInForce(env.DB, sub.user, ended)).plan).toBe("free");
    expect((await accountStatus(env.DB, sub.user, ended + 1, 7)).plan).toBe("free");
  });

  it("keeps the series of a subscription canceled with a final invoice open until that invoice is finalized, then freezes it with its quantity", async () => {
    const t0 = utc(2026, 8, 1);
    const sub = await subscribedOnClock("payg", t0);
    const { start, end } = sub.period;
    await seedSeries({
      user: sub.user,
      plan: "payg",
      start,
      end,
      billable: 5,
      subscriptionId: sub.subscription.id,
      customerId: sub.customerId,
    });
    const endedAt = t0 + 2 * DAY_S;
    await scenario.advanceClock(sub.clock, endedAt);
    await reportUsage("payg", sub.customerId, 5, t0 + DAY_S);
    const mark = await scenario.mark();
    await stripe.subscriptions.cancel(sub.subscription.id, { invoice_now: true, prorate: false });
    await scenario.deliverAll(deliver, await scenario.eventsSince(mark, sub.customerId));
    const canceled = await billingState();
    expect(canceled.invoices.at(-1)).toMatchObject({ status: "draft" });
    expect(canceled.series).toEqual([
      expect.objectContaining({ period_end: ms(endedAt), frozen: 0, stripe_billed: null }),
    ]);

    const grace = await scenario.mark();
    await scenario.advanceClock(sub.clock, endedAt + 3600 + 60);
    await scenario.deliverAll(deliver, await scenario.eventsSince(grace, sub.customerId));
    const final = await billingState();
    const invoice = final.invoices.at(-1);
    expect(invoice).toMatchObject({ status: "paid", total_cents: 50 });
    expect(final.series).toEqual([
      expect.objectContaining({
        period_end: ms(endedAt),
        frozen: 1,
        stripe_billed: 5,
        stripe_invoice_id: invoice?.stripe_invoice_id,
      }),
    ]);
  });

  it("ignores a stale subscription.created arriving after the deletion: the user stays free", async () => {
    const user = newUser();
    const sub = await scenario.subscribe(user, "payg");
    const mark = await scenario.mark();
    await stripe.subscriptions.cancel(sub.subscription.id);
    const deleted = await scenario.eventsSince(mark, sub.customerId);
    await scenario.deliverAll(deliver, deleted);
    await scenario.deliverAll(deliver, sub.events);
    expect(
      await env.DB.prepare("SELECT plan FROM stripe_customers WHERE user_id = ?1").bind(user).first(),
    ).toEqual({ plan: "free" });
    expect(await env.DB.prepare("SELECT status FROM subscriptions").first()).toEqual({ status: "canceled" });
  });
});

describe("one-off invoices", () => {
  it("records an invoice of no subscription with its lines and links our adjustments on it, whatever the order", async () => {
    const user = newUser();
    const sub = await scenario.subscribe(user, "payg");
    const periodStart = firstItem(sub.subscription).start;
    const item = await stripe.invoiceItems.create({
      customer: sub.customerId,
      amount: 210,
      currency: "usd",
      description: "AI Gate Pro: 30 successful session(s) recorded after that period was invoiced",
      metadata: { aigate_adjustment: "adj_oneoff" },
    });
    const seed = () =>
      env.DB.prepare(
        `INSERT INTO usage_adjustments (id, user_id, plan, period_start, stripe_customer_id, sessions, from_seq, to_seq,
           amount_cents, currency, state, stripe_invoice_item_id, created_at, updated_at)
         VALUES ('adj_oneoff', ?1, 'pro', ?2, ?3, 30, 400, 430, 210, 'usd', 'created', ?4, 0, 0)`,
      )
        .bind(user, periodStart, sub.customerId, item.id)
        .run()
        .then(() => undefined);
    const mark = await scenario.mark();
    const draft = await stripe.invoices.create({
      customer: sub.customerId,
      pending_invoice_items_behavior: "include",
      auto_advance: false,
    });
    await stripe.invoices.finalizeInvoice(draft.id);
    await stripe.invoices.pay(draft.id);
    const stage = (await scenario.eventsSince(mark, sub.customerId)).filter((d) =>
      d.type.startsWith("invoice."),
    );
    expect(types(stage)).toEqual(
      expect.arrayContaining(["invoice.created", "invoice.finalized", "invoice.paid"]),
    );
    const state = await expectOrderIndependent(sub.events, stage, seed);

    expect(state.invoices.find((i) => i.stripe_invoice_id === draft.id)).toMatchObject({
      user_id: user,
      stripe_subscription_id: null,
      status: "paid",
      total_cents: 210,
      billing_reason: "manual",
    });
    expect(state.lines.filter((l) => l.stripe_invoice_id === draft.id)).toEqual([
      expect.objectContaining({
        stripe_subscription_id: null,
        stripe_invoice_item_id: item.id,
        metered: 0,
        amount_cents: 210,
      }),
    ]);
    expect(state.adjustments).toEqual([{ id: "adj_oneoff", stripe_invoice_id: draft.id }]);
    // the subscription is untouched by it
    expect(state.customers).toMatchObject([{ plan: "payg" }]);
    // (every order of the invoice's events, each on a fresh database: slow on a loaded machine)
  }, 120_000);
});

describe("dedupe, crashes and unknown events", () => {
  it("answers a second copy of an applied event with 200 duplicate", async () => {
    const sub = await scenario.subscribe(newUser(), "payg");
    const created = sub.events.find((e) => e.type === "customer.subscription.created");
    if (!created) throw new Error("no customer.subscription.created");
    const first = await deliver(created.payload, await scenario.sign(created.payload));
    const second = await deliver(created.payload, await scenario.sign(created.payload));
    expect(await first.json()).toEqual({ received: true, status: "processed" });
    expect(second.status).toBe(200);
    expect(await second.json()).toEqual({ received: true, status: "duplicate" });
  });

  it("leaves an event unprocessed when Stripe fails mid-way, and applies it when Stripe resends it", async () => {
    const user = newUser();
    const sub = await scenario.subscribe(user, "payg");
    const paid = sub.events.find((e) => e.type === "invoice.paid");
    if (!paid) throw new Error("no invoice.paid");
    // the invoice is fetched, then every try to fetch its subscription fails
    await scenario.emulator.addFault({
      status: 500,
      count: 10,
      path_prefix: `/v1/subscriptions/${sub.subscription.id}`,
    });
    try {
      const res = await deliver(paid.payload, await scenario.sign(paid.payload));
      expect(res.status).toBe(500);
      expect(await res.json()).toEqual({ error: { code: "internal_error", message: "internal error" } });
    } finally {
      await scenario.emulator.clearFaults();
    }
    expect(await billingState()).toMatchObject({
      customers: [],
      subscriptions: [],
      invoices: [],
      planHistory: [],
      lines: [],
      reattributions: [],
    });
    expect(await env.DB.prepare("SELECT count(*) AS n FROM processed_stripe_events").first()).toEqual({
      n: 0,
    });

    const resent = await deliver(paid.payload, await scenario.sign(paid.payload));
    expect(await resent.json()).toEqual({ received: true, status: "processed" });
    expect((await accountStatus(env.DB, user, ms(sub.subscription.start_date) + 1000, 7)).plan).toBe("payg");
  });

  it("acknowledges event types it does not handle with 200 and changes nothing", async () => {
    const sub = await scenario.subscribe(newUser(), "payg");
    const mark = await scenario.mark();
    await stripe.customers.update(sub.customerId, { metadata: { note: "x" } });
    const unhandled = (await scenario.eventsSince(mark, sub.customerId)).filter(
      (d) => d.type === "customer.updated",
    );
    expect(unhandled).toHaveLength(1);
    for (const d of unhandled) {
      const res = await deliver(d.payload, await scenario.sign(d.payload));
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({
        received: true,
        status: "ignored",
        reason: "unhandled event type customer.updated",
      });
    }
    expect(await billingState()).toMatchObject({ customers: [], subscriptions: [], invoices: [] });
  });
});

describe("signature verification", () => {
  const payload = JSON.stringify({
    id: "evt_sig_1",
    object: "event",
    type: "customer.subscription.created",
    created: Math.floor(Date.now() / 1000),
    data: { object: { id: "sub_does_not_matter" } },
  });

  async function expectRejected(res: Response) {
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: "invalid_signature" } });
    expect(await env.DB.prepare("SELECT count(*) AS n FROM processed_stripe_events").first()).toEqual({
      n: 0,
    });
  }

  it("rejects a signature made with another secret", async () => {
    await expectRejected(await deliver(payload, await scenario.sign(payload, { secret: "whsec_wrong" })));
  });

  it("rejects a request without a signature", async () => {
    await expectRejected(await deliver(payload, null));
  });

  it("rejects a body changed after signing", async () => {
    const signature = await scenario.sign(payload);
    await expectRejected(await deliver(payload.replace("sub_does_not_matter", "sub_other"), signature));
  });

  it("rejects a timestamp outside the 300 s tolerance, and accepts one inside it", async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectRejected(await deliver(payload, await scenario.sign(payload, { timestamp: now - 301 })));
    const unknown = JSON.stringify({ ...JSON.parse(payload), type: "customer.created" });
    const ok = await deliver(unknown, await scenario.sign(unknown, { timestamp: now - 290 }));
    expect(ok.status).toBe(200);
  });
});

describe("request ids", () => {
  /** The JSON lines the worker writes (any level) while `fn` runs. */
  async function logLines(fn: () => Promise<void>): Promise<Record<string, unknown>[]> {
    const lines: string[] = [];
    const record = (line: unknown) => {
      lines.push(String(line));
    };
    const spies = [
      vi.spyOn(console, "log").mockImplementation(record),
      vi.spyOn(console, "warn").mockImplementation(record),
      vi.spyOn(console, "error").mockImplementation(record),
    ];
    try {
      await fn();
    } finally {
      for (const s of spies) s.mockRestore();
    }
    return lines.map((l) => JSON.parse(l));
  }

  const withRay = (request: Request, ray: string) =>
    new Request(request, { headers: { ...Object.fromEntries(request.headers), "cf-ray": ray } });
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

  it("echoes X-Request-Id on every answer and logs it on the request line and the event's lines", async () => {
    const sub = await scenario.subscribe(newUser(), "payg");
    const paid = sub.events.find((e) => e.type === "invoice.paid");
    if (!paid) throw new Error("no invoice.paid");
    const unknown = JSON.stringify({
      id: "evt_rid_1",
      object: "event",
      type: "customer.created",
      created: 1,
      data: { object: { id: "cus_1" } },
    });
    const answers: Record<string, Response> = {};
    const lines = await logLines(async () => {
      answers.ignored = await SELF.fetch(
        withRay(webhookRequest(unknown, await scenario.sign(unknown)), "ray-wh-200"),
      );
      answers.rejected = await deliver(unknown, "t=1,v1=00");
      answers.missing = await SELF.fetch("http://webhooks.test/nope");
      await scenario.emulator.addFault({
        status: 500,
        count: 10,
        path_prefix: `/v1/invoices/${sub.invoice.id}`,
      });
      try {
        answers.failed = await SELF.fetch(
          withRay(webhookRequest(paid.payload, await scenario.sign(paid.payload)), "ray-wh-500"),
        );
      } finally {
        await scenario.emulator.clearFaults();
      }
    });
    expect(Object.fromEntries(Object.entries(answers).map(([k, r]) => [k, r.status]))).toEqual({
      ignored: 200,
      rejected: 400,
      missing: 404,
      failed: 500,
    });
    expect(answers.ignored?.headers.get("x-request-id")).toBe("ray-wh-200");
    expect(answers.failed?.headers.get("x-request-id")).toBe("ray-wh-500");
    const rejectedId = answers.rejected?.headers.get("x-request-id");
    expect(rejectedId).toMatch(UUID);
    expect(answers.missing?.headers.get("x-request-id")).toMatch(UUID);

    const requestLine = (status: number) =>
      lines.find((l) => l.msg === "request done" && l.status === status);
    expect(requestLine(200)).toMatchObject({
      worker: "webhooks",
      request_id: "ray-wh-200",
      path: "/api/webhooks/stripe",
    });
    expect(requestLine(400)).toMatchObject({ request_id: rejectedId });
    expect(requestLine(404)).toMatchObject({ request_id: answers.missing?.headers.get("x-request-id") });
    expect(requestLine(500)).toMatchObject({ request_id: "ray-wh-500" });
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: "stripe event not applied",
        request_id: "ray-wh-200",
        event_id: "evt_rid_1",
      }),
    );
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: "webhook signature rejected", request_id: rejectedId }),
    );
    expect(lines).toContainEqual(
      expect.objectContaining({ level: "error", msg: "webhook failed", request_id: "ray-wh-500" }),
    );
    expect(lines.filter((l) => l.request_id === null || l.request_id === undefined)).toEqual([]);
  });
});
