/**
 * The classifier: merges session telemetry into facts, takes the final verdict of each session
 * (rules in @aigate/shared) and sends it to the biller.
 */
import { instrumentQueue, instrumentScheduled } from "@aigate/shared";
import { sweepDueSessions } from "./cron";
import { handleTelemetryBatch } from "./queue";

export default {
  queue: instrumentQueue("classifier", (batch: MessageBatch<unknown>, env: Env) =>
    handleTelemetryBatch(batch, env, Date.now()),
  ),
  scheduled: instrumentScheduled("classifier", (_controller, env: Env) => sweepDueSessions(env, Date.now())),
} satisfies ExportedHandler<Env, unknown>;
