/** Completing a Checkout Session: customer, subscription, first invoice, and their events. */
import type { Ctx } from "./context";
import { ApiError, invalidRequest, notFound } from "./errors";
import { Emission, finalizeAndPay } from "./invoicing";
import type { CompleteCheckoutResult } from "./protocol";
import { createCustomer } from "./routes/customers";
import { randomString } from "./state";
import { firstInvoice, startSubscription } from "./subscriptions";
import { checkoutSessionView, customerView, invoiceView, subscriptionView } from "./views";
import { NO_REQUEST } from "./webhooks";

export function completeCheckout(ctx: Ctx, sessionId: string): CompleteCheckoutResult {
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
  const em = new Emission(ctx, NO_REQUEST);
  let customer = session.customer ? state.customers.get(session.customer) : undefined;
  if (!customer) {
    const email = session.customerEmail ?? `customer+${randomString(8).toLowerCase()}@example.com`;
    customer = createCustomer(ctx, { email });
    em.emit("customer.created", customerView(customer));
  }
  const lines = session.lines.map((l) => {
    const price = state.prices.get(l.price);
    if (!price) throw new Error(`emulator invariant: unknown price ${l.price}`);
    return { price, quantity: l.quantity };
  });
  const sub = startSubscription(ctx, customer.id, lines, session.subscriptionMetadata, session.billingMode);
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
