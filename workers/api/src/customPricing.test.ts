/**
 * PUT /admin/customers/{user_id}/pricing through the api worker, on the Stripe emulator: the
 * customer's own Stripe price, applied at the period end (a schedule phase, on a test clock) or
 * now (as an upgrade), idempotent, and bad input answered with the contract's envelope.
 *
 * Stripe: a schedule's phases change a subscription's prices at set times, a phase's items
 * replacing the subscription's from its start
 * (https://docs.stripe.com/billing/subscriptions/subscription-schedules); resetting the billing
 * cycle anchor to now starts a new period and "you charge the customer for the usage accrued
 * during the shortened billing period" (https://docs.stripe.com/billing/subscriptions/billing-cycle);
 * tiered prices as in https://docs.stripe.com/api/prices/object#price_object-tiers_mode.
 */
import { createExecutionContext, env, SELF, waitOnExecutionContext } from "cloudflare:test";
import { accountStatus } from "@aigate/shared";
import { DEV_ADMIN_KEY, DEV_INGEST_KEY, seedKeys, userToken } from "@aigate/test-support";
import {
  createApp as createWebhooksApp,
  StripeScenario,
  type WebhooksEnv,
  webhookRequest,
} from "@aigate/webhooks/test";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";

const webhooks = createWebhooksApp();
const WEBHOOK_SECRET = "whsec_api_custom_pricing";
const scenario = new StripeScenario(env, WEBHOOK_SECRET);
const webhooksEnv: WebhooksEnv = {
  DB: env.DB,
  STRIPE_SECRET_KEY: env.STRIPE_SECRET_KEY,
  STRIPE_API_BASE: env.STRIPE_API_BASE,
  STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
};

let seq = 0;
const newUser = (name: string) => `cp_${name}_${Date.now().toString(36)}_${++seq}`;

async function deliver(payload: string, signature: string) {
  const ctx = createExecutionContext();
  const res = await webhooks.fetch(webhookRequest(payload, signature), webhooksEnv, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

function admin(path: string, init: RequestInit = {}, key: string | null = DEV_ADMIN_KEY) {
  const headers = new Headers(init.headers);
  if (key) headers.set("authorization", `Bearer ${key}`);
  if (init.body) headers.set("content-type", "application/json");
  return SELF.fetch(`http://api.test${path}`, { ...init, headers });
}

const putPricing = (user: string, body: unknown) =>
  admin(`/admin/customers/${encodeURIComponent(user)}/pricing`, {
    method: "PUT",
    body: typeof body === "string" ? body : JSON.stringify(body),
  });

async function json<T = Record<string, unknown>>(res: Response, status = 200): Promise<T> {
  expect(res.status, await res.clone().text()).toBe(status);
  return res.json<T>();
}

interface PricingView {
  user_id: string;
  plan: string;
  version: number;
  tiers_mode: string;
  tiers: { up_to: number | null; unit_amount_cents: number }[];
  stripe_price_id: string;
  when: string;
  state: string;
  effective_at: string;
}

/** A subscriber (on a test clock when given), with the checkout's webhooks applied. */
async function subscriber(plan: "payg" | "pro", opts: { clock?: string } = {}) {
  const user = newUser(plan);
  const sub = await scenario.subscribe(user, plan, opts);
  await scenario.deliverAll(deliver, sub.events);
  return { user, ...sub };
}

async function subscriptionOf(id: string) {
  return scenario.stripe.subscriptions.retrieve(id, { expand: ["items.data.price.tiers"] });
}

function meteredOf(sub: Awaited<ReturnType<typeof subscriptionOf>>) {
  return sub.items.data.find((i) => i.price.recurring?.usage_type === "metered");
}

async function pricesPosted(mark: number): Promise<number> {
  const calls = (await scenario.emulator.calls()).slice(mark);
  return calls.filter((c) => c.method === "POST" && c.path === "/v1/prices").length;
}

beforeAll(async () => {
  await scenario.setup();
});

beforeEach(async () => {
  await seedKeys(env.DB);
});

describe("PUT /admin/customers/{user_id}/pricing: bad input", () => {
  it("answers 401 without a key and 403 for a key without the admin scope", async () => {
    expect((await admin("/admin/customers/u/pricing", { method: "PUT", body: "{}" }, null)).status).toBe(401);
    const res = await admin("/admin/customers/u/pricing", { method: "PUT", body: "{}" }, DEV_INGEST_KEY);
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ error: { code: "forbidden" } });
  });

  it("answers 400 in the error envelope for every malformed body, before looking the customer up", async () => {
    const bodies: unknown[] = [
      "not json",
      {},
      { per_session_cents: -1, included_sessions: 0 },
      { per_session_cents: 2.5, included_sessions: 0 },
      { per_session_cents: 100_001, included_sessions: 0 },
      { per_session_cents: 5, included_sessions: -10 },
      { per_session_cents: 5 },
      { per_session_cents: 5, included_sessions: 0, when: "tomorrow" },
      { per_session_cents: 5, included_sessions: 0, plan: "pro" },
      { tiers_mode: "volume", tiers: [] },
      { tiers_mode: "stairstep", tiers: [{ up_to: null, unit_amount_cents: 5 }] },
      { tiers_mode: "graduated", tiers: [{ up_to: 10, unit_amount_cents: 5 }] },
      {
        tiers_mode: "graduated",
        tiers: [
          { up_to: 10, unit_amount_cents: 5 },
          { up_to: 5, unit_amount_cents: 4 },
          { up_to: null, unit_amount_cents: 3 },
        ],
      },
      { tiers_mode: "graduated", tiers: [{ up_to: null, unit_amount_cents: -3 }] },
    ];
    for (const body of bodies) {
      const res = await putPricing("nobody_at_all", body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      const envelope = await res.json<{ error: { code: string; message: string } }>();
      expect(envelope.error.code, JSON.stringify(body)).toEqual(expect.any(String));
      expect(envelope.error.message.length).toBeGreaterThan(0);
    }
  });

  it("answers 404 for a user with no customer and 409 for a customer without a paid subscription", async () => {
    const unknown = await putPricing("never_seen_user", { per_session_cents: 5, included_sessions: 0 });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: "customer_not_found" } });
    expect((await admin("/admin/customers/never_seen_user/pricing")).status).toBe(404);

    const free = newUser("free");
    await env.DB.prepare(
      "INSERT INTO stripe_customers (user_id, stripe_customer_id, email, plan, created_at, updated_at) VALUES (?1, ?2, '', 'free', 0, 0)",
    )
      .bind(free, `cus_free_${free}`)
      .run();
    const res = await putPricing(free, { per_session_cents: 5, included_sessions: 0 });
    expect(res.status).toBe(409);
    expect(await res.json()).toMatchObject({ error: { code: "no_subscription" } });
    expect(await json(await admin(`/admin/customers/${free}/pricing`))).toEqual({
      user_id: free,
      versions: [],
    });
  });

  it("answers 409 while a plan change or a cancellation is scheduled", async () => {
    const pro = await subscriber("pro");
    const res = await SELF.fetch("http://api.test/api/billing/plan", {
      method: "POST",
      headers: { authorization: `Bearer ${await userToken(pro.user)}`, "content-type": "application/json" },
      body: JSON.stringify({ plan: "payg", when: "period_end" }),
    });
    expect(res.status, await res.clone().text()).toBe(200);
    const pending = await putPricing(pro.user, { per_session_cents: 5, included_sessions: 500 });
    expect(pending.status).toBe(409);
    expect(await pending.json()).toMatchObject({ error: { code: "change_pending" } });
    // refused before anything was recorded or created
    expect(await json(await admin(`/admin/customers/${pro.user}/pricing`))).toEqual({
      user_id: pro.user,
      versions: [],
    });

    const payg = await subscriber("payg");
    await scenario.stripe.subscriptions.update(payg.subscription.id, { cancel_at_period_end: true });
    const ending = await putPricing(payg.user, { per_session_cents: 5, included_sessions: 0 });
    expect(ending.status).toBe(409);
    expect(await ending.json()).toMatchObject({ error: { code: "subscription_ending" } });
  });
});

describe("PUT /admin/customers/{user_id}/pricing", () => {
  it("gives a pro customer its own price from the next period, once however often it is asked, and bills it there", async () => {
    const t0 = Math.floor(Date.now() / 1000);
    const clock = await scenario.clock(t0);
    const c = await subscriber("pro", { clock });
    const before = await subscriptionOf(c.subscription.id);
    const catalogMetered = meteredOf(before);
    const periodEnd = catalogMetered?.current_period_end ?? 0;

    const mark = (await scenario.emulator.calls()).length;
    const body = { per_session_cents: 5, included_sessions: 1000 };
    const first = await json<PricingView>(await putPricing(c.user, body));
    expect(first).toMatchObject({
      user_id: c.user,
      plan: "pro",
      version: 1,
      tiers_mode: "graduated",
      tiers: [
        { up_to: 1000, unit_amount_cents: 0 },
        { up_to: null, unit_amount_cents: 5 },
      ],
      when: "period_end",
      state: "applied",
      effective_at: new Date(periodEnd * 1000).toISOString(),
    });
    // the customer's own price: the plan's product and meter, marked as theirs
    const price = await scenario.stripe.prices.retrieve(first.stripe_price_id, { expand: ["tiers"] });
    expect(price).toMatchObject({
      product: catalogMetered?.price.product,
      lookup_key: null,
      billing_scheme: "tiered",
      tiers_mode: "graduated",
      recurring: { usage_type: "metered", meter: catalogMetered?.price.recurring?.meter },
      metadata: { plan: "pro", aigate_user_id: c.user, aigate_pricing_version: "1" },
    });
    expect(price.tiers?.map((t) => [t.up_to, t.unit_amount])).toEqual([
      [1000, 0],
      [null, 5],
    ]);
    // this period is untouched; the schedule's next phase keeps the fee and swaps the metered price
    const scheduled = await subscriptionOf(c.subscription.id);
    expect(meteredOf(scheduled)?.price.id).toBe(catalogMetered?.price.id);
    const schedule = await scenario.stripe.subscriptionSchedules.retrieve(String(scheduled.schedule));
    const fee = before.items.data.find((i) => i.price.recurring?.usage_type === "licensed");
    expect(
      schedule.phases
        .at(-1)
        ?.items.map((i) => String(i.price))
        .sort(),
    ).toEqual([String(fee?.price.id), first.stripe_price_id].sort());
    expect(await pricesPosted(mark)).toBe(1);
    // a price swap within the plan is no plan change: nothing shows as pending to the customer
    const row = await env.DB.prepare(
      "SELECT plan, pending_plan FROM subscriptions WHERE stripe_subscription_id = ?1",
    )
      .bind(c.subscription.id)
      .first();
    expect(row).toEqual({ plan: "pro", pending_plan: null });

    // nor something the customer can take back: their resume has nothing to resume
    const resume = await SELF.fetch("http://api.test/api/billing/plan", {
      method: "POST",
      headers: { authorization: `Bearer ${await userToken(c.user)}`, "content-type": "application/json" },
      body: JSON.stringify({ resume: true }),
    });
    expect(resume.status).toBe(409);
    expect(await resume.json()).toMatchObject({ error: { code: "nothing_to_resume" } });
    expect((await subscriptionOf(c.subscription.id)).schedule).toBe(scheduled.schedule);

    // the same request again: the same version and price, nothing new in Stripe
    const again = await json<PricingView>(await putPricing(c.user, body));
    expect(again).toEqual(first);
    expect(await pricesPosted(mark)).toBe(1);
    expect(
      (await json<{ versions: PricingView[] }>(await admin(`/admin/customers/${c.user}/pricing`))).versions,
    ).toEqual([first]);

    // the period ends: the custom price bills the next one, and the series attributed there name it
    const m = await scenario.mark();
    await scenario.advanceClock(clock, periodEnd + 3600 * 2);
    await scenario.deliverAll(deliver, await scenario.eventsSince(m, c.customerId));
    const renewed = await subscriptionOf(c.subscription.id);
    expect(renewed.items.data.map((i) => i.price.id).sort()).toEqual(
      [fee?.price.id, first.stripe_price_id].sort(),
    );
    const account = await accountStatus(env.DB, c.user, (periodEnd + 3600) * 1000, 7);
    expect(account).toMatchObject({ plan: "pro" });
    expect(account.series).toMatchObject({ plan: "pro", priceId: first.stripe_price_id });

    // 1,030 sessions in that period: the renewal after it bills 30 x 5 cents for them
    const metered = meteredOf(renewed);
    await scenario.stripe.billing.meterEvents.create({
      event_name: "aigate_pro_sessions",
      payload: { stripe_customer_id: c.customerId, value: "1030" },
      timestamp: (metered?.current_period_start ?? 0) + 60,
    });
    await scenario.advanceClock(clock, (metered?.current_period_end ?? 0) + 3600 * 2);
    const invoices = await scenario.stripe.invoices.list({ customer: c.customerId, limit: 10 });
    const lines = invoices.data.flatMap((inv) => inv.lines.data);
    const customLine = lines.find((l) => l.pricing?.price_details?.price === first.stripe_price_id);
    expect(customLine).toMatchObject({ quantity: 1030, amount: 150 });
  });

  it("applies now as an upgrade does: the usage so far billed at the old price, the new period at the custom one", async () => {
    const c = await subscriber("payg");
    const oldPrice = meteredOf(await subscriptionOf(c.subscription.id))?.price.id;
    const start = meteredOf(await subscriptionOf(c.subscription.id))?.current_period_start ?? 0;
    await scenario.stripe.billing.meterEvents.create({
      event_name: "aigate_payg_sessions",
      payload: { stripe_customer_id: c.customerId, value: "5" },
      timestamp: Math.max(start, Math.floor(Date.now() / 1000) - 1),
    });
    await new Promise((r) => setTimeout(r, 1100));

    const view = await json<PricingView>(
      await putPricing(c.user, { per_session_cents: 4, included_sessions: 0, when: "now" }),
    );
    expect(view).toMatchObject({ version: 1, when: "now", state: "applied", tiers_mode: "graduated" });
    expect(view.tiers).toEqual([{ up_to: null, unit_amount_cents: 4 }]);
    const after = await subscriptionOf(c.subscription.id);
    const item = meteredOf(after);
    expect(item?.price).toMatchObject({
      id: view.stripe_price_id,
      unit_amount: 4,
      billing_scheme: "per_unit",
    });
    expect(item?.current_period_start).toBeGreaterThanOrEqual(start);
    expect(view.effective_at).toBe(new Date((item?.current_period_start ?? 0) * 1000).toISOString());
    // the invoice of the anchor reset bills the 5 sessions so far at 10 cents
    const invoice = await scenario.stripe.invoices.retrieve(String(after.latest_invoice));
    expect(
      invoice.lines.data.filter((l) => l.pricing?.price_details?.price === oldPrice).map((l) => l.amount),
    ).toEqual([50]);
    // D1 follows at once: the series from now on name the custom price
    const account = await accountStatus(env.DB, c.user, Date.now() + 1000, 7);
    expect(account.series).toMatchObject({ plan: "payg", priceId: view.stripe_price_id });
    // asked again: nothing moves (no second anchor reset, no new price)
    const mark = (await scenario.emulator.calls()).length;
    expect(
      await json<PricingView>(
        await putPricing(c.user, { per_session_cents: 4, included_sessions: 0, when: "now" }),
      ),
    ).toEqual(view);
    const writes = (await scenario.emulator.calls()).slice(mark).filter((x) => x.method === "POST");
    expect(writes).toEqual([]);

    // the customer's usage: a series of the new period (as the classifier records it, with the
    // price attribution names) is estimated at the custom price
    const period = account.currentPeriod;
    await env.DB.prepare(
      `INSERT INTO usage_periods (user_id, plan, period_start, period_end, stripe_price_id, billable_sessions, updated_at)
       VALUES (?1, 'payg', ?2, ?3, ?4, 3, 0)`,
    )
      .bind(c.user, period.start, period.end, account.series?.priceId)
      .run();
    const usage = await SELF.fetch("http://api.test/api/billing/usage", {
      headers: { authorization: `Bearer ${await userToken(c.user)}` },
    });
    expect(await json(usage)).toMatchObject({
      plan: "payg",
      sessions_this_month: 3,
      estimated_cost_cents: 12,
      session_price: {
        tiers_mode: "per_unit",
        tiers: [{ up_to: null, unit_amount_cents: 4 }],
        catalog: false,
      },
    });
    // and the period's invoice bills them at 4 cents
    await scenario.stripe.billing.meterEvents.create({
      event_name: "aigate_payg_sessions",
      payload: { stripe_customer_id: c.customerId, value: "3" },
      timestamp: (item?.current_period_start ?? 0) + 1,
    });
    await new Promise((r) => setTimeout(r, 1100));
    const closed = await scenario.emulator.closePeriod(c.subscription.id);
    expect(
      closed.invoice.lines.data
        .filter((l) => l.pricing?.price_details?.price === view.stripe_price_id)
        .map((l) => [l.quantity, l.amount]),
    ).toEqual([[3, 12]]);

    // a different price is a new version, with a price of its own
    const v2 = await json<PricingView>(
      await putPricing(c.user, {
        tiers_mode: "volume",
        tiers: [
          { up_to: 1000, unit_amount_cents: 4 },
          { up_to: null, unit_amount_cents: 3 },
        ],
      }),
    );
    expect(v2).toMatchObject({ version: 2, when: "period_end", tiers_mode: "volume" });
    expect(v2.stripe_price_id).not.toBe(view.stripe_price_id);
    const v2price = await scenario.stripe.prices.retrieve(v2.stripe_price_id);
    expect(v2price).toMatchObject({ tiers_mode: "volume", metadata: { aigate_pricing_version: "2" } });
  });

  it("completes a request that Stripe failed half-way when it is repeated: one version, one price", async () => {
    const c = await subscriber("payg");
    const body = { per_session_cents: 7, included_sessions: 50 };
    const mark = (await scenario.emulator.calls()).length;
    // the price is created, then every try at the schedule fails (the SDK's retries included)
    await scenario.emulator.addFault({ status: 500, count: 3, path_prefix: "/v1/subscription_schedules" });
    try {
      const failed = await putPricing(c.user, body);
      expect(failed.status).toBe(502);
      expect(await failed.json()).toMatchObject({ error: { code: "payment_provider_error" } });
    } finally {
      await scenario.emulator.clearFaults();
    }
    const [half] = (
      await json<{ versions: PricingView[] }>(await admin(`/admin/customers/${c.user}/pricing`))
    ).versions;
    expect(half).toMatchObject({
      version: 1,
      state: "requested",
      stripe_price_id: expect.stringMatching(/^price_/),
    });

    const done = await json<PricingView>(await putPricing(c.user, body));
    expect(done).toMatchObject({ version: 1, state: "applied", when: "period_end" });
    expect(done.stripe_price_id).toBe(half?.stripe_price_id);
    expect(await pricesPosted(mark)).toBe(1);
    const sub = await subscriptionOf(c.subscription.id);
    const schedule = await scenario.stripe.subscriptionSchedules.retrieve(String(sub.schedule));
    expect(schedule.phases.at(-1)?.items.map((i) => String(i.price))).toEqual([done.stripe_price_id]);
  });
});
