/**
 * The billing API over HTTP on the local runtime, with the real migrations and the Stripe
 * emulator. Users try to read each other's data; checkout goes end to end through the emulator
 * and the webhooks worker's handler (same D1).
 */

import { createExecutionContext, env, SELF, waitOnExecutionContext } from "cloudflare:test";
import { calendarMonth, PLANS, PRICE_LOOKUP_KEYS } from "@aigate/shared";
import { userToken } from "@aigate/test-support";
import {
  createApp as createWebhooksApp,
  StripeScenario,
  type WebhooksEnv,
  webhookRequest,
} from "@aigate/webhooks/test";
import { beforeAll, describe, expect, it } from "vitest";
import { createCheckout } from "./checkout";
import { readConfig } from "./config";
import { insertAdjustment, insertFrozenSeries, insertJudged } from "./test/support";

const webhooks = createWebhooksApp();
const WEBHOOK_SECRET = "whsec_api_e2e";
const scenario = new StripeScenario(env, WEBHOOK_SECRET);
const webhooksEnv: WebhooksEnv = {
  DB: env.DB,
  STRIPE_SECRET_KEY: env.STRIPE_SECRET_KEY,
  STRIPE_API_BASE: env.STRIPE_API_BASE,
  STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
};
const DAY = 86_400_000;

let seq = 0;
const newUser = (name: string) => `${name}_${Date.now().toString(36)}_${++seq}`;

async function call(user: string, path: string, init: RequestInit = {}) {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${await userToken(user)}`);
  if (init.body) headers.set("content-type", "application/json");
  return SELF.fetch(`http://api.test${path}`, { ...init, headers });
}

async function getJson(user: string, path: string) {
  const res = await call(user, path);
  expect(res.status, await res.clone().text()).toBe(200);
  return res.json<Record<string, unknown>>();
}

const postCheckout = (user: string, plan: string) =>
  call(user, "/api/billing/checkout", { method: "POST", body: JSON.stringify({ plan }) });

/** A paid subscription as the webhooks worker records it. */
async function seedSubscription(user: string, plan: "payg" | "pro", period: { start: number; end: number }) {
  const sub = `sub_seed_${user}`;
  await env.DB.batch([
    env.DB.prepare(
      "INSERT INTO stripe_customers (user_id, stripe_customer_id, email, plan, created_at, updated_at) VALUES (?1, ?2, '', ?3, 0, 0)",
    ).bind(user, `cus_seed_${user}`, plan),
    env.DB.prepare(
      `INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, plan, status, current_period_start,
         current_period_end, started_at, updated_at) VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?5, 0)`,
    ).bind(sub, user, `cus_seed_${user}`, plan, period.start, period.end),
    env.DB.prepare(
      "INSERT INTO billing_periods (stripe_subscription_id, period_start, period_end) VALUES (?1, ?2, ?3)",
    ).bind(sub, period.start, period.end),
    env.DB.prepare(
      "INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at) VALUES (?1, ?2, ?3, ?4, 0)",
    ).bind(user, period.start, plan, sub),
  ]);
}

async function setBillable(user: string, plan: string, periodStart: number, n: number) {
  await env.DB.prepare(
    `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, 0)
     ON CONFLICT (user_id, plan, period_start) DO UPDATE SET billable_sessions = excluded.billable_sessions`,
  )
    .bind(user, plan, periodStart, periodStart + 31 * DAY, n)
    .run();
}

async function insertSession(user: string, id: string, over: Record<string, number | null> = {}) {
  const now = Date.now();
  const row = {
    admitted_at: now - 10_000,
    last_seen_at: now - 5_000,
    ended_at: null,
    verdict_at: null,
    ...over,
  };
  await env.DB.prepare(
    `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, admitted_at, ended_at, verdict_at, open)
     VALUES (?1, ?2, 'proj_1', ?3, ?4, ?5, ?6, ?7, 1)`,
  )
    .bind(id, user, now - 10_000, row.last_seen_at, row.admitted_at, row.ended_at, row.verdict_at)
    .run();
}

beforeAll(async () => {
  await scenario.setup();
});

describe("GET /api/billing/usage", () => {
  it("shows a free user's month: billable and failed sessions, live leases, quota and limits", async () => {
    const user = newUser("free");
    const other = newUser("other");
    const now = Date.now();
    const month = calendarMonth(now);
    await setBillable(user, "free", month.start, 86);
    await setBillable(other, "free", month.start, 3);
    await insertJudged(env.DB, [
      { id: "f1", user, billedAt: month.start + 1000, status: "failed", reason: "turn_failed" },
      { id: "f2", user, billedAt: now - 1000, status: "failed", reason: "too_short" },
      { id: "f3", user, billedAt: month.start - 1000, status: "failed" }, // last month
      { id: "s1", user, billedAt: now - 2000, status: "success" },
      { id: "f4", user: other, billedAt: now - 1000, status: "failed" },
    ]);
    await insertSession(user, "live1");
    await insertSession(user, "live2", { admitted_at: now - 60 * 60_000, last_seen_at: now - 30_000 });
    await insertSession(user, "lapsed", { admitted_at: now - 10 * 60_000, last_seen_at: now - 5 * 60_000 });
    await insertSession(user, "ended", { ended_at: now - 1000 });
    await insertSession(user, "judged", { verdict_at: now - 1000 });
    await insertSession(other, "other_live");

    expect(await getJson(user, "/api/billing/usage")).toEqual({
      plan: "free",
      period_start: new Date(month.start).toISOString(),
      period_end: new Date(month.end).toISOString(),
      sessions_this_month: 86,
      failed_sessions: 2,
      quota: 100,
      estimated_cost: 0,
      estimated_cost_cents: 0,
      estimated_cost_includes_tax: false,
      currency: "usd",
      warning: true,
      active_sessions: 2,
      concurrent_limit: 5,
      pending_plan: null,
      pending_effective_at: null,
      session_price: null,
    });
  });

  it("estimates pro at 399, 400 and 401 sessions as $29.00, $29.00 and $29.07", async () => {
    const user = newUser("pro");
    const period = { start: Date.now() - 3 * DAY, end: Date.now() + 27 * DAY };
    await seedSubscription(user, "pro", period);
    const seen = [];
    for (const n of [399, 400, 401]) {
      await setBillable(user, "pro", period.start, n);
      const body = await getJson(user, "/api/billing/usage");
      expect(body).toMatchObject({ plan: "pro", quota: 400, concurrent_limit: null, sessions_this_month: n });
      seen.push([body.estimated_cost_cents, body.estimated_cost]);
    }
    expect(seen).toEqual([
      [2900, 29],
      [2900, 29],
      [2907, 29.07],
    ]);
    expect((await getJson(user, "/api/billing/usage")).period_start).toBe(
      new Date(period.start).toISOString(),
    );
  });

  it("estimates with the Stripe price the series bills: an older version or a custom price, tiers and all", async () => {
    const user = newUser("versioned");
    const period = { start: Date.now() - 3 * DAY, end: Date.now() + 27 * DAY };
    await seedSubscription(user, "payg", period);
    // a payg price that is not the catalog's current one: $0.10 for 2 sessions, then $0.08
    const [current] = (await scenario.stripe.prices.list({ lookup_keys: [PRICE_LOOKUP_KEYS.paygSession] }))
      .data;
    const older = await scenario.stripe.prices.create({
      product: String(current?.product),
      currency: "usd",
      billing_scheme: "tiered",
      tiers_mode: "graduated",
      tiers: [
        { up_to: 2, unit_amount: 10 },
        { up_to: "inf", unit_amount: 8 },
      ],
      recurring: { interval: "month", usage_type: "metered", meter: String(current?.recurring?.meter) },
      metadata: { plan: "payg" },
    });
    await setBillable(user, "payg", period.start, 5);
    await env.DB.prepare("UPDATE usage_periods SET stripe_price_id = ?2 WHERE user_id = ?1")
      .bind(user, older.id)
      .run();
    const body = await getJson(user, "/api/billing/usage");
    expect(body).toMatchObject({
      plan: "payg",
      sessions_this_month: 5,
      estimated_cost_cents: 2 * 10 + 3 * 8,
      estimated_cost: 0.44,
      quota: null,
      session_price: {
        tiers_mode: "graduated",
        tiers: [
          { up_to: 2, unit_amount_cents: 10 },
          { up_to: null, unit_amount_cents: 8 },
        ],
        catalog: false,
      },
    });
    // a series naming the catalog's price is estimated as before
    await env.DB.prepare("UPDATE usage_periods SET stripe_price_id = ?2 WHERE user_id = ?1")
      .bind(user, current?.id)
      .run();
    expect(await getJson(user, "/api/billing/usage")).toMatchObject({
      estimated_cost_cents: 50,
      session_price: { tiers_mode: "per_unit", catalog: true },
    });
  });

  it("never shows one user another user's usage", async () => {
    const alice = newUser("alice");
    const bob = newUser("bob");
    const month = calendarMonth(Date.now());
    await seedSubscription(bob, "payg", { start: Date.now() - DAY, end: Date.now() + 29 * DAY });
    await setBillable(bob, "payg", Date.now() - DAY, 250);
    await setBillable(bob, "free", month.start, 99);
    const body = await getJson(alice, "/api/billing/usage");
    expect(body).toMatchObject({ plan: "free", sessions_this_month: 0, estimated_cost_cents: 0 });
  });
});

describe("GET /api/billing/sessions", () => {
  const t0 = Date.UTC(2026, 10, 20, 12);

  it("lists the user's sessions newest first with reasons, plan, charged and invoice, page by page", async () => {
    const user = newUser("list");
    const other = newUser("other");
    const p = t0 - DAY;
    // a payg series of 3 sessions: Stripe's invoice in_1 billed 2 of them, an adjustment on in_2 the third
    await insertFrozenSeries(env.DB, {
      user,
      plan: "payg",
      periodStart: p,
      billable: 3,
      stripeBilled: 2,
      invoiceId: "in_1",
    });
    await insertAdjustment(env.DB, { user, plan: "payg", periodStart: p, from: 2, to: 3, invoiceId: "in_2" });
    await insertJudged(env.DB, [
      { id: "a1", user, billedAt: t0 + 1, plan: "payg", periodStart: p, seq: 1 },
      {
        id: "a2",
        user,
        billedAt: t0 + 2,
        status: "failed",
        reason: "slow_connect",
        plan: "payg",
        periodStart: p,
      },
      {
        id: "a3",
        user,
        billedAt: t0 + 2,
        status: "failed",
        reason: "turn_failed",
        plan: "payg",
        periodStart: p,
      },
      // a page boundary falls inside this tie
      { id: "a4", user, billedAt: t0 + 2, plan: "payg", periodStart: p, seq: 3 },
      {
        id: "a5",
        user,
        billedAt: t0 + 4,
        status: "failed",
        reason: "upstream_error",
        plan: "payg",
        periodStart: p,
      },
      { id: "a6", user, billedAt: t0 + 5, plan: "payg", periodStart: p, seq: 2 },
      { id: "a7", user, billedAt: t0 + 6, plan: "free", periodStart: 0 },
      { id: "b1", user: other, billedAt: t0 + 5 },
    ]);
    const pages = [];
    let cursor: unknown = null;
    do {
      const page = await getJson(user, `/api/billing/sessions?limit=2${cursor ? `&cursor=${cursor}` : ""}`);
      pages.push(page);
      cursor = page.next_cursor;
    } while (cursor && pages.length < 10);
    expect(pages).toHaveLength(4);
    const sessions = pages.flatMap((p) => p.sessions as Record<string, unknown>[]);
    expect(sessions.map((s) => s.session_id)).toEqual(["a7", "a6", "a5", "a4", "a3", "a2", "a1"]);
    expect(sessions[6]).toEqual({
      session_id: "a1",
      project_id: "proj_1",
      created_at: new Date(t0 + 1).toISOString(),
      billable: true,
      reason: "success",
      audio_ms: 6000,
      plan: "payg",
      charged: true,
      invoice_id: "in_1",
    });
    // ranks beyond what Stripe billed are charged by the adjustment's invoice
    expect(sessions.map((s) => [s.session_id, s.charged, s.invoice_id])).toEqual([
      ["a7", false, null], // free: never charged
      ["a6", true, "in_1"],
      ["a5", false, null],
      ["a4", true, "in_2"],
      ["a3", false, null],
      ["a2", false, null],
      ["a1", true, "in_1"],
    ]);
    expect(sessions[2]).toMatchObject({ billable: false, reason: "upstream_error", plan: "payg" });
    expect((await getJson(user, "/api/billing/sessions")).sessions).toHaveLength(7);
  });

  it("never lists another user's sessions, even when given that user's cursor", async () => {
    const alice = newUser("alice");
    const bob = newUser("bob");
    await insertJudged(env.DB, [
      { id: "bob1", user: bob, billedAt: t0 + 10 },
      { id: "bob2", user: bob, billedAt: t0 + 9 },
      { id: "ali1", user: alice, billedAt: t0 + 1 },
    ]);
    const bobsPage = await getJson(bob, "/api/billing/sessions?limit=1");
    expect(bobsPage.next_cursor).toEqual(expect.any(String));
    const alicesView = await getJson(alice, `/api/billing/sessions?cursor=${bobsPage.next_cursor}`);
    expect((alicesView.sessions as { session_id: string }[]).map((s) => s.session_id)).toEqual(["ali1"]);
    const forged = await SELF.fetch("http://api.test/api/billing/sessions", {
      headers: { authorization: `Bearer ${await userToken(bob, { secret: "guessed-secret" })}` },
    });
    expect(forged.status).toBe(401);
  });

  it("rejects a limit outside 1..100 and a malformed cursor with 400", async () => {
    const user = newUser("bad");
    for (const q of ["limit=0", "limit=101", "limit=abc", "limit=-1"]) {
      const res = await call(user, `/api/billing/sessions?${q}`);
      expect(res.status, q).toBe(400);
      expect(await res.json()).toMatchObject({ error: { code: "invalid_request" } });
    }
    const res = await call(user, "/api/billing/sessions?cursor=%%%");
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: "invalid_cursor" } });
    expect((await call(user, "/api/billing/sessions?limit=100")).status).toBe(200);
  });
});

describe("POST /api/billing/checkout", () => {
  it("makes one Stripe customer (metadata.user_id) for a double click, and checkouts with the plan's prices", async () => {
    const user = newUser("double");
    const [first, second] = await Promise.all([postCheckout(user, "pro"), postCheckout(user, "pro")]);
    expect([first.status, second.status]).toEqual([200, 200]);
    const session = await first.json<{ id: string; url: string }>();
    expect(session).toEqual({ id: expect.stringMatching(/^cs_/), url: expect.stringMatching(/^http/) });

    const customers = await env.DB.prepare(
      "SELECT stripe_customer_id, plan FROM stripe_customers WHERE user_id = ?1",
    )
      .bind(user)
      .all<{ stripe_customer_id: string; plan: string }>();
    expect(customers.results).toHaveLength(1);
    const customerId = customers.results[0]?.stripe_customer_id ?? "";
    expect(customers.results[0]?.plan).toBe("free");
    const all = await scenario.stripe.customers.list({ limit: 100 });
    expect(all.data.filter((c) => c.metadata.user_id === user).map((c) => c.id)).toEqual([customerId]);

    const cs = await scenario.stripe.checkout.sessions.retrieve(session.id, { expand: ["line_items"] });
    expect(cs).toMatchObject({ mode: "subscription", customer: customerId, client_reference_id: user });
    const lines = (cs.line_items?.data ?? []).map((l) => [l.price?.lookup_key, l.quantity]);
    expect(lines).toEqual([
      [PRICE_LOOKUP_KEYS.proMonthly, 1],
      [PRICE_LOOKUP_KEYS.proSession, null],
    ]);
    expect(PLANS.pro.stripeLookupKeys).toEqual([PRICE_LOOKUP_KEYS.proMonthly, PRICE_LOOKUP_KEYS.proSession]);
  });

  it("goes end to end: checkout, completion in the emulator, webhooks, then usage shows payg", async () => {
    const user = newUser("e2e");
    const before = await getJson(user, "/api/billing/usage");
    expect(before.plan).toBe("free");

    const res = await postCheckout(user, "payg");
    expect(res.status).toBe(200);
    const { id } = await res.json<{ id: string }>();
    const done = await scenario.emulator.completeCheckout(id);
    expect(done.subscription.metadata).toMatchObject({ user_id: user });
    for (const d of await scenario.eventsById(done.events)) {
      const ctx = createExecutionContext();
      const delivered = await webhooks.fetch(
        webhookRequest(d.payload, await scenario.sign(d.payload)),
        webhooksEnv,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      expect(delivered.status, d.type).toBe(200);
    }

    const item = done.subscription.items.data[0];
    const after = await getJson(user, "/api/billing/usage");
    expect(after).toMatchObject({
      plan: "payg",
      quota: null,
      concurrent_limit: null,
      sessions_this_month: 0,
      estimated_cost_cents: 0,
      warning: false,
      period_start: new Date((item?.current_period_start ?? 0) * 1000).toISOString(),
      period_end: new Date((item?.current_period_end ?? 0) * 1000).toISOString(),
    });

    const again = await postCheckout(user, "payg");
    expect(again.status).toBe(409);
    expect(await again.json()).toMatchObject({ error: { code: "already_on_plan" } });
    const portal = await call(user, "/api/billing/portal", { method: "POST" });
    expect(portal.status).toBe(200);
    expect(await portal.json()).toEqual({ url: expect.stringMatching(/^http/) });
  });

  it("turns Stripe Tax on: automatic tax, a required billing address saved onto the customer, tax IDs", async () => {
    // Stripe refuses automatic tax for an existing customer without an address unless
    // `customer_update[address]` is `auto` (customer_tax_location_invalid), and tax ID collection
    // unless `customer_update[name]` is `auto`: the session exists, so both were sent.
    const user = newUser("tax");
    const res = await postCheckout(user, "pro");
    expect(res.status, await res.clone().text()).toBe(200);
    const { id } = await res.json<{ id: string }>();
    const cs = await scenario.stripe.checkout.sessions.retrieve(id);
    expect(cs).toMatchObject({
      automatic_tax: { enabled: true },
      billing_address_collection: "required",
      tax_id_collection: { enabled: true },
    });

    const done = await scenario.emulator.completeCheckout(id, {
      address: { country: "DE", postal_code: "10115" },
      business_name: "Tax GmbH",
      tax_id: { type: "eu_vat", value: "DE123456789" },
    });
    const customer = await scenario.stripe.customers.retrieve(done.subscription.customer);
    expect(customer).toMatchObject({ name: "Tax GmbH", address: { country: "DE", postal_code: "10115" } });
    expect(done.subscription.automatic_tax.enabled).toBe(true);
    for (const d of await scenario.eventsById(done.events)) {
      const ctx = createExecutionContext();
      const delivered = await webhooks.fetch(
        webhookRequest(d.payload, await scenario.sign(d.payload)),
        webhooksEnv,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      expect(delivered.status, d.type).toBe(200);
    }
    // the emulator's flat German rate, 19 %: $29.00 + $5.51
    const { invoices } = await getJson(user, "/api/billing/invoices");
    expect(invoices).toMatchObject([
      {
        id: done.invoice.id,
        subtotal_cents: 2900,
        tax_cents: 551,
        total_cents: 3451,
        amount_paid_cents: 3451,
      },
    ]);
    const usage = await getJson(user, "/api/billing/usage");
    expect(usage).toMatchObject({
      plan: "pro",
      estimated_cost_cents: 2900,
      estimated_cost_includes_tax: false,
    });
  });

  it("leaves tax out of Checkout with STRIPE_TAX=off", async () => {
    expect(readConfig({ ...env, STRIPE_TAX: "off" }).stripeTax).toBe(false);
    expect(readConfig({ ...env, STRIPE_TAX: "" }).stripeTax).toBe(true);
    expect(() => readConfig({ ...env, STRIPE_TAX: "yes" })).toThrow(/STRIPE_TAX/);
    const customer = await scenario.stripe.customers.create({ metadata: { user_id: "notax" } });
    const session = await createCheckout(scenario.stripe, {
      userId: "notax",
      customerId: customer.id,
      plan: "payg",
      baseUrl: "http://app.test",
      tax: false,
    });
    const cs = await scenario.stripe.checkout.sessions.retrieve(session.id);
    expect(cs).toMatchObject({ automatic_tax: { enabled: false }, billing_address_collection: null });
  });

  it("answers 409 already_on_plan for the current plan, and already_subscribed for the other paid plan", async () => {
    const user = newUser("onpro");
    await seedSubscription(user, "pro", { start: Date.now() - DAY, end: Date.now() + 29 * DAY });
    const same = await postCheckout(user, "pro");
    expect(same.status).toBe(409);
    expect(await same.json()).toMatchObject({ error: { code: "already_on_plan" } });
    const other = await postCheckout(user, "payg");
    expect(other.status).toBe(409);
    expect(await other.json()).toMatchObject({ error: { code: "already_subscribed" } });
  });

  it("rejects a plan that is not payg or pro with 400", async () => {
    const user = newUser("badplan");
    for (const body of [JSON.stringify({ plan: "free" }), JSON.stringify({}), "not json"]) {
      const res = await call(user, "/api/billing/checkout", { method: "POST", body });
      expect(res.status, body).toBe(400);
      expect(await res.json()).toMatchObject({ error: { code: "invalid_request" } });
    }
  });
});

describe("POST /api/billing/portal", () => {
  it("answers 409 no_stripe_customer before the user has a customer, even when another user has one", async () => {
    const alice = newUser("alice");
    const bob = newUser("bob");
    expect((await postCheckout(bob, "payg")).status).toBe(200);
    const res = await call(alice, "/api/billing/portal", { method: "POST" });
    expect(res.status).toBe(409);
    expect(await res.json()).toMatchObject({ error: { code: "no_stripe_customer" } });
  });
});
