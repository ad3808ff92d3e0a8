/**
 * The run's settings, read once from the environment, and the fixed facts the figures rest on:
 * the stack's timing as benchmarked and the list prices of the cost model.
 */
import path from "node:path";
import { ROOT } from "@aigate/scripts/dev/stack";

export const BENCH = path.join(ROOT, "bench");
export const RESULTS = path.join(BENCH, "results");

export interface Settings {
  /** Seconds per ingest measurement. */
  ingest_seconds: number;
  /** Alternating no-op / ingest rounds per request size (the median ratio is reported). */
  ingest_rounds: number;
  connections: number;
  /** Paying customers, half payg, half pro. */
  customers: number;
  burst_sessions: number;
  paced_seconds: number;
  sessions_per_customer_per_minute: number;
  /** The load of the at-load phases: this many times the paced rate, for `load_seconds`. */
  load_factor: number;
  load_seconds: number;
  /**
   * The stack as deployed, but for the settle window (dev value) and the cron "minute", which
   * fires every `cron_tick_seconds` (10 by default; 60 is production's cadence).
   */
  settle_seconds: number;
  cron_tick_seconds: number;
  stripe_post_interval_seconds: number;
}

/** Environment variable, default. */
const FROM_ENV = {
  ingest_seconds: ["BENCH_SECONDS", 6],
  ingest_rounds: ["BENCH_ROUNDS", 3],
  connections: ["BENCH_CONNECTIONS", 8],
  customers: ["BENCH_CUSTOMERS", 20],
  burst_sessions: ["BENCH_BURST_SESSIONS", 2000],
  paced_seconds: ["BENCH_PACED_SECONDS", 120],
  sessions_per_customer_per_minute: ["BENCH_SESSIONS_PER_MINUTE", 50],
  load_factor: ["BENCH_LOAD_FACTOR", 4],
  load_seconds: ["BENCH_LOAD_SECONDS", 60],
  cron_tick_seconds: ["BENCH_CRON_TICK_SECONDS", 10],
} as const;

export function settingsFromEnv(env: NodeJS.ProcessEnv = process.env): Settings {
  const read = (key: keyof typeof FROM_ENV): number => {
    const [name, fallback] = FROM_ENV[key];
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a whole number >= 1, got "${raw}"`);
    return n;
  };
  return {
    ingest_seconds: read("ingest_seconds"),
    ingest_rounds: read("ingest_rounds"),
    connections: read("connections"),
    customers: read("customers"),
    burst_sessions: read("burst_sessions"),
    paced_seconds: read("paced_seconds"),
    sessions_per_customer_per_minute: read("sessions_per_customer_per_minute"),
    load_factor: read("load_factor"),
    load_seconds: read("load_seconds"),
    settle_seconds: 2,
    cron_tick_seconds: read("cron_tick_seconds"),
    stripe_post_interval_seconds: 60,
  };
}

/** Ingest logs 1 % of its successful requests in production (npm run dev logs them all). */
export const PRODUCTION_LOGGING = { SUCCESS_LOG_SAMPLE_RATE: "0.01" };

/** List prices used for the cost model (USD), as published on 2026-11-25 (Workers Paid plan). */
export const PRICES = {
  workersRequestPerMillion: 0.3,
  /** A message costs 3 operations (write, read, delete) per 64 KB. */
  queuesOperationPerMillion: 0.4,
  d1RowsReadPerMillion: 0.001,
  d1RowsWrittenPerMillion: 1.0,
} as const;
