/**
 * The classifier: merges session telemetry into facts, takes the final verdict of each session
 * (rules in @aigate/shared) and sends it to the biller.
 */
import { createLogger, d1LogFields, withD1Stats } from "@aigate/shared";
import { sweepDueSessions } from "./cron";
import { handleTelemetryBatch } from "./queue";

const log = createLogger("classifier");

export default {
  async queue(batch, env) {
    const started = Date.now();
    const counted = withD1Stats(env);
    await handleTelemetryBatch(batch, counted.env, started);
    log.info("batch done", {
      queue: batch.queue,
      messages: batch.messages.length,
      duration_ms: Date.now() - started,
      ...d1LogFields(counted.stats),
    });
  },
  async scheduled(controller, env) {
    const started = Date.now();
    const counted = withD1Stats(env);
    await sweepDueSessions(counted.env, started);
    log.info("cron done", {
      cron: controller.cron,
      duration_ms: Date.now() - started,
      ...d1LogFields(counted.stats),
    });
  },
} satisfies ExportedHandler<Env, unknown>;
