/**
 * Starts the shared processes of lib/phase.ts `Resources` on first use and stops them when the
 * run says so (after the last phase that uses them, or at the end).
 */
import path from "node:path";
import { freePort, startStack } from "@aigate/scripts/dev/stack";
import { subscribeCustomers } from "./customers";
import type { Resource, Resources } from "./phase";
import { log, startWrangler } from "./processes";
import { BENCH, PRODUCTION_LOGGING, type Settings } from "./settings";

/** Resources a resource keeps running. */
export const KEEPS_RUNNING: Record<Resource, readonly Resource[]> = {
  noop: [],
  stack: [],
  customers: ["stack"],
  shardedStack: [],
  shardedCustomers: ["shardedStack"],
};

/** D1 shards of the `shardedStack` (the one-database stack is `stack`). */
export const BENCH_SHARDS = 4;

interface Running<R extends Resource> {
  value: Promise<Resources[R]>;
  stop(): Promise<void>;
}

export class ResourcePool {
  private readonly running = new Map<Resource, Running<Resource>>();

  constructor(
    private readonly settings: Settings,
    /** The run's scratch folder. */
    private readonly work: string,
  ) {}

  get<R extends Resource>(resource: R): Promise<Resources[R]> {
    let r = this.running.get(resource) as Running<R> | undefined;
    if (!r) {
      r = this.start(resource);
      this.running.set(resource, r as unknown as Running<Resource>);
    }
    return r.value;
  }

  private start<R extends Resource>(resource: R): Running<R> {
    const started = this.starter(resource);
    const value = started.then((s) => s.value);
    // a start that failed has nothing to stop
    const stop = () =>
      started.then(
        (s) => s.stop(),
        () => undefined,
      );
    return { value, stop } as Running<R>;
  }

  private async starter(resource: Resource) {
    switch (resource) {
      case "noop": {
        log("starting the no-op ceiling");
        const noop = await startWrangler(
          [path.join(BENCH, "noop/front.jsonc"), path.join(BENCH, "noop/noop.jsonc")],
          path.join(this.work, "noop-state"),
          path.join(this.work, "noop.log"),
        );
        return { value: noop, stop: noop.stop };
      }
      case "stack":
        return this.startBenchStack("stack", 1);
      case "shardedStack":
        return this.startBenchStack("sharded-stack", BENCH_SHARDS);
      case "customers": {
        const customers = await subscribeCustomers(await this.get("stack"), this.settings);
        return { value: customers, stop: async () => undefined };
      }
      case "shardedCustomers": {
        const customers = await subscribeCustomers(await this.get("shardedStack"), this.settings);
        return { value: customers, stop: async () => undefined };
      }
    }
  }

  /** The whole pipeline as deployed, on `shards` D1 databases, logging to a file. */
  private async startBenchStack(name: string, shards: number) {
    log(`starting the ${name} (${shards} D1 ${shards === 1 ? "database" : "shards"})`);
    const stateDir = path.join(this.work, `${name}-state`);
    const s = this.settings;
    const stack = await startStack({
      port: await freePort(),
      stripePort: await freePort(),
      persistTo: stateDir,
      workDir: path.join(this.work, name),
      settings: {
        VERDICT_SETTLE_SECONDS: String(s.settle_seconds),
        STRIPE_POST_INTERVAL_SECONDS: String(s.stripe_post_interval_seconds),
        ...PRODUCTION_LOGGING,
      },
      cronTickSeconds: s.cron_tick_seconds,
      shards,
    });
    if (!stack.logFile) {
      await stack.close();
      throw new Error("the stack wrote no log file");
    }
    return { value: { ...stack, logFile: stack.logFile, stateDir }, stop: stack.close };
  }

  isRunning(resource: Resource): boolean {
    return this.running.has(resource);
  }

  async stop(resource: Resource): Promise<void> {
    const r = this.running.get(resource);
    if (!r) return;
    this.running.delete(resource);
    await r.stop();
  }

  /** Stops everything still running, the last started first. */
  async stopAll(): Promise<void> {
    for (const resource of [...this.running.keys()].reverse())
      await this.stop(resource).catch(() => undefined);
  }
}
