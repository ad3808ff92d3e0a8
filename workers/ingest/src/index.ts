/** aigate-ingest: the telemetry API and admission control for gateways (see app.ts). */
import { instrumentFetch } from "@aigate/shared";
import { createApp } from "./app";
import { readConfig } from "./config";

const app = createApp();

export default {
  fetch: instrumentFetch<Env>("ingest", (request, env, ctx) => app.fetch(request, env, ctx), {
    successSampleRate: (env) => readConfig(env).successLogSampleRate,
  }),
} satisfies ExportedHandler<Env>;
