/**
 * The webhook endpoint in a deployment of four D1 shards, against the Stripe emulator: a user's
 * customer, subscription, plan history, billing periods and invoices land on the user's shard and
 * nowhere else; the event's dedupe row and the customer directory on home only. A crash between
 * the user's shard and home leaves the event unmarked, and Stripe's resend converges to the same
 * state as a clean delivery.
 */

import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { PLANS } from "@aigate/shared";
import { shardedEnv, userOnShard } from "@aigate/test-support/shards";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createApp } from "./app";
import { type Delivery, StripeScenario, webhookRequest } from "./test/support";

const scenario = new StripeScenario(env, env.STRIPE_WEBHOOK_SECRET);
const app = createApp();
const SHARDS = [env.DB, env.DB_1, env.DB_2, env.DB_3] as const;

let seq = 0;
/** A fresh user on shard `i` of 4 (each test run names its own). */
const userOn = (i: number) => userOnShard(`user_whs_${Date.now().toString(36)}_${++seq}_`, i);

type TestEnv = typeof env & { D1_SHARDS: string };
let sharded: TestEnv;

beforeAll(async () => {
  await scenario.setup();
});

// each test starts from its own storage: the shards are migrated again
beforeEach(async () => {
  sharded = await shardedEnv({ ...env });
});

async function deliver(e: TestEnv, d: Delivery): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await app.fetch(webhookRequest(d.payload, await scenario.sign(d.payload)), e, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

async function deliverAll(e: TestEnv, deliveries: readonly Delivery[]) {
  for (const d of deliveries) {
    const res = await deliver(e, d);
    expect(res.status, `${d.type}: ${await res.clone().text()}`).toBe(200);
  }
}

/** Per shard (index 0..3), the number of rows `sql` (one `?1` parameter) counts. */
async function countsPerShard(sql: string, param: string): Promise<number[]> {
  const out: number[] = [];
  for (const db of SHARDS) {
    const row = await db.prepare(sql).bind(param).first<{ n: number }>();
    out.push(row?.n ?? 0);
  }
  return out;
}

/** Per shard: `n` rows on shard `i`, none elsewhere. */
const onlyOn = (i: number, n: number) => [0, 1, 2, 3].map((k) => (k === i ? n : 0));

/** Where every row of a user's billing state lives, per shard. */
async function placement(userId: string, customerId: string, subscriptionId: string, eventIds: string[]) {
  return {
    customers: await countsPerShard("SELECT count(*) AS n FROM stripe_customers WHERE user_id = ?1", userId),
    subscriptions: await countsPerShard("SELECT count(*) AS n FROM subscriptions WHERE user_id = ?1", userId),
    planHistory: await countsPerShard("SELECT count(*) AS n FROM plan_history WHERE user_id = ?1", userId),
    periods: await countsPerShard(
      "SELECT count(*) AS n FROM billing_periods WHERE stripe_subscription_id = ?1",
      subscriptionId,
    ),
    invoices: await countsPerShard("SELECT count(*) AS n FROM invoices WHERE user_id = ?1", userId),
    directory: await countsPerShard(
      "SELECT count(*) AS n FROM customer_directory WHERE stripe_customer_id = ?1",
      customerId,
    ),
    dedupe: await countsPerShard(
      "SELECT count(*) AS n FROM processed_stripe_events WHERE event_id IN (SELECT value FROM json_each(?1))",
      JSON.stringify(eventIds),
    ),
  };
}

/** What the user's shard holds of the user's billing state, without receipt times. */
async function userState(db: D1Database, userId: string, subscriptionId: string) {
  const all = async (sql: string, param: string) => (await db.prepare(sql).bind(param).all()).results;
  return {
    customer: await all("SELECT stripe_customer_id, plan FROM stripe_customers WHERE user_id = ?1", userId),
    subscriptions: await all(
      `SELECT stripe_subscription_id, stripe_customer_id, plan, status, current_period_start, current_period_end,
              started_at, ended_at, pending_plan FROM subscriptions WHERE user_id = ?1`,
      userId,
    ),
    planHistory: await all(
      `SELECT effective_from, plan, stripe_subscription_id, stripe_price_id, meter_event_name
       FROM plan_history WHERE user_id = ?1 ORDER BY effective_from`,
      userId,
    ),
    periods: await all(
      "SELECT period_start, period_end FROM billing_periods WHERE stripe_subscription_id = ?1 ORDER BY 1",
      subscriptionId,
    ),
    invoices: await all(
      `SELECT stripe_invoice_id, status, total_cents, amount_paid_cents FROM invoices WHERE user_id = ?1
       ORDER BY stripe_invoice_id`,
      userId,
    ),
    reattributions: await all("SELECT from_ms FROM reattributions WHERE user_id = ?1", userId),
    epochs: await all("SELECT epoch FROM attribution_epochs WHERE user_id = ?1", userId),
  };
}

/**
 * The env with its home database failing every batch while `failing.on`: a crash after the user's
 * shard was written and before home was (the home reads still answer).
 */
function homeBatchesFail(e: TestEnv) {
  const failing = { on: true, refused: 0 };
  const home = e.DB;
  const DB = {
    prepare: (sql: string) => home.prepare(sql),
    batch: (statements: D1PreparedStatement[]) => {
      if (failing.on) {
        failing.refused++;
        return Promise.reject(new Error("home database unreachable"));
      }
      return home.batch(statements);
    },
    exec: (sql: string) => home.exec(sql),
    dump: () => home.dump(),
    withSession: (constraint?: string) => home.withSession(constraint),
  } as D1Database;
  return { env: { ...e, DB }, failing };
}

describe("webhooks on four D1 shards", () => {
  it("writes a checkout's customer, subscription, plan history, periods and invoice on the user's shard, the dedupe and directory rows on home", async () => {
    for (const shard of [2, 1, 0]) {
      const user = userOn(shard);
      const { customerId, subscription, events } = await scenario.subscribe(user, "payg");
      expect(events.map((d) => d.type)).toContain("checkout.session.completed");
      await deliverAll(sharded, events);

      const where = await placement(
        user,
        customerId,
        subscription.id,
        events.map((d) => d.id),
      );
      expect(where, `user on shard ${shard}`).toEqual({
        customers: onlyOn(shard, 1),
        subscriptions: onlyOn(shard, 1),
        planHistory: onlyOn(shard, 1),
        periods: onlyOn(shard, 1),
        invoices: onlyOn(shard, 1),
        directory: onlyOn(0, 1),
        dedupe: onlyOn(0, events.length),
      });
      const db = SHARDS[shard] ?? env.DB;
      expect((await userState(db, user, subscription.id)).customer).toEqual([
        { stripe_customer_id: customerId, plan: "payg" },
      ]);
      const directory = await env.DB.prepare(
        "SELECT user_id FROM customer_directory WHERE stripe_customer_id = ?1",
      )
        .bind(customerId)
        .first<{ user_id: string }>();
      expect(directory?.user_id).toBe(user);
    }
  });

  it("records an invoice of no subscription, its lines and our adjustment's link on the user's shard", async () => {
    const user = userOn(1);
    const { customerId, events } = await scenario.subscribe(user, "payg");
    await deliverAll(sharded, events);
    const item = await scenario.stripe.invoiceItems.create({
      customer: customerId,
      amount: 210,
      currency: "usd",
      description: "AI Gate: 30 successful session(s) recorded after that period was invoiced",
      metadata: { aigate_adjustment: "adj_shard" },
    });
    await env.DB_1.prepare(
      `INSERT INTO usage_adjustments (id, user_id, plan, period_start, stripe_customer_id, sessions, from_seq, to_seq,
         amount_cents, currency, state, stripe_invoice_item_id, created_at, updated_at)
       VALUES ('adj_shard', ?1, 'payg', 0, ?2, 30, 0, 30, 210, 'usd', 'created', ?3, 0, 0)`,
    )
      .bind(user, customerId, item.id)
      .run();
    const mark = await scenario.mark();
    const draft = await scenario.stripe.invoices.create({
      customer: customerId,
      pending_invoice_items_behavior: "include",
      auto_advance: false,
    });
    await scenario.stripe.invoices.finalizeInvoice(draft.id);
    await scenario.stripe.invoices.pay(draft.id);
    const stage = (await scenario.eventsSince(mark, customerId)).filter((d) => d.type.startsWith("invoice."));
    await deliverAll(sharded, stage);

    expect(
      await countsPerShard("SELECT count(*) AS n FROM invoices WHERE stripe_invoice_id = ?1", draft.id),
    ).toEqual(onlyOn(1, 1));
    expect(
      await countsPerShard("SELECT count(*) AS n FROM invoice_lines WHERE stripe_invoice_id = ?1", draft.id),
    ).toEqual(onlyOn(1, 1));
    expect(
      await env.DB_1.prepare(
        "SELECT stripe_invoice_id FROM usage_adjustments WHERE id = 'adj_shard'",
      ).first(),
    ).toEqual({ stripe_invoice_id: draft.id });
    expect(
      await countsPerShard(
        "SELECT count(*) AS n FROM processed_stripe_events WHERE event_id IN (SELECT value FROM json_each(?1))",
        JSON.stringify(stage.map((d) => d.id)),
      ),
    ).toEqual(onlyOn(0, stage.length));
  });

  it("answers a second copy of an applied event with duplicate, whatever shard its user is on", async () => {
    for (const shard of [3, 0]) {
      const user = userOn(shard);
      const { subscription, events } = await scenario.subscribe(user, "pro");
      await deliverAll(sharded, events);
      const db = SHARDS[shard] ?? env.DB;
      const before = await userState(db, user, subscription.id);
      for (const d of events) {
        const res = await deliver(sharded, d);
        expect(await res.json()).toEqual({ received: true, status: "duplicate" });
      }
      expect(await userState(db, user, subscription.id)).toEqual(before);
    }
  });

  it("leaves an event unmarked when home fails after the user's shard was written, and converges when Stripe resends it", async () => {
    const user = userOn(2);
    const { customerId, subscription, events } = await scenario.subscribe(user, "payg");
    const broken = homeBatchesFail(sharded);
    for (const d of events) {
      const res = await deliver(broken.env, d);
      expect(res.status, d.type).toBe(500);
    }
    expect(broken.failing.refused).toBe(events.length);
    const ids = events.map((d) => d.id);
    // the user's shard was written; home holds neither the directory row nor any dedupe row
    expect(await placement(user, customerId, subscription.id, ids)).toMatchObject({
      subscriptions: onlyOn(2, 1),
      directory: [0, 0, 0, 0],
      dedupe: [0, 0, 0, 0],
    });
    const crashed = await userState(env.DB_2, user, subscription.id);

    // Stripe resends every event: applied again (not duplicates), to the same state
    broken.failing.on = false;
    for (const d of events) {
      const res = await deliver(broken.env, d);
      expect(await res.json(), d.type).toEqual({ received: true, status: "processed" });
    }
    expect(await userState(env.DB_2, user, subscription.id)).toEqual(crashed);
    expect(await placement(user, customerId, subscription.id, ids)).toEqual({
      customers: onlyOn(2, 1),
      subscriptions: onlyOn(2, 1),
      planHistory: onlyOn(2, 1),
      periods: onlyOn(2, 1),
      invoices: onlyOn(2, 1),
      directory: onlyOn(0, 1),
      dedupe: onlyOn(0, events.length),
    });

    // and the same as a user whose events were never interrupted
    const clean = userOn(2);
    const other = await scenario.subscribe(clean, "payg");
    await deliverAll(sharded, other.events);
    const shape = (s: Awaited<ReturnType<typeof userState>>) => ({
      customer: s.customer.length,
      subscriptions: s.subscriptions.map((r) => ({ plan: r.plan, status: r.status, ended_at: r.ended_at })),
      planHistory: s.planHistory.map((r) => r.plan),
      periods: s.periods.length,
      invoices: s.invoices.map((r) => ({ status: r.status, total: r.total_cents })),
      reattributions: s.reattributions.length,
      epochs: s.epochs,
    });
    expect(shape(crashed)).toEqual(shape(await userState(env.DB_2, clean, other.subscription.id)));
  });

  it("finds the user of a customer in the directory (home) when nothing in Stripe names the user", async () => {
    const user = userOn(3);
    const customer = await scenario.stripe.customers.create({ metadata: {} });
    // recorded as the api records a customer: the user's shard, then the directory in home
    await env.DB_3.prepare(
      `INSERT INTO stripe_customers (user_id, stripe_customer_id, email, plan, created_at, updated_at)
       VALUES (?1, ?2, '', 'free', 1, 1)`,
    )
      .bind(user, customer.id)
      .run();
    await env.DB.prepare(
      "INSERT INTO customer_directory (stripe_customer_id, user_id, created_at) VALUES (?1, ?2, 1)",
    )
      .bind(customer.id, user)
      .run();
    const events = await checkoutWithoutUser(customer.id);
    await deliverAll(sharded, events);
    expect(await countsPerShard("SELECT count(*) AS n FROM subscriptions WHERE user_id = ?1", user)).toEqual(
      onlyOn(3, 1),
    );
    expect(
      await env.DB_3.prepare("SELECT plan FROM stripe_customers WHERE user_id = ?1").bind(user).first(),
    ).toEqual({ plan: "payg" });
  });

  it("ignores the events of a customer neither the directory nor Stripe ties to a user, and writes nowhere", async () => {
    const customer = await scenario.stripe.customers.create({ metadata: {} });
    const events = await checkoutWithoutUser(customer.id);
    for (const d of events) {
      const res = await deliver(sharded, d);
      expect(await res.json(), d.type).toMatchObject({ received: true, status: "ignored" });
    }
    expect(
      await countsPerShard(
        "SELECT count(*) AS n FROM subscriptions WHERE stripe_customer_id = ?1",
        customer.id,
      ),
    ).toEqual([0, 0, 0, 0]);
    expect(
      await countsPerShard(
        "SELECT count(*) AS n FROM stripe_customers WHERE stripe_customer_id = ?1",
        customer.id,
      ),
    ).toEqual([0, 0, 0, 0]);
  });
});

/** A payg checkout completed for the customer, naming no user anywhere; its events. */
async function checkoutWithoutUser(customerId: string): Promise<Delivery[]> {
  const prices = await scenario.stripe.prices.list({
    lookup_keys: PLANS.payg.stripeLookupKeys,
    active: true,
  });
  const session = await scenario.stripe.checkout.sessions.create({
    mode: "subscription",
    customer: customerId,
    line_items: prices.data.map((p) =>
      p.recurring?.usage_type === "metered" ? { price: p.id } : { price: p.id, quantity: 1 },
    ),
    subscription_data: { billing_mode: { type: "flexible" } },
    success_url: "http://app.test/ok",
    cancel_url: "http://app.test/cancel",
  });
  const done = await scenario.emulator.completeCheckout(session.id);
  return scenario.eventsById(done.events);
}
