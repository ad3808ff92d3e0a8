/**
 * The processes a run starts besides the stack: the load generator (bench/load.ts, a process of
 * its own so it does not share an event loop with the stack's tooling) and plain `wrangler dev`
 * servers (the no-op ceiling, ingest alone, the naive baseline).
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { DEV_INGEST_KEY } from "@aigate/scripts/dev/credentials";
import { freePort, ROOT } from "@aigate/scripts/dev/stack";
import type { LoadConfig, LoadResult } from "../load";
import { BENCH, type Settings } from "./settings";

export const pexec = promisify(execFile);
export const WRANGLER = path.join(ROOT, "node_modules/.bin/wrangler");
const TSX = path.join(ROOT, "node_modules/.bin/tsx");

/** A local HTTP server this run started. */
export interface Server {
  url: string;
  stop(): Promise<void>;
}

export function log(msg: string) {
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

/** One ingest measurement of `url`: 2 s of warm-up, then `ingest_seconds` measured. */
export async function measureIngest(
  settings: Settings,
  url: string,
  eventsPerRequest: number,
  tag: string,
): Promise<LoadResult> {
  const base = {
    key: DEV_INGEST_KEY,
    eventsPerRequest,
    connections: settings.connections,
    users: 200,
    url: `${url}/v1/events`,
    maxRequests: 1e7,
  };
  await runLoad({ ...base, seconds: 2, tag: `${tag}w` });
  return runLoad({ ...base, seconds: settings.ingest_seconds, tag });
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

/** A plain `wrangler dev` of `configs`, logging to a file, answering on `url` once started. */
export async function startWrangler(
  configs: string[],
  persistTo: string,
  logFile: string,
  env: NodeJS.ProcessEnv = {},
): Promise<Server> {
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
      if (Date.now() > deadline) {
        await killGroup(child);
        throw new Error(`wrangler dev did not start; see ${logFile}`);
      }
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  return { url: `http://127.0.0.1:${port}`, stop: () => killGroup(child) };
}

/** Polls `probe` every 500 ms until `done`; throws with the last value after `timeoutMs`. */
export async function until<T>(
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
