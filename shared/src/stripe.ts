/**
 * One way to build a Stripe client in every worker. `STRIPE_API_BASE` points the official SDK
 * at the local emulator (e.g. http://127.0.0.1:12111); empty means real Stripe.
 */
import Stripe from "stripe";

export interface StripeEnv {
  STRIPE_SECRET_KEY: string;
  STRIPE_API_BASE?: string;
}

export function createStripe(env: StripeEnv, opts: { maxNetworkRetries?: number } = {}): Stripe {
  const config: Stripe.StripeConfig = {
    httpClient: Stripe.createFetchHttpClient(),
    maxNetworkRetries: opts.maxNetworkRetries ?? 2,
    timeout: 20_000,
  };
  if (env.STRIPE_API_BASE) {
    const url = new URL(env.STRIPE_API_BASE);
    config.host = url.hostname;
    config.protocol = url.protocol === "http:" ? "http" : "https";
    if (url.port) config.port = Number(url.port);
  }
  return new Stripe(env.STRIPE_SECRET_KEY, config);
}
