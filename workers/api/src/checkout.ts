/**
 * Stripe Checkout and the Customer Portal for a user. The Stripe customer is created lazily,
 * carrying metadata.user_id, with an idempotency key derived from the user id so that two
 * concurrent requests (a double click) make one customer.
 */
import { ApiError, type PaidPlanId, PLANS } from "@aigate/shared";
import { findPortalConfiguration } from "@aigate/shared/stripeCatalog";
import type Stripe from "stripe";
import { recordStripeCustomer, stripeCustomerOf } from "./queries";

export function customerIdempotencyKey(userId: string): string {
  return `customer-create:${userId}`;
}

/** The user's Stripe customer, created (once) when they have none. */
export async function ensureStripeCustomer(db: D1Database, stripe: Stripe, userId: string, now: number) {
  const known = await stripeCustomerOf(db, userId);
  if (known) return known;
  const customer = await stripe.customers.create(
    { metadata: { user_id: userId } },
    { idempotencyKey: customerIdempotencyKey(userId) },
  );
  const recorded = await recordStripeCustomer(db, userId, customer.id, customer.email ?? "", now);
  return recorded ?? customer.id;
}

/** Checkout line items for a plan: its prices found by lookup key (metered prices take no quantity). */
export async function planLineItems(stripe: Stripe, plan: PaidPlanId) {
  const keys = PLANS[plan].stripeLookupKeys;
  const { data } = await stripe.prices.list({ lookup_keys: keys, active: true, limit: keys.length });
  return keys.map((key) => {
    const price = data.find((p) => p.lookup_key === key);
    if (!price)
      throw new ApiError(503, "billing_unavailable", `the ${plan} plan is not set up in Stripe yet`);
    return price.recurring?.usage_type === "metered" ? { price: price.id } : { price: price.id, quantity: 1 };
  });
}

export async function createCheckout(
  stripe: Stripe,
  opts: { userId: string; customerId: string; plan: PaidPlanId; baseUrl: string },
) {
  const session = await stripe.checkout.sessions.create({
    mode: "subscription",
    customer: opts.customerId,
    client_reference_id: opts.userId,
    line_items: await planLineItems(stripe, opts.plan),
    metadata: { user_id: opts.userId, plan: opts.plan },
    // flexible billing mode, explicitly: a plan change then bills the usage reported at the old price
    subscription_data: {
      metadata: { user_id: opts.userId, plan: opts.plan },
      billing_mode: { type: "flexible" },
    },
    success_url: `${opts.baseUrl}/?checkout=success&session_id={CHECKOUT_SESSION_ID}`,
    cancel_url: `${opts.baseUrl}/?checkout=canceled`,
  });
  if (!session.url) throw new Error(`checkout session ${session.id} has no url`);
  return { id: session.id, url: session.url };
}

/** Our portal configuration's id (found by its metadata; cached for the isolate). */
let portalConfiguration: string | null = null;

export async function createPortal(stripe: Stripe, customerId: string, baseUrl: string) {
  portalConfiguration ??= await findPortalConfiguration(stripe);
  if (!portalConfiguration)
    throw new ApiError(503, "billing_unavailable", "the customer portal is not set up in Stripe yet");
  const session = await stripe.billingPortal.sessions.create({
    customer: customerId,
    return_url: `${baseUrl}/`,
    configuration: portalConfiguration,
  });
  return { url: session.url };
}
