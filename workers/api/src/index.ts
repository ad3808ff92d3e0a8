/** aigate-api: billing API, dashboard, admin endpoints (see app.ts), and the dead-letter drain. */
import { createLogger, instrumentFetch, instrumentQueue } from "@aigate/shared";
import { createApp } from "./app";
import { drainDeadLetters } from "./deadLetters";

const app = createApp();

export default {
  fetch: instrumentFetch("api", (request, env: Env, ctx) => app.fetch(request, env, ctx)),
  // Consumes aigate-telemetry-dlq and aigate-verdicts-dlq: parks each message in dead_letters.
  queue: instrumentQueue("api", async (batch: MessageBatch<unknown>, env: Env) => {
    const log = createLogger("api", {
      queue: batch.queue,
      batch_size: batch.messages.length,
      request_id: crypto.randomUUID(),
    });
    await drainDeadLetters(env.DB, batch, Date.now(), log);
  }),
} satisfies ExportedHandler<Env, unknown>;
