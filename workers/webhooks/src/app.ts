/**
 * POST /api/webhooks/stripe: the signature is verified on the raw body before anything else;
 * a bad or missing signature, or a timestamp outside Stripe's 300 s tolerance, is a 400
 * `invalid_signature` and changes nothing. Handled, duplicate and ignored events answer 200;
 * a transient failure (Stripe or D1 unreachable) answers 500 so that Stripe resends the event.
 */
import {
  ApiError,
  createLogger,
  errorFields,
  errorResponse,
  internalErrorResponse,
  notFound,
} from "@aigate/shared";
import { createStripe } from "@aigate/shared/stripe";
import { Hono } from "hono";
import Stripe from "stripe";
import type { WebhooksEnv } from "./env";
import { isMissingObject, processEvent } from "./process";
import { StripeEventEnvelope } from "./stripeObjects";

const baseLog = createLogger("webhooks");
const cryptoProvider = Stripe.createSubtleCryptoProvider();

export const app = new Hono<{ Bindings: WebhooksEnv }>();

app.post("/api/webhooks/stripe", async (c) => {
  const log = baseLog.child({ request_id: c.req.header("cf-ray") ?? crypto.randomUUID() });
  const signature = c.req.header("stripe-signature");
  const body = await c.req.text();
  if (!signature) throw invalidSignature("missing Stripe-Signature header");
  let verified: unknown;
  try {
    verified = await Stripe.webhooks.constructEventAsync(
      body,
      signature,
      c.env.STRIPE_WEBHOOK_SECRET,
      undefined,
      cryptoProvider,
    );
  } catch (err) {
    log.warn("webhook signature rejected", errorFields(err));
    throw invalidSignature("signature verification failed");
  }
  const parsed = StripeEventEnvelope.safeParse(verified);
  if (!parsed.success) throw new ApiError(400, "invalid_event", "not a Stripe event");
  const event = parsed.data;
  const eventLog = log.child({ event_id: event.id, event_type: event.type });
  const stripe = createStripe(c.env);
  try {
    const outcome = await processEvent({ db: c.env.DB, stripe, log: eventLog, now: Date.now }, event);
    if (outcome.status !== "processed") eventLog.info("stripe event not applied", outcome);
    return c.json({ received: true, ...outcome });
  } catch (err) {
    if (!isMissingObject(err)) throw err;
    eventLog.warn("stripe object of the event no longer exists", errorFields(err));
    return c.json({ received: true, status: "ignored", reason: "object no longer exists in Stripe" });
  }
});

app.notFound(() => errorResponse(notFound()));

app.onError((err) => {
  if (err instanceof ApiError) return errorResponse(err);
  baseLog.error("webhook failed", errorFields(err));
  return internalErrorResponse();
});

function invalidSignature(message: string): ApiError {
  return new ApiError(400, "invalid_signature", message);
}
