import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { headerOf, useEmulator } from "./testkit";

const h = useEmulator();

async function post(path: string, body: string, key: string): Promise<Response> {
  return fetch(`${h.emu.url}${path}`, {
    method: "POST",
    headers: {
      Authorization: "Bearer sk_test_x",
      "Content-Type": "application/x-www-form-urlencoded",
      "Idempotency-Key": key,
    },
    body,
  });
}

describe("idempotency keys", () => {
  it("replays the stored response for the same key and parameters", async () => {
    const first = await h.stripe.customers.create({ email: "a@example.com" }, { idempotencyKey: "k1" });
    const again = await h.stripe.customers.create({ email: "a@example.com" }, { idempotencyKey: "k1" });
    expect(again.id).toBe(first.id);
    expect(headerOf(again, "idempotent-replayed")).toBe("true");
    expect(headerOf(first, "idempotent-replayed")).toBeNull();
    expect((await h.stripe.customers.list()).data).toHaveLength(1);

    // parameter order does not matter
    const a = await post("/v1/customers", "email=b%40example.com&name=B", "k2");
    const b = await post("/v1/customers", "name=B&email=b%40example.com", "k2");
    expect(b.headers.get("idempotent-replayed")).toBe("true");
    expect(((await b.json()) as { id: string }).id).toBe(((await a.json()) as { id: string }).id);
  });

  it("rejects the same key with other parameters", async () => {
    await h.stripe.customers.create({ email: "a@example.com" }, { idempotencyKey: "k1" });
    const err = await h.stripe.customers
      .create({ email: "other@example.com" }, { idempotencyKey: "k1" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect(err).toMatchObject({ statusCode: 400, rawType: "idempotency_error" });
    expect((err as Error).message).toMatch(
      /^Keys for idempotent requests can only be used with the same parameters/,
    );
    // another endpoint with the same key is a mismatch too
    await expect(h.stripe.products.create({ name: "P" }, { idempotencyKey: "k1" })).rejects.toBeInstanceOf(
      Stripe.errors.StripeIdempotencyError,
    );
  });

  it("forgets keys after 24 hours of emulator time", async () => {
    const first = await h.stripe.customers.create({ email: "a@example.com" }, { idempotencyKey: "k1" });
    await h.control.advanceClock(23 * 3600);
    expect((await h.stripe.customers.create({ email: "a@example.com" }, { idempotencyKey: "k1" })).id).toBe(
      first.id,
    );
    await h.control.advanceClock(3600);
    const later = await h.stripe.customers.create({ email: "a@example.com" }, { idempotencyKey: "k1" });
    expect(later.id).not.toBe(first.id);
  });

  it("does not store errors: validation failures and injected faults can be retried with the key", async () => {
    await expect(h.stripe.products.create({ name: "" }, { idempotencyKey: "k1" })).rejects.toThrow();
    await expect(h.stripe.products.create({ name: "" }, { idempotencyKey: "k1" })).rejects.toMatchObject({
      code: "parameter_missing",
    });
    await h.control.addFault({ status: 500, count: 1 });
    await expect(h.stripe.products.create({ name: "P" }, { idempotencyKey: "k2" })).rejects.toBeInstanceOf(
      Stripe.errors.StripeAPIError,
    );
    const ok = await h.stripe.products.create({ name: "P" }, { idempotencyKey: "k2" });
    expect(headerOf(ok, "idempotent-replayed")).toBeNull();
    expect((await h.stripe.products.list()).data).toHaveLength(1);
  });

  it("a delayed request whose twin ran first is answered as a replay", async () => {
    await h.control.addFault({ delay_ms: 300, count: 1 });
    const slow = post("/v1/customers", "email=a%40example.com", "k1");
    await new Promise((resolve) => setTimeout(resolve, 50));
    // the delayed request has not reached the idempotency layer yet, so this one runs first...
    const fast = await post("/v1/customers", "email=a%40example.com", "k1");
    expect(fast.status).toBe(200);
    // ...and the delayed one is then a replay
    const slowRes = await slow;
    expect(slowRes.headers.get("idempotent-replayed")).toBe("true");
  });
});
