/**
 * CLI: `npm start -w @aigate/stripe-emulator`. Env: STRIPE_EMULATOR_PORT (12111),
 * STRIPE_EMULATOR_WEBHOOK_URL (none), STRIPE_WEBHOOK_SECRET (whsec_dev), STRIPE_EMULATOR_LOG=1,
 * STRIPE_EMULATOR_TAX_RATES ("DE=19,FR=20": the flat tax rates per country, replacing the defaults).
 */
import { startStripeEmulator } from "./server";

const port = Number(process.env.STRIPE_EMULATOR_PORT ?? "12111");
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  console.error(`[stripe-emulator] invalid STRIPE_EMULATOR_PORT: ${process.env.STRIPE_EMULATOR_PORT}`);
  process.exit(2);
}

/** "DE=19,FR=20" -> {DE: "19", FR: "20"} (checked by the emulator). */
function taxRatesFromEnv(text: string | undefined): Record<string, string> | undefined {
  if (!text) return undefined;
  return Object.fromEntries(
    text.split(",").map((pair) => {
      const [country = "", rate = ""] = pair.split("=").map((s) => s.trim());
      return [country, rate];
    }),
  );
}

const emulator = await startStripeEmulator({
  port,
  host: "127.0.0.1",
  webhookUrl: process.env.STRIPE_EMULATOR_WEBHOOK_URL || undefined,
  webhookSecret: process.env.STRIPE_WEBHOOK_SECRET || "whsec_dev",
  log: process.env.STRIPE_EMULATOR_LOG === "1",
  taxRates: taxRatesFromEnv(process.env.STRIPE_EMULATOR_TAX_RATES),
});

const webhooks = emulator.webhooks.url ? `, webhooks -> ${emulator.webhooks.url}` : ", webhooks: drain only";
console.log(`[stripe-emulator] listening on ${emulator.url}${webhooks}`);

let closing = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (closing) return;
    closing = true;
    emulator.close().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error("[stripe-emulator] error while closing", err);
        process.exit(1);
      },
    );
  });
}
