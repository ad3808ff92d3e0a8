/**
 * The ingest worker's settings: its vars, parsed with zod (defaults and bounds). Every request
 * needs them; they are parsed again only when one of the vars the schemas read has changed.
 */
import { type AccountSettings, AccountVars, parseVars } from "@aigate/shared";
import { z } from "zod";

const IngestVars = z.object({
  /** Share of successful requests logged, 0..1 (errors always are); anything else logs them all. */
  SUCCESS_LOG_SAMPLE_RATE: z.coerce.number().min(0).max(1).catch(1),
});

export interface IngestConfig extends AccountSettings {
  successLogSampleRate: number;
}

function parseConfig(env: Env): IngestConfig {
  return {
    ...parseVars(AccountVars, env),
    successLogSampleRate: parseVars(IngestVars, env).SUCCESS_LOG_SAMPLE_RATE,
  };
}

/** The vars the schemas read: the config is a function of these values alone. */
const VAR_NAMES = [...Object.keys(AccountVars.in.shape), ...Object.keys(IngestVars.shape)];

let last: { values: unknown[]; config: IngestConfig } | null = null;

export function readConfig(env: Env): IngestConfig {
  const values = VAR_NAMES.map((name) => Reflect.get(env, name));
  if (last?.values.every((v, i) => Object.is(v, values[i]))) return last.config;
  const config = Object.freeze(parseConfig(env));
  last = { values, config };
  return config;
}
