/**
 * The bindings this worker's modules need. Declared here (not the generated global `Env`) so
 * other workers' tests can run the webhook handler against their own environment.
 */
export interface WebhooksEnv {
  DB: D1Database;
  STRIPE_SECRET_KEY: string;
  STRIPE_WEBHOOK_SECRET: string;
  STRIPE_API_BASE?: string;
}
