/**
 * The biller's settings (Worker vars and secrets, parsed with zod) and its dependencies, built
 * once per invocation.
 */
import {
  createLogger,
  type D1Stats,
  intVar,
  type Logger,
  parseVars,
  type Shards,
  StripeTaxVar,
  StripeVars,
  shardsOf,
  withD1Stats,
} from "@aigate/shared";
import { createStripe, type StripeEnv } from "@aigate/shared/stripe";
import type Stripe from "stripe";
import { z } from "zod";

export const DEFAULT_INVOICE_GRACE_SECONDS = 3600;
/** Least time between two meter posts for one customer's open period (totals are absolute). */
export const DEFAULT_POST_INTERVAL_SECONDS = 60;

/** The hourly reconciliation trigger in wrangler.jsonc (the other cron is the minute sweep). */
export const RECONCILE_CRON = "17 * * * *";
/** How long a meter lock protects one customer's Stripe call (SDK retries included). */
export const METER_LOCK_TTL_MS = 120_000;
/** Stripe calls in flight at once across customers (Workers allow 6 open connections). */
export const STRIPE_CONCURRENCY = 6;

export interface BillerConfig {
  /** Stripe's invoice grace after a period ends (usage with timestamps in it is still billed). */
  graceMs: number;
  /**
   * Least time between two meter posts of one customer's period while it is open. Totals are
   * absolute, so a later post carries everything recorded meanwhile: fewer Stripe calls, same
   * invoice. Ended periods are posted without waiting.
   */
  postIntervalMs: number;
  /** Whether the one-off invoices of adjustments turn on Stripe Tax (`STRIPE_TAX`, as Checkout does). */
  stripeTax: boolean;
}

export interface Biller {
  /**
   * The D1 shard this biller works on: the functions taking a Biller (posting, sweep steps,
   * adjustments, re-attribution) read and write this shard only. `createBiller` gives the home
   * shard; `onShard` the same biller on another one.
   */
  db: D1Database;
  /** Every D1 shard of the deployment (users' rows by user id; global tables in `home`). */
  shards: Shards;
  /** D1 statements and rows of this invocation, over every shard (logged when it ends). */
  d1: D1Stats;
  stripe: Stripe;
  config: BillerConfig;
  log: Logger;
}

const BillerVars = z.object({
  STRIPE_INVOICE_GRACE_SECONDS: intVar(DEFAULT_INVOICE_GRACE_SECONDS, 60, 7 * 86_400),
  STRIPE_POST_INTERVAL_SECONDS: intVar(DEFAULT_POST_INTERVAL_SECONDS, 0, 3600),
  STRIPE_TAX: StripeTaxVar,
});

export function readConfig(env: Env): BillerConfig & { stripe: StripeEnv } {
  const vars = parseVars(BillerVars, env);
  return {
    graceMs: vars.STRIPE_INVOICE_GRACE_SECONDS * 1000,
    postIntervalMs: vars.STRIPE_POST_INTERVAL_SECONDS * 1000,
    stripeTax: vars.STRIPE_TAX === "on",
    stripe: parseVars(StripeVars, env),
  };
}

const clients = new Map<string, Stripe>();

/** One Stripe client per isolate and key/base (the SDK honours Stripe-Should-Retry, 2 retries). */
export function stripeFor(settings: StripeEnv): Stripe {
  const cacheKey = `${settings.STRIPE_API_BASE}|${settings.STRIPE_SECRET_KEY}`;
  let client = clients.get(cacheKey);
  if (!client) {
    client = createStripe(settings);
    clients.set(cacheKey, client);
  }
  return client;
}

export function createBiller(env: Env, fields: Record<string, unknown> = {}): Biller {
  const { stripe, ...config } = readConfig(env);
  const counted = withD1Stats(env);
  const shards = shardsOf(counted.env);
  return {
    db: shards.home,
    shards,
    d1: counted.stats,
    stripe: stripeFor(stripe),
    config,
    log: createLogger("biller", fields),
  };
}

/** The same biller working on one shard (its Stripe client, settings, log and D1 counts shared). */
export function onShard(b: Biller, db: D1Database): Biller {
  return { ...b, db };
}
