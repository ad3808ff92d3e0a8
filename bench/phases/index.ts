/**
 * The benchmark's phases, in the order they run. A phase is one module exporting a `Phase`
 * (lib/phase.ts); adding one is adding its module and its line here, and its result joins
 * `PhaseResults` (and the results JSON) under its key.
 */
import { pacedAtLoad, shardedAtLoad } from "./atLoad";
import { burst } from "./burst";
import { comparison } from "./comparison";
import { ingest } from "./ingest";
import { ingestInPipeline } from "./ingestInPipeline";
import { naive } from "./naive";
import { paced } from "./paced";
import { sharded } from "./sharded";

export const PHASES = [
  ingest,
  ingestInPipeline,
  burst,
  paced,
  pacedAtLoad,
  naive,
  comparison,
  sharded,
  shardedAtLoad,
] as const;

type AnyPhase = (typeof PHASES)[number];
type ResultOf<P> = P extends { run(...args: never[]): Promise<infer R> } ? R : never;

/** Every phase's result, under its key. */
export type PhaseResults = { [P in AnyPhase as P["key"]]: ResultOf<P> };
