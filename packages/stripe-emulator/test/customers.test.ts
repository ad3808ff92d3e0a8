import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { useEmulator } from "./testkit";

const h = useEmulator();

describe("customers", () => {
  it("creates, retrieves and updates with Stripe's metadata merge rules", async () => {
    const created = await h.stripe.customers.create({
      email: "ada@example.com",
      name: "Ada",
      metadata: { user_id: "u_1", plan: "free" },
    });
    expect(created.id).toMatch(/^cus_\w{14}$/);
    expect(created).toMatchObject({ object: "customer", livemode: false, email: "ada@example.com" });
    expect(created.created).toBeCloseTo(Date.now() / 1000, -1);
    expect(created.lastResponse.requestId).toMatch(/^req_/);

    const updated = await h.stripe.customers.update(created.id, { metadata: { plan: "pro", user_id: "" } });
    expect(updated.metadata).toEqual({ plan: "pro" });
    const fetched = await h.stripe.customers.retrieve(created.id);
    expect(fetched).toMatchObject({ id: created.id, metadata: { plan: "pro" }, name: "Ada" });

    const cleared = await h.stripe.customers.update(created.id, { metadata: "" });
    expect(cleared.metadata).toEqual({});
  });

  it("keeps the address set on create and update (Stripe Tax locates the customer by its country)", async () => {
    // "address: The customer's address." (docs.stripe.com/api/customers/update)
    const created = await h.stripe.customers.create({
      email: "b@example.com",
      address: { country: "fr", city: "Lyon" },
    });
    expect(created.address).toMatchObject({ country: "FR", city: "Lyon", line1: null });
    const moved = await h.stripe.customers.update(created.id, {
      address: { country: "DE", postal_code: "10115" },
    });
    expect(moved.address).toEqual({
      city: null,
      country: "DE",
      line1: null,
      line2: null,
      postal_code: "10115",
      state: null,
    });
    expect((await h.stripe.customers.update(created.id, { name: "B" })).address).toMatchObject({
      country: "DE",
    });
  });

  it("lists with the email filter and auto-paginates newest first", async () => {
    for (let i = 0; i < 25; i++) await h.stripe.customers.create({ email: `c${i}@example.com` });
    await h.stripe.customers.create({ email: "c3@example.com" });
    const byEmail = await h.stripe.customers.list({ email: "c3@example.com" });
    expect(byEmail.data).toHaveLength(2);

    const firstPage = await h.stripe.customers.list({ limit: 10 });
    expect(firstPage).toMatchObject({ object: "list", has_more: true, url: "/v1/customers" });
    const all: string[] = [];
    for await (const c of h.stripe.customers.list({ limit: 7 })) all.push(c.email ?? "");
    expect(all).toHaveLength(26);
    expect(new Set(all).size).toBe(25);
    expect(all[0]).toBe("c3@example.com");
    expect(all[25]).toBe("c0@example.com");

    const second = await h.stripe.customers.list({ limit: 10, starting_after: firstPage.data[9]?.id });
    expect(second.data[0]?.email).toBe("c15@example.com");
    const back = await h.stripe.customers.list({ limit: 3, ending_before: second.data[0]?.id });
    expect(back.data.map((c) => c.email)).toEqual(firstPage.data.slice(7, 10).map((c) => c.email));
    expect(back.has_more).toBe(true);
    await expect(h.stripe.customers.list({ starting_after: "cus_nope" })).rejects.toMatchObject({
      param: "starting_after",
    });
  });

  it("searches by metadata, with AND", async () => {
    const a = await h.stripe.customers.create({ metadata: { user_id: "u_a", team: "x" } });
    await h.stripe.customers.create({ metadata: { user_id: "u_b", team: "x" } });
    const one = await h.stripe.customers.search({ query: "metadata['user_id']:'u_a'" });
    expect(one.data.map((c) => c.id)).toEqual([a.id]);
    expect(one).toMatchObject({ object: "search_result", has_more: false });
    const both = await h.stripe.customers.search({
      query: `metadata["team"]:"x" AND metadata['user_id']:'u_a'`,
    });
    expect(both.data.map((c) => c.id)).toEqual([a.id]);
    const team = await h.stripe.customers.search({ query: "metadata['team']:'x'", limit: 1 });
    expect(team.has_more).toBe(true);
    const ids: string[] = [];
    for await (const c of h.stripe.customers.search({ query: "metadata['team']:'x'", limit: 1 }))
      ids.push(c.id);
    expect(ids).toHaveLength(2);
    await expect(h.stripe.customers.search({ query: "metadata['a']:'b' OR email:'x'" })).rejects.toThrow(
      /cannot parse/,
    );
  });

  it("answers unknown ids with a Stripe-shaped 404", async () => {
    const err = await h.stripe.customers.retrieve("cus_missing").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err).toMatchObject({
      statusCode: 404,
      type: "StripeInvalidRequestError",
      code: "resource_missing",
      param: "id",
      message: "No such customer: 'cus_missing'",
    });
  });

  it("requires a test secret key", async () => {
    const res = await fetch(`${h.emu.url}/v1/customers`);
    expect(res.status).toBe(401);
    expect(res.headers.get("request-id")).toMatch(/^req_/);
    const body = (await res.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe("invalid_request_error");
    const live = h.sdk({ apiKey: "sk_live_nope" });
    await expect(live.customers.list()).rejects.toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
  });

  it("rejects malformed parameters with the parameter's name", async () => {
    const res = await fetch(`${h.emu.url}/v1/prices`, {
      method: "POST",
      headers: { Authorization: "Bearer sk_test_x", "Content-Type": "application/x-www-form-urlencoded" },
      body: "currency=usd&product_data[name]=X&unit_amount=ten",
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      error: { type: "invalid_request_error", code: "parameter_invalid_integer", param: "unit_amount" },
    });
    await expect(h.stripe.products.create({ name: "" })).rejects.toMatchObject({
      code: "parameter_missing",
      param: "name",
    });
    const unknown = await fetch(`${h.emu.url}/v1/charges`, {
      headers: { Authorization: "Bearer sk_test_x" },
    });
    expect(unknown.status).toBe(404);
  });
});
