/** Completing a Checkout Session: customer, subscription, first invoice, and their events. */
import type { Ctx } from "./context";
import { diff } from "./diff";
import { ApiError, invalidRequest, notFound } from "./errors";
import { Emission, finalizeAndPay } from "./invoicing";
import type { CompleteCheckoutResult } from "./protocol";
import { createCustomer } from "./routes/customers";
import { type AddressRec, type CheckoutSessionRec, randomString, type TaxIdRec } from "./state";
import { firstInvoice, startSubscription } from "./subscriptions";
import { checkoutSessionView, customerView, invoiceView, subscriptionView } from "./views";
import { NO_REQUEST } from "./webhooks";

/** What the customer enters on the payment page (the hosted page's form, or the control's JSON body). */
export interface CheckoutDetails {
  address?: AddressRec;
  name?: string;
  businessName?: string;
  taxId?: TaxIdRec;
}

/**
 * Whether the page asks for a billing address: `billing_address_collection=required`, or automatic
 * tax ("Enabling this parameter causes Checkout to collect any billing address information
 * necessary for tax calculation").
 */
export function collectsAddress(s: CheckoutSessionRec): boolean {
  return s.automaticTax || s.billingAddressCollection === "required";
}

/**
 * The address used when a session that collects one is completed without it: a US address (on
 * Stripe, Checkout does not complete without one; the emulator's default keeps tests that do not
 * care about tax short). The US has no default rate, so its invoices carry no tax.
 */
const DEFAULT_ADDRESS: AddressRec = {
  city: null,
  country: "US",
  line1: null,
  line2: null,
  postal_code: null,
  state: null,
};

const TEXT_FIELDS = ["city", "line1", "line2", "postal_code", "state"] as const;

function optText(value: unknown, param: string): string | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string") throw invalidRequest(`${param} must be a string.`, undefined, param);
  return value.trim() || undefined;
}

/** Parses `{address: {country, line1, ...}, name, business_name, tax_id: {type, value}}`. */
export function parseCheckoutDetails(body: Record<string, unknown>): CheckoutDetails {
  const details: CheckoutDetails = {};
  const raw = body.address;
  if (raw !== undefined && raw !== null) {
    if (typeof raw !== "object" || Array.isArray(raw)) {
      throw invalidRequest("address must be an object.", undefined, "address");
    }
    const fields = new Map(Object.entries(raw));
    const country = optText(fields.get("country"), "address[country]")?.toUpperCase();
    if (!country || !/^[A-Z]{2}$/.test(country)) {
      throw invalidRequest(
        "address[country] must be a two-letter country code (ISO 3166-1 alpha-2).",
        undefined,
        "address[country]",
      );
    }
    const address: AddressRec = { ...DEFAULT_ADDRESS, country };
    for (const key of TEXT_FIELDS) address[key] = optText(fields.get(key), `address[${key}]`) ?? null;
    details.address = address;
  }
  const name = optText(body.name, "name");
  if (name) details.name = name;
  const businessName = optText(body.business_name, "business_name");
  if (businessName) details.businessName = businessName;
  const taxId = body.tax_id;
  if (taxId !== undefined && taxId !== null) {
    if (typeof taxId !== "object" || Array.isArray(taxId)) {
      throw invalidRequest("tax_id must be an object {type, value}.", undefined, "tax_id");
    }
    const fields = new Map(Object.entries(taxId));
    const type = optText(fields.get("type"), "tax_id[type]");
    const value = optText(fields.get("value"), "tax_id[value]");
    if (!type || !value) throw invalidRequest("tax_id needs a type and a value.", undefined, "tax_id");
    details.taxId = { type, value };
  }
  return details;
}

export function completeCheckout(
  ctx: Ctx,
  sessionId: string,
  entered: CheckoutDetails = {},
): CompleteCheckoutResult {
  const { state } = ctx;
  const session = state.checkoutSessions.get(sessionId);
  if (!session) throw notFound("checkout session", sessionId);
  if (session.status === "complete") {
    throw new ApiError(
      409,
      "invalid_request_error",
      `Checkout Session ${sessionId} is already complete.`,
      "checkout_session_already_completed",
    );
  }
  if (state.now() >= session.expiresAt) {
    throw invalidRequest(`Checkout Session ${sessionId} has expired.`, "checkout_session_expired");
  }
  if (entered.taxId && !session.taxIdCollection.enabled) {
    throw invalidRequest("This Checkout Session does not collect tax IDs.", undefined, "tax_id");
  }
  const address = entered.address ?? (collectsAddress(session) ? { ...DEFAULT_ADDRESS } : null);
  const taxIds = entered.taxId ? [entered.taxId] : [];
  const em = new Emission(ctx, NO_REQUEST);
  let customer = session.customer ? state.customers.get(session.customer) : undefined;
  if (!customer) {
    const email = session.customerEmail ?? `customer+${randomString(8).toLowerCase()}@example.com`;
    customer = createCustomer(ctx, { email, name: entered.businessName ?? entered.name ?? null });
    // A customer Checkout creates gets the billing details entered on the page.
    customer.address = address;
    customer.taxIds = taxIds;
    em.emit("customer.created", customerView(customer));
  } else {
    // An existing customer is changed only as `customer_update` allows.
    const existing = customer;
    const before = customerView(existing);
    if (address && session.customerUpdate.address === "auto") existing.address = address;
    const name = entered.businessName ?? entered.name;
    if (name && session.customerUpdate.name === "auto") existing.name = name;
    existing.taxIds.push(...taxIds);
    const after = customerView(existing);
    const changed = diff(before, after);
    if (Object.keys(changed).length > 0) em.emit("customer.updated", after, changed);
  }
  session.details = {
    address,
    name: entered.name ?? null,
    businessName: entered.businessName ?? null,
    taxIds,
  };
  const lines = session.lines.map((l) => {
    const price = state.prices.get(l.price);
    if (!price) throw new Error(`emulator invariant: unknown price ${l.price}`);
    return { price, quantity: l.quantity };
  });
  const sub = startSubscription(
    ctx,
    customer.id,
    lines,
    session.subscriptionMetadata,
    session.billingMode,
    session.automaticTax,
  );
  const invoice = firstInvoice(ctx, sub);
  session.status = "complete";
  session.customer = customer.id;
  session.subscription = sub.id;
  session.invoice = invoice.id;
  em.emit("checkout.session.completed", checkoutSessionView(state, session, ctx.baseUrl()));
  em.emit("customer.subscription.created", subscriptionView(state, sub));
  finalizeAndPay(ctx, invoice, em);
  return {
    checkout_session: checkoutSessionView(state, session, ctx.baseUrl()),
    subscription: subscriptionView(state, sub),
    invoice: invoiceView(state, invoice),
    events: em.ids,
  };
}
