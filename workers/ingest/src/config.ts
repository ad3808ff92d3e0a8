/** The ingest worker's settings, read from its vars with the shared defaults and bounds. */
import { DEFAULTS, intSetting } from "@aigate/shared";

export interface IngestSettings {
  leaseTtlMs: number;
  pastDueGraceDays: number;
}

export function settings(env: Pick<Env, "LEASE_TTL_SECONDS" | "PAST_DUE_GRACE_DAYS">): IngestSettings {
  return {
    leaseTtlMs: intSetting(env.LEASE_TTL_SECONDS, DEFAULTS.LEASE_TTL_SECONDS, 1, 24 * 60 * 60) * 1000,
    pastDueGraceDays: intSetting(env.PAST_DUE_GRACE_DAYS, DEFAULTS.PAST_DUE_GRACE_DAYS, 0, 365),
  };
}

/** Share of successful requests logged (SUCCESS_LOG_SAMPLE_RATE, 0..1; errors always logged). */
export function successLogSampleRate(env: Pick<Env, "SUCCESS_LOG_SAMPLE_RATE">): number {
  const rate = Number(env.SUCCESS_LOG_SAMPLE_RATE);
  return Number.isFinite(rate) && rate >= 0 && rate <= 1 ? rate : 1;
}
