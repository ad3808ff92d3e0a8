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

/**
 * The hourly retention trigger in wrangler.jsonc (the other cron, every minute, sends alerts and
 * archives new user-days).
 */
export const RETENTION_CRON = "41 * * * *";

const DAY_MS = 86_400_000;
/** Stripe resends an undelivered event for up to three days (docs/operations.md "Retention"). */
export const STRIPE_RESEND_HORIZON_DAYS = 3;
/** The longest retention window accepted (ten years). */
const MAX_RETENTION_DAYS = 3650;

export const RETENTION_DEFAULTS = {
  RETENTION_STRIPE_EVENTS_DAYS: 7,
  RETENTION_DEAD_LETTERS_DAYS: 30,
  RETENTION_RECONCILIATION_DAYS: 90,
  RETENTION_SESSIONS_DAYS: 45,
} as const;

/**
 * The least age, in days, of a session the archive may move out of D1: Stripe accepts meter
 * events up to 35 days old (the reconciliation looks back as far), an invoice stays a draft for
 * at most 72 hours after its period ends, plus a day of margin. The series must be frozen and
 * settled as well (sessionArchive.ts); the age is the second guard.
 */
export const SESSIONS_ARCHIVE_FLOOR_DAYS = 35 + 3 + 1;

/** A retention window in whole days: unset or empty means `fallback`; `min` says why it is the least. */
function retentionDays(fallback: number, min: number, why: string) {
  const notWhole = (issue: { input?: unknown }) =>
    `a whole number of days from ${min} to ${MAX_RETENTION_DAYS} is required, got ${String(issue.input)}`;
  return z.preprocess(
    (value) => (value === "" || value === null ? undefined : value),
    z.coerce
      .number({ error: notWhole })
      .int({ error: notWhole })
      .min(min, { error: (issue) => `at least ${min} days (${why}), got ${String(issue.input)}` })
      .max(MAX_RETENTION_DAYS, { error: notWhole })
      .default(fallback),
  );
}

/** How long the retention job keeps what no longer matters for money or idempotency. */
const RetentionVars = z.object({
  RETENTION_STRIPE_EVENTS_DAYS: retentionDays(
    RETENTION_DEFAULTS.RETENTION_STRIPE_EVENTS_DAYS,
    STRIPE_RESEND_HORIZON_DAYS + 1,
    `Stripe resends an event for up to ${STRIPE_RESEND_HORIZON_DAYS} days: its dedupe row must outlive that by a day`,
  ),
  RETENTION_DEAD_LETTERS_DAYS: retentionDays(
    RETENTION_DEFAULTS.RETENTION_DEAD_LETTERS_DAYS,
    1,
    "a replayed dead letter stays visible for at least a day",
  ),
  RETENTION_RECONCILIATION_DAYS: retentionDays(
    RETENTION_DEFAULTS.RETENTION_RECONCILIATION_DAYS,
    1,
    "a reconciliation run stays visible for at least a day",
  ),
  RETENTION_SESSIONS_DAYS: retentionDays(
    RETENTION_DEFAULTS.RETENTION_SESSIONS_DAYS,
    SESSIONS_ARCHIVE_FLOOR_DAYS,
    "Stripe's 35 days of meter events and reconciliation, 3 days of invoice grace and a day of margin",
  ),
});

export interface RetentionConfig {
  /** `processed_stripe_events` rows applied longer ago than this are deleted. */
  stripeEventsMs: number;
  /** Dead letters replayed longer ago than this are deleted (pending ones never). */
  deadLettersMs: number;
  /** Reconciliation runs started longer ago than this are deleted. */
  reconciliationMs: number;
  /** Settled sessions billed longer ago than this (whole UTC days) are archived to R2, then deleted. */
  sessionsMs: number;
}

/** The retention windows (the crons read only these, not the api's secrets). */
export function readRetentionConfig(env: unknown): RetentionConfig {
  const vars = parseVars(RetentionVars, env);
  return {
    stripeEventsMs: vars.RETENTION_STRIPE_EVENTS_DAYS * DAY_MS,
    deadLettersMs: vars.RETENTION_DEAD_LETTERS_DAYS * DAY_MS,
    reconciliationMs: vars.RETENTION_RECONCILIATION_DAYS * DAY_MS,
    sessionsMs: vars.RETENTION_SESSIONS_DAYS * DAY_MS,
  };
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
