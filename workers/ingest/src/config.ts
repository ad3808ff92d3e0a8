/** The ingest worker's settings: its vars, parsed once per request with zod (defaults and bounds). */
import { type AccountSettings, AccountVars, parseVars } from "@aigate/shared";
import { z } from "zod";

const IngestVars = z.object({
  /** Share of successful requests logged, 0..1 (errors always are); anything else logs them all. */
  SUCCESS_LOG_SAMPLE_RATE: z.coerce.number().min(0).max(1).catch(1),
});

export interface IngestConfig extends AccountSettings {
  successLogSampleRate: number;
}

export function readConfig(env: Env): IngestConfig {
  return {
    ...parseVars(AccountVars, env),
    successLogSampleRate: parseVars(IngestVars, env).SUCCESS_LOG_SAMPLE_RATE,
  };
}
