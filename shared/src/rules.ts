/**
 * When is a session billable? Pure functions, versioned: every verdict stores the version it
 * was judged under, so rules can change without rewriting history.
 */
import { z } from "zod";

export const RULE_VERSION = 1;

export const VerdictReason = z.enum([
  "success",
  "turn_failed",
  "upstream_error",
  "not_connected",
  "slow_connect",
  "too_short",
]);
export type VerdictReason = z.infer<typeof VerdictReason>;
export const FAILURE_REASONS = VerdictReason.options.filter((r) => r !== "success");

/** What a verdict needs to know about a session (merged from all its telemetry). */
export interface SessionFacts {
  connected: boolean;
  connectLatencyMs: number | null;
  turnFailed: boolean;
  upstreamError: boolean;
  audioMs: number;
}

export const RULES_V1 = {
  maxConnectLatencyMs: 2000,
  minAudioMs: 5000,
} as const;

export interface Verdict {
  billable: boolean;
  reason: VerdictReason;
  ruleVersion: number;
}

/**
 * Rule version 1: billable when connected, connect latency <= 2000 ms, no TURN failure, no
 * upstream error and >= 5000 ms of audio. Otherwise the first failing reason in the order
 * turn_failed, upstream_error, not_connected, slow_connect, too_short.
 */
export function judgeV1(f: SessionFacts): Verdict {
  const reason = firstFailureV1(f) ?? "success";
  return { billable: reason === "success", reason, ruleVersion: 1 };
}

function firstFailureV1(f: SessionFacts): VerdictReason | null {
  if (f.turnFailed) return "turn_failed";
  if (f.upstreamError) return "upstream_error";
  if (!f.connected) return "not_connected";
  if (f.connectLatencyMs === null || f.connectLatencyMs > RULES_V1.maxConnectLatencyMs) return "slow_connect";
  if (f.audioMs < RULES_V1.minAudioMs) return "too_short";
  return null;
}

/** The rules in force for new verdicts. */
export const judge = judgeV1;
