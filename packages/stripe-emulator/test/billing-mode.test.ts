import type Stripe from "stripe";
import { beforeEach, describe, expect, it } from "vitest";
import { type Catalog, createCatalog, useEmulator } from "./testkit";

const h = useEmulator();

let catalog: Catalog | undefined;

/** A Pro checkout session; the catalog is created once per test (the emulator resets between tests). */
async function checkout(subscriptionData: Stripe.Checkout.SessionCreateParams.SubscriptionData) {
  catalog ??= await createCatalog(h.stripe);
  return h.stripe.checkout.sessions.create({
    mode: "subscription",
    customer_email: "mode@example.com",
    line_items: [{ price: catalog.proMonthly.id, quantity: 1 }, { price: catalog.proSessions.id }],
    success_url: "http://app.test/ok",
    subscription_data: subscriptionData,
  });
}

beforeEach(() => {
  catalog = undefined;
});

describe("billing_mode", () => {
  // https://docs.stripe.com/changelog/clover/2025-09-30/billing-mode-default-flexible
  // "Subscriptions you create through the API now default to flexible billing mode. To use
  // `classic`, set the `billing_mode.type` parameter to `classic`."
  it("defaults to flexible billing mode on subscriptions created through Checkout", async () => {
    const session = await checkout({ metadata: { user_id: "u_1" } });
    const { subscription } = await h.control.completeCheckout(session.id);
    expect(subscription.billing_mode).toMatchObject({ type: "flexible", flexible: {} });
    const retrieved = await h.stripe.subscriptions.retrieve(subscription.id);
    expect(retrieved.billing_mode.type).toBe("flexible");
    expect(retrieved.billing_mode.updated_at).toBe(retrieved.created);
    const created = await h.control.events("customer.subscription.created");
    expect(created[0]?.data.object).toMatchObject({ billing_mode: { type: "flexible" } });
  });

  // https://docs.stripe.com/changelog/basil/2025-06-30/billing-mode-hash
  // "The `billing_mode` parameter and field changed from accepting a string value (`classic` or
  // `flexible`) to requiring an object with a `type` field (for example, `{type: 'flexible'}`)."
  it("stores `subscription_data[billing_mode][type]=classic` and shows it as an object", async () => {
    const session = await checkout({ billing_mode: { type: "classic" } });
    const { subscription } = await h.control.completeCheckout(session.id);
    expect(subscription.billing_mode).toEqual({
      type: "classic",
      flexible: null,
      updated_at: subscription.created,
    });
  });

  it("keeps `billing_mode[flexible][proration_discounts]` when given", async () => {
    const session = await checkout({
      billing_mode: { type: "flexible", flexible: { proration_discounts: "itemized" } },
    });
    const { subscription } = await h.control.completeCheckout(session.id);
    expect(subscription.billing_mode).toMatchObject({
      type: "flexible",
      flexible: { proration_discounts: "itemized" },
    });
  });

  it("rejects an unknown billing mode and `flexible` settings on classic", async () => {
    await expect(
      checkout({
        billing_mode: {
          type: "hybrid" as Stripe.Checkout.SessionCreateParams.SubscriptionData.BillingMode.Type,
        },
      }),
    ).rejects.toMatchObject({ statusCode: 400, param: "subscription_data[billing_mode][type]" });
    await expect(
      checkout({ billing_mode: { type: "classic", flexible: { proration_discounts: "itemized" } } }),
    ).rejects.toMatchObject({ statusCode: 400, param: "subscription_data[billing_mode][flexible]" });
  });
});
