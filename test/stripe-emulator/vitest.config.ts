import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  logLevel: "error",
  // keep vite's cache with the workspace's, not in a node_modules folder beside the sources
  cacheDir: fileURLToPath(new URL("../../node_modules/.vite/stripe-emulator", import.meta.url)),
  test: {
    root: fileURLToPath(new URL(".", import.meta.url)),
    environment: "node",
    include: ["**/*.test.ts"],
    testTimeout: 20_000,
  },
});
