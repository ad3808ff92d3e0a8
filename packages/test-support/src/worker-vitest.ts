/**
 * The vitest configuration every worker's tests share: the worker's own wrangler config on the
 * local runtime (workerd), the real migrations applied before each test, and the Stripe
 * emulator started once per run over real HTTP.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";
import { TEST_SECRETS } from "./credentials";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "../../..");

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

/**
 * Quiets what every worker test run used to print although nothing was wrong:
 * - wrangler, reading the worker's config, warned that `secrets` is experimental and that the
 *   required secrets were missing: the tests pass them as bindings (TEST_SECRETS), and wrangler
 *   now finds the same values in this process's environment (its info lines are left out,
 *   its warnings and errors still show);
 * - workerd logs "WebSocket peer disconnected" each time a test file's runner closes its
 *   connection at the end of the file (the pool ignores its sibling "WebSocket was aborted").
 */
function quietWorkerTestOutput(): void {
  process.env.WRANGLER_DISABLE_EXPERIMENTAL_WARNING ??= "1";
  process.env.WRANGLER_LOG ??= "warn";
  for (const [key, value] of Object.entries(TEST_SECRETS)) process.env[key] ??= value;
  for (const stream of [process.stdout, process.stderr] as Array<NodeJS.WriteStream & { [QUIET]?: true }>) {
    if (stream[QUIET]) continue;
    stream[QUIET] = true;
    const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      if (typeof chunk === "string" && BENIGN_RUNTIME_LINE.test(chunk)) return true;
      return write(chunk, ...rest);
    }) as typeof stream.write;
  }
}

const QUIET = Symbol.for("aigate.quietWorkerTestOutput");
const BENIGN_RUNTIME_LINE =
  /^exception = workerd\/api\/web-socket\.c\+\+:\d+: disconnected: WebSocket peer disconnected\n?$/;

export function workerTestConfig(opts: WorkerTestOptions) {
  quietWorkerTestOutput();
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
            // three more D1 shards (DB_1..DB_3, empty until a test migrates them: test/shards.ts);
            // the worker's config says D1_SHARDS=1, and a test asks for more in the env it passes
            d1Databases: { DB_1: "test-shard-1", DB_2: "test-shard-2", DB_3: "test-shard-3" },
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
