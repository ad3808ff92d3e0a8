/** aigate-ingest: the telemetry API and admission control for gateways (see app.ts). */
import { createLogger, d1LogFields, withD1Stats } from "@aigate/shared";
import { createApp } from "./app";

const app = createApp();
const log = createLogger("ingest");

export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    const counted = withD1Stats(env);
    const response = await app.fetch(request, counted.env, ctx);
    log.info("request done", {
      request_id: response.headers.get("x-request-id"),
      method: request.method,
      path: new URL(request.url).pathname,
      status: response.status,
      duration_ms: Date.now() - started,
      ...d1LogFields(counted.stats),
    });
    return response;
  },
} satisfies ExportedHandler<Env>;
