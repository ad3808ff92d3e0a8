/**
 * `npm run bench`: measures the pipeline on the local runtime, in one run, against its two
 * reference points: a no-op Worker served the same way (the runtime's ceiling for ingest) and
 * the naive baseline of the pricing strategy (one D1 update and one Stripe call per session).
 * Load comes from separate processes over loopback, bounded in count and time. Prints a table
 * and writes bench/results/latest.json.
 *
 * Settings (environment): BENCH_SECONDS (per ingest measurement, default 6), BENCH_ROUNDS
 * (alternating no-op / ingest rounds, default 3), BENCH_CONNECTIONS
 * (default 8), BENCH_CUSTOMERS (paying customers, default 20), BENCH_BURST_SESSIONS (default
 * 2000), BENCH_PACED_SECONDS (default 120), BENCH_SESSIONS_PER_MINUTE (per customer, default 50).
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { DEV_INGEST_KEY, DEV_SECRETS } from "@aigate/scripts/dev/credentials";
import {
  DEV_SETTINGS,
  freePort,
  prepareDatabase,
  ROOT,
  type Stack,
  startStack,
  writeDevConfigs,
} from "@aigate/scripts/dev/stack";
import { createStripe } from "@aigate/shared/stripe";
import { ensureStripeCatalog } from "@aigate/shared/stripeCatalog";
import { startStripeEmulator } from "@aigate/stripe-emulator";
import { EmulatorClient } from "@aigate/stripe-emulator/client";
import { SignJWT } from "jose";
import type { LoadConfig, LoadResult } from "./load";
import { EVENTS_PER_SESSION, type SessionSpec, sessionEvents } from "./workload";

const pexec = promisify(execFile);
const WRANGLER = path.join(ROOT, "node_modules/.bin/wrangler");
const TSX = path.join(ROOT, "node_modules/.bin/tsx");
const BENCH = path.join(ROOT, "bench");
const RESULTS = path.join(BENCH, "results");

const SECONDS = Number(process.env.BENCH_SECONDS ?? 6);
/** Alternating no-op / ingest rounds per request size (the median ratio is reported). */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 8);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 20);
const BURST_SESSIONS = Number(process.env.BENCH_BURST_SESSIONS ?? 2000);
const PACED_SECONDS = Number(process.env.BENCH_PACED_SECONDS ?? 120);
const SESSIONS_PER_MINUTE = Number(process.env.BENCH_SESSIONS_PER_MINUTE ?? 50);
/** The stack as deployed, but for the settle window (dev value) and compressed cron minutes. */
const SETTLE_SECONDS = 2;
const CRON_TICK_SECONDS = 10;
const POST_INTERVAL_SECONDS = 60;
/** Ingest logs 1 % of its successful requests in production (npm run dev logs them all). */
const PRODUCTION_LOGGING = { SUCCESS_LOG_SAMPLE_RATE: "0.01" };

/** List prices used for the cost model (USD), as published on 2026-11-25 (Workers Paid plan). */
export const PRICES = {
  workersRequestPerMillion: 0.3,
  /** A message costs 3 operations (write, read, delete) per 64 KB. */
  queuesOperationPerMillion: 0.4,
  d1RowsReadPerMillion: 0.001,
  d1RowsWrittenPerMillion: 1.0,
} as const;

function log(msg: string) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

async function runLoad(cfg: LoadConfig): Promise<LoadResult> {
  const { stdout } = await pexec(TSX, [path.join(BENCH, "load.ts"), JSON.stringify(cfg)], {
    cwd: ROOT,
    maxBuffer: 1 << 20,
    timeout: (cfg.seconds + 60) * 1000,
  });
  const line = stdout.trim().split("\n").pop() ?? "{}";
  return JSON.parse(line) as LoadResult;
}

function killGroup(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.pid === undefined) return resolve();
    child.once("exit", () => resolve());
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {
      resolve();
    }
  });
}

/** A plain `wrangler dev` (the no-op ceiling, the naive baseline), logging to a file. */
async function startWrangler(
  configs: string[],
  persistTo: string,
  logFile: string,
  env: NodeJS.ProcessEnv = {},
) {
  const port = await freePort();
  const args = ["dev", ...configs.flatMap((c) => ["-c", c])];
  args.push("--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()));
  args.push("--persist-to", persistTo, "--show-interactive-dev-session=false");
  const child = spawn(WRANGLER, args, {
    cwd: ROOT,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const out = createWriteStream(logFile);
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited (${child.exitCode}); see ${logFile}`);
    try {
      await fetch(`http://127.0.0.1:${port}/`);
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`wrangler dev did not start; see ${logFile}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  return { url: `http://127.0.0.1:${port}`, stop: () => killGroup(child) };
}

/**
 * The ingest worker alone behind the same front worker as the no-op, with its own migrated and
 * seeded D1 and a telemetry queue nobody consumes: ingest's own cost, without the pipeline
 * competing for the machine's cores.
 */
async function startIngestAlone(dir: string) {
  const configs = writeDevConfigs(path.join(dir, "config"), { ...DEV_SETTINGS, ...PRODUCTION_LOGGING });
  const ingestConfig = configs.find((c) => c.endsWith("aigate-ingest.json"));
  if (!ingestConfig) throw new Error("ingest config missing");
  const front = path.join(dir, "config", "front.json");
  writeFileSync(
    front,
    JSON.stringify({
      name: "aigate-bench-front-ingest",
      main: path.join(BENCH, "noop/front.ts"),
      compatibility_date: "2026-04-20",
      services: [{ binding: "TARGET", service: "aigate-ingest" }],
    }),
  );
  const state = path.join(dir, "state");
  await prepareDatabase(ingestConfig, state, { ...process.env, WRANGLER_SEND_METRICS: "false" });
  const logFile = path.join(dir, "wrangler.log");
  const started = await startWrangler([front, ingestConfig], state, logFile);
  return { ...started, logFile };
}

type LogLine = Record<string, unknown>;

/** Structured log lines (one JSON object per line) written after byte `from` of a log file. */
function logLines(file: string, from = 0): LogLine[] {
  const out: LogLine[] = [];
  for (const raw of readFileSync(file, "utf8").slice(from).split("\n")) {
    const start = raw.indexOf('{"level"');
    if (start < 0) continue;
    try {
      const parsed: unknown = JSON.parse(raw.slice(start));
      if (parsed && typeof parsed === "object") out.push(parsed as LogLine);
    } catch {
      // not a structured line
    }
  }
  return out;
}

/** Sums a numeric field; a sampled line (`sample_rate` < 1) stands for 1 / sample_rate lines. */
function sum(lines: LogLine[], field: string, where: (l: LogLine) => boolean = () => true): number {
  let total = 0;
  for (const l of lines) {
    const v = field === "*" ? 1 : l[field];
    const rate = typeof l.sample_rate === "number" && l.sample_rate > 0 ? l.sample_rate : 1;
    if (where(l) && typeof v === "number") total += v / rate;
  }
  return total;
}

const DONE = new Set(["request done", "batch done", "cron done"]);

function percentile(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? null;
}

async function until<T>(
  probe: () => Promise<T>,
  done: (v: T) => boolean,
  timeoutMs: number,
  label: string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (done(v)) return v;
    if (Date.now() > deadline)
      throw new Error(`${label}: timed out; last: ${JSON.stringify(v).slice(0, 300)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** POSTs sessions as 50-event requests (10 sessions each), retrying 503s. */
async function post(url: string, sessions: SessionSpec[]) {
  const body = JSON.stringify(sessions.flatMap((s) => sessionEvents(s)));
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(`${url}/v1/events`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${DEV_INGEST_KEY}`,
        "content-type": "application/cloudevents-batch+json",
      },
      body,
    });
    if (res.status === 202) return;
    if (attempt > 5) throw new Error(`POST /v1/events: ${res.status} ${await res.text()}`);
    await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
  }
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** As fast as `concurrency` requests in flight allow. */
async function feedBurst(url: string, sessions: SessionSpec[], concurrency: number) {
  const queue = chunks(sessions, 10);
  const started = Date.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let c = queue.shift(); c; c = queue.shift()) await post(url, c);
    }),
  );
  return { started, finished: Date.now() };
}

/** Paced so that the whole list takes `seconds`. */
async function feedPaced(url: string, sessions: SessionSpec[], seconds: number) {
  const requests = chunks(sessions, 10);
  const gapMs = (seconds * 1000) / requests.length;
  const started = Date.now();
  const inflight: Array<Promise<void>> = [];
  for (const [i, c] of requests.entries()) {
    const wait = started + i * gapMs - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    inflight.push(post(url, c));
  }
  await Promise.all(inflight);
  return { started, finished: Date.now() };
}

/** Sessions of `users`, round robin; one in five is not billable (too short). */
function workload(users: string[], perUser: number, tag: string, start: number): SessionSpec[] {
  const sessions: SessionSpec[] = [];
  for (let i = 0; i < perUser; i++) {
    for (const [u, userId] of users.entries()) {
      sessions.push({ sessionId: `${tag}-${u}-${i}`, userId, billable: (i + u) % 5 !== 0, start });
    }
  }
  return sessions;
}

function expectedTotals(sessions: SessionSpec[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const s of sessions) if (s.billable) m.set(s.userId, (m.get(s.userId) ?? 0) + 1);
  return m;
}

interface Cost {
  sessions: number;
  billed_sessions: number;
  events: number;
  queue_messages_per_event: number | null;
  d1_rows_read_per_session: number | null;
  d1_rows_written_per_session: number;
  stripe_calls: number;
  stripe_calls_per_1000_billed: number;
  worker_invocations_per_session: number;
  usd_per_million_sessions: { workers: number; queues: number; d1: number; total: number };
}

function cost(f: Omit<Cost, "usd_per_million_sessions"> & { queue_messages: number }): Cost {
  const workers = f.worker_invocations_per_session * PRICES.workersRequestPerMillion;
  const queues = ((3 * f.queue_messages) / f.sessions) * PRICES.queuesOperationPerMillion;
  const d1Cost =
    (f.d1_rows_read_per_session ?? 0) * PRICES.d1RowsReadPerMillion +
    f.d1_rows_written_per_session * PRICES.d1RowsWrittenPerMillion;
  const { queue_messages: _q, ...rest } = f;
  return {
    ...rest,
    usd_per_million_sessions: { workers, queues, d1: d1Cost, total: workers + queues + d1Cost },
  };
}

async function subscribe(stack: Stack, emu: EmulatorClient, users: string[]): Promise<Map<string, string>> {
  const customerOf = new Map<string, string>();
  for (const [i, user] of users.entries()) {
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(user)
      .setExpirationTime("4h")
      .sign(new TextEncoder().encode("dev-user-token-secret"));
    const res = await fetch(`${stack.url}/api/billing/checkout`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ plan: i % 2 === 0 ? "payg" : "pro" }),
    });
    if (res.status !== 200) throw new Error(`checkout: ${res.status} ${await res.text()}`);
    const { id } = (await res.json()) as { id: string };
    const done = await emu.completeCheckout(id);
    customerOf.set(user, String(done.subscription.customer));
    await until(
      async () => {
        const r = await fetch(`${stack.url}/api/billing/usage`, {
          headers: { authorization: `Bearer ${token}` },
        });
        return ((await r.json()) as { plan: string }).plan;
      },
      (plan) => plan !== "free",
      30_000,
      "plan change",
    );
  }
  return customerOf;
}

async function meterMatches(
  emu: EmulatorClient,
  meter: string,
  customerOf: Map<string, string>,
  expected: Map<string, number>,
) {
  const usage = await emu.meterUsageByCustomer(meter);
  let behind = 0;
  for (const [user, customer] of customerOf) {
    if ((usage.customers[customer]?.value ?? 0) !== (expected.get(user) ?? 0)) behind += 1;
  }
  return behind;
}

async function main() {
  mkdirSync(RESULTS, { recursive: true });
  const work = mkdtempSync(path.join(os.tmpdir(), "aigate-bench-"));
  const results: Record<string, unknown> = {
    started_at: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      cpu_model: os.cpus()[0]?.model,
      memory_gib: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
    },
    settings: {
      ingest_seconds: SECONDS,
      ingest_rounds: ROUNDS,
      connections: CONNECTIONS,
      customers: CUSTOMERS,
      burst_sessions: BURST_SESSIONS,
      paced_seconds: PACED_SECONDS,
      sessions_per_customer_per_minute: SESSIONS_PER_MINUTE,
      settle_seconds: SETTLE_SECONDS,
      cron_tick_seconds: CRON_TICK_SECONDS,
      stripe_post_interval_seconds: POST_INTERVAL_SECONDS,
    },
    prices_usd: PRICES,
  };
  const cleanups: Array<() => Promise<void>> = [];
  let finished = false;
  try {
    log("starting the no-op ceiling");
    const noop = await startWrangler(
      [path.join(BENCH, "noop/front.jsonc"), path.join(BENCH, "noop/noop.jsonc")],
      path.join(work, "noop-state"),
      path.join(work, "noop.log"),
    );
    cleanups.push(noop.stop);
    const ingest: Record<string, unknown> = {};
    const loadAt = (eventsPerRequest: number) => {
      const base = { key: DEV_INGEST_KEY, eventsPerRequest, connections: CONNECTIONS, users: 200 };
      return async (url: string, tag: string) => {
        await runLoad({ ...base, url: `${url}/v1/events`, seconds: 2, maxRequests: 1e7, tag: `${tag}w` });
        return runLoad({ ...base, url: `${url}/v1/events`, seconds: SECONDS, maxRequests: 1e7, tag });
      };
    };

    // --- 1a. ingest alone (its queue, no consumers running) against the runtime's ceiling -------
    log("starting ingest alone behind the same front worker");
    const alone = await startIngestAlone(path.join(work, "alone"));
    cleanups.push(alone.stop);
    for (const eventsPerRequest of [1, 50]) {
      const measure = loadAt(eventsPerRequest);
      // rounds alternate no-op and ingest, so both see the same machine over the same minutes;
      // the ratio reported is the median of the rounds'
      const rounds: Array<{ noop: LoadResult; ingest: LoadResult; ratio: number }> = [];
      let accepted: LogLine[] = [];
      for (let round = 1; round <= ROUNDS; round++) {
        log(
          `ingest alone at ${eventsPerRequest} event(s)/request, round ${round}/${ROUNDS}: no-op, then ingest`,
        );
        const ceiling = await measure(noop.url, `noop${eventsPerRequest}r${round}`);
        const from = readFileSync(alone.logFile).length;
        const ours = await measure(alone.url, `alone${eventsPerRequest}r${round}`);
        accepted = accepted.concat(logLines(alone.logFile, from).filter((l) => l.msg === "request done"));
        rounds.push({ noop: ceiling, ingest: ours, ratio: ours.eventsPerSecond / ceiling.eventsPerSecond });
      }
      const median = [...rounds].sort((a, b) => a.ratio - b.ratio)[Math.floor(rounds.length / 2)];
      ingest[`${eventsPerRequest}`] = {
        noop: median?.noop,
        ingest: median?.ingest,
        ratio_to_ceiling: median?.ratio,
        ratio_by_round: rounds.map((r) => r.ratio),
        queue_messages_per_event:
          sum(accepted, "queue_messages") / Math.max(1, sum(accepted, "events_accepted")),
      };
    }
    await alone.stop();
    cleanups.pop();
    if (process.env.BENCH_ONLY === "ingest") {
      // a quick look at ingest alone while working on it; not a full run
      console.log(JSON.stringify(ingest, null, 2));
      finished = true;
      return;
    }

    // --- 1b. ingest inside the running pipeline (consumers share the same two cores) -----------
    log("starting the stack");
    const stateDir = path.join(work, "stack-state");
    const stack = await startStack({
      port: await freePort(),
      stripePort: await freePort(),
      persistTo: stateDir,
      workDir: path.join(work, "stack"),
      settings: {
        VERDICT_SETTLE_SECONDS: String(SETTLE_SECONDS),
        STRIPE_POST_INTERVAL_SECONDS: String(POST_INTERVAL_SECONDS),
        ...PRODUCTION_LOGGING,
      },
      cronTickSeconds: CRON_TICK_SECONDS,
    });
    cleanups.push(stack.close);
    const stackLog = stack.logFile ?? "";
    const size = () => readFileSync(stackLog).length;
    for (const eventsPerRequest of [1, 50]) {
      const measure = loadAt(eventsPerRequest);
      log(`ingest in the running pipeline at ${eventsPerRequest} event(s)/request`);
      const ceiling = await measure(noop.url, `noopp${eventsPerRequest}`);
      const ours = await measure(stack.url, `in${eventsPerRequest}`);
      const entry = ingest[`${eventsPerRequest}`] as Record<string, unknown>;
      entry.in_pipeline = ours;
      entry.in_pipeline_noop = ceiling;
      entry.in_pipeline_ratio_to_ceiling = ours.eventsPerSecond / ceiling.eventsPerSecond;
    }
    results.ingest = ingest;

    log("waiting for the pipeline to drain the ingest phase");
    await until(
      () =>
        stack.query<{ n: number }>(
          "SELECT count(*) AS n FROM sessions WHERE verdict_at IS NULL AND ended_at IS NOT NULL",
        ),
      (r) => (r[0]?.n ?? 1) === 0,
      600_000,
      "drain",
    );

    // --- 2. paying customers --------------------------------------------------------------------
    const emu = new EmulatorClient(stack.stripeUrl);
    const meter = stack.catalog.meterEventName;
    const users = Array.from({ length: CUSTOMERS }, (_, i) => `bench-paid-${i}`);
    log(`subscribing ${CUSTOMERS} customers (half payg, half pro)`);
    const customerOf = await subscribe(stack, emu, users);
    const start = Date.now() + 1000; // sessions created after the upgrades

    // --- 3. burst: end-to-end throughput ---------------------------------------------------------
    const burst = workload(users, Math.ceil(BURST_SESSIONS / CUSTOMERS), "burst", start);
    const expected = expectedTotals(burst);
    log(`burst: ${burst.length} sessions as fast as ingest takes them`);
    const fed = await feedBurst(stack.url, burst, 4);
    const recordedAt = await until(
      async () => {
        const r = await stack.query<{ n: number }>(
          "SELECT count(*) AS n FROM session_usage WHERE id LIKE 'burst-%'",
        );
        return (r[0]?.n ?? 0) === burst.length ? Date.now() : 0;
      },
      (t) => t > 0,
      600_000,
      "burst recorded",
    );
    const meteredAt = await until(
      async () => ((await meterMatches(emu, meter, customerOf, expected)) === 0 ? Date.now() : 0),
      (t) => t > 0,
      600_000,
      "burst on the meter",
    );
    results.burst = {
      sessions: burst.length,
      events: burst.length * EVENTS_PER_SESSION,
      ingest_seconds: (fed.finished - fed.started) / 1000,
      sessions_per_second_to_billing_records: burst.length / ((recordedAt - fed.started) / 1000),
      sessions_per_second_to_meter_total: burst.length / ((meteredAt - fed.started) / 1000),
      seconds_to_meter_total: (meteredAt - fed.started) / 1000,
    };

    // --- 4. paced: 50 sessions per customer per minute; lag and cost -----------------------------
    await emu.resetCalls();
    const from = size();
    const perUser = Math.round((SESSIONS_PER_MINUTE * PACED_SECONDS) / 60);
    const paced = workload(users, perUser, "paced", Date.now() + 1000);
    for (const [u, n] of expectedTotals(paced)) expected.set(u, (expected.get(u) ?? 0) + n);
    log(`paced: ${paced.length} sessions over ${PACED_SECONDS} s (${SESSIONS_PER_MINUTE}/customer/min)`);
    const pacedFed = await feedPaced(stack.url, paced, PACED_SECONDS);
    const pacedMetered = await until(
      async () => ((await meterMatches(emu, meter, customerOf, expected)) === 0 ? Date.now() : 0),
      (t) => t > 0,
      600_000,
      "paced on the meter",
    );
    const lines = logLines(stackLog, from);
    const calls = (await emu.calls()).filter(
      (c) => c.method === "POST" && c.path === "/v1/billing/meter_events",
    );
    const rows = await stack.query<{
      session_id: string;
      user_id: string;
      settle_due_at: number;
      verdict_at: number;
      recorded_at: number;
    }>(`SELECT s.session_id, s.user_id, s.settle_due_at, s.verdict_at, u.recorded_at FROM sessions s
       JOIN session_usage u ON u.id = s.session_id WHERE s.session_id LIKE 'paced-%' AND u.status = 'success'`);
    const endedToVerdict = rows.map((r) => r.verdict_at - (r.settle_due_at - SETTLE_SECONDS * 1000));
    // On the meter once a counted meter event of its customer, received after the session was
    // recorded, carries a total at least the session's rank among the customer's sessions.
    const verdictToStripe: number[] = [];
    const burstBilled = expectedTotals(burst);
    const byUser = new Map<string, typeof rows>();
    for (const r of rows) byUser.set(r.user_id, [...(byUser.get(r.user_id) ?? []), r]);
    for (const [user, list] of byUser) {
      const events = (await emu.meterEvents(meter, customerOf.get(user))).filter((e) => e.counted);
      list.sort((a, b) => a.recorded_at - b.recorded_at);
      const offset = burstBilled.get(user) ?? 0;
      list.forEach((r, i) => {
        const posted = events.find((e) => e.value >= offset + i + 1 && e.received_at_ms >= r.recorded_at);
        if (posted) verdictToStripe.push(posted.received_at_ms - r.verdict_at);
      });
    }
    const billed = paced.filter((s) => s.billable).length;
    const accepted = lines.filter((l) => l.worker === "ingest" && l.msg === "request done");
    const pacedCost = cost({
      sessions: paced.length,
      billed_sessions: billed,
      events: paced.length * EVENTS_PER_SESSION,
      // ingest's event messages, the classifier's settle reminders (one per batch) and verdicts
      queue_messages:
        sum(accepted, "queue_messages") +
        lines.filter((l) => l.msg === "recorded telemetry" && Number(l.reminders) > 0).length +
        sum(lines, "judged", (l) => l.msg === "judged sessions") +
        sum(lines, "resent", (l) => l.msg === "judged sessions"),
      queue_messages_per_event:
        sum(accepted, "queue_messages") / Math.max(1, sum(accepted, "events_accepted")),
      d1_rows_read_per_session: sum(lines, "d1_rows_read", (l) => DONE.has(String(l.msg))) / paced.length,
      d1_rows_written_per_session:
        sum(lines, "d1_rows_written", (l) => DONE.has(String(l.msg))) / paced.length,
      stripe_calls: calls.length,
      stripe_calls_per_1000_billed: (calls.length / billed) * 1000,
      worker_invocations_per_session: sum(lines, "*", (l) => DONE.has(String(l.msg))) / paced.length,
    });
    const byWorker: Record<string, { invocations: number; d1_rows_read: number; d1_rows_written: number }> =
      {};
    for (const l of lines) {
      if (!DONE.has(String(l.msg))) continue;
      const key = `${String(l.worker)} ${String(l.msg)}`;
      const w = byWorker[key] ?? { invocations: 0, d1_rows_read: 0, d1_rows_written: 0 };
      const weight = typeof l.sample_rate === "number" && l.sample_rate > 0 ? 1 / l.sample_rate : 1;
      w.invocations += weight;
      w.d1_rows_read += Number(l.d1_rows_read ?? 0) * weight;
      w.d1_rows_written += Number(l.d1_rows_written ?? 0) * weight;
      byWorker[key] = w;
    }
    results.paced = {
      d1_by_worker: byWorker,
      sessions: paced.length,
      billed,
      feed_seconds: (pacedFed.finished - pacedFed.started) / 1000,
      seconds_after_feed_to_meter_total: (pacedMetered - pacedFed.finished) / 1000,
      ended_to_verdict_ms: { p50: percentile(endedToVerdict, 50), p99: percentile(endedToVerdict, 99) },
      verdict_to_stripe_ms: {
        p50: percentile(verdictToStripe, 50),
        p99: percentile(verdictToStripe, 99),
        samples: verdictToStripe.length,
      },
      cost: pacedCost,
    };
    await stack.close();
    cleanups.pop();

    // --- 5. the naive baseline under the same paced load ----------------------------------------
    log("starting the naive baseline");
    const naiveStripe = await startStripeEmulator({ port: await freePort() });
    cleanups.push(() => naiveStripe.close());
    const sdk = createStripe({
      STRIPE_SECRET_KEY: DEV_SECRETS.STRIPE_SECRET_KEY,
      STRIPE_API_BASE: naiveStripe.url,
    });
    await ensureStripeCatalog(sdk, "aigate_naive_sessions");
    const naiveDir = path.join(work, "naive");
    mkdirSync(naiveDir, { recursive: true });
    const config = {
      name: "aigate-bench-naive",
      main: path.join(BENCH, "naive/worker.ts"),
      compatibility_date: "2026-04-20",
      compatibility_flags: ["nodejs_compat"],
      // the emulator's test key, so a plain var is fine here
      vars: {
        STRIPE_API_BASE: naiveStripe.url,
        STRIPE_METER_EVENT_NAME: "aigate_naive_sessions",
        STRIPE_SECRET_KEY: DEV_SECRETS.STRIPE_SECRET_KEY,
      },
      d1_databases: [
        {
          binding: "DB",
          database_name: "aigate-bench-naive",
          database_id: "00000000-0000-4000-8000-00000000bbbb",
          migrations_dir: path.join(BENCH, "naive/migrations"),
        },
      ],
    };
    const naiveConfig = path.join(naiveDir, "wrangler.json");
    writeFileSync(naiveConfig, JSON.stringify(config));
    const naiveState = path.join(work, "naive-state");
    const local = ["--local", "--persist-to", naiveState, "--config", naiveConfig];
    await pexec(WRANGLER, ["d1", "migrations", "apply", "aigate-bench-naive", ...local], { cwd: ROOT });
    const inserts: string[] = [];
    for (const user of users) {
      const customer = await sdk.customers.create({ metadata: { user_id: user } });
      inserts.push(`('${user}', '${customer.id}', '', 'payg', 0, 0)`);
    }
    await pexec(
      WRANGLER,
      [
        "d1",
        "execute",
        "aigate-bench-naive",
        ...local,
        "--command",
        `INSERT INTO stripe_customers VALUES ${inserts.join(",")}`,
      ],
      { cwd: ROOT },
    );
    const naiveLog = path.join(naiveDir, "wrangler.log");
    const naive = await startWrangler([naiveConfig], naiveState, naiveLog, {
      STRIPE_SECRET_KEY: DEV_SECRETS.STRIPE_SECRET_KEY,
    });
    cleanups.push(naive.stop);
    const naiveEmu = new EmulatorClient(naiveStripe.url);
    const naiveBurst = workload(users, Math.ceil(BURST_SESSIONS / CUSTOMERS), "burst", Date.now());
    log(`naive burst: ${naiveBurst.length} sessions`);
    const naiveBurstFed = await feedBurst(naive.url, naiveBurst, 4);
    await naiveEmu.resetCalls();
    const naiveFrom = readFileSync(naiveLog).length;
    const naivePaced = workload(users, perUser, "paced", Date.now());
    log(`naive paced: ${naivePaced.length} sessions over ${PACED_SECONDS} s`);
    const naiveFed = await feedPaced(naive.url, naivePaced, PACED_SECONDS);
    const naiveCalls = (await naiveEmu.calls()).filter(
      (c) => c.method === "POST" && c.path === "/v1/billing/meter_events",
    );
    const naiveLines = logLines(naiveLog, naiveFrom).filter((l) => l.msg === "naive batch");
    const naiveBilled = naivePaced.filter((s) => s.billable).length;
    results.naive = {
      burst_sessions_per_second_to_meter:
        naiveBurst.length / ((naiveBurstFed.finished - naiveBurstFed.started) / 1000),
      paced_feed_seconds: (naiveFed.finished - naiveFed.started) / 1000,
      cost: cost({
        sessions: naivePaced.length,
        billed_sessions: naiveBilled,
        events: naivePaced.length * EVENTS_PER_SESSION,
        queue_messages: 0,
        queue_messages_per_event: null,
        d1_rows_read_per_session: null,
        d1_rows_written_per_session: sum(naiveLines, "d1_rows_written") / naivePaced.length,
        stripe_calls: naiveCalls.length,
        stripe_calls_per_1000_billed: (naiveCalls.length / naiveBilled) * 1000,
        worker_invocations_per_session: naiveLines.length / naivePaced.length,
      }),
    };
    results.comparison = {
      stripe_calls_naive_over_ours: naiveCalls.length / naiveBilled / (calls.length / billed),
    };
    finished = true;
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    if (finished) rmSync(work, { recursive: true, force: true });
    else log(`logs and state kept in ${work}`);
  }
  results.finished_at = new Date().toISOString();
  writeFileSync(path.join(RESULTS, "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
  console.log(table(results));
}

function fmt(v: unknown, digits = 2): string {
  if (typeof v !== "number" || !Number.isFinite(v)) return "n/a";
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(digits);
}

function get(o: unknown, ...keys: string[]): unknown {
  let cur: unknown = o;
  for (const k of keys)
    cur = cur && typeof cur === "object" ? (cur as Record<string, unknown>)[k] : undefined;
  return cur;
}

function table(r: Record<string, unknown>): string {
  const rows: Array<[string, string, string]> = [];
  for (const n of ["1", "50"]) {
    rows.push([
      `ingest ${n} ev/req: events/s (ingest alone vs no-op)`,
      fmt(get(r, "ingest", n, "ingest", "eventsPerSecond")),
      fmt(get(r, "ingest", n, "noop", "eventsPerSecond")),
    ]);
    rows.push([
      `ingest ${n} ev/req: ratio to ceiling`,
      fmt(get(r, "ingest", n, "ratio_to_ceiling")),
      "target >= 0.7",
    ]);
    rows.push([
      `ingest ${n} ev/req: p50 / p99 ms (ingest alone)`,
      `${fmt(get(r, "ingest", n, "ingest", "p50Ms"))} / ${fmt(get(r, "ingest", n, "ingest", "p99Ms"))}`,
      `no-op ${fmt(get(r, "ingest", n, "noop", "p50Ms"))} / ${fmt(get(r, "ingest", n, "noop", "p99Ms"))}`,
    ]);
    rows.push([
      `ingest ${n} ev/req: in the running pipeline, ratio`,
      fmt(get(r, "ingest", n, "in_pipeline_ratio_to_ceiling")),
      `${fmt(get(r, "ingest", n, "in_pipeline", "eventsPerSecond"))} vs no-op ${fmt(get(r, "ingest", n, "in_pipeline_noop", "eventsPerSecond"))} events/s`,
    ]);
    rows.push([
      `ingest ${n} ev/req: queue messages per event`,
      fmt(get(r, "ingest", n, "queue_messages_per_event"), 3),
      n === "50" ? "target <= 0.05" : "",
    ]);
  }
  rows.push([
    "burst: sessions/s to billing records",
    fmt(get(r, "burst", "sessions_per_second_to_billing_records")),
    "",
  ]);
  rows.push([
    "burst: sessions/s to Stripe meter total",
    fmt(get(r, "burst", "sessions_per_second_to_meter_total")),
    `naive ${fmt(get(r, "naive", "burst_sessions_per_second_to_meter"))}`,
  ]);
  rows.push([
    "paced: ended -> verdict p50 / p99 ms",
    `${fmt(get(r, "paced", "ended_to_verdict_ms", "p50"))} / ${fmt(get(r, "paced", "ended_to_verdict_ms", "p99"))}`,
    `settle ${SETTLE_SECONDS * 1000}`,
  ]);
  rows.push([
    "paced: verdict -> Stripe p50 / p99 ms",
    `${fmt(get(r, "paced", "verdict_to_stripe_ms", "p50"))} / ${fmt(get(r, "paced", "verdict_to_stripe_ms", "p99"))}`,
    `post interval ${POST_INTERVAL_SECONDS * 1000}`,
  ]);
  rows.push([
    "D1 rows written per session",
    fmt(get(r, "paced", "cost", "d1_rows_written_per_session")),
    `naive ${fmt(get(r, "naive", "cost", "d1_rows_written_per_session"))}; target <= 8`,
  ]);
  rows.push(["D1 rows read per session", fmt(get(r, "paced", "cost", "d1_rows_read_per_session")), ""]);
  rows.push([
    "Stripe calls per 1000 billed sessions",
    fmt(get(r, "paced", "cost", "stripe_calls_per_1000_billed")),
    `naive ${fmt(get(r, "naive", "cost", "stripe_calls_per_1000_billed"))}`,
  ]);
  rows.push([
    "Stripe calls: naive / ours",
    fmt(get(r, "comparison", "stripe_calls_naive_over_ours")),
    "target >= 20",
  ]);
  rows.push([
    "USD per 1M sessions (Workers+Queues+D1)",
    fmt(get(r, "paced", "cost", "usd_per_million_sessions", "total")),
    `naive ${fmt(get(r, "naive", "cost", "usd_per_million_sessions", "total"))}`,
  ]);
  const w = Math.max(...rows.map((x) => x[0].length));
  const w2 = Math.max(...rows.map((x) => x[1].length));
  return rows.map(([a, b, c]) => `${a.padEnd(w)}  ${b.padStart(w2)}  ${c}`).join("\n");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
