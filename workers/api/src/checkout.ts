/**
 * Stripe Checkout and the Customer Portal for a user. The Stripe customer is created lazily,
 * carrying metadata.user_id, with an idempotency key derived from the user id so that two
 * concurrent requests (a double click) make one customer.
 */
import { ApiError, type PaidPlanId, PLANS, type Shards } from "@aigate/shared";
import { findPortalConfiguration } from "@aigate/shared/stripeCatalog";
import type Stripe from "stripe";
import { recordStripeCustomer, stripeCustomerOf } from "./queries";

export function customerIdempotencyKey(userId: string): string {
  return `customer-create:${userId}`;
}

/**
 * The user's Stripe customer, created (once) when they have none: recorded on the user's shard,
 * and in the customer directory (home).
 */
export async function ensureStripeCustomer(shards: Shards, stripe: Stripe, userId: string, now: number) {
  const known = await stripeCustomerOf(shards.of(userId), userId);
  if (known) return known;
  const customer = await stripe.customers.create(
    { metadata: { user_id: userId } },
    { idempotencyKey: customerIdempotencyKey(userId) },
  );
  const recorded = await recordStripeCustomer(shards, userId, customer.id, customer.email ?? "", now);
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

/**
 * Stripe Tax at Checkout: tax computed from the customer's billing address, which Checkout must
 * collect ("Enabling this parameter causes Checkout to collect any billing address information
 * necessary for tax calculation") and save onto our existing customer (`customer_update[address]`:
 * "Describes whether Checkout saves the billing address onto `customer.address`"; without it Stripe
 * refuses a customer with no address, `customer_tax_location_invalid`); business customers may
 * enter a tax ID, which needs `customer_update[name]=auto` for an existing customer. The
 * subscription Checkout creates keeps automatic tax for all its invoices.
 */
export const TAX_PARAMS = {
  automatic_tax: { enabled: true },
  billing_address_collection: "required",
  tax_id_collection: { enabled: true },
  customer_update: { address: "auto", name: "auto" },
} satisfies Partial<Stripe.Checkout.SessionCreateParams>;

export async function createCheckout(
  stripe: Stripe,
  opts: { userId: string; customerId: string; plan: PaidPlanId; baseUrl: string; tax: boolean },
) {
  const session = await stripe.checkout.sessions.create({
    ...(opts.tax ? TAX_PARAMS : {}),
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
