/**
 * The chaos run's knobs, from the environment: CHAOS_SEED (replay a run), CHAOS_SESSIONS (size),
 * CHAOS_SOAK=1 (a longer run), CHAOS_LIFECYCLE=0 (without the lifecycle part), CHAOS_SHARDS (D1
 * shards of the stack, default 4). The CI run uses the fixed default seed.
 */

export const DEFAULT_SEED = 20261125;

export interface ChaosConfig {
  seed: number;
  soak: boolean;
  /** Sessions of the random workload (the scenario sessions come on top). */
  sessions: number;
  /** VERDICT_SETTLE_SECONDS of the stack under test. */
  settleSeconds: number;
  /** Seconds per cron "minute" of the local scheduler. */
  cronTickSeconds: number;
  /** Upper bound for the whole money test. */
  timeoutMs: number;
  /** Whether the lifecycle part runs (docs/chaos.md): on unless `CHAOS_LIFECYCLE=0`. */
  lifecycle: boolean;
  /** Customers of the lifecycle part (on top of the plain run's subscribers). */
  lifecycleUsers: number;
  lifecycleTimeoutMs: number;
  /**
   * D1 shards of the stack under test (docs/scale.md "Sharding"): 4 by default, so that every
   * crash, duplicate and reordering also meets a user's shard and the home database written
   * apart; 1 runs it as an unsharded deployment.
   */
  shards: number;
}

function intFromEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(`${name} must be an integer in ${min}..${max}`);
  return n;
}

export function chaosConfig(): ChaosConfig {
  const soak = process.env.CHAOS_SOAK === "1" || process.env.CHAOS_SOAK === "true";
  const sessions = intFromEnv("CHAOS_SESSIONS", soak ? 3000 : 300, 10, 100_000);
  return {
    seed: intFromEnv("CHAOS_SEED", DEFAULT_SEED, 0, 2 ** 32 - 1),
    soak,
    sessions,
    settleSeconds: 20,
    cronTickSeconds: 2,
    timeoutMs: Math.max(480_000, 240_000 + sessions * 400),
    lifecycle: process.env.CHAOS_LIFECYCLE !== "0" && process.env.CHAOS_LIFECYCLE !== "false",
    lifecycleUsers: intFromEnv("CHAOS_LIFECYCLE_USERS", soak ? 16 : 8, 1, 200),
    lifecycleTimeoutMs: 1_500_000,
    shards: intFromEnv("CHAOS_SHARDS", 4, 1, 16),
  };
}

export function replayHint(seed: number): string {
  return `CHAOS_SEED=${seed} npm test -w @aigate/test -- --project chaos`;
}
