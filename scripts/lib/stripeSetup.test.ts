import { createStripe } from "@aigate/shared/stripe";
import { DEFAULT_METER_EVENT_NAME } from "@aigate/shared/stripeCatalog";
import { type StripeEmulator, startStripeEmulator } from "@aigate/stripe-emulator";
import { EmulatorClient } from "@aigate/stripe-emulator/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EMULATOR_API_BASE, EMULATOR_SECRET_KEY, resolveStripeTarget, runStripeSetup } from "./stripeSetup";

// The CLI's settings against an emulator of its own, as `npm run stripe:setup` runs next to `npm run dev`.
let server: StripeEmulator;
const env = {
  STRIPE_API_BASE: "",
  STRIPE_SECRET_KEY: EMULATOR_SECRET_KEY,
  STRIPE_METER_EVENT_NAME: DEFAULT_METER_EVENT_NAME,
};
const emulator = () => new EmulatorClient(env.STRIPE_API_BASE);
const stripe = () => createStripe(env);
const callMark = async () => (await emulator().calls()).length;

beforeAll(async () => {
  server = await startStripeEmulator({ port: 0 });
  env.STRIPE_API_BASE = server.url;
});
afterAll(() => server.close());

describe("resolveStripeTarget", () => {
  it("defaults to the local emulator and its key", () => {
    expect(resolveStripeTarget({})).toEqual({
      apiBase: EMULATOR_API_BASE,
      secretKey: "sk_test_emulator",
      meterEventName: "aigate_successful_sessions",
    });
  });

  it("targets real Stripe when STRIPE_API_BASE is empty or a real key is given without it", () => {
    expect(resolveStripeTarget({ STRIPE_API_BASE: "", STRIPE_SECRET_KEY: "sk_live_abc" }).apiBase).toBe("");
    expect(resolveStripeTarget({ STRIPE_SECRET_KEY: "sk_test_realaccount" }).apiBase).toBe("");
    expect(() => resolveStripeTarget({ STRIPE_API_BASE: "" })).toThrow(/STRIPE_SECRET_KEY is required/);
    expect(() => resolveStripeTarget({ STRIPE_API_BASE: "127.0.0.1:12111" })).toThrow(/must be an origin/);
  });
});

describe("runStripeSetup", () => {
  it("sets up the catalog on the emulator idempotently and prints the workers' settings", async () => {
    const vars = {
      STRIPE_API_BASE: env.STRIPE_API_BASE,
      STRIPE_METER_EVENT_NAME: env.STRIPE_METER_EVENT_NAME,
    };
    const first = await runStripeSetup(vars);
    const mark = await callMark();
    const second = await runStripeSetup(vars);
    expect(second.catalog).toEqual(first.catalog);
    expect((await emulator().calls()).slice(mark).filter((c) => c.method === "POST")).toEqual([]);

    const meter = await stripe().billing.meters.retrieve(first.catalog.meterId);
    expect(meter.default_aggregation.formula).toBe("last");
    const text = first.lines.join("\n");
    expect(text).toContain(`meter   ${first.catalog.meterId}  event_name=${env.STRIPE_METER_EVENT_NAME}`);
    expect(text).toContain(`STRIPE_METER_EVENT_NAME=${env.STRIPE_METER_EVENT_NAME}`);
    expect(text).toContain(`STRIPE_API_BASE=${env.STRIPE_API_BASE}`);
    for (const [key, id] of Object.entries(first.catalog.prices))
      expect(text).toContain(`${id}  lookup_key=${key}`);
  });
});
