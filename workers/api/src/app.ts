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
import { admin } from "./routes/admin";
import { billing } from "./routes/billing";
import { daily } from "./routes/daily";
import { dashboard } from "./routes/dashboard";

const baseLog = createLogger("api");

export const app = new Hono<ApiEnv>();

app.use("*", async (c, next) => {
  const requestId = c.req.header("cf-ray") ?? crypto.randomUUID();
  const log = baseLog.child({ request_id: requestId });
  c.set("log", log);
  await next();
  // the id is echoed so a caller can quote it; index.ts logs one line per request with it
  c.header("x-request-id", requestId);
});

app.get("/healthz", (c) => c.json({ ok: true }));
app.route("/api/billing", billing);
app.route("/api/billing", daily);
// The pages first: GET /admin is the operator page, public; the admin API's key check covers /admin/*.
app.route("/", dashboard);
app.route("/admin", admin);

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
