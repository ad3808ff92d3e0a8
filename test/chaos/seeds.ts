/**
 * `npm run chaos:seeds -w @aigate/test`: the chaos run (chaos.test.ts, plain and lifecycle parts)
 * on several seeds other than the CI seed, one after the other, each on its own fresh stack.
 * Prints one line per seed as it finishes and a table at the end; every result is also appended,
 * as JSON, to CHAOS_SEEDS_OUT (default test/.artifacts/chaos-seeds.jsonl), and each run's whole
 * output is kept in chaos-seeds/<seed>.log beside it.
 *
 *   CHAOS_SEEDS=20 npm run chaos:seeds -w @aigate/test        # the first 20 seeds of the list
 *   CHAOS_SEED_LIST=11,12 npm run chaos:seeds -w @aigate/test # these seeds
 *
 * The list is fixed (seedList below), so that a run of N seeds is always the same N seeds.
 */
import { spawn } from "node:child_process";
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { DEFAULT_SEED } from "./config";
import { hash32 } from "./random";

export interface SeedResult {
  seed: number;
  exit: number;
  seconds: number;
  plain: string | null;
  lifecycle: string | null;
  mismatches: number | null;
  finishedAt: string;
}

/** The i-th seed of the fixed list (never the CI seed). */
export function seedList(n: number): number[] {
  const out: number[] = [];
  for (let i = 1; out.length < n; i++) {
    const seed = hash32(`chaos-seeds:${i}`);
    if (seed !== DEFAULT_SEED && !out.includes(seed)) out.push(seed);
  }
  return out;
}

/** The summary lines of one run's output, and its total of mismatches (null if a line is missing). */
export function summarize(output: string): Pick<SeedResult, "plain" | "lifecycle" | "mismatches"> {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: strips the colour codes of vitest's output
  const text = output.replace(/\u001b\[[0-9;]*m/g, "");
  const plain = text.match(/^chaos: .* (\d+) mismatches$/m);
  const lifecycle = text.match(/^chaos lifecycle: .* (\d+) mismatches$/m);
  return {
    plain: plain?.[0] ?? null,
    lifecycle: lifecycle?.[0] ?? null,
    mismatches: plain && lifecycle ? Number(plain[1]) + Number(lifecycle[1]) : null,
  };
}

async function runSeed(seed: number, cwd: string, logDir: string): Promise<SeedResult> {
  const started = Date.now();
  let output = "";
  const exit = await new Promise<number>((resolve) => {
    const child = spawn("npx", ["vitest", "run", "--project", "chaos", "chaos/chaos.test.ts"], {
      cwd,
      env: { CHAOS_LIFECYCLE: "1", ...process.env, CHAOS_SEED: String(seed) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.on("close", (code) => resolve(code ?? 1));
  });
  writeFileSync(path.join(logDir, `${seed}.log`), output);
  return {
    seed,
    exit,
    seconds: Math.round((Date.now() - started) / 1000),
    ...summarize(output),
    finishedAt: new Date().toISOString(),
  };
}

async function main() {
  const root = path.resolve(import.meta.dirname, "..");
  const list = process.env.CHAOS_SEED_LIST
    ? process.env.CHAOS_SEED_LIST.split(",").map((s) => Number(s.trim()))
    : seedList(Number(process.env.CHAOS_SEEDS ?? 20));
  if (list.some((s) => !Number.isInteger(s) || s < 0)) throw new Error("seeds must be non-negative integers");
  const out = process.env.CHAOS_SEEDS_OUT ?? path.join(root, ".artifacts/chaos-seeds.jsonl");
  mkdirSync(path.dirname(out), { recursive: true });
  // every run's whole output (mismatches, evidence, the stack's log lines), next to the results
  const logDir = path.join(path.dirname(out), "chaos-seeds");
  mkdirSync(logDir, { recursive: true });
  const results: SeedResult[] = [];
  for (const seed of list) {
    const r = await runSeed(seed, root, logDir);
    results.push(r);
    appendFileSync(out, `${JSON.stringify(r)}\n`);
    console.log(
      `seed ${seed}: exit ${r.exit}, ${r.mismatches ?? "?"} mismatches, ${r.seconds} s | ${r.plain ?? "no summary"} | ${r.lifecycle ?? "no lifecycle summary"}`,
    );
  }
  console.log("\n| seed | result | mismatches | duration |\n| --- | --- | --- | --- |");
  for (const r of results) {
    console.log(
      `| ${r.seed} | ${r.exit === 0 ? "pass" : "FAIL"} | ${r.mismatches ?? "?"} | ${Math.floor(r.seconds / 60)} min ${r.seconds % 60} s |`,
    );
  }
  const failed = results.filter((r) => r.exit !== 0 || r.mismatches !== 0);
  console.log(`\n${results.length} seeds, ${failed.length} failed; results in ${out}`);
  process.exitCode = failed.length > 0 ? 1 : 0;
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) await main();
