/**
 * Test helpers (imported by tests only): drive the Stripe emulator through a subscription's
 * life, pick up the events it emitted, and deliver them signed to a webhook handler.
 * Events are read with GET /_emulator/events (not drained), so test files running side by side
 * against the one emulator never take each other's events; they are signed here with the test
 * webhook secret.
 */
import { type PaidPlanId, PLANS } from "@aigate/shared";
import { createStripe, type StripeEnv } from "@aigate/shared/stripe";
import { ensureStripeCatalog } from "@aigate/shared/stripeCatalog";
import { EmulatorClient } from "@aigate/stripe-emulator/client";
import Stripe from "stripe";

export interface Delivery {
  id: string;
  type: string;
  payload: string;
}

export type Deliver = (payload: string, signature: string) => Promise<Response>;

const cryptoProvider = Stripe.createSubtleCryptoProvider();

export class StripeScenario {
  readonly stripe: Stripe;
  readonly emulator: EmulatorClient;

  constructor(
    env: StripeEnv & { STRIPE_API_BASE: string },
    private readonly webhookSecret: string,
  ) {
    this.stripe = createStripe(env);
    this.emulator = new EmulatorClient(env.STRIPE_API_BASE);
  }

  setup() {
    return ensureStripeCatalog(this.stripe);
  }

  /**
   * A customer for the user (as the api worker makes it), checked out and completed on `plan`:
   * with the plan's current prices, or `prices` (an older price version), and on a test clock when
   * `clock` is given (the customer then lives at the clock's time, apart from other tests).
   */
  async subscribe(userId: string, plan: PaidPlanId, opts: { clock?: string; prices?: string[] } = {}) {
    const customer = await this.stripe.customers.create({
      metadata: { user_id: userId },
      ...(opts.clock ? { test_clock: opts.clock } : {}),
    });
    const prices = opts.prices
      ? await Promise.all(opts.prices.map((id) => this.stripe.prices.retrieve(id)))
      : (await this.stripe.prices.list({ lookup_keys: PLANS[plan].stripeLookupKeys, active: true })).data;
    const session = await this.stripe.checkout.sessions.create({
      mode: "subscription",
      customer: customer.id,
      client_reference_id: userId,
      line_items: prices.map((p) =>
        p.recurring?.usage_type === "metered" ? { price: p.id } : { price: p.id, quantity: 1 },
      ),
      subscription_data: { metadata: { user_id: userId }, billing_mode: { type: "flexible" } },
      success_url: "http://app.test/ok",
      cancel_url: "http://app.test/cancel",
    });
    const done = await this.emulator.completeCheckout(session.id);
    return {
      customerId: customer.id,
      subscription: done.subscription,
      invoice: done.invoice,
      events: await this.eventsById(done.events),
    };
  }

  /** A test clock frozen at `frozenTime` (unix seconds): its customers move only with it. */
  async clock(frozenTime: number): Promise<string> {
    return (await this.stripe.testHelpers.testClocks.create({ frozen_time: frozenTime })).id;
  }

  /** Moves a test clock to `frozenTime`; Stripe's work that falls due on the way runs (renewals, phases, finalizations). */
  async advanceClock(clockId: string, frozenTime: number): Promise<void> {
    await this.stripe.testHelpers.testClocks.advance(clockId, { frozen_time: frozenTime });
  }

  /** A mark in the emulator's event log: eventsSince(mark, ...) returns what was emitted after it. */
  async mark(): Promise<number> {
    return (await this.emulator.events()).length;
  }

  /** The events emitted after `mark` about this customer (its subscriptions, invoices, schedules), in order. */
  async eventsSince(mark: number, customerId: string): Promise<Delivery[]> {
    const all = await this.emulator.events();
    return all
      .slice(mark)
      .filter((e) => JSON.stringify(e.data.object).includes(`"${customerId}"`))
      .map((e) => ({ id: e.id, type: e.type, payload: JSON.stringify(e) }));
  }

  /** The emitted events with these ids, in emission order. */
  async eventsById(ids: readonly string[]): Promise<Delivery[]> {
    const wanted = new Set(ids);
    const all = await this.emulator.events();
    return all
      .filter((e) => wanted.has(e.id))
      .map((e) => ({ id: e.id, type: e.type, payload: JSON.stringify(e) }));
  }

  async sign(payload: string, opts: { secret?: string; timestamp?: number } = {}): Promise<string> {
    return Stripe.webhooks.generateTestHeaderStringAsync({
      payload,
      secret: opts.secret ?? this.webhookSecret,
      timestamp: opts.timestamp ?? Math.floor(Date.now() / 1000),
      cryptoProvider,
    });
  }

  async deliverAll(deliver: Deliver, deliveries: readonly Delivery[]): Promise<void> {
    for (const d of deliveries) {
      const res = await deliver(d.payload, await this.sign(d.payload));
      const body = await res.text();
      if (res.status !== 200) throw new Error(`${d.type} ${d.id} -> ${res.status} ${body}`);
    }
  }
}

/** Delivers to a handler's fetch, as Stripe would. */
export function webhookRequest(payload: string, signature: string | null): Request {
  const headers = new Headers({ "content-type": "application/json; charset=utf-8" });
  if (signature !== null) headers.set("stripe-signature", signature);
  return new Request("http://webhooks.test/api/webhooks/stripe", { method: "POST", headers, body: payload });
}

/** The sequence in order, then with each adjacent pair swapped; every event twice in each. */
export function neighbourSwaps<T>(events: readonly T[]): T[][] {
  const orders: T[][] = [events.flatMap((e) => [e, e])];
  for (let i = 0; i + 1 < events.length; i++) {
    const swapped = [...events];
    const a = swapped[i];
    const b = swapped[i + 1];
    if (a === undefined || b === undefined) continue;
    swapped[i] = b;
    swapped[i + 1] = a;
    orders.push(swapped.flatMap((e) => [e, e]));
  }
  return orders;
}
