/**
 * The Stripe emulator: a real HTTP server speaking the subset of Stripe's REST API that AI Gate
 * Billing uses, for the official `stripe` SDK configured with
 * `{ host: "127.0.0.1", port, protocol: "http", httpClient: Stripe.createFetchHttpClient() }`.
 */
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { Hono } from "hono";
import type { Ctx, Env } from "./context";
import { ApiError, errorResponse } from "./errors";
import { faults } from "./faults";
import { idempotency } from "./idempotency";
import { auth, callLog, parseParams, requestIds } from "./pipeline";
import { checkoutRoutes } from "./routes/checkout";
import { customerRoutes } from "./routes/customers";
import { emulatorRoutes } from "./routes/emulator";
import { eventRoutes } from "./routes/events";
import { invoiceItemRoutes } from "./routes/invoiceitems";
import { invoiceRoutes } from "./routes/invoices";
import { meterConcurrencyGuard, meterRoutes } from "./routes/meters";
import { portalRoutes } from "./routes/portal";
import { priceRoutes } from "./routes/prices";
import { productRoutes } from "./routes/products";
import { scheduleRoutes } from "./routes/schedules";
import { subscriptionRoutes } from "./routes/subscriptions";
import { testClockRoutes } from "./routes/testclocks";
import { EmulatorState } from "./state";
import { parseTaxRates } from "./tax";
import { Webhooks } from "./webhooks";

export interface StripeEmulatorOptions {
  /** 0 (default) picks a free port. */
  port?: number;
  host?: string;
  /** Where to POST signed webhooks (none by default: tests drain them instead). */
  webhookUrl?: string;
  /** Default "whsec_dev". */
  webhookSecret?: string;
  /** Log one line per request and per webhook delivery. */
  log?: boolean;
  /**
   * The flat tax rate (percent) per country its Stripe Tax applies, replacing the defaults
   * (DE 19, FR 20, GB 20, IE 23, NL 21); kept by `reset()`.
   */
  taxRates?: Record<string, number | string>;
}

export interface StripeEmulator {
  url: string;
  port: number;
  state: EmulatorState;
  webhooks: Webhooks;
  /** Forget everything, like POST /_emulator/reset (webhook URL and secret are kept). */
  reset(): void;
  close(): Promise<void>;
}

export function createApp(ctx: Ctx, reset: () => void, log: ((line: string) => void) | null): Hono<Env> {
  const app = new Hono<Env>();
  app.use("*", requestIds(log));
  app.use("/v1/*", callLog(ctx));
  app.use("/v1/*", auth);
  app.use("/v1/*", parseParams);
  app.use("/v1/billing/meter_events", meterConcurrencyGuard(ctx));
  app.use("/v1/*", faults(ctx));
  app.use("/v1/*", idempotency(ctx));

  customerRoutes(app, ctx);
  productRoutes(app, ctx);
  priceRoutes(app, ctx);
  meterRoutes(app, ctx);
  checkoutRoutes(app, ctx);
  portalRoutes(app, ctx);
  subscriptionRoutes(app, ctx);
  scheduleRoutes(app, ctx);
  testClockRoutes(app, ctx);
  invoiceRoutes(app, ctx);
  invoiceItemRoutes(app, ctx);
  eventRoutes(app, ctx);
  emulatorRoutes(app, ctx, reset);

  app.notFound((c) =>
    errorResponse(
      new ApiError(
        404,
        "invalid_request_error",
        `Unrecognized request URL (${c.req.method}: ${c.req.path}). The Stripe emulator does not implement it.`,
      ),
    ),
  );
  app.onError((err) => {
    if (err instanceof ApiError) return errorResponse(err);
    console.error("[stripe-emulator] internal error", err);
    return errorResponse(new ApiError(500, "api_error", `Emulator internal error: ${err.message}`));
  });
  return app;
}

export async function startStripeEmulator(opts: StripeEmulatorOptions = {}): Promise<StripeEmulator> {
  const host = opts.host ?? "127.0.0.1";
  const log = opts.log ? (line: string) => console.log(`[stripe-emulator] ${line}`) : null;
  const state = new EmulatorState();
  const webhooks = new Webhooks(
    state,
    { url: opts.webhookUrl ?? null, secret: opts.webhookSecret ?? "whsec_dev" },
    log ?? undefined,
  );
  let url = "";
  const ctx: Ctx = { state, webhooks, baseUrl: () => url };
  const taxRates = opts.taxRates ? parseTaxRates(opts.taxRates) : null;
  const reset = () => {
    webhooks.stop();
    state.reset();
    if (taxRates) state.taxRates = new Map(taxRates);
  };
  if (taxRates) state.taxRates = new Map(taxRates);
  const app = createApp(ctx, reset, log);
  const server = createAdaptorServer({ fetch: app.fetch, hostname: host });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address: AddressInfo | string | null = server.address();
  if (!address || typeof address === "string") throw new Error("stripe emulator: no TCP address");
  const port = address.port;
  url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  return {
    url,
    port,
    state,
    webhooks,
    reset,
    close: async () => {
      webhooks.stop();
      await new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        if ("closeAllConnections" in server) server.closeAllConnections();
      });
    },
  };
}
