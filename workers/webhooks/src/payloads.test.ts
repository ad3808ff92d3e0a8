/**
 * Validly signed bodies the endpoint cannot use. Stripe resends any non-2xx answer for three
 * days, so each gets a deliberate answer and never a 5xx: a body that is not JSON, or JSON that
 * is not a Stripe event, is a 400 naming what is wrong (never `invalid_signature`: the signature
 * was good); an authentic event that we cannot use is acknowledged with 200 "ignored" and a
 * warning in the logs. Bodies are signed with the official SDK, as Stripe signs them.
 */
import { env, SELF } from "cloudflare:test";
import { shardsOf } from "@aigate/shared";
import { createStripe } from "@aigate/shared/stripe";
import Stripe from "stripe";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { processEvent, UnreadableStripeObject } from "./process";
import { StripeScenario, webhookRequest } from "./test/support";

const scenario = new StripeScenario(env, env.STRIPE_WEBHOOK_SECRET);

async function deliverSigned(payload: string): Promise<Response> {
  return SELF.fetch(webhookRequest(payload, await scenario.sign(payload)));
}

/** Counts of the rows a webhook writes: all must stay 0 for an unusable event. */
async function writtenRows() {
  const n = async (table: string) =>
    (await env.DB.prepare(`SELECT count(*) AS n FROM ${table}`).first<{ n: number }>())?.n;
  return {
    processed: await n("processed_stripe_events"),
    customers: await n("stripe_customers"),
    subscriptions: await n("subscriptions"),
    invoices: await n("invoices"),
    invoiceLines: await n("invoice_lines"),
    planHistory: await n("plan_history"),
    periods: await n("billing_periods"),
    reattributions: await n("reattributions"),
  };
}
const NOTHING_WRITTEN = {
  processed: 0,
  customers: 0,
  subscriptions: 0,
  invoices: 0,
  invoiceLines: 0,
  planHistory: 0,
  periods: 0,
  reattributions: 0,
};

const now = () => Math.floor(Date.now() / 1000);

function event(type: string, object: unknown, extra: Record<string, unknown> = {}) {
  return JSON.stringify({
    id: `evt_payload_${Math.random().toString(36).slice(2)}`,
    object: "event",
    type,
    created: now(),
    data: { object },
    ...extra,
  });
}

/** The JSON lines written with console.warn while `fn` runs. */
async function warnings(fn: () => Promise<void>): Promise<Record<string, unknown>[]> {
  const lines: string[] = [];
  const spy = vi.spyOn(console, "warn").mockImplementation((line: unknown) => {
    lines.push(String(line));
  });
  try {
    await fn();
  } finally {
    spy.mockRestore();
  }
  return lines.map((l) => JSON.parse(l));
}

beforeAll(async () => {
  await scenario.setup();
});

afterEach(() => {
  vi.restoreAllMocks();
});

describe("signed bodies that are not Stripe events", () => {
  it("answers a signed body that is not JSON with 400 invalid_payload, not invalid_signature", async () => {
    for (const body of ['{"id":"evt_x",', "not json at all", '\uFEFF{"id":"evt_x"}', "{}}"]) {
      const res = await deliverSigned(body);
      expect(res.status, body).toBe(400);
      expect(await res.json(), body).toMatchObject({ error: { code: "invalid_payload" } });
    }
    expect(await writtenRows()).toEqual(NOTHING_WRITTEN);
  });

  it("answers signed JSON without a string id and type with 400 invalid_event", async () => {
    for (const body of [
      '{"hello":"world"}',
      "[]",
      "null",
      "42",
      '"evt_1"',
      '{"id":42,"type":"customer.subscription.created"}',
      '{"id":"evt_1","type":""}',
      '{"id":"evt_1","type":["invoice.paid"]}',
    ]) {
      const res = await deliverSigned(body);
      expect(res.status, body).toBe(400);
      expect(await res.json(), body).toMatchObject({ error: { code: "invalid_event" } });
    }
    expect(await writtenRows()).toEqual(NOTHING_WRITTEN);
  });

  it("still answers a bad signature over a malformed body with invalid_signature", async () => {
    const body = '{"id":"evt_x",';
    const res = await SELF.fetch(webhookRequest(body, await scenario.sign(body, { secret: "whsec_other" })));
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: "invalid_signature" } });
  });
});

describe("authentic events the endpoint cannot use", () => {
  const checkout = {
    id: "cs_payload_1",
    object: "checkout.session",
    mode: "subscription",
    subscription: "sub_payload_1",
    customer: "cus_payload_1",
    client_reference_id: "user_payload",
    metadata: {},
  };
  const unusable: Array<[string, string, string]> = [
    [
      "checkout without mode",
      event("checkout.session.completed", { ...checkout, mode: undefined }),
      "data.object.mode",
    ],
    [
      "checkout with a numeric subscription",
      event("checkout.session.completed", { ...checkout, subscription: 42 }),
      "data.object.subscription",
    ],
    [
      "checkout with metadata as a string",
      event("checkout.session.completed", { ...checkout, metadata: "x" }),
      "data.object.metadata",
    ],
    [
      "checkout with an object as client_reference_id",
      event("checkout.session.completed", { ...checkout, client_reference_id: { a: 1 } }),
      "data.object.client_reference_id",
    ],
    [
      "subscription event without data.object",
      event("customer.subscription.updated", undefined),
      "data.object",
    ],
    [
      "subscription event whose object has no id",
      event("customer.subscription.created", { object: "subscription" }),
      "data.object.id",
    ],
    ["invoice event whose id is a number", event("invoice.paid", { id: 17 }), "data.object.id"],
    [
      "invoice event without created",
      event("invoice.paid", { id: "in_1" }, { created: undefined }),
      "created",
    ],
    [
      "subscription event created as a date string",
      event("customer.subscription.deleted", { id: "sub_1" }, { created: "2026-01-01T00:00:00Z" }),
      "created",
    ],
    [
      "subscription id with a lone surrogate",
      event("customer.subscription.updated", { id: "sub_\uD800" }),
      "data.object.id",
    ],
    [
      "subscription id with control characters",
      event("customer.subscription.updated", { id: "sub_1\u0000\n" }),
      "data.object.id",
    ],
    [
      "schedule event whose subscription is a number",
      event("subscription_schedule.updated", { id: "sub_sched_1", subscription: 42 }),
      "data.object.subscription",
    ],
    [
      "schedule event whose released subscription is an object without id",
      event("subscription_schedule.released", { id: "sub_sched_1", released_subscription: { object: "x" } }),
      "data.object.released_subscription",
    ],
    [
      "event id of 10,000 characters",
      event("customer.subscription.updated", { id: "sub_1" }, { id: `evt_${"x".repeat(10_000)}` }),
      "id",
    ],
  ];

  for (const [what, body, path] of unusable) {
    it(`acknowledges a ${what} with 200 ignored, logs a warning naming ${path}, and writes nothing`, async () => {
      let res: Response | undefined;
      const logged = await warnings(async () => {
        res = await deliverSigned(body);
      });
      expect(res?.status).toBe(200);
      const answer = (await res?.json()) as { reason?: string };
      expect(answer).toMatchObject({ received: true, status: "ignored" });
      expect(answer.reason).toContain(path);
      expect(logged).toContainEqual(
        expect.objectContaining({
          level: "warn",
          worker: "webhooks",
          msg: "stripe event unusable",
          issues: expect.arrayContaining([expect.objectContaining({ path })]),
        }),
      );
      expect(await writtenRows()).toEqual(NOTHING_WRITTEN);
    });
  }

  it("acknowledges event types it does not handle whatever their payload looks like", async () => {
    const thin = JSON.stringify({
      id: "evt_thin_1",
      object: "v2.core.event",
      type: "v1.billing.meter.error_report_triggered",
      created: "2026-01-01T00:00:00.000Z",
      related_object: { id: "mtr_1", type: "billing.meter", url: "/v1/billing/meters/mtr_1" },
    });
    for (const body of [thin, JSON.stringify({ id: "evt_bare", type: "customer.created" })]) {
      const res = await deliverSigned(body);
      expect(res.status, body).toBe(200);
      expect(await res.json(), body).toMatchObject({ received: true, status: "ignored" });
    }
    expect(await writtenRows()).toEqual(NOTHING_WRITTEN);
  });

  it("acknowledges a schedule event that names no subscription (nothing of ours to converge) and writes nothing", async () => {
    const res = await deliverSigned(
      event("subscription_schedule.canceled", {
        id: "sub_sched_none",
        object: "subscription_schedule",
        subscription: null,
        released_subscription: null,
      }),
    );
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      received: true,
      status: "ignored",
      reason: "schedule without subscription",
    });
    expect(await writtenRows()).toEqual(NOTHING_WRITTEN);
  });

  it("acknowledges an event whose object no longer exists in Stripe (a resend cannot bring it back) and writes nothing", async () => {
    for (const body of [
      event("invoice.finalized", { id: "in_gone_1" }),
      event("customer.subscription.updated", { id: "sub_gone_1" }),
      event("subscription_schedule.updated", { id: "sub_sched_gone", subscription: "sub_gone_2" }),
    ]) {
      const res = await deliverSigned(body);
      expect(res.status, body).toBe(200);
      expect(await res.json(), body).toEqual({
        received: true,
        status: "ignored",
        reason: "object no longer exists in Stripe",
      });
    }
    expect(await writtenRows()).toEqual(NOTHING_WRITTEN);
  });

  it("ignores a subscription id that would reach another object's path in Stripe", async () => {
    const sub = await scenario.subscribe(`user_path_${Date.now().toString(36)}`, "payg");
    const res = await deliverSigned(
      event("customer.subscription.updated", { id: `../customers/${sub.customerId}` }),
    );
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ received: true, status: "ignored" });
    expect(await writtenRows()).toEqual(NOTHING_WRITTEN);
  });
});

describe("a re-fetched object that does not match what we read", () => {
  it("fails the event (500, so Stripe resends it) naming the object, writes nothing, and applies it once Stripe answers normally", async () => {
    const user = `user_refetch_${Date.now().toString(36)}`;
    const sub = await scenario.subscribe(user, "payg");
    const created = sub.events.find((e) => e.type === "customer.subscription.created");
    if (!created) throw new Error("no customer.subscription.created");
    const payload: unknown = JSON.parse(created.payload);

    // The real emulator behind a client that drops `items` from every subscription it returns.
    const mangling: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (!new URL(new Request(input).url).pathname.startsWith("/v1/subscriptions/")) return res;
      const { items: _dropped, ...rest } = (await res.json()) as Record<string, unknown>;
      return new Response(JSON.stringify(rest), { status: res.status, headers: res.headers });
    };
    const stripeOf = (f?: typeof fetch) => {
      const base = new URL(env.STRIPE_API_BASE);
      return new Stripe(env.STRIPE_SECRET_KEY, {
        httpClient: Stripe.createFetchHttpClient(f),
        host: base.hostname,
        port: Number(base.port),
        protocol: "http",
      });
    };
    const deps = (stripe: Stripe) => ({
      shards: shardsOf(env),
      stripe,
      log: {
        info() {},
        warn() {},
        error() {},
        child() {
          return this;
        },
      },
      now: Date.now,
    });
    const head = { id: created.id, type: created.type };

    const failure = await processEvent(deps(stripeOf(mangling)), head, payload).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(UnreadableStripeObject);
    expect(String((failure as Error).message)).toContain(sub.subscription.id);
    expect(String((failure as Error).message)).toContain("items");
    expect(await writtenRows()).toEqual(NOTHING_WRITTEN);

    expect(await processEvent(deps(createStripe(env)), head, payload)).toEqual({ status: "processed" });
    expect((await writtenRows()).processed).toBe(1);
  });
});
