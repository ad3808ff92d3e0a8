/**
 * The whole stack on one origin, locally: the Stripe emulator, local D1 migrated and seeded, and
 * the five workers plus the dev router in one `wrangler dev` process (so they share one local D1
 * and local queues). Used by `npm run dev`, the end-to-end tests and the benchmark.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startStripeEmulator } from "@aigate/stripe-emulator";
import { parse as parseJsonc } from "jsonc-parser";
import { createStripe } from "../../shared/src/stripe";
import { ensureStripeCatalog, type StripeCatalog } from "../../shared/src/stripeCatalog";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const WRANGLER = path.join(ROOT, "node_modules/.bin/wrangler");
export const WORKERS = ["ingest", "classifier", "biller", "webhooks", "api"] as const;

/** Local development settings: the documented dev credentials and a 2 s settle window. */
export const DEV_SETTINGS: Record<string, string> = {
  STRIPE_SECRET_KEY: "sk_test_emulator",
  STRIPE_WEBHOOK_SECRET: "whsec_dev",
  USER_TOKEN_SECRET: "dev-user-token-secret",
  VERDICT_SETTLE_SECONDS: "2",
  STRIPE_POST_INTERVAL_SECONDS: "5",
  SUCCESS_LOG_SAMPLE_RATE: "1",
};

export interface StackOptions {
  port: number;
  stripePort: number;
  /** Local state (D1) directory. */
  persistTo: string;
  /** Where generated configs and logs go. */
  workDir: string;
  /** Settings applied to every worker: overrides of its `vars`, and its secrets. */
  settings?: Record<string, string>;
  /** Stream wrangler's output to this process's stdout (dev) instead of a log file (tests). */
  inheritOutput?: boolean;
  /** Sends the emulator's webhooks to the stack (default true). */
  webhooks?: boolean;
  /**
   * Seconds between two "minutes" of the local cron scheduler (default 60: real time). `wrangler
   * dev` never fires cron triggers, so the stack fires them through the dev router.
   */
  cronTickSeconds?: number;
  /**
   * Replacement entry modules per worker (e.g. test builds that wrap a worker's handlers to
   * inject faults). Production configs are never changed.
   */
  mainOverrides?: Partial<Record<(typeof WORKERS)[number], string>>;
}

export interface Stack {
  url: string;
  /** Reads the stack's local D1 (SELECT only). */
  query<T>(sql: string): Promise<T[]>;
  /** Runs a worker's scheduled handler now, as its cron trigger would. */
  runScheduled(worker: "classifier" | "biller", cron?: string): Promise<void>;
  stripeUrl: string;
  catalog: StripeCatalog;
  logFile: string | null;
  close(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function readConfig(file: string): Record<string, unknown> {
  const parsed: unknown = parseJsonc(readFileSync(file, "utf8"));
  if (typeof parsed !== "object" || parsed === null) throw new Error(`cannot read ${file}`);
  return parsed as Record<string, unknown>;
}

/**
 * Writes a copy of each worker's wrangler.jsonc with absolute paths and `vars` overridden by
 * `settings`. (`wrangler dev` with several configs applies `--var` and `.dev.vars` overrides only
 * partly, so the dev stack runs generated configs; production uses the committed ones as is.)
 */
export function writeDevConfigs(
  outDir: string,
  settings: Record<string, string>,
  mainOverrides: StackOptions["mainOverrides"] = {},
): string[] {
  mkdirSync(outDir, { recursive: true });
  const files: string[] = [];
  const sources = [
    path.join(ROOT, "scripts/dev/router.jsonc"),
    ...WORKERS.map((w) => path.join(ROOT, "workers", w, "wrangler.jsonc")),
  ];
  for (const source of sources) {
    const dir = path.dirname(source);
    const config = readConfig(source);
    const worker = WORKERS.find((w) => config.name === `aigate-${w}`);
    const override = worker ? mainOverrides[worker] : undefined;
    config.main = override ? path.resolve(override) : path.resolve(dir, String(config.main));
    delete config.$schema;
    const vars = (config.vars ?? {}) as Record<string, string>;
    for (const key of Object.keys(vars)) {
      if (settings[key] !== undefined) vars[key] = settings[key];
    }
    if (Object.keys(vars).length > 0) config.vars = vars;
    const dbs = config.d1_databases as Array<Record<string, unknown>> | undefined;
    for (const db of dbs ?? []) {
      if (typeof db.migrations_dir === "string") db.migrations_dir = path.resolve(dir, db.migrations_dir);
    }
    const out = path.join(outDir, `${String(config.name)}.json`);
    writeFileSync(out, JSON.stringify(config, null, 2));
    files.push(out);
  }
  return files;
}

function run(args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(WRANGLER, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`wrangler ${args.join(" ")} failed (${code}):\n${output}`)),
    );
  });
}

/** Applies migrations/ and seeds the dev API keys into the local D1 at `persistTo`. */
export async function prepareDatabase(configFile: string, persistTo: string, env: NodeJS.ProcessEnv) {
  const common = ["--local", "--persist-to", persistTo, "--config", configFile];
  await run(["d1", "migrations", "apply", "aigate-billing", ...common], env);
  await run(
    ["d1", "execute", "aigate-billing", ...common, "--file", path.join(ROOT, "scripts/dev-seed.sql")],
    env,
  );
}

async function waitForHealth(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited with code ${child.exitCode}`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`the stack did not answer ${url}/healthz within ${timeoutMs} ms`);
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.pid === undefined) return resolve();
    const pid = child.pid;
    const timer = setTimeout(() => {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // already gone
      }
    }, 5000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      process.kill(-pid, "SIGTERM");
    } catch {
      clearTimeout(timer);
      resolve();
    }
  });
}

/**
 * Plays Cloudflare's cron scheduler for the local stack: every tick counts as one minute;
 * `* * * * *` fires every tick, `M * * * *` once every 60 ticks. Failures are logged, not fatal
 * (as in production, the next run tries again).
 */
function startScheduler(
  configs: string[],
  tickSeconds: number,
  run: (worker: "classifier" | "biller", cron: string) => Promise<void>,
): { stop(): void } {
  const jobs: Array<{ worker: "classifier" | "biller"; cron: string; every: number }> = [];
  for (const worker of ["classifier", "biller"] as const) {
    const file = configs.find((c) => c.endsWith(`aigate-${worker}.json`));
    const triggers = file ? (readConfig(file).triggers as { crons?: string[] } | undefined) : undefined;
    for (const cron of triggers?.crons ?? []) {
      jobs.push({ worker, cron, every: cron.startsWith("* ") ? 1 : 60 });
    }
  }
  let tick = 0;
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    tick += 1;
    const due = jobs.filter((j) => tick % j.every === 0);
    Promise.all(
      due.map((j) =>
        run(j.worker, j.cron).catch((err: unknown) => {
          console.error(`[dev scheduler] ${j.worker} "${j.cron}": ${String(err)}`);
        }),
      ),
    ).finally(() => {
      busy = false;
    });
  }, tickSeconds * 1000);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const settings = { ...DEV_SETTINGS, ...opts.settings };
  const url = `http://127.0.0.1:${opts.port}`;
  const emulator = await startStripeEmulator({
    port: opts.stripePort,
    host: "127.0.0.1",
    webhookSecret: settings.STRIPE_WEBHOOK_SECRET,
    ...(opts.webhooks === false ? {} : { webhookUrl: `${url}/api/webhooks/stripe` }),
  });
  const stripeUrl = emulator.url;
  settings.STRIPE_API_BASE ??= stripeUrl;
  settings.APP_BASE_URL ??= url;
  let child: ChildProcess | null = null;
  try {
    const catalog = await ensureStripeCatalog(
      createStripe({ STRIPE_SECRET_KEY: settings.STRIPE_SECRET_KEY ?? "", STRIPE_API_BASE: stripeUrl }),
    );
    const configs = writeDevConfigs(path.join(opts.workDir, "config"), settings, opts.mainOverrides);
    const env: NodeJS.ProcessEnv = { ...process.env, ...settings, WRANGLER_SEND_METRICS: "false" };
    const apiConfig = configs.find((c) => c.endsWith("aigate-api.json"));
    if (!apiConfig) throw new Error("api config missing");
    await prepareDatabase(apiConfig, opts.persistTo, env);
    const inspectorPort = await freePort();
    const args = [
      "dev",
      ...configs.flatMap((c) => ["-c", c]),
      "--ip",
      "127.0.0.1",
      "--port",
      String(opts.port),
      "--inspector-port",
      String(inspectorPort),
      "--persist-to",
      opts.persistTo,
      "--show-interactive-dev-session=false",
    ];
    let logFile: string | null = null;
    if (opts.inheritOutput) {
      child = spawn(WRANGLER, args, {
        cwd: ROOT,
        env,
        stdio: ["ignore", "inherit", "inherit"],
        detached: true,
      });
    } else {
      logFile = path.join(opts.workDir, `wrangler-${opts.port}.log`);
      const log = createWriteStream(logFile);
      child = spawn(WRANGLER, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
      child.stdout?.pipe(log);
      child.stderr?.pipe(log);
    }
    await waitForHealth(url, child, 90_000);
    const running = child;
    const runScheduled = async (worker: "classifier" | "biller", cron = "* * * * *") => {
      const res = await fetch(`${url}/__dev/scheduled?worker=${worker}&cron=${encodeURIComponent(cron)}`, {
        method: "POST",
      });
      if (res.status !== 200) throw new Error(`${worker} scheduled (${cron}) failed: ${await res.text()}`);
    };
    const query = async <T>(sql: string): Promise<T[]> => {
      const res = await fetch(`${url}/__dev/query`, { method: "POST", body: JSON.stringify({ sql }) });
      if (res.status !== 200) throw new Error(`query failed (${res.status}): ${await res.text()}`);
      return ((await res.json()) as { results: T[] }).results;
    };
    const scheduler = startScheduler(configs, opts.cronTickSeconds ?? 60, runScheduled);
    return {
      url,
      stripeUrl,
      catalog,
      logFile,
      query,
      runScheduled,
      async close() {
        scheduler.stop();
        await stop(running);
        await emulator.close();
      },
    };
  } catch (err) {
    if (child) await stop(child);
    await emulator.close();
    throw err;
  }
}
