/**
 * What a phase of the benchmark is: a step of the run with a typed result, the summary rows it
 * prints, the targets it checks, and the shared processes it needs running. The run is the list
 * in phases/index.ts; a phase's result is stored in the results JSON under its key.
 */
import type { Stack } from "@aigate/scripts/dev/stack";
import type { PhaseResults } from "../phases";
import type { Customers } from "./customers";
import type { LogLine } from "./logs";
import type { Server } from "./processes";
import type { Settings } from "./settings";

/** The stack as the benchmark runs it. */
export interface BenchStack extends Stack {
  logFile: string;
  /** The stack's local state (D1) directory. */
  stateDir: string;
}

/**
 * Processes several phases share. Each is started when a phase first asks for it and stopped
 * after the last phase that lists it in `uses`, so the phases after that have the cores to
 * themselves.
 */
export interface Resources {
  /** A no-op Worker behind the same front hop as ingest: the runtime's ceiling. */
  noop: Server;
  /** The whole pipeline as deployed (settle window and cron minutes shortened). */
  stack: BenchStack;
  /** Paying customers subscribed on the stack; keeps the stack running. */
  customers: Customers;
  /** The same pipeline on four D1 shards (docs/scale.md "Sharding"). */
  shardedStack: BenchStack;
  /** The same paying customers, subscribed on the sharded stack. */
  shardedCustomers: Customers;
}
export type Resource = keyof Resources;

/** What the paced phase leaves for the phases after it to read. */
export interface PacedWindow {
  sessions: number;
  billed: number;
  /** The stack's log lines from the start of the paced load until its meter totals were exact. */
  lines: LogLine[];
  stateDir: string;
}

/** Things one phase leaves for later ones, beyond its result. */
export interface Artifacts {
  paced?: PacedWindow;
}

export interface PhaseContext {
  settings: Settings;
  /** A scratch folder of this phase's own (removed after a successful run). */
  dir: string;
  log(msg: string): void;
  /** A shared process; the phase must list it in `uses`. */
  use<R extends Resource>(resource: R): Promise<Resources[R]>;
  /** The results of the phases run before this one. */
  results: Readonly<Partial<PhaseResults>>;
  artifacts: Artifacts;
}

/** A bound a figure should meet. A stretch target says so in its row's label ("(stretch)"). */
export interface Target {
  op: ">=" | "<=" | "<";
  bound: number;
  /** The figure checked against it; missing or not finite counts as not met. */
  value: number | null | undefined;
}

/** A line of the summary table: the figure measured, what to read it against, its target. */
export interface Row {
  label: string;
  value: string;
  against?: string;
  target?: Target;
}

export interface Phase<K extends string, R> {
  /** Its key in the results. */
  key: K;
  uses: readonly Resource[];
  run(ctx: PhaseContext): Promise<R>;
  /** Summary rows, given every phase's result (some may not have run) and the settings. */
  rows?(result: R, all: Readonly<Partial<PhaseResults>>, settings: Settings): Row[];
}

/** The result of an earlier phase this one builds on. */
export function earlier<K extends keyof PhaseResults>(ctx: PhaseContext, key: K): PhaseResults[K] {
  const r = ctx.results[key];
  if (r === undefined) throw new Error(`this phase needs the ${key} phase to run before it`);
  return r;
}

export function met(t: Target): boolean {
  if (typeof t.value !== "number" || !Number.isFinite(t.value)) return false;
  if (t.op === ">=") return t.value >= t.bound;
  return t.op === "<=" ? t.value <= t.bound : t.value < t.bound;
}
