/**
 * The webhook endpoint against the Stripe emulator: real checkouts, payment failures, renewals
 * and cancellations, their events delivered twice, swapped with their neighbours, late, and
 * after a crash. Every assertion reads D1 through the same queries the other workers use.
 */

import { applyD1Migrations, env, reset, SELF } from "cloudflare:test";
import { accountStatus, planInForce } from "@aigate/shared";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { type Delivery, neighbourSwaps, StripeScenario, webhookRequest } from "./test/support";

const scenario = new StripeScenario(env, env.STRIPE_WEBHOOK_SECRET);
const DAY = 86_400_000;

const deliver = (payload: string, signature: string | null) => SELF.fetch(webhookRequest(payload, signature));

let userSeq = 0;
const newUser = () => `user_wh_${Date.now().toString(36)}_${++userSeq}`;

beforeAll(async () => {
  await scenario.setup();
});

async function freshDatabase() {
  await reset();
  await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);
}

/** Everything the webhooks write, without receipt times. */
async function billingState() {
  const q = async (sql: string) => (await env.DB.prepare(sql).all()).results;
  return {
    customers: await q("SELECT user_id, stripe_customer_id, plan FROM stripe_customers ORDER BY user_id"),
    subscriptions: await q(
      `SELECT stripe_subscription_id, user_id, stripe_customer_id, plan, status, current_period_start, current_period_end,
              cancel_at_period_end, past_due_since, started_at, ended_at FROM subscriptions ORDER BY 1`,
    ),
    planHistory: await q(
      "SELECT user_id, effective_from, plan, stripe_subscription_id FROM plan_history ORDER BY 1, 2",
    ),
    periods: await q("SELECT * FROM billing_periods ORDER BY 1, 2"),
    invoices: await q(
      `SELECT stripe_invoice_id, user_id, stripe_subscription_id, status, currency, subtotal_cents, total_cents,
              amount_paid_cents, period_start, period_end, usage_period_start, usage_period_end, finalized_at, paid_at
       FROM invoices ORDER BY stripe_created, 1`,
    ),
    usage: await q("SELECT id, charged, stripe_invoice_id FROM session_usage ORDER BY id"),
  };
}

/**
 * Delivers `prior` then `stage` in order, once each, and records the state. Then, starting each
 * time from an empty database, delivers the same events with every event twice: in order, and
 * with each pair of neighbours swapped (the last prior event counts as the stage's neighbour),
 * and checks the state is identical. Leaves the database in the in-order state.
 */
async function expectOrderIndependent(prior: Delivery[], stage: Delivery[], seed?: () => Promise<void>) {
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

async function insertUsage(
  rows: { id: string; user: string; plan: string; periodStart: number; status: string }[],
) {
  const stmt = env.DB.prepare(
    `INSERT INTO session_usage (id, user_id, project_id, session_id, status, duration_ms, charged, created_at, reason,
       rule_version, plan, period_start, period_end, record_token, recorded_at)
     VALUES (?1, ?2, 'proj', ?1, ?3, 6000, 0, ?4, ?5, 1, ?6, ?4, ?7, 'tok', ?4)`,
  );
  await env.DB.batch(
    rows.map((r) =>
      stmt.bind(
        r.id,
        r.user,
        r.status,
        r.periodStart,
        r.status === "success" ? "success" : "too_short",
        r.plan,
        r.periodStart + 30 * DAY,
      ),
    ),
  );
}

const types = (ds: Delivery[]) => ds.map((d) => d.type);

describe("checkout completion", () => {
  it("makes the user payg from the subscription's start, whatever the order and copies of its events", async () => {
    const user = newUser();
    const { subscription, events, invoice } = await scenario.subscribe(user, "payg");
    expect(types(events)).toEqual(
      expect.arrayContaining([
        "checkout.session.completed",
        "customer.subscription.created",
        "invoice.finalized",
        "invoice.paid",
      ]),
    );
    const state = await expectOrderIndependent([], events);

    const start = subscription.start_date * 1000;
    expect(state.customers).toEqual([
      { user_id: user, stripe_customer_id: subscription.customer, plan: "payg" },
    ]);
    expect(state.planHistory).toEqual([
      { user_id: user, effective_from: start, plan: "payg", stripe_subscription_id: subscription.id },
    ]);
    expect(state.subscriptions).toMatchObject([
      { stripe_subscription_id: subscription.id, status: "active", past_due_since: null },
    ]);
    expect(state.invoices).toMatchObject([{ stripe_invoice_id: invoice.id, status: "paid", user_id: user }]);
    expect(state.periods).toHaveLength(1);

    expect(await planInForce(env.DB, user, start)).toEqual({ plan: "payg", subscriptionId: subscription.id });
    expect((await planInForce(env.DB, user, start - 1)).plan).toBe("free");
    const account = await accountStatus(env.DB, user, start + 1000, 7);
    expect(account).toMatchObject({ plan: "payg", limitsPlan: "payg", subscriptionId: subscription.id });
    expect(account.currentPeriod.start).toBe(start);
  });

  it("records pro's invoice amounts in cents", async () => {
    const user = newUser();
    const { events, invoice } = await scenario.subscribe(user, "pro");
    await scenario.deliverAll(deliver, events);
    const row = await env.DB.prepare(
      "SELECT total_cents, amount_paid_cents, currency FROM invoices WHERE stripe_invoice_id = ?1",
    )
      .bind(invoice.id)
      .first();
    expect(row).toEqual({ total_cents: 2900, amount_paid_cents: 2900, currency: "usd" });
    expect((await accountStatus(env.DB, user, Date.now(), 7)).plan).toBe("pro");
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
  it("traces the closed period's successful sessions to the finalized invoice, whatever the order", async () => {
    const user = newUser();
    const other = newUser();
    const sub = await scenario.subscribe(user, "payg");
    const periodStart = (sub.subscription.items.data[0]?.current_period_start ?? 0) * 1000;
    const seed = () =>
      insertUsage([
        { id: "s1", user, plan: "payg", periodStart, status: "success" },
        { id: "s2", user, plan: "payg", periodStart, status: "success" },
        { id: "s3", user, plan: "payg", periodStart, status: "failed" },
        { id: "s4", user, plan: "free", periodStart, status: "success" },
        { id: "s5", user, plan: "payg", periodStart: periodStart + 30 * DAY, status: "success" },
        { id: "s6", user: other, plan: "payg", periodStart, status: "success" },
      ]);
    const closed = await scenario.emulator.closePeriod(sub.subscription.id);
    const renewal = await scenario.eventsById(closed.events);
    const state = await expectOrderIndependent(sub.events, renewal, seed);

    const invoiceId = closed.invoice.id;
    expect(state.usage).toEqual([
      { id: "s1", charged: 1, stripe_invoice_id: invoiceId },
      { id: "s2", charged: 1, stripe_invoice_id: invoiceId },
      { id: "s3", charged: 0, stripe_invoice_id: null },
      { id: "s4", charged: 0, stripe_invoice_id: null },
      { id: "s5", charged: 0, stripe_invoice_id: null },
      { id: "s6", charged: 0, stripe_invoice_id: null },
    ]);
    const renewed = state.invoices.find((i) => i.stripe_invoice_id === invoiceId);
    expect(renewed).toMatchObject({ usage_period_start: periodStart, status: "paid" });
    // the new period is recorded next to the first one
    expect(state.periods.map((p) => p.period_start)).toEqual([periodStart, closed.invoice.period_end * 1000]);
  });
});

describe("cancellation", () => {
  it("returns the user to free from the subscription's end, whatever the order", async () => {
    const user = newUser();
    const sub = await scenario.subscribe(user, "payg");
    await scenario.emulator.advanceClock(3600); // an hour on payg, then canceled
    const canceled = await scenario.stripe.subscriptions.cancel(sub.subscription.id);
    const all = await scenario.emulator.events("customer.subscription.deleted");
    const deletion = (await scenario.eventsById(all.map((e) => e.id))).filter((d) =>
      d.payload.includes(sub.subscription.id),
    );
    expect(deletion).toHaveLength(1);
    const state = await expectOrderIndependent(sub.events, deletion);

    const endedAt = (canceled.ended_at ?? 0) * 1000;
    expect(state.customers).toMatchObject([{ user_id: user, plan: "free" }]);
    expect(state.planHistory.map((r) => [r.effective_from, r.plan])).toEqual([
      [sub.subscription.start_date * 1000, "payg"],
      [endedAt, "free"],
    ]);
    expect((await planInForce(env.DB, user, endedAt)).plan).toBe("free");
    expect((await accountStatus(env.DB, user, endedAt + 1, 7)).plan).toBe("free");
  });

  it("ignores a stale subscription.created arriving after the deletion: the user stays free", async () => {
    const user = newUser();
    const sub = await scenario.subscribe(user, "payg");
    await scenario.stripe.subscriptions.cancel(sub.subscription.id);
    const deleted = (
      await scenario.eventsById(
        (await scenario.emulator.events("customer.subscription.deleted")).map((e) => e.id),
      )
    ).filter((d) => d.payload.includes(sub.subscription.id));
    await scenario.deliverAll(deliver, deleted);
    await scenario.deliverAll(deliver, sub.events);
    expect(
      await env.DB.prepare("SELECT plan FROM stripe_customers WHERE user_id = ?1").bind(user).first(),
    ).toEqual({ plan: "free" });
    expect(await env.DB.prepare("SELECT status FROM subscriptions").first()).toEqual({ status: "canceled" });
  });
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
    });
    expect(await env.DB.prepare("SELECT count(*) AS n FROM processed_stripe_events").first()).toEqual({
      n: 0,
    });

    const resent = await deliver(paid.payload, await scenario.sign(paid.payload));
    expect(await resent.json()).toEqual({ received: true, status: "processed" });
    expect((await accountStatus(env.DB, user, Date.now(), 7)).plan).toBe("payg");
  });

  it("acknowledges event types it does not handle with 200 and changes nothing", async () => {
    const sub = await scenario.subscribe(newUser(), "payg");
    const created = sub.events.find((e) => e.type === "invoice.created");
    if (!created) throw new Error("no invoice.created");
    const res = await deliver(created.payload, await scenario.sign(created.payload));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ received: true, status: "ignored" });
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
