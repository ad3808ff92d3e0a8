/**
 * `npm run stripe:setup`: one Billing Meter per paid plan (`last` aggregation), the products and
 * the prices of the paid plans (by lookup key) and the Customer Portal configuration, created if
 * missing; safe to run any number of times.
 *
 *   npm run stripe:setup                                   # the local emulator (127.0.0.1:$STRIPE_EMULATOR_PORT)
 *   STRIPE_SECRET_KEY=sk_live_... STRIPE_API_BASE= npm run stripe:setup   # real Stripe
 *
 * Env: STRIPE_SECRET_KEY, STRIPE_API_BASE (empty = real Stripe), STRIPE_METER_PREFIX (meters <prefix>_<plan>_sessions), and
 * STRIPE_EMULATOR_PORT (12111), the emulator's port as `npm run dev` uses it.
 * `--json` prints the ids as JSON instead of the report.
 */

import { emulatorOrigin } from "./dev/ports";
import { runStripeSetup } from "./lib/stripeSetup";

try {
  const { target, catalog, lines } = await runStripeSetup(process.env, emulatorOrigin(process.env));
  if (process.argv.includes("--json")) {
    console.log(JSON.stringify({ api_base: target.apiBase, ...catalog }, null, 2));
  } else {
    for (const line of lines) console.log(line);
  }
} catch (err) {
  console.error(`stripe:setup failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
