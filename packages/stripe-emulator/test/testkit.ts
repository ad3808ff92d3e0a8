/** Test support: an emulator per test file, the official SDK pointed at it, and a catalog fixture. */
import Stripe from "stripe";
import { afterAll, beforeAll, beforeEach } from "vitest";
import { EmulatorClient } from "../src/client";
import { type StripeEmulator, startStripeEmulator } from "../src/server";

export interface Harness {
  emu: StripeEmulator;
  /** The official SDK, without retries. */
  stripe: Stripe;
  control: EmulatorClient;
  sdk(opts?: { maxNetworkRetries?: number; apiKey?: string }): Stripe;
}

export function sdkFor(port: number, opts: { maxNetworkRetries?: number; apiKey?: string } = {}): Stripe {
  return new Stripe(opts.apiKey ?? "sk_test_emulator", {
    host: "127.0.0.1",
    port,
    protocol: "http",
    httpClient: Stripe.createFetchHttpClient(),
    maxNetworkRetries: opts.maxNetworkRetries ?? 0,
  });
}

/** Starts one emulator for the file and resets it before each test. */
export function useEmulator(): Harness {
  const h = {} as Harness;
  beforeAll(async () => {
    h.emu = await startStripeEmulator({ port: 0 });
    h.stripe = sdkFor(h.emu.port);
    h.control = new EmulatorClient(h.emu.url);
    h.sdk = (opts) => sdkFor(h.emu.port, opts);
  });
  beforeEach(() => {
    h.emu.reset();
  });
  afterAll(async () => {
    await h.emu?.close();
  });
  return h;
}

export interface Catalog {
  meter: Stripe.Billing.Meter;
  payg: Stripe.Price;
  proMonthly: Stripe.Price;
  proSessions: Stripe.Price;
}

/** AI Gate's plans: a `last` (or `sum`) meter, payg 10 c per session, pro $29 + graduated 0-400 free then 7 c. */
export async function createCatalog(stripe: Stripe, formula: "last" | "sum" = "sum"): Promise<Catalog> {
  const meter = await stripe.billing.meters.create({
    display_name: "Successful sessions",
    event_name: "aigate_sessions",
    default_aggregation: { formula },
  });
  const payg = await stripe.prices.create({
    currency: "usd",
    unit_amount: 10,
    recurring: { interval: "month", usage_type: "metered", meter: meter.id },
    product_data: { name: "AI Gate Pay-as-you-go" },
    lookup_key: "payg_session",
  });
  const pro = await stripe.products.create({ name: "AI Gate Pro", metadata: { plan: "pro" } });
  const proMonthly = await stripe.prices.create({
    currency: "usd",
    unit_amount: 2900,
    recurring: { interval: "month" },
    product: pro.id,
    lookup_key: "pro_monthly",
  });
  const proSessions = await stripe.prices.create({
    currency: "usd",
    billing_scheme: "tiered",
    tiers_mode: "graduated",
    tiers: [
      { up_to: 400, unit_amount: 0 },
      { up_to: "inf", unit_amount: 7 },
    ],
    recurring: { interval: "month", usage_type: "metered", meter: meter.id },
    product: pro.id,
    lookup_key: "pro_session",
  });
  return { meter, payg, proMonthly, proSessions };
}

/** Creates a subscription through Checkout and the emulator's complete control. */
export async function subscribe(
  h: Harness,
  lineItems: Stripe.Checkout.SessionCreateParams.LineItem[],
  email = "user@example.com",
) {
  const session = await h.stripe.checkout.sessions.create({
    mode: "subscription",
    customer_email: email,
    line_items: lineItems,
    success_url: "http://app.test/billing?session={CHECKOUT_SESSION_ID}",
    subscription_data: { metadata: { user_id: "u_1" } },
  });
  return h.control.completeCheckout(session.id);
}

/** A response header of an SDK result (the fetch client exposes a `Headers` object). */
export function headerOf(result: { lastResponse: { headers: unknown } }, name: string): string | null {
  const headers = result.lastResponse.headers;
  if (headers instanceof Headers) return headers.get(name);
  if (typeof headers === "object" && headers !== null) {
    const value: unknown = Object.entries(headers).find(([k]) => k.toLowerCase() === name)?.[1];
    return typeof value === "string" ? value : null;
  }
  return null;
}
