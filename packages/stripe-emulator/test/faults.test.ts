import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { headerOf, useEmulator } from "./testkit";

const h = useEmulator();

describe("fault injection and the call log", () => {
  it("the SDK retries injected 429/500/503 (Stripe-Should-Retry) with the same idempotency key", async () => {
    const retrying = h.sdk({ maxNetworkRetries: 3 });
    await h.control.addFault({ status: 429, count: 1 });
    await h.control.addFault({ status: 500, count: 1 });
    await h.control.addFault({ status: 503, count: 1 });
    const customer = await retrying.customers.create({ email: "retry@example.com" });
    expect(customer.email).toBe("retry@example.com");

    const calls = await h.control.calls();
    expect(calls.map((c) => [c.method, c.path, c.status])).toEqual([
      ["POST", "/v1/customers", 429],
      ["POST", "/v1/customers", 500],
      ["POST", "/v1/customers", 503],
      ["POST", "/v1/customers", 200],
    ]);
    const keys = new Set(calls.map((c) => c.idempotency_key));
    expect(keys.size).toBe(1);
    expect([...keys][0]).toMatch(/^stripe-node-retry-/);
    expect(calls.every((c) => !c.replayed)).toBe(true);
    expect((await h.stripe.customers.list()).data).toHaveLength(1);
    expect((await h.control.faults()).faults).toEqual([]);
  }, 30_000);

  it("without retries the SDK throws StripeRateLimitError / StripeAPIError", async () => {
    await h.control.addFault({ status: 429, count: 1 });
    const limited = await h.stripe.customers.list().catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
    expect(limited).toMatchObject({ statusCode: 429, code: "rate_limit", rawType: "rate_limit_error" });
    expect(
      headerOf(
        { lastResponse: { headers: (limited as Stripe.errors.StripeError).headers } },
        "stripe-should-retry",
      ),
    ).toBe("true");

    await h.control.addFault({ status: 500, count: 1 });
    const broken = await h.stripe.customers.create({}).catch((e: unknown) => e);
    expect(broken).toBeInstanceOf(Stripe.errors.StripeAPIError);
    expect(broken).toMatchObject({ statusCode: 500, rawType: "api_error" });

    await h.control.addFault({ status: 503, count: 1 });
    await expect(h.stripe.customers.list()).rejects.toMatchObject({
      statusCode: 503,
      type: "StripeAPIError",
    });
    await h.stripe.customers.list(); // faults are used up
  });

  it("matches faults by path prefix and can only slow requests down", async () => {
    await h.control.addFault({ status: 429, count: 2, path_prefix: "/v1/billing/meter_events" });
    await h.stripe.customers.create({}); // not matched
    expect((await h.control.faults()).faults).toEqual([
      { status: 429, remaining: 2, delay_ms: 0, path_prefix: "/v1/billing/meter_events" },
    ]);
    await h.control.clearFaults();
    expect((await h.control.faults()).faults).toEqual([]);

    await h.control.addFault({ delay_ms: 250, count: 1 });
    const started = Date.now();
    await h.stripe.customers.list();
    expect(Date.now() - started).toBeGreaterThanOrEqual(240);
    await expect(h.control.addFault({ status: 418, count: 1 })).rejects.toMatchObject({ status: 400 });
  });

  it("logs /v1 calls with status, idempotency key and replays; the log can be reset", async () => {
    await h.stripe.customers.create({ email: "a@example.com" }, { idempotencyKey: "k-1" });
    await h.stripe.customers.create({ email: "a@example.com" }, { idempotencyKey: "k-1" });
    await h.stripe.customers.list({ limit: 3 });
    await h.stripe.customers.retrieve("cus_nope").catch(() => undefined);
    const calls = await h.control.calls();
    expect(calls.map((c) => [c.method, c.path, c.status, c.idempotency_key, c.replayed])).toEqual([
      ["POST", "/v1/customers", 200, "k-1", false],
      ["POST", "/v1/customers", 200, "k-1", true],
      ["GET", "/v1/customers", 200, null, false],
      ["GET", "/v1/customers/cus_nope", 404, null, false],
    ]);
    expect(calls[2]?.query).toBe("limit=3");
    expect(calls[0]?.request_id).toMatch(/^req_/);
    await h.control.resetCalls();
    expect(await h.control.calls()).toEqual([]);
  });

  it("reset forgets objects, events, faults and the clock", async () => {
    await h.stripe.customers.create({});
    await h.control.addFault({ status: 500, count: 5 });
    await h.control.advanceClock(86_400);
    await h.control.reset();
    expect((await h.control.faults()).faults).toEqual([]);
    expect((await h.control.clock()).offset_seconds).toBe(0);
    expect(await h.control.events()).toEqual([]);
    expect((await h.stripe.customers.list()).data).toEqual([]);
    expect(await h.control.calls()).toHaveLength(1);
  });
});
