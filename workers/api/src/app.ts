/**
 * The api worker's HTTP surface: one Hono app, the shared error handler, one route module per
 * area. Billing lives in routes/billing.ts; the dashboard and admin endpoints mount beside it.
 */
import { ApiError, errorFields, shardsOf } from "@aigate/shared";
import { errorHandling, requestContext } from "@aigate/shared/http";
import { Hono } from "hono";
import Stripe from "stripe";
import { readConfig } from "./config";
import type { ApiEnv } from "./context";
import { admin } from "./routes/admin";
import { billing } from "./routes/billing";
import { daily } from "./routes/daily";
import { dashboard } from "./routes/dashboard";
import { limits } from "./routes/limits";

export function createApp() {
  const app = new Hono<ApiEnv>();
  const errors = errorHandling<ApiEnv>({
    worker: "api",
    // Stripe failing or unreachable is the provider's fault: a 502, logged, details not leaked.
    mapError: (err, log) => {
      if (!(err instanceof Stripe.errors.StripeError)) return undefined;
      log.error("stripe request failed", {
        ...errorFields(err),
        stripe_code: err.code,
        status: err.statusCode,
      });
      return new ApiError(502, "payment_provider_error", "the payment provider could not be reached");
    },
  });

  app.use("*", requestContext("api"));
  app.use("*", async (c, next) => {
    c.set("config", readConfig(c.env));
    c.set("shards", shardsOf(c.env));
    await next();
  });

  app.get("/healthz", (c) => c.json({ ok: true }));
  app.route("/api/billing", billing);
  app.route("/api/billing", daily);
  app.route("/api/billing", limits);
  // The pages first: GET /admin is the admin page, public; the admin API's key check covers /admin/*.
  app.route("/", dashboard);
  app.route("/admin", admin);

  app.notFound(errors.notFound);
  app.onError(errors.onError);

  return app;
}
