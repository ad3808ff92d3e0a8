/**
 * `npm run dev`: the whole stack on http://127.0.0.1:8787 with the Stripe emulator on
 * http://127.0.0.1:12111. One Ctrl-C stops all of it.
 *
 * Environment: PORT (8787), STRIPE_EMULATOR_PORT (12111); any setting of DEV_SETTINGS or a
 * worker var (e.g. VERDICT_SETTLE_SECONDS=5) may be overridden from the environment. With
 * STRIPE_API_BASE=https://api.stripe.com and a real STRIPE_SECRET_KEY the workers talk to real
 * Stripe (test mode) instead of the emulator.
 */
import path from "node:path";
import { DEV_SETTINGS, ROOT, type Stack, startStack } from "./stack";

const OVERRIDABLE = [
  ...Object.keys(DEV_SETTINGS),
  "STRIPE_API_BASE",
  "APP_BASE_URL",
  "STALE_SESSION_MINUTES",
  "LEASE_TTL_SECONDS",
  "PAST_DUE_GRACE_DAYS",
  "STRIPE_INVOICE_GRACE_SECONDS",
  "STRIPE_POST_INTERVAL_SECONDS",
];

async function main() {
  const port = Number(process.env.PORT ?? 8787);
  const stripePort = Number(process.env.STRIPE_EMULATOR_PORT ?? 12111);
  const settings: Record<string, string> = {};
  for (const key of OVERRIDABLE) {
    const value = process.env[key];
    if (value !== undefined) settings[key] = value;
  }
  let stack: Stack | null = null;
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    console.log("\nstopping the stack...");
    await stack?.close();
    process.exit(0);
  };
  process.on("SIGINT", shutdown);
  process.on("SIGTERM", shutdown);

  stack = await startStack({
    port,
    stripePort,
    persistTo: path.join(ROOT, ".wrangler/state"),
    workDir: path.join(ROOT, ".wrangler/dev"),
    settings,
    inheritOutput: true,
  });
  console.log(`
AI Gate Billing is up on ${stack.url}
  gateways   ${stack.url}/v1/events            Authorization: Bearer aig_dev_ingest
  admission  ${stack.url}/v1/sessions/admit
  billing    ${stack.url}/api/billing/usage    user JWT (HS256, secret dev-user-token-secret)
  webhooks   ${stack.url}/api/webhooks/stripe  secret whsec_dev
  operators  ${stack.url}/admin/metrics        Authorization: Bearer aig_dev_admin
  dashboard  ${stack.url}/
  Stripe emulator ${stack.stripeUrl} (meter ${stack.catalog.meterEventName})
Ctrl-C stops everything.`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
