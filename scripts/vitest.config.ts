import { defineConfig } from "vitest/config";

// The CLIs' library code, on Node as the CLIs run it.
export default defineConfig({
  test: {
    include: ["lib/**/*.test.ts"],
    environment: "node",
    testTimeout: 30_000,
  },
});
