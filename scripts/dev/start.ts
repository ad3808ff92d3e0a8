/**
 * `npm run dev`: the whole stack on http://127.0.0.1:$PORT (8787) with the Stripe emulator on
 * http://127.0.0.1:$STRIPE_EMULATOR_PORT (12111). A busy port fails the start at once.
 *
 *   npm run dev [-- --persist-to <dir>]     local D1 state (default .wrangler/state)
 *
 * Any setting of DEV_SETTINGS or a worker var (e.g. VERDICT_SETTLE_SECONDS=5) may be overridden
 * from the environment. With STRIPE_API_BASE=https://api.stripe.com and a real STRIPE_SECRET_KEY
 * the workers talk to real Stripe (test mode) instead of the emulator.
 *
 * Stopping: Ctrl-C, or SIGINT, SIGTERM or SIGHUP to `npm run dev` (npm passes SIGINT and SIGTERM
 * on; the script runs with `exec`, so this process is npm's own child), stops the workers, workerd
 * and the emulator. If the parent goes away without a word (killed, or its terminal closed), the
 * stack stops too: it watches its parent process.
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { DEV_ADMIN_KEY, DEV_INGEST_KEY, DEV_SECRETS } from "./credentials";
import { devPorts, PortBusyError, PortSettingError } from "./ports";
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
  "D1_SHARDS",
];

/** How often the parent process is looked at. */
const PARENT_CHECK_MS = 500;

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { "persist-to": { type: "string", default: ".wrangler/state" } },
  });
  const { port, stripePort } = devPorts(process.env);
  const persistTo = path.resolve(process.cwd(), values["persist-to"]);
  const settings: Record<string, string> = {};
  for (const key of OVERRIDABLE) {
    const value = process.env[key];
    if (value !== undefined) settings[key] = value;
  }

  const starting = new AbortController();
  const started = startStack({
    port,
    stripePort,
    persistTo,
    // per port, so that two stacks on different ports never share generated configs
    workDir: path.join(ROOT, ".wrangler/dev", String(port)),
    settings,
    inheritOutput: true,
    signal: starting.signal,
  });
  let stopping: Promise<never> | null = null;
  const shutdown = (why: string): Promise<never> => {
    stopping ??= (async () => {
      console.log(`\n${why}: stopping the stack...`);
      // a stack still starting cleans up after itself and rejects; a running one is closed
      starting.abort();
      const stack = await started.catch(() => null);
      await stack?.close().catch((err: unknown) => console.error("while stopping:", err));
      process.exit(0);
    })();
    return stopping;
  };
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(sig, () => void shutdown(sig));
  }
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) void shutdown(`parent process ${parent} is gone`);
  }, PARENT_CHECK_MS);

  let stack: Stack;
  try {
    stack = await started;
  } catch (err) {
    if (starting.signal.aborted) return shutdown("stopped while starting");
    throw err;
  }
  console.log(`
AI Gate Billing is up on ${stack.url}
  gateways   ${stack.url}/v1/events            Authorization: Bearer ${DEV_INGEST_KEY}
  admission  ${stack.url}/v1/sessions/admit
  billing    ${stack.url}/api/billing/usage    user JWT (HS256, secret ${DEV_SECRETS.USER_TOKEN_SECRET})
  webhooks   ${stack.url}/api/webhooks/stripe  secret ${DEV_SECRETS.STRIPE_WEBHOOK_SECRET}
  operators  ${stack.url}/admin/metrics        Authorization: Bearer ${DEV_ADMIN_KEY}
  dashboard  ${stack.url}/
  Stripe emulator ${stack.stripeUrl} (meters ${stack.catalog.meters.payg.eventName}, ${stack.catalog.meters.pro.eventName})
Ctrl-C stops everything.`);
}

main().catch((err: unknown) => {
  if (err instanceof PortBusyError || err instanceof PortSettingError) {
    console.error(`npm run dev: ${err.message}`);
  } else {
    console.error("npm run dev: the stack did not start:", err);
  }
  process.exit(1);
});
