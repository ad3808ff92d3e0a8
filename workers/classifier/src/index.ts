/**
 * The classifier: merges session telemetry into facts, takes the final verdict of each session
 * (rules in @aigate/shared) and sends it to the biller.
 */
import { sweepDueSessions } from "./cron";
import { handleTelemetryBatch } from "./queue";

export default {
  async queue(batch, env) {
    await handleTelemetryBatch(batch, env, Date.now());
  },
  async scheduled(_controller, env) {
    await sweepDueSessions(env, Date.now());
  },
} satisfies ExportedHandler<Env, unknown>;
