/**
 * The api worker's HTTP surface: one Hono app, one error envelope, one route module per area.
 * Billing lives in routes/billing.ts; the dashboard and operator endpoints mount beside it.
 */
import {
  ApiError,
  createLogger,
  errorFields,
  errorResponse,
  internalErrorResponse,
  notFound,
} from "@aigate/shared";
import { Hono } from "hono";
import Stripe from "stripe";
import type { ApiEnv } from "./context";
import { billing } from "./routes/billing";

const baseLog = createLogger("api");

export const app = new Hono<ApiEnv>();

app.use("*", async (c, next) => {
  c.set("log", baseLog.child({ request_id: c.req.header("cf-ray") ?? crypto.randomUUID() }));
  await next();
});

app.get("/healthz", (c) => c.json({ ok: true }));
app.route("/api/billing", billing);
// TODO(dashboard): app.route("/", dashboard); TODO(operators): app.route("/admin", admin);

app.notFound(() => errorResponse(notFound()));

app.onError((err, c) => {
  if (err instanceof ApiError) return errorResponse(err);
  const log = c.get("log") ?? baseLog;
  if (err instanceof Stripe.errors.StripeError) {
    log.error("stripe request failed", {
      ...errorFields(err),
      stripe_code: err.code,
      status: err.statusCode,
    });
    return errorResponse(
      new ApiError(502, "payment_provider_error", "the payment provider could not be reached"),
    );
  }
  log.error("request failed", errorFields(err));
  return internalErrorResponse();
});
