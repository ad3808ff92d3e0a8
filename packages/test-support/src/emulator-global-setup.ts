/**
 * Starts the Stripe emulator once per test run on a free port and hands its address to the
 * tests (and to the workers' STRIPE_API_BASE binding) through vitest's provide/inject.
 */

import { startStripeEmulator } from "@aigate/stripe-emulator";
import type { TestProject } from "vitest/node";

export default async function setup(project: TestProject) {
  const emulator = await startStripeEmulator({ port: 0 });
  project.provide("stripeApiBase", emulator.url);
  return async () => {
    await emulator.close();
  };
}
