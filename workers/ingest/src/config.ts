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
