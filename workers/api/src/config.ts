/** The api worker's settings: its vars and secrets, parsed once per request with zod. */
import { type AccountSettings, AccountVars, parseVars, StripeTaxVar, StripeVars } from "@aigate/shared";
import type { StripeEnv } from "@aigate/shared/stripe";
import { z } from "zod";

const ApiVars = z.object({
  /** Where Stripe sends users back to; empty means the request's own origin. */
  APP_BASE_URL: z.string().optional(),
  USER_TOKEN_SECRET: z.string(),
  /**
   * Stripe Tax at Checkout: "on" (default) or "off" for a Stripe account that has not activated
   * Stripe Tax (docs/api-billing.md, POST /api/billing/checkout).
   */
  STRIPE_TAX: StripeTaxVar,
  /** "true" in local dev only: spend-alert endpoints may be plain http on localhost / 127.0.0.1. */
  ALERT_ENDPOINT_ALLOW_LOCAL_HTTP: z.enum(["true", "false", ""]).optional(),
});

export interface ApiConfig extends AccountSettings {
  appBaseUrl: string | undefined;
  userTokenSecret: string;
  alertEndpointAllowLocalHttp: boolean;
  stripe: StripeEnv;
  /** Whether Checkout turns on Stripe Tax (`STRIPE_TAX`). */
  stripeTax: boolean;
}

export function readConfig(env: Env): ApiConfig {
  const vars = parseVars(ApiVars, env);
  return {
    ...parseVars(AccountVars, env),
    appBaseUrl: vars.APP_BASE_URL,
    userTokenSecret: vars.USER_TOKEN_SECRET,
    stripeTax: vars.STRIPE_TAX === "on",
    alertEndpointAllowLocalHttp: vars.ALERT_ENDPOINT_ALLOW_LOCAL_HTTP === "true",
    stripe: parseVars(StripeVars, env),
  };
}
