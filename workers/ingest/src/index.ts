/** aigate-ingest: the telemetry API and admission control for gateways (see app.ts). */
import { createApp } from "./app";

const app = createApp();

export default {
  fetch: (request, env, ctx) => app.fetch(request, env, ctx),
} satisfies ExportedHandler<Env>;
