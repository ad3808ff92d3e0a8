import { describe, expect, it } from "vitest";
import { createCatalog, useEmulator } from "./testkit";

const h = useEmulator();

describe("products and prices", () => {
  it("creates the plan catalog with metered, licensed and graduated prices", async () => {
    const { meter, payg, proMonthly, proSessions } = await createCatalog(h.stripe);
    expect(payg).toMatchObject({
      object: "price",
      billing_scheme: "per_unit",
      unit_amount: 10,
      type: "recurring",
      lookup_key: "payg_session",
      recurring: { interval: "month", interval_count: 1, usage_type: "metered", meter: meter.id },
    });
    expect(String(payg.unit_amount_decimal)).toBe("10");
    expect(proMonthly.recurring).toMatchObject({ usage_type: "licensed", meter: null });
    expect(proSessions).toMatchObject({
      billing_scheme: "tiered",
      tiers_mode: "graduated",
      unit_amount: null,
    });
    // tiers are includable: only returned when expanded
    expect(proSessions.tiers).toBeUndefined();
    const expanded = await h.stripe.prices.retrieve(proSessions.id, { expand: ["tiers", "product"] });
    expect(expanded.tiers?.map((t) => [t.up_to, t.unit_amount, t.flat_amount])).toEqual([
      [400, 0, null],
      [null, 7, null],
    ]);
    expect(expanded.product).toMatchObject({
      object: "product",
      name: "AI Gate Pro",
      metadata: { plan: "pro" },
    });
    const product = await h.stripe.products.retrieve(String(payg.product));
    expect(product.name).toBe("AI Gate Pay-as-you-go");
  });

  it("lists by lookup_keys with data.product and data.tiers expanded", async () => {
    await createCatalog(h.stripe);
    const list = await h.stripe.prices.list({
      lookup_keys: ["pro_monthly", "pro_session"],
      expand: ["data.product", "data.tiers"],
    });
    expect(list.data.map((p) => p.lookup_key).sort()).toEqual(["pro_monthly", "pro_session"]);
    for (const price of list.data) {
      expect(price.product).toMatchObject({ object: "product", name: "AI Gate Pro" });
    }
    expect(list.data.find((p) => p.lookup_key === "pro_session")?.tiers).toHaveLength(2);
    const metered = await h.stripe.prices.list({ recurring: { usage_type: "metered" } });
    expect(metered.data).toHaveLength(2);
  });

  it("keeps lookup keys unique unless transfer_lookup_key moves them", async () => {
    const { proMonthly } = await createCatalog(h.stripe);
    const create = (transfer: boolean) =>
      h.stripe.prices.create({
        currency: "usd",
        unit_amount: 3900,
        recurring: { interval: "month" },
        product: String(proMonthly.product),
        lookup_key: "pro_monthly",
        transfer_lookup_key: transfer,
      });
    await expect(create(false)).rejects.toMatchObject({
      statusCode: 400,
      type: "StripeInvalidRequestError",
      param: "lookup_key",
      message: `A price (\`${proMonthly.id}\`) already uses that lookup key.`,
    });
    const moved = await create(true);
    expect(moved.lookup_key).toBe("pro_monthly");
    expect((await h.stripe.prices.retrieve(proMonthly.id)).lookup_key).toBeNull();
    const found = await h.stripe.prices.list({ lookup_keys: ["pro_monthly"] });
    expect(found.data.map((p) => p.id)).toEqual([moved.id]);

    // update: set, clash, transfer back, unset
    await expect(h.stripe.prices.update(proMonthly.id, { lookup_key: "pro_monthly" })).rejects.toMatchObject({
      param: "lookup_key",
    });
    await h.stripe.prices.update(proMonthly.id, { lookup_key: "pro_monthly", transfer_lookup_key: true });
    expect((await h.stripe.prices.retrieve(moved.id)).lookup_key).toBeNull();
    const archived = await h.stripe.prices.update(proMonthly.id, { lookup_key: "", active: false });
    expect(archived).toMatchObject({ lookup_key: null, active: false });
    expect((await h.stripe.prices.list({ active: true })).data.map((p) => p.id)).not.toContain(proMonthly.id);
  });

  it("validates prices like Stripe", async () => {
    const { meter } = await createCatalog(h.stripe);
    const product = await h.stripe.products.create({ name: "X" });
    await expect(
      h.stripe.prices.create({
        currency: "usd",
        unit_amount: 1,
        recurring: { interval: "month", usage_type: "metered" },
        product: product.id,
      }),
    ).rejects.toMatchObject({ param: "recurring[meter]" });
    await expect(
      h.stripe.prices.create({
        currency: "usd",
        billing_scheme: "tiered",
        tiers_mode: "graduated",
        tiers: [{ up_to: 10, unit_amount: 1 }],
        recurring: { interval: "month", usage_type: "metered", meter: meter.id },
        product: product.id,
      }),
    ).rejects.toMatchObject({ param: "tiers[0][up_to]" });
    await expect(
      h.stripe.prices.create({ currency: "usd", unit_amount: 1, product: "prod_nope" }),
    ).rejects.toMatchObject({
      code: "resource_missing",
      param: "product",
    });
    await expect(h.stripe.prices.create({ currency: "usd", product: product.id })).rejects.toMatchObject({
      code: "parameter_missing",
      param: "unit_amount",
    });
  });

  it("creates products with custom ids and updates them", async () => {
    const p = await h.stripe.products.create({ id: "aigate_pro", name: "Pro", metadata: { plan: "pro" } });
    expect(p.id).toBe("aigate_pro");
    await expect(h.stripe.products.create({ id: "aigate_pro", name: "Again" })).rejects.toMatchObject({
      code: "resource_already_exists",
    });
    const updated = await h.stripe.products.update(p.id, { name: "Pro 2", metadata: { tier: "2" } });
    expect(updated).toMatchObject({ name: "Pro 2", metadata: { plan: "pro", tier: "2" } });
    expect((await h.stripe.products.list({ active: true })).data).toHaveLength(1);
  });
});
