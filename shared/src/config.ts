/**
 * Reading Worker vars and secrets: each worker parses its env once, in its `config.ts`, with the
 * zod schemas below (coercion, defaults and bounds written once for the settings several
 * workers share).
 */
import { z } from "zod";

export const DEFAULTS = {
  VERDICT_SETTLE_SECONDS: 60,
  STALE_SESSION_MINUTES: 15,
  LEASE_TTL_SECONDS: 120,
  PAST_DUE_GRACE_DAYS: 7,
} as const;

const blankAsUnset = (value: unknown) => (value === "" || value === null ? undefined : value);
const invalidInteger = (issue: { input?: unknown }) => `invalid integer setting: ${String(issue.input)}`;

/** An integer var: unset or empty means `fallback`; anything else must be an integer in [min, max]. */
export function intVar(fallback: number, min: number, max: number) {
  return z.preprocess(
    blankAsUnset,
    z.coerce
      .number({ error: invalidInteger })
      .int({ error: invalidInteger })
      .min(min, { error: invalidInteger })
      .max(max, { error: invalidInteger })
      .default(fallback),
  );
}

/**
 * The account settings ingest (admission) and the api (usage) both read: how long an admission
 * lease lasts without telemetry, and how many days a past-due subscription keeps its paid limits.
 */
export const AccountVars = z
  .object({
    LEASE_TTL_SECONDS: intVar(DEFAULTS.LEASE_TTL_SECONDS, 1, 24 * 60 * 60),
    PAST_DUE_GRACE_DAYS: intVar(DEFAULTS.PAST_DUE_GRACE_DAYS, 0, 365),
  })
  .transform((v) => ({ leaseTtlMs: v.LEASE_TTL_SECONDS * 1000, pastDueGraceDays: v.PAST_DUE_GRACE_DAYS }));
export type AccountSettings = z.output<typeof AccountVars>;

/** Stripe's secret key and, for local runs, the emulator's address (empty: real Stripe). */
export const StripeVars = z.object({
  STRIPE_SECRET_KEY: z.string(),
  STRIPE_API_BASE: z.string().optional(),
});

/**
 * `STRIPE_TAX`: `on` (default) turns on Stripe Tax where we create what Stripe invoices (Checkout,
 * the biller's one-off invoices); `off` for a Stripe account without Stripe Tax.
 */
export const StripeTaxVar = z.preprocess(
  (v) => (v === "" ? undefined : v),
  z.enum(["on", "off"]).default("on"),
);

/** Parses a worker's env with its schema; a bad value is an error naming every offending var. */
export function parseVars<S extends z.ZodType>(schema: S, env: unknown): z.output<S> {
  const parsed = schema.safeParse(env);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => `${i.path.map(String).join(".")}: ${i.message}`);
  throw new Error(`invalid worker settings: ${problems.join("; ")}`);
}
