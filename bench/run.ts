/**
 * `npm run bench`: measures the pipeline on the local runtime, in one run, against its two
 * reference points: a no-op Worker served the same way (the runtime's ceiling for ingest) and
 * the naive baseline of the pricing strategy (one D1 update and one Stripe call per session).
 * Load comes from separate processes over loopback, bounded in count and time. Runs the phases
 * of phases/index.ts in order, prints a table and the targets, and writes
 * bench/results/latest.json.
 *
 * Settings (environment): BENCH_SECONDS (per ingest measurement, default 6), BENCH_ROUNDS
 * (alternating no-op / ingest rounds, default 3), BENCH_CONNECTIONS
 * (default 8), BENCH_CUSTOMERS (paying customers, default 20), BENCH_BURST_SESSIONS (default
 * 2000), BENCH_PACED_SECONDS (default 120), BENCH_SESSIONS_PER_MINUTE (per customer, default 50).
 * BENCH_ONLY (phase keys, comma-separated, e.g. `ingest`): runs only those phases and prints
 * their results instead of writing latest.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Phase, PhaseContext, Resource, Row } from "./lib/phase";
import { log } from "./lib/processes";
import { type TargetCheck, table, targetChecks, targetLines } from "./lib/report";
import { KEEPS_RUNNING, ResourcePool } from "./lib/resources";
import { PRICES, RESULTS, type Settings, settingsFromEnv } from "./lib/settings";
import { PHASES, type PhaseResults } from "./phases";

export interface BenchResults extends Partial<PhaseResults> {
  started_at: string;
  machine: { cpus: number; cpu_model: string | undefined; memory_gib: number; node: string };
  settings: Settings;
  prices_usd: typeof PRICES;
  /** Every figure with a target, in table order. */
  targets: TargetCheck[];
  finished_at: string;
}

type AnyPhase = (typeof PHASES)[number];

function selectPhases(only: string | undefined): readonly AnyPhase[] {
  if (!only) return PHASES;
  const keys = only.split(",").map((k) => k.trim());
  const unknown = keys.filter((k) => !PHASES.some((p) => p.key === k));
  if (unknown.length > 0)
    throw new Error(
      `BENCH_ONLY: no phase ${unknown.join(", ")}; phases: ${PHASES.map((p) => p.key).join(", ")}`,
    );
  return PHASES.filter((p) => keys.includes(p.key));
}

/** Index of the last phase that needs each resource running. */
function lastUses(phases: readonly AnyPhase[]): Map<Resource, number> {
  const last = new Map<Resource, number>();
  const mark = (r: Resource, i: number) => {
    last.set(r, i);
    for (const kept of KEEPS_RUNNING[r]) mark(kept, i);
  };
  phases.forEach((p, i) => {
    for (const r of p.uses) mark(r, i);
  });
  return last;
}

async function runPhase<K extends keyof PhaseResults>(
  phase: Phase<K, PhaseResults[K]>,
  ctx: PhaseContext,
  results: Partial<PhaseResults>,
) {
  results[phase.key] = await phase.run(ctx);
}

function rowsOf<K extends keyof PhaseResults>(
  phase: Phase<K, PhaseResults[K]>,
  results: Partial<PhaseResults>,
  settings: Settings,
): Row[] {
  const result = results[phase.key];
  return result === undefined || !phase.rows ? [] : phase.rows(result, results, settings);
}

async function main() {
  const settings = settingsFromEnv();
  const only = process.env.BENCH_ONLY;
  const phases = selectPhases(only);
  mkdirSync(RESULTS, { recursive: true });
  const work = mkdtempSync(path.join(os.tmpdir(), "aigate-bench-"));
  const startedAt = new Date().toISOString();
  const results: Partial<PhaseResults> = {};
  const pool = new ResourcePool(settings, work);
  const last = lastUses(phases);
  const artifacts = {};
  let finished = false;
  try {
    for (const [i, phase] of phases.entries()) {
      log(`phase ${phase.key}`);
      const ctx: PhaseContext = {
        settings,
        dir: path.join(work, phase.key),
        log,
        results,
        artifacts,
        use: (resource) => {
          if (!phase.uses.includes(resource) && !phase.uses.some((u) => KEEPS_RUNNING[u].includes(resource)))
            throw new Error(`phase ${phase.key} uses ${resource} without listing it in its uses`);
          return pool.get(resource);
        },
      };
      await runPhase(phase, ctx, results).catch((err: unknown) => {
        throw new Error(`phase ${phase.key} failed`, { cause: err });
      });
      for (const [resource, at] of last) if (at <= i && pool.isRunning(resource)) await pool.stop(resource);
    }
    finished = true;
  } finally {
    await pool.stopAll();
    if (finished) rmSync(work, { recursive: true, force: true });
    else log(`logs and state kept in ${work}`);
  }
  const rows = phases.flatMap((p) => rowsOf(p, results, settings));
  const targets = targetChecks(rows);
  const out: BenchResults = {
    started_at: startedAt,
    machine: {
      cpus: os.cpus().length,
      cpu_model: os.cpus()[0]?.model,
      memory_gib: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
    },
    settings,
    prices_usd: PRICES,
    ...results,
    targets,
    finished_at: new Date().toISOString(),
  };
  if (only) console.log(JSON.stringify(out, null, 2));
  else writeFileSync(path.join(RESULTS, "latest.json"), `${JSON.stringify(out, null, 2)}\n`);
  console.log(table(rows));
  console.log(`\ntargets:\n${targetLines(targets)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
