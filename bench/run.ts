/**
 * `npm run bench`: measures the pipeline on the local runtime, in one run, against its two
 * reference points: a no-op Worker served the same way (the runtime's ceiling for ingest) and
 * the naive baseline of the pricing strategy (one D1 update and one Stripe call per session).
 * Prints a table and writes bench/results/latest.json.
 *
 * Settings (environment): BENCH_SECONDS (per ingest measurement, default 8),
 * BENCH_CONNECTIONS (default 8), BENCH_CUSTOMERS (paying customers, default 20),
 * BENCH_E2E_SECONDS (length of the end-to-end feed, default 60), BENCH_SESSIONS_PER_MINUTE
 * (per customer, default 50).
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePort, ROOT, startStack } from "../scripts/dev/stack";
import { createStripe } from "../shared/src/stripe";
import { ensureStripeCatalog } from "../shared/src/stripeCatalog";
import { EmulatorClient } from "../test/stripe-emulator/client";
import { startStripeEmulator } from "../test/stripe-emulator/server";
import type { LoadConfig, LoadResult } from "./load";
import { type SessionSpec, sessionEvents } from "./workload";

const pexec = promisify(execFile);
const WRANGLER = path.join(ROOT, "node_modules/.bin/wrangler");
const TSX = path.join(ROOT, "node_modules/.bin/tsx");
const BENCH = path.join(ROOT, "bench");
const RESULTS = path.join(BENCH, "results");

const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 8);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 20);
const E2E_SECONDS = Number(process.env.BENCH_E2E_SECONDS ?? 60);
const SESSIONS_PER_MINUTE = Number(process.env.BENCH_SESSIONS_PER_MINUTE ?? 50);
const SETTLE_SECONDS = 2;
const CRON_TICK_SECONDS = 5;

/** List prices used for the cost model (USD), as published on 2026-11-25. */
export const PRICES = {
  workersRequestPerMillion: 0.3,
  queuesOperationPerMillion: 0.4, // a message costs 3 operations (write, read, delete) per 64 KB
  d1RowsReadPerMillion: 0.001,
  d1RowsWrittenPerMillion: 1.0,
} as const;

function log(msg: string) {
  process.stderr.write(`[bench] ${msg}\n`);
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

/** Starts a plain `wrangler dev` with the given configs (the no-op ceiling, the naive baseline). */
async function startWrangler(configs: string[], port: number, persistTo: string, logFile: string) {
  const args = ["dev", ...configs.flatMap((c) => ["-c", c])];
  args.push("--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()));
  args.push("--persist-to", persistTo, "--show-interactive-dev-session=false");
  const child = spawn(WRANGLER, args, {
    cwd: ROOT,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", STRIPE_SECRET_KEY: "sk_test_emulator" },
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
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () => killGroup(child),
  };
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

/** Structured log lines (JSON objects) written after byte `from` of a log file. */
function logLines(file: string, from: number): Array<Record<string, unknown>> {
  const text = readFileSync(file, "utf8").slice(from);
  const out: Array<Record<string, unknown>> = [];
  for (const raw of text.split("\n")) {
    const start = raw.indexOf("{");
    if (start < 0) continue;
    try {
      const parsed: unknown = JSON.parse(raw.slice(start));
      if (parsed && typeof parsed === "object") out.push(parsed as Record<string, unknown>);
    } catch {
      // not a structured line
    }
  }
  return out;
}

function sumField(lines: Array<Record<string, unknown>>, field: string, worker?: string): number {
  let total = 0;
  for (const l of lines) {
    if (worker !== undefined && l.worker !== worker) continue;
    const v = l[field];
    if (typeof v === "number") total += v;
  }
  return total;
}

async function d1Query<T>(persistTo: string, configFile: string, sql: string): Promise<T[]> {
  const { stdout } = await pexec(
    WRANGLER,
    [
      "d1",
      "execute",
      "aigate-billing",
      "--local",
      "--persist-to",
      persistTo,
      "--config",
      configFile,
      "--json",
      "--command",
      sql,
    ],
    { cwd: ROOT, maxBuffer: 64 << 20, env: { ...process.env, WRANGLER_SEND_METRICS: "false" } },
  );
  const parsed = JSON.parse(stdout) as Array<{ results: T[] }>;
  return parsed[0]?.results ?? [];
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] ?? Number.NaN;
}

async function eventually<T>(
  probe: () => Promise<T>,
  done: (v: T) => boolean,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out; last: ${JSON.stringify(v).slice(0, 300)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Sends sessions as 50-event requests, paced so each customer makes `perMinute` sessions a minute. */
async function feed(url: string, key: string, sessions: SessionSpec[], seconds: number) {
  const perRequest = 10; // 10 sessions x 5 events = 50 events per request
  const requests = Math.ceil(sessions.length / perRequest);
  const gapMs = (seconds * 1000) / requests;
  const started = Date.now();
  const inflight: Array<Promise<void>> = [];
  for (let i = 0; i < requests; i++) {
    const due = started + i * gapMs;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const chunk = sessions.slice(i * perRequest, (i + 1) * perRequest);
    const body = JSON.stringify(chunk.flatMap((s) => sessionEvents(s)));
    inflight.push(
      (async () => {
        for (let attempt = 0; ; attempt++) {
          const res = await fetch(`${url}/v1/events`, {
            method: "POST",
            headers: { authorization: `Bearer ${key}`, "content-type": "application/cloudevents-batch+json" },
            body,
          });
          if (res.status === 202) return;
          if (attempt > 5) throw new Error(`feed failed: ${res.status} ${await res.text()}`);
          await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
        }
      })(),
    );
  }
  await Promise.all(inflight);
  return { started, finished: Date.now(), requests };
}

function workloadFor(customers: string[], seconds: number, perMinute: number, tag: string): SessionSpec[] {
  const perCustomer = Math.round((perMinute * seconds) / 60);
  const sessions: SessionSpec[] = [];
  const start = Date.now() - 120_000;
  for (let i = 0; i < perCustomer; i++) {
    for (const [c, user] of customers.entries()) {
      sessions.push({ sessionId: `${tag}-${c}-${i}`, userId: user, billable: (i + c) % 5 !== 0, start });
    }
  }
  return sessions;
}

interface CostFigures {
  sessions: number;
  billedSessions: number;
  events: number;
  queueMessages: number;
  queueMessagesPerEvent: number;
  d1RowsReadPerSession: number;
  d1RowsWrittenPerSession: number;
  stripeCalls: number;
  stripeCallsPer1000Billed: number;
  workerInvocationsPerSession: number;
  usdPerMillionSessions: {
    workers: number;
    queues: number;
    d1: number;
    total: number;
  };
}

function costPerMillion(f: Omit<CostFigures, "usdPerMillionSessions">): CostFigures["usdPerMillionSessions"] {
  const workers = f.workerInvocationsPerSession * PRICES.workersRequestPerMillion;
  const queues =
    f.queueMessages > 0 ? ((f.queueMessages * 3) / f.sessions) * PRICES.queuesOperationPerMillion : 0;
  const d1 =
    f.d1RowsReadPerSession * PRICES.d1RowsReadPerMillion +
    f.d1RowsWrittenPerSession * PRICES.d1RowsWrittenPerMillion;
  return { workers, queues, d1, total: workers + queues + d1 };
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
      SECONDS,
      CONNECTIONS,
      CUSTOMERS,
      E2E_SECONDS,
      SESSIONS_PER_MINUTE,
      SETTLE_SECONDS,
      CRON_TICK_SECONDS,
    },
    prices: PRICES,
  };
  const cleanups: Array<() => Promise<void>> = [];
  try {
    // --- the three systems under test -----------------------------------------------------
    log("starting the no-op ceiling");
    const noop = await startWrangler(
      [path.join(BENCH, "noop/front.jsonc"), path.join(BENCH, "noop/noop.jsonc")],
      await freePort(),
      path.join(work, "noop-state"),
      path.join(work, "noop.log"),
    );
    cleanups.push(noop.stop);

    log("starting the stack");
    const stack = await startStack({
      port: await freePort(),
      stripePort: await freePort(),
      persistTo: path.join(work, "stack-state"),
      workDir: path.join(work, "stack"),
      settings: { VERDICT_SETTLE_SECONDS: String(SETTLE_SECONDS), STRIPE_POST_INTERVAL_SECONDS: "30" },
      cronTickSeconds: CRON_TICK_SECONDS,
    });
    cleanups.push(stack.close);
    const stackLog = stack.logFile ?? "";
    const apiConfig = path.join(work, "stack/config/aigate-api.json");

    // --- ingest throughput ------------------------------------------------------------------
    const ingest: Record<string, unknown> = {};
    for (const eventsPerRequest of [1, 50]) {
      const base = { key: "aig_dev_ingest", eventsPerRequest, connections: CONNECTIONS, users: 200 };
      const run = async (target: string, tag: string) => {
        await runLoad({
          ...base,
          url: `${target}/v1/events`,
          seconds: 2,
          maxRequests: 10_000_000,
          tag: `${tag}-warm`,
        });
        return runLoad({
          ...base,
          url: `${target}/v1/events`,
          seconds: SECONDS,
          maxRequests: 10_000_000,
          tag,
        });
      };
      log(`ingest, ${eventsPerRequest} event(s) per request: no-op`);
      const ceiling = await run(noop.url, `noop${eventsPerRequest}`);
      log(`ingest, ${eventsPerRequest} event(s) per request: stack`);
      const offset = readFileSync(stackLog).length;
      const ours = await run(stack.url, `ingest${eventsPerRequest}`);
      const lines = logLines(stackLog, offset).filter((l) => l.worker === "ingest");
      const events = sumField(lines, "events");
      const messages = sumField(lines, "queue_messages");
      ingest[`events_per_request_${eventsPerRequest}`] = {
        noop: ceiling,
        stack: ours,
        ratio_events_per_second: ours.eventsPerSecond / ceiling.eventsPerSecond,
        queue_messages_per_event: events > 0 ? messages / events : null,
      };
    }
    results.ingest = ingest;

    log("letting the pipeline drain the ingest phase");
    await eventually(
      () =>
        d1Query<{ n: number }>(
          path.join(work, "stack-state"),
          apiConfig,
          "SELECT count(*) AS n FROM sessions WHERE verdict_at IS NULL AND ended_at IS NOT NULL",
        ),
      (r) => (r[0]?.n ?? 1) === 0,
      300_000,
    );

    // --- end to end, paying customers ---------------------------------------------------------
    const emu = new EmulatorClient(stack.stripeUrl);
    log(`subscribing ${CUSTOMERS} customers (half payg, half pro)`);
    const { SignJWT } = await import("jose");
    const users: string[] = [];
    const customerOf = new Map<string, string>();
    for (let i = 0; i < CUSTOMERS; i++) {
      const user = `bench-paid-${i}`;
      const token = await new SignJWT({})
        .setProtectedHeader({ alg: "HS256" })
        .setSubject(user)
        .setExpirationTime("2h")
        .sign(new TextEncoder().encode("dev-user-token-secret"));
      const res = await fetch(`${stack.url}/api/billing/checkout`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ plan: i % 2 === 0 ? "payg" : "pro" }),
      });
      if (res.status !== 200) throw new Error(`checkout failed: ${res.status} ${await res.text()}`);
      const { id } = (await res.json()) as { id: string };
      const done = await emu.completeCheckout(id);
      customerOf.set(user, String(done.subscription.customer));
      users.push(user);
      await eventually(
        async () =>
          (await (
            await fetch(`${stack.url}/api/billing/usage`, { headers: { authorization: `Bearer ${token}` } })
          ).json()) as { plan: string },
        (u) => u.plan !== "free",
        30_000,
      );
    }
    await emu.resetCalls();
    const e2eSessions = workloadFor(users, E2E_SECONDS, SESSIONS_PER_MINUTE, "e2e");
    const billable = e2eSessions.filter((s) => s.billable);
    const expected = new Map<string, number>();
    for (const s of billable) expected.set(s.userId, (expected.get(s.userId) ?? 0) + 1);
    const offset = readFileSync(stackLog).length;
    log(
      `end to end: ${e2eSessions.length} sessions over ${E2E_SECONDS} s (${SESSIONS_PER_MINUTE}/customer/min)`,
    );
    const fed = await feed(stack.url, "aig_dev_ingest", e2eSessions, E2E_SECONDS);
    const meter = stack.catalog.meterEventName;
    const meterDone = await eventually(
      async () => {
        const usage = await emu.meterUsageByCustomer(meter);
        return users.every(
          (u) => (usage.customers[customerOf.get(u) ?? ""]?.value ?? 0) === (expected.get(u) ?? 0),
        )
          ? Date.now()
          : 0;
      },
      (t) => t > 0,
      600_000,
    );
    const calls = (await emu.calls()).filter(
      (c) => c.path === "/v1/billing/meter_events" && c.method === "POST",
    );
    const stateDir = path.join(work, "stack-state");
    const lagRows = await d1Query<{
      session_id: string;
      user_id: string;
      settle_due_at: number;
      verdict_at: number;
      recorded_at: number;
    }>(
      stateDir,
      apiConfig,
      `SELECT s.session_id, s.user_id, s.settle_due_at, s.verdict_at, u.recorded_at FROM sessions s
       JOIN session_usage u ON u.id = s.session_id WHERE s.session_id LIKE 'e2e-%' AND u.status = 'success'`,
    );
    const endedToVerdict = lagRows.map((r) => r.verdict_at - (r.settle_due_at - SETTLE_SECONDS * 1000));
    // verdict -> Stripe: a session is on the meter once a meter event for its customer carries a
    // total >= its rank among the customer's recorded sessions.
    const verdictToStripe: number[] = [];
    const byUser = new Map<string, typeof lagRows>();
    for (const r of lagRows) byUser.set(r.user_id, [...(byUser.get(r.user_id) ?? []), r]);
    for (const [user, rows] of byUser) {
      const events = (await emu.meterEvents(meter, customerOf.get(user))).filter((e) => e.counted);
      rows.sort((a, b) => a.recorded_at - b.recorded_at);
      rows.forEach((r, i) => {
        const posted = events.find((e) => e.value >= i + 1 && e.received_at_ms >= r.recorded_at);
        if (posted) verdictToStripe.push(posted.received_at_ms - r.verdict_at);
      });
    }
    const lines = logLines(stackLog, offset);
    const sessionsTotal = e2eSessions.length;
    const figures = {
      sessions: sessionsTotal,
      billedSessions: billable.length,
      events: sumField(lines, "events", "ingest"),
      queueMessages: sumField(lines, "queue_messages"),
      queueMessagesPerEvent:
        sumField(lines, "queue_messages", "ingest") / Math.max(1, sumField(lines, "events", "ingest")),
      d1RowsReadPerSession: sumField(lines, "d1_rows_read") / sessionsTotal,
      d1RowsWrittenPerSession: sumField(lines, "d1_rows_written") / sessionsTotal,
      stripeCalls: calls.length,
      stripeCallsPer1000Billed: (calls.length / billable.length) * 1000,
      workerInvocationsPerSession:
        lines.filter((l) => l.msg === "request done" || l.msg === "batch done").length / sessionsTotal,
    };
    results.end_to_end = {
      sessions: sessionsTotal,
      billed: billable.length,
      feed_seconds: (fed.finished - fed.started) / 1000,
      sessions_per_second_to_meter: sessionsTotal / ((meterDone - fed.started) / 1000),
      seconds_to_meter_total: (meterDone - fed.started) / 1000,
      ended_to_verdict_ms: {
        p50: percentile(endedToVerdict, 50),
        p99: percentile(endedToVerdict, 99),
        settle_window_ms: SETTLE_SECONDS * 1000,
      },
      verdict_to_stripe_ms: {
        p50: percentile(verdictToStripe, 50),
        p99: percentile(verdictToStripe, 99),
        samples: verdictToStripe.length,
      },
      cost: { ...figures, usdPerMillionSessions: costPerMillion(figures) },
    };
    await stack.close();
    cleanups.pop();

    // --- the naive baseline -------------------------------------------------------------------
    log("starting the naive baseline");
    const naiveStripe = await startStripeEmulator({ port: await freePort() });
    cleanups.push(() => naiveStripe.close());
    const sdk = createStripe({ STRIPE_SECRET_KEY: "sk_test_emulator", STRIPE_API_BASE: naiveStripe.url });
    await ensureStripeCatalog(sdk, "aigate_naive_sessions");
    const naiveDir = path.join(work, "naive");
    mkdirSync(naiveDir, { recursive: true });
    const naiveConfig = JSON.parse(readFileSync(path.join(BENCH, "naive/wrangler.jsonc"), "utf8")) as Record<
      string,
      unknown
    >;
    naiveConfig.main = path.join(BENCH, "naive/worker.ts");
    (naiveConfig.vars as Record<string, string>).STRIPE_API_BASE = naiveStripe.url;
    const db = (naiveConfig.d1_databases as Array<Record<string, unknown>>)[0];
    if (db) db.migrations_dir = path.join(BENCH, "naive/migrations");
    const naiveConfigFile = path.join(naiveDir, "wrangler.json");
    writeFileSync(naiveConfigFile, JSON.stringify(naiveConfig));
    const naiveState = path.join(work, "naive-state");
    await pexec(
      WRANGLER,
      [
        "d1",
        "migrations",
        "apply",
        "aigate-bench-naive",
        "--local",
        "--persist-to",
        naiveState,
        "--config",
        naiveConfigFile,
      ],
      { cwd: ROOT },
    );
    const naiveUsers: string[] = [];
    const inserts: string[] = [];
    for (let i = 0; i < CUSTOMERS; i++) {
      const customer = await sdk.customers.create({ metadata: { user_id: `naive-${i}` } });
      naiveUsers.push(`naive-${i}`);
      inserts.push(`('naive-${i}', '${customer.id}', '', 'payg', 0, 0)`);
    }
    await pexec(
      WRANGLER,
      [
        "d1",
        "execute",
        "aigate-bench-naive",
        "--local",
        "--persist-to",
        naiveState,
        "--config",
        naiveConfigFile,
        "--command",
        `INSERT INTO stripe_customers VALUES ${inserts.join(",")}`,
      ],
      { cwd: ROOT },
    );
    const naiveLogFile = path.join(naiveDir, "wrangler.log");
    const naive = await startWrangler([naiveConfigFile], await freePort(), naiveState, naiveLogFile);
    cleanups.push(naive.stop);
    const naiveSessions = workloadFor(naiveUsers, E2E_SECONDS, SESSIONS_PER_MINUTE, "naive");
    const naiveBillable = naiveSessions.filter((s) => s.billable).length;
    log(`naive: ${naiveSessions.length} sessions over ${E2E_SECONDS} s`);
    const naiveFed = await feed(naive.url, "unused", naiveSessions, E2E_SECONDS);
    const naiveEmu = new EmulatorClient(naiveStripe.url);
    const naiveCalls = (await naiveEmu.calls()).filter(
      (c) => c.path === "/v1/billing/meter_events" && c.method === "POST",
    );
    const naiveLines = logLines(naiveLogFile, 0);
    const naiveFigures = {
      sessions: naiveSessions.length,
      billedSessions: naiveBillable,
      events: naiveSessions.length * 5,
      queueMessages: 0,
      queueMessagesPerEvent: 0,
      d1RowsReadPerSession: Number.NaN,
      d1RowsWrittenPerSession: sumField(naiveLines, "d1_rows_written") / naiveSessions.length,
      stripeCalls: naiveCalls.length,
      stripeCallsPer1000Billed: (naiveCalls.length / naiveBillable) * 1000,
      workerInvocationsPerSession:
        naiveLines.filter((l) => l.msg === "naive batch").length / naiveSessions.length,
    };
    results.naive = {
      sessions: naiveSessions.length,
      feed_seconds: (naiveFed.finished - naiveFed.started) / 1000,
      sessions_per_second: naiveSessions.length / ((naiveFed.finished - naiveFed.started) / 1000),
      cost: {
        ...naiveFigures,
        usdPerMillionSessions: costPerMillion({ ...naiveFigures, d1RowsReadPerSession: 0 }),
      },
    };
    results.comparison = {
      stripe_calls_ratio_naive_over_ours:
        naiveFigures.stripeCallsPer1000Billed / figures.stripeCallsPer1000Billed,
    };
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
  results.finished_at = new Date().toISOString();
  writeFileSync(path.join(RESULTS, "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
  printTable(results);
}

function printTable(r: Record<string, unknown>) {
  console.log(JSON.stringify(r, null, 2));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
