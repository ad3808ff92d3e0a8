/** The webhooks worker's settings: its secrets, parsed once per request with zod. */
import { parseVars, StripeVars } from "@aigate/shared";
import type { StripeEnv } from "@aigate/shared/stripe";
import { z } from "zod";
import type { WebhooksEnv } from "./env";

const WebhooksVars = z.object({ STRIPE_WEBHOOK_SECRET: z.string() });

export interface WebhooksConfig {
  /** The endpoint's signing secret (whsec_...): every event's signature is checked with it. */
  webhookSecret: string;
  stripe: StripeEnv;
}

export function readConfig(env: WebhooksEnv): WebhooksConfig {
  return {
    webhookSecret: parseVars(WebhooksVars, env).STRIPE_WEBHOOK_SECRET,
    stripe: parseVars(StripeVars, env),
  };
}
