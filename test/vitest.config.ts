import { defineConfig } from "vitest/config";

export default defineConfig({
  logLevel: "error",
  test: {
    projects: [
      {
        test: {
          name: "e2e",
          environment: "node",
          include: ["e2e/**/*.test.ts"],
          globalSetup: ["e2e/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          // the lifecycle of subscriptions on a stack whose clock follows the emulator's
          name: "lifecycle",
          environment: "node",
          include: ["lifecycle/**/*.test.ts"],
          globalSetup: ["lifecycle/global-setup.ts"],
          testTimeout: 240_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "chaos",
          environment: "node",
          include: ["chaos/**/*.test.ts"],
          globalSetup: ["chaos/global-setup.ts"],
          testTimeout: 900_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          // `npm run dev` and the CLIs as a newcomer runs them: ports, signals, output, docs
          name: "devstack",
          environment: "node",
          include: ["devstack/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "browser",
          environment: "node",
          include: ["browser/**/*.test.ts"],
          globalSetup: ["browser/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 240_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
