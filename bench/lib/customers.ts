/**
 * Paying customers on the stack: subscribed through the billing API and the emulator's checkout,
 * and the meter totals their billable sessions must reach on Stripe.
 */

import { DEV_SECRETS } from "@aigate/scripts/dev/credentials";
import type { Stack } from "@aigate/scripts/dev/stack";
import { EmulatorClient } from "@aigate/stripe-emulator/client";
import { SignJWT } from "jose";
import { billablePerUser, type SessionSpec } from "../workload";
import { log, until } from "./processes";
import type { Settings } from "./settings";

/** The paying users of a run, by name (the naive baseline seeds the same ones). */
export function payingUsers(settings: Settings): string[] {
  return Array.from({ length: settings.customers }, (_, i) => `bench-paid-${i}`);
}

/** Sessions per user in the paced phase (ours and the naive baseline's). */
export function pacedSessionsPerUser(settings: Settings): number {
  return Math.round((settings.sessions_per_customer_per_minute * settings.paced_seconds) / 60);
}

/** The Stripe calls that posted meter events. */
export async function meterEventCalls(emu: EmulatorClient) {
  return (await emu.calls()).filter((c) => c.method === "POST" && c.path === "/v1/billing/meter_events");
}

export interface Customers {
  users: string[];
  emu: EmulatorClient;
  /** The event name of each user's meter (one meter per plan). */
  meterOf: Map<string, string>;
  /** Stripe customer id per user. */
  customerOf: Map<string, string>;
  /** Billable sessions sent to the stack so far, per user: what each meter total must reach. */
  billed: ReadonlyMap<string, number>;
  /** Counts billable sessions about to be sent. */
  expect(sessions: SessionSpec[]): void;
  /** Waits until every customer's meter total is what was sent; the time (epoch ms) it was. */
  untilOnMeter(label: string): Promise<number>;
}

function userToken(user: string): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(user)
    .setExpirationTime("4h")
    .sign(new TextEncoder().encode(DEV_SECRETS.USER_TOKEN_SECRET));
}

/** Subscribes the run's paying users on the stack, half payg and half pro. */
export async function subscribeCustomers(stack: Stack, settings: Settings): Promise<Customers> {
  const emu = new EmulatorClient(stack.stripeUrl);
  const users = payingUsers(settings);
  const meterOf = new Map<string, string>();
  log(`subscribing ${users.length} customers (half payg, half pro)`);
  const customerOf = new Map<string, string>();
  for (const [i, user] of users.entries()) {
    const token = await userToken(user);
    const plan = i % 2 === 0 ? "payg" : "pro";
    meterOf.set(user, stack.catalog.meters[plan].eventName);
    const res = await fetch(`${stack.url}/api/billing/checkout`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ plan }),
    });
    if (res.status !== 200) throw new Error(`checkout: ${res.status} ${await res.text()}`);
    const { id } = (await res.json()) as { id: string };
    const done = await emu.completeCheckout(id);
    customerOf.set(user, String(done.subscription.customer));
    await until(
      async () => {
        const r = await fetch(`${stack.url}/api/billing/usage`, {
          headers: { authorization: `Bearer ${token}` },
        });
        return ((await r.json()) as { plan: string }).plan;
      },
      (plan) => plan !== "free",
      30_000,
      "plan change",
    );
  }

  const billed = new Map<string, number>();
  /** Customers whose meter total is not (yet) what was sent. */
  const behind = async () => {
    const usage = new Map<string, Awaited<ReturnType<typeof emu.meterUsageByCustomer>>>();
    for (const meter of new Set(meterOf.values())) usage.set(meter, await emu.meterUsageByCustomer(meter));
    let n = 0;
    for (const [user, customer] of customerOf) {
      const onMeter = usage.get(meterOf.get(user) ?? "")?.customers[customer]?.value ?? 0;
      if (onMeter !== (billed.get(user) ?? 0)) n += 1;
    }
    return n;
  };
  return {
    users,
    emu,
    meterOf,
    customerOf,
    billed,
    expect(sessions) {
      for (const [user, n] of billablePerUser(sessions)) billed.set(user, (billed.get(user) ?? 0) + n);
    },
    untilOnMeter: (label) =>
      until(
        async () => ((await behind()) === 0 ? Date.now() : 0),
        (t) => t > 0,
        600_000,
        label,
      ),
  };
}
