/**
 * The whole stack on one origin, locally: the Stripe emulator, local D1 migrated and seeded, and
 * the five workers plus the dev router in one `wrangler dev` process (so they share one local D1
 * and local queues). Used by `npm run dev`, the end-to-end tests and the benchmark.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createWriteStream, mkdirSync, readFileSync, type WriteStream, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { shardBinding } from "@aigate/shared/shardKey";
import { createStripe } from "@aigate/shared/stripe";
import { ensureStripeCatalog, type StripeCatalog } from "@aigate/shared/stripeCatalog";
import { startStripeEmulator } from "@aigate/stripe-emulator";
import { parse as parseJsonc } from "jsonc-parser";
import { DEV_SECRETS } from "./credentials";
import { assertPortFree } from "./ports";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const WRANGLER = path.join(ROOT, "node_modules/.bin/wrangler");
export const WORKERS = ["ingest", "classifier", "biller", "webhooks", "api"] as const;

/** Local development settings: the documented dev credentials and a 2 s settle window. */
export const DEV_SETTINGS: Record<string, string> = {
  ...DEV_SECRETS,
  VERDICT_SETTLE_SECONDS: "2",
  STRIPE_POST_INTERVAL_SECONDS: "5",
  SUCCESS_LOG_SAMPLE_RATE: "1",
  // spend-alert endpoints may be plain http on this machine (a local receiver)
  ALERT_ENDPOINT_ALLOW_LOCAL_HTTP: "true",
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
  /**
   * D1 shards (default: `settings.D1_SHARDS`, else 1): the stack runs `DB` and `DB_1`..`DB_<n-1>`
   * as separate local databases, each migrated, with D1_SHARDS = n in every worker (docs/scale.md
   * "Sharding").
   */
  shards?: number;
  /** Aborting it during startup stops whatever was started and rejects; after startup use close(). */
  signal?: AbortSignal;
}

export interface Stack {
  url: string;
  /** D1 shards the stack runs. */
  shards: number;
  /** Reads one D1 shard of the stack (SELECT only; default shard 0, the home database). */
  query<T>(sql: string, shard?: number): Promise<T[]>;
  /** The same query on every shard: each shard's rows, in shard order. */
  queryEach<T>(sql: string): Promise<T[][]>;
  /** Runs a worker's scheduled handler now, as its cron trigger would. */
  runScheduled(worker: CronWorker, cron?: string): Promise<void>;
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

const ROUTER_CONFIG = path.join(ROOT, "scripts/dev/router.jsonc");

/** The local database of shard `i` (shard 0 is the committed `DB`: aigate-billing). */
export function shardDatabase(i: number): { binding: string; database_name: string; database_id: string } {
  return {
    binding: shardBinding(i),
    database_name: i === 0 ? "aigate-billing" : `aigate-billing-shard-${i}`,
    database_id: `00000000-0000-4000-8000-${String(i + 1).padStart(12, "0")}`,
  };
}
const workerConfig = (worker: (typeof WORKERS)[number]) =>
  path.join(ROOT, "workers", worker, "wrangler.jsonc");

/**
 * Writes a copy of each worker's wrangler.jsonc with absolute paths and `vars` overridden by
 * `settings`. (`wrangler dev` with several configs applies `--var` and `.dev.vars` overrides only
 * partly, so the dev stack runs generated configs; production uses the committed ones as is.)
 * Cron triggers are left out: the stack fires them itself (startScheduler), and `wrangler dev`
 * would only warn that it does not. `routerVars` are the dev router's own settings.
 */
export function writeDevConfigs(
  outDir: string,
  settings: Record<string, string>,
  mainOverrides: StackOptions["mainOverrides"] = {},
  routerVars: Record<string, string> = {},
  shards = 1,
): string[] {
  mkdirSync(outDir, { recursive: true });
  const files: string[] = [];
  for (const source of [ROUTER_CONFIG, ...WORKERS.map(workerConfig)]) {
    const dir = path.dirname(source);
    const config = readConfig(source);
    const worker = WORKERS.find((w) => config.name === `aigate-${w}`);
    const override = worker ? mainOverrides[worker] : undefined;
    config.main = override ? path.resolve(override) : path.resolve(dir, String(config.main));
    delete config.$schema;
    delete config.triggers;
    const vars = (config.vars ?? {}) as Record<string, string>;
    for (const key of Object.keys(vars)) {
      if (settings[key] !== undefined) vars[key] = settings[key];
    }
    if (source === ROUTER_CONFIG) Object.assign(vars, routerVars);
    if (Object.keys(vars).length > 0) config.vars = vars;
    const dbs = config.d1_databases as Array<Record<string, unknown>> | undefined;
    for (const db of dbs ?? []) {
      if (typeof db.migrations_dir === "string") db.migrations_dir = path.resolve(dir, db.migrations_dir);
    }
    const home = dbs?.find((db) => db.binding === "DB");
    for (let i = 1; home && i < shards; i++) dbs?.push({ ...home, ...shardDatabase(i) });
    const out = path.join(outDir, `${String(config.name)}.json`);
    writeFileSync(out, JSON.stringify(config, null, 2));
    files.push(out);
  }
  return files;
}

function run(args: string[], env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(WRANGLER, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], signal });
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

/**
 * Applies migrations/ to every shard's local D1 at `persistTo`, and seeds the dev API keys into
 * the home database (shard 0: the global tables).
 */
export async function prepareDatabase(
  configFile: string,
  persistTo: string,
  env: NodeJS.ProcessEnv,
  signal?: AbortSignal,
  shards = 1,
) {
  const common = ["--local", "--persist-to", persistTo, "--config", configFile];
  for (let i = 0; i < shards; i++) {
    await run(["d1", "migrations", "apply", shardDatabase(i).database_name, ...common], env, signal);
  }
  await run(
    ["d1", "execute", "aigate-billing", ...common, "--file", path.join(ROOT, "scripts/dev-seed.sql")],
    env,
    signal,
  );
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

/**
 * Waits until the port answers as the stack just started (the router's `/__dev/ping` names
 * `stackId`, so another server on the port can never pass for it) and the api answers /healthz.
 * Every attempt has its own timeout: a listener that never answers cannot hang the start.
 */
async function waitForStack(
  url: string,
  stackId: string,
  child: ChildProcess,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`wrangler dev exited (${child.exitCode ?? child.signalCode}) before the stack was up`);
    }
    try {
      const ping = await fetch(`${url}/__dev/ping`, { signal: AbortSignal.timeout(2000) });
      const body: unknown = ping.status === 200 ? await ping.json() : null;
      if (body && typeof body === "object" && "stack" in body && body.stack === stackId) {
        const health = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) });
        if (health.status === 200) return;
      }
    } catch {
      // not listening yet, or not answering yet
    }
    await sleep(250, signal);
  }
  throw new Error(`the stack did not answer ${url}/__dev/ping within ${timeoutMs} ms`);
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return resolve();
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

export type CronWorker = "classifier" | "biller" | "api";

/** The cron triggers of the classifier, the biller and the api, read from their committed configs. */
function cronJobs(): Array<{ worker: CronWorker; cron: string; every: number }> {
  const jobs: Array<{ worker: CronWorker; cron: string; every: number }> = [];
  for (const worker of ["classifier", "biller", "api"] as const) {
    const triggers = readConfig(workerConfig(worker)).triggers as { crons?: string[] } | undefined;
    for (const cron of triggers?.crons ?? []) {
      jobs.push({ worker, cron, every: cron.startsWith("* ") ? 1 : 60 });
    }
  }
  return jobs;
}

/**
 * Plays Cloudflare's cron scheduler for the local stack: every tick counts as one minute;
 * `* * * * *` fires every tick, `M * * * *` once every 60 ticks. A failed run is reported, not
 * fatal (as in production, the next run tries again). stop() waits for the runs in flight (up to
 * 10 s), so none is cut off by the stack shutting down.
 */
function startScheduler(
  tickSeconds: number,
  run: (worker: CronWorker, cron: string) => Promise<void>,
  report: (line: string) => void,
): { stop(): Promise<void> } {
  const jobs = cronJobs();
  let tick = 0;
  let inFlight: Promise<unknown> | null = null;
  const timer = setInterval(() => {
    if (inFlight) return;
    tick += 1;
    const due = jobs.filter((j) => tick % j.every === 0);
    inFlight = Promise.all(
      due.map((j) =>
        run(j.worker, j.cron).catch((err: unknown) => {
          report(
            `[dev scheduler] ${j.worker} "${j.cron}": ${err instanceof Error ? err.message : String(err)}`,
          );
        }),
      ),
    ).finally(() => {
      inFlight = null;
    });
  }, tickSeconds * 1000);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      // a run that hangs must not hold the shutdown: it is cut off after 10 s
      let cutOff: NodeJS.Timeout | undefined;
      await Promise.race([inFlight, new Promise((r) => (cutOff = setTimeout(r, 10_000)))]);
      clearTimeout(cutOff);
    },
  };
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const { signal } = opts;
  signal?.throwIfAborted();
  await assertPortFree(opts.port, "PORT");
  await assertPortFree(opts.stripePort, "STRIPE_EMULATOR_PORT");
  const shards = opts.shards ?? Number(opts.settings?.D1_SHARDS || 1);
  if (!Number.isInteger(shards) || shards < 1 || shards > 16) {
    throw new Error(
      `D1_SHARDS for the local stack must be a whole number from 1 to 16, got ${String(shards)}`,
    );
  }
  const settings: Record<string, string> = { ...DEV_SETTINGS, ...opts.settings, D1_SHARDS: String(shards) };
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
  let log: WriteStream | null = null;
  try {
    signal?.throwIfAborted();
    const catalog = await ensureStripeCatalog(
      createStripe({ STRIPE_SECRET_KEY: settings.STRIPE_SECRET_KEY ?? "", STRIPE_API_BASE: stripeUrl }),
    );
    const stackId = randomUUID();
    const configs = writeDevConfigs(
      path.join(opts.workDir, "config"),
      settings,
      opts.mainOverrides,
      { DEV_STACK_ID: stackId },
      shards,
    );
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...settings,
      WRANGLER_SEND_METRICS: "false",
      // The workers never read `request.cf`; offline, fetching it only prints a warning.
      CLOUDFLARE_CF_FETCH_ENABLED: process.env.CLOUDFLARE_CF_FETCH_ENABLED ?? "false",
      // The workers' configs declare their secrets (`secrets.required`), still marked experimental.
      WRANGLER_DISABLE_EXPERIMENTAL_WARNING: "1",
    };
    const apiConfig = configs.find((c) => c.endsWith("aigate-api.json"));
    if (!apiConfig) throw new Error("api config missing");
    await prepareDatabase(apiConfig, opts.persistTo, env, signal, shards);
    signal?.throwIfAborted();
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
      log = createWriteStream(logFile);
      child = spawn(WRANGLER, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
      child.stdout?.pipe(log, { end: false });
      child.stderr?.pipe(log, { end: false });
    }
    await waitForStack(url, stackId, child, 90_000, signal);
    const running = child;
    const runScheduled = async (worker: CronWorker, cron = "* * * * *") => {
      const res = await fetch(`${url}/__dev/scheduled?worker=${worker}&cron=${encodeURIComponent(cron)}`, {
        method: "POST",
      });
      if (res.status !== 200) throw new Error(`${worker} scheduled (${cron}) failed: ${await res.text()}`);
    };
    const query = async <T>(sql: string, shard = 0): Promise<T[]> => {
      const res = await fetch(`${url}/__dev/query`, { method: "POST", body: JSON.stringify({ sql, shard }) });
      if (res.status !== 200) throw new Error(`query failed (${res.status}): ${await res.text()}`);
      return ((await res.json()) as { results: T[] }).results;
    };
    const queryEach = <T>(sql: string) =>
      Promise.all(Array.from({ length: shards }, (_, i) => query<T>(sql, i)));
    // In dev a failed cron run is shown; test stacks keep it in their log (the chaos suite crashes
    // crons on purpose and checks the outcome itself).
    const logStream = log;
    const report = logStream ? (line: string) => logStream.write(`${line}\n`) : console.error;
    const scheduler = startScheduler(opts.cronTickSeconds ?? 60, runScheduled, report);
    return {
      url,
      stripeUrl,
      catalog,
      logFile,
      shards,
      query,
      queryEach,
      runScheduled,
      async close() {
        await scheduler.stop();
        await stop(running);
        await emulator.close();
        logStream?.end();
      },
    };
  } catch (err) {
    if (child) await stop(child);
    await emulator.close();
    log?.end();
    throw err;
  }
}
