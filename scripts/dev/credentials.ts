/**
 * The documented local development credentials (contract v1): what `npm run dev` seeds and
 * configures, and what the CLIs and the whole-stack tests use against it. Never valid in
 * production.
 */

/** The dev API keys, seeded by scripts/dev-seed.sql. */
export const DEV_KEYS = [
  { id: "key_dev_ingest", key: "aig_dev_ingest", scope: "ingest", name: "local dev ingest key" },
  { id: "key_dev_admin", key: "aig_dev_admin", scope: "admin", name: "local dev admin key" },
] as const;

export const DEV_INGEST_KEY = DEV_KEYS[0].key;
export const DEV_ADMIN_KEY = DEV_KEYS[1].key;

/** The secrets every worker of the local stack gets (Stripe's emulator accepts any test key). */
export const DEV_SECRETS = {
  STRIPE_SECRET_KEY: "sk_test_emulator",
  STRIPE_WEBHOOK_SECRET: "whsec_dev",
  USER_TOKEN_SECRET: "dev-user-token-secret",
} as const;
