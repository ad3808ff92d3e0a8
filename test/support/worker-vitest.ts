/**
 * The vitest configuration every worker's tests share: the worker's own wrangler config on the
 * local runtime (workerd), the real migrations applied before each test, and the Stripe
 * emulator started once per run over real HTTP.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "../..");

export interface WorkerTestOptions {
  /** Directory of the worker (holding wrangler.jsonc). */
  dir: string;
  /** Wrangler config file name inside `dir` (default wrangler.jsonc). */
  configFile?: string;
  /** Extra bindings on top of the worker's config (test secrets and overrides). */
  bindings?: Record<string, unknown>;
  /** Entry worker for SELF, when it differs from the config's main. */
  main?: string;
  /** Extra test include globs. */
  include?: string[];
  /** Queue consumers/producers and other Miniflare options to add. */
  miniflare?: Record<string, unknown>;
}

export const TEST_SECRETS = {
  STRIPE_SECRET_KEY: "sk_test_emulator",
  STRIPE_WEBHOOK_SECRET: "whsec_test",
  USER_TOKEN_SECRET: "test-user-token-secret",
} as const;

export function workerTestConfig(opts: WorkerTestOptions) {
  return defineConfig(async () => {
    const migrations = await readD1Migrations(path.join(repoRoot, "migrations"));
    return {
      logLevel: "error" as const,
      plugins: [
        cloudflareTest(({ inject }) => ({
          main: opts.main,
          wrangler: { configPath: path.join(opts.dir, opts.configFile ?? "wrangler.jsonc") },
          miniflare: {
            ...opts.miniflare,
            bindings: {
              ...TEST_SECRETS,
              STRIPE_API_BASE: inject("stripeApiBase"),
              TEST_MIGRATIONS: migrations,
              ...opts.bindings,
            },
          },
        })),
      ],
      test: {
        include: opts.include ?? ["src/**/*.test.ts"],
        globalSetup: [path.join(here, "emulator-global-setup.ts")],
        setupFiles: [path.join(here, "apply-migrations.ts")],
        // structured logs are shown for failing tests only
        silent: "passed-only" as const,
        testTimeout: 30_000,
        hookTimeout: 30_000,
      },
    };
  });
}
