/**
 * Credentials in tests: the secrets every worker test run binds (TEST_SECRETS), and the local
 * stack's documented dev credentials for the suites that run against `npm run dev`'s stack.
 */
export { DEV_ADMIN_KEY, DEV_INGEST_KEY, DEV_KEYS, DEV_SECRETS } from "@aigate/scripts/dev/credentials";

/** The secrets bound to every worker under test (the Stripe emulator accepts any test key). */
export const TEST_SECRETS = {
  STRIPE_SECRET_KEY: "sk_test_emulator",
  STRIPE_WEBHOOK_SECRET: "whsec_test",
  USER_TOKEN_SECRET: "test-user-token-secret",
} as const;
