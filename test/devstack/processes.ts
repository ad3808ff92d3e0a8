/**
 * Runs `npm run dev` (and the CLIs) as a person or a supervisor does: as child processes of
 * npm, on free ports, and looks at what is left afterwards (processes, listening ports).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import os from "node:os";
import path from "node:path";
import { freePort, ROOT } from "@aigate/scripts/dev/stack";

export { freePort, ROOT };

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Run {
  child: ChildProcess;
  /** stdout and stderr so far, interleaved. */
  output(): string;
  exited: Promise<Exit>;
}

/** Settings that would point a CLI elsewhere than the ports under test. */
const UNSET = ["PORT", "STRIPE_EMULATOR_PORT", "AIGATE_URL", "STRIPE_API_BASE", "STRIPE_SECRET_KEY"];

/** Spawns `npm <args>` in the repository root with `env` added to this process's environment. */
export function npm(args: string[], env: Record<string, string>): Run {
  const base = { ...process.env };
  for (const key of UNSET) delete base[key];
  const child = spawn("npm", args, {
    cwd: ROOT,
    env: { ...base, ...env, FORCE_COLOR: "0", NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  child.stdout?.on("data", (d: Buffer) => {
    text += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    text += d.toString();
  });
  const exited = new Promise<Exit>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return { child, output: () => text, exited };
}

/**
 * Runs `npm <args>` to its end, or for at most `timeoutMs`: then it and everything it started are
 * killed, and the answer says it timed out.
 */
export async function npmDone(
  args: string[],
  env: Record<string, string>,
  timeoutMs = 60_000,
): Promise<Exit & { output: string; timedOut: boolean }> {
  const run = npm(args, env);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const first = await Promise.race([run.exited, timedOut]);
  clearTimeout(timer);
  if (first === "timeout") {
    const pid = run.child.pid;
    if (pid !== undefined) kill([pid, ...descendants(pid)], "SIGKILL");
    return { ...(await run.exited), output: run.output(), timedOut: true };
  }
  return { ...first, output: run.output(), timedOut: false };
}

/** Sends `signal` to each of `pids` still there. */
export function kill(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

export interface DevStack extends Run {
  port: number;
  stripePort: number;
  persistTo: string;
  /** Every process started for it (npm, node, wrangler, workerd, esbuild), seen once it was up. */
  processes: number[];
  /** Removes its state and generated configs (the processes must be gone). */
  cleanup(): void;
}

/** `npm run dev` on free ports with its own state directory, once it says it is up. */
export async function startDev(timeoutMs = 120_000): Promise<DevStack> {
  const port = await freePort();
  const stripePort = await freePort();
  const persistTo = mkdtempSync(path.join(os.tmpdir(), "aigate-devstack-"));
  const run = npm(["run", "dev", "--", "--persist-to", persistTo], {
    PORT: String(port),
    STRIPE_EMULATOR_PORT: String(stripePort),
  });
  const deadline = Date.now() + timeoutMs;
  let exit: Exit | null = null;
  void run.exited.then((e) => {
    exit = e;
  });
  while (!run.output().includes("AI Gate Billing is up on")) {
    if (exit !== null) throw new Error(`npm run dev exited (${JSON.stringify(exit)}):\n${run.output()}`);
    if (Date.now() > deadline) throw new Error(`npm run dev did not come up:\n${run.output()}`);
    await sleep(200);
  }
  const pid = run.child.pid;
  if (pid === undefined) throw new Error("npm has no pid");
  return {
    ...run,
    port,
    stripePort,
    persistTo,
    processes: [pid, ...descendants(pid)],
    cleanup() {
      rmSync(persistTo, { recursive: true, force: true });
      rmSync(path.join(ROOT, ".wrangler/dev", String(port)), { recursive: true, force: true });
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Proc {
  pid: number;
  ppid: number;
  stat: string;
  args: string;
}

function processTable(): Proc[] {
  const out = execFileSync("ps", ["-eo", "pid=,ppid=,stat=,args="], { encoding: "utf8" });
  return out
    .split("\n")
    .map((line) => line.trim().match(/^(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/))
    .filter((m) => m !== null)
    .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), stat: m[3] ?? "", args: m[4] ?? "" }));
}

/** Every process below `pid`. */
export function descendants(pid: number): number[] {
  const table = processTable();
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift();
    for (const p of table) {
      if (p.ppid === parent) {
        found.push(p.pid);
        queue.push(p.pid);
      }
    }
  }
  return found;
}

/** The processes of `pids` still running (zombies count as gone), with their command lines. */
export function stillRunning(pids: number[]): string[] {
  const table = new Map(processTable().map((p) => [p.pid, p]));
  return pids
    .map((pid) => table.get(pid))
    .filter((p) => p !== undefined && !p.stat.startsWith("Z"))
    .map((p) => `${p?.pid} ${p?.args.slice(0, 160)}`);
}

/** True when nothing accepts connections on 127.0.0.1:port. */
export function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: "127.0.0.1" });
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(true));
  });
}

/** Waits until every process of the stack is gone and both ports are closed; says what is left. */
export async function waitStopped(stack: DevStack, timeoutMs = 20_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = stillRunning(stack.processes);
    for (const port of [stack.port, stack.stripePort]) {
      if (!(await portClosed(port))) left.push(`port ${port} still accepts connections`);
    }
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(250);
  }
}

/** True when one of `pids` is a running process whose command line contains `text`. */
export function hasProcess(pids: number[], text: string): boolean {
  const table = new Map(processTable().map((p) => [p.pid, p]));
  return pids.some((pid) => table.get(pid)?.args.includes(text));
}
