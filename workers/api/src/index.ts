import { app } from "./app";

export default {
  fetch: app.fetch,
  async queue(batch) {
    // TODO(dead letters, another issue): drain aigate-telemetry-dlq and aigate-verdicts-dlq into
    // `dead_letters`. Until then every message is retried, never acked: nothing is lost.
    batch.retryAll();
  },
} satisfies ExportedHandler<Env>;
