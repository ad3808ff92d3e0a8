/**
 * POST /api/webhooks/stripe. The signature is verified on the raw body before anything else: a
 * bad or missing signature, or a timestamp outside Stripe's 300 s tolerance, is a 400
 * `invalid_signature` and changes nothing. A validly signed body gets a deliberate answer, never
 * a 5xx: not JSON is 400 `invalid_payload`, JSON without a string `id` and `type` is 400
 * `invalid_event`; an event of a type we do not handle, or whose payload lacks what we read, is
 * 200 "ignored" (Stripe would resend it unchanged for days). Handled and duplicate events answer
 * 200; a transient failure (Stripe or D1 unreachable), or an object Stripe answers that we cannot
 * read, answers 500 so that Stripe resends the event.
 */
import { ApiError, errorFields, shardsOf } from "@aigate/shared";
import { errorHandling, type RequestVariables, requestContext } from "@aigate/shared/http";
import { createStripe } from "@aigate/shared/stripe";
import { StripeEventHead } from "@aigate/shared/stripeSync/objects";
import { Hono } from "hono";
import Stripe from "stripe";
import { readConfig, type WebhooksConfig } from "./config";
import type { WebhooksEnv } from "./env";
import { isMissingObject, processEvent } from "./process";

const cryptoProvider = Stripe.createSubtleCryptoProvider();

type AppEnv = { Bindings: WebhooksEnv; Variables: RequestVariables & { config: WebhooksConfig } };

export function createApp() {
  const app = new Hono<AppEnv>();
  const errors = errorHandling<AppEnv>({ worker: "webhooks", failureMessage: "webhook failed" });

  // the id is echoed so Stripe's delivery log shows it; index.ts logs one line per request with it
  app.use("*", requestContext("webhooks"));
  app.use("*", async (c, next) => {
    c.set("config", readConfig(c.env));
    await next();
  });

  app.post("/api/webhooks/stripe", async (c) => {
    const log = c.get("log");
    const config = c.get("config");
    const signature = c.req.header("stripe-signature");
    // the exact text signed: a leading byte order mark is kept (and then fails as JSON)
    const body = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true }).decode(
      await c.req.arrayBuffer(),
    );
    if (!signature) throw invalidSignature("missing Stripe-Signature header");
    const signatures = Stripe.webhooks.signature;
    if (!signatures) throw new Error("the Stripe SDK has no webhook signature check");
    try {
      await signatures.verifyHeaderAsync(body, signature, config.webhookSecret, undefined, cryptoProvider);
    } catch (err) {
      log.warn("webhook signature rejected", errorFields(err));
      throw invalidSignature("signature verification failed");
    }
    const payload = parseJson(body);
    const head = StripeEventHead.safeParse(payload);
    if (!head.success) {
      throw new ApiError(
        400,
        "invalid_event",
        "not a Stripe event: expected a JSON object with a string id and type",
      );
    }
    const eventLog = log.child({ event_id: head.data.id, event_type: head.data.type });
    const stripe = createStripe(config.stripe);
    try {
      const outcome = await processEvent(
        { shards: shardsOf(c.env), stripe, log: eventLog, now: Date.now },
        head.data,
        payload,
      );
      if (outcome.status === "ignored" && outcome.issues) {
        eventLog.warn("stripe event unusable", { reason: outcome.reason, issues: outcome.issues });
        return c.json({ received: true, status: outcome.status, reason: outcome.reason });
      }
      if (outcome.status !== "processed") eventLog.info("stripe event not applied", outcome);
      return c.json({ received: true, ...outcome });
    } catch (err) {
      if (!isMissingObject(err)) throw err;
      eventLog.warn("stripe object of the event no longer exists", errorFields(err));
      return c.json({ received: true, status: "ignored", reason: "object no longer exists in Stripe" });
    }
  });

  app.notFound(errors.notFound);
  app.onError(errors.onError);

  return app;
}

function invalidSignature(message: string): ApiError {
  return new ApiError(400, "invalid_signature", message);
}

/** The verified body as JSON; a body that is not JSON is the sender's error, not a bad signature. */
function parseJson(body: string): unknown {
  try {
    return JSON.parse(body);
  } catch {
    throw new ApiError(400, "invalid_payload", "the signed body is not JSON");
  }
}
