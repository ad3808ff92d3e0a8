import { createLogger } from "@aigate/shared";
import { app } from "./app";
import { drainDeadLetters } from "./deadLetters";

export default {
  fetch: app.fetch,
  // Consumes aigate-telemetry-dlq and aigate-verdicts-dlq: parks each message in dead_letters.
  async queue(batch, env) {
    const log = createLogger("api", {
      queue: batch.queue,
      batch_size: batch.messages.length,
      request_id: crypto.randomUUID(),
    });
    await drainDeadLetters(env.DB, batch, Date.now(), log);
  },
} satisfies ExportedHandler<Env, unknown>;
