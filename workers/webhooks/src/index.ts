import { createLogger, d1LogFields, withD1Stats } from "@aigate/shared";
import { app } from "./app";

const log = createLogger("webhooks");

export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    const counted = withD1Stats(env);
    const response = await app.fetch(request, counted.env, ctx);
    log.info("request done", {
      path: new URL(request.url).pathname,
      status: response.status,
      duration_ms: Date.now() - started,
      ...d1LogFields(counted.stats),
    });
    return response;
  },
} satisfies ExportedHandler<Env>;
