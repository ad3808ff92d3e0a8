/**
 * The bindings this worker's modules need. Declared here (not the generated global `Env`) so
 * other workers' tests can run the webhook handler against their own environment.
 */
export interface WebhooksEnv {
  /** Shard 0 and home (the event dedupe rows, the customer directory); DB_1.. are read by name. */
  DB: D1Database;
  /** How many D1 shards (default 1). */
  D1_SHARDS?: string;
  STRIPE_SECRET_KEY: string;
  STRIPE_WEBHOOK_SECRET: string;
  STRIPE_API_BASE?: string;
}
