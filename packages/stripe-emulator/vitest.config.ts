import { defineConfig } from "vitest/config";

export default defineConfig({
  logLevel: "error",
  test: {
    environment: "node",
    include: ["test/**/*.test.ts"],
    testTimeout: 20_000,
  },
});
