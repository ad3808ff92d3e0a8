import { workerTestConfig } from "@aigate/test-support/vitest";
import { defineConfig, mergeConfig } from "vitest/config";

const base = workerTestConfig({
  dir: import.meta.dirname,
  // a producer onto the worker's own consumer queue, to test delivery through the local queue
  miniflare: { queueProducers: { VERDICTS_TEST: { queueName: "aigate-verdicts" } } },
  // post on every consumed batch unless a test sets an interval (interval.test.ts)
  bindings: { STRIPE_POST_INTERVAL_SECONDS: "0" },
});

// The Stripe emulator (its clock, faults and call log) is shared by every test file of the run:
// files run one after another so that one file's injected faults never hit another's calls.
export default defineConfig(async (configEnv) =>
  mergeConfig(await base(configEnv), { test: { fileParallelism: false } }),
);
