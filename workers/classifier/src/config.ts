/** The classifier's settings: its vars, parsed once per invocation with zod (defaults and bounds). */
import { DEFAULTS, intVar, parseVars, QUEUE_LIMITS } from "@aigate/shared";
import { z } from "zod";

const ClassifierVars = z.object({
  VERDICT_SETTLE_SECONDS: intVar(DEFAULTS.VERDICT_SETTLE_SECONDS, 0, QUEUE_LIMITS.maxDelaySeconds),
  STALE_SESSION_MINUTES: intVar(DEFAULTS.STALE_SESSION_MINUTES, 1, 7 * 24 * 60),
});

export interface ClassifierConfig {
  /** Wait after `ended` is first received before judging (VERDICT_SETTLE_SECONDS). */
  settleMs: number;
  /** A session without telemetry for this long is judged on what was seen (STALE_SESSION_MINUTES). */
  staleMs: number;
}

export function readConfig(env: {
  VERDICT_SETTLE_SECONDS?: unknown;
  STALE_SESSION_MINUTES?: unknown;
}): ClassifierConfig {
  const vars = parseVars(ClassifierVars, env);
  return { settleMs: vars.VERDICT_SETTLE_SECONDS * 1000, staleMs: vars.STALE_SESSION_MINUTES * 60_000 };
}
