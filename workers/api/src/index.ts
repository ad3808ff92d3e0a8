/**
 * aigate-api: billing API, dashboard, admin endpoints (see app.ts), the dead-letter drain, the
 * delivery of spend alerts (alerts.ts), the retention of operational tables (retention.ts) and the
 * archive of settled sessions to R2 (sessionArchive.ts).
 */
import {
  createLogger,
  instrumentFetch,
  instrumentQueue,
  instrumentScheduled,
  onEveryShard,
  QUEUES,
  shardsOf,
} from "@aigate/shared";
import { deliverAlerts, enqueueDueAlerts } from "./alerts";
import { createApp } from "./app";
import { RETENTION_CRON, readRetentionConfig } from "./config";
import { drainDeadLetters } from "./deadLetters";
import { runRetentionOnShards } from "./retention";
import { runSessionArchiveOnShards } from "./sessionArchive";

const app = createApp();

export default {
  fetch: instrumentFetch("api", (request, env: Env, ctx) => app.fetch(request, env, ctx)),
  // aigate-alerts: delivers spend alerts. The dead-letter queues (aigate-telemetry-dlq,
  // aigate-verdicts-dlq, aigate-alerts-dlq): parks each message in dead_letters.
  queue: instrumentQueue("api", async (batch: MessageBatch<unknown>, env: Env) => {
    const log = createLogger("api", {
      queue: batch.queue,
      batch_size: batch.messages.length,
      request_id: crypto.randomUUID(),
    });
    const shards = shardsOf(env);
    if (batch.queue === QUEUES.alerts) {
      await deliverAlerts(batch, {
        shards,
        fetch: (input, init) => fetch(input, init),
        now: Date.now,
        log,
      });
      return;
    }
    await drainDeadLetters(shards.home, batch, Date.now(), log);
  }),
  // every minute: the spend alerts due for delivery go to aigate-alerts, then the session
  // archive takes new user-days (up to ARCHIVE_MAX_USER_DAYS a run); hourly: retention, then the
  // archive looks again at the user-days waiting to be archived (no scan: the two runs never take
  // the same user-day). Each runs on every D1 shard in turn (retention of the global tables in the
  // home database only).
  scheduled: instrumentScheduled("api", async (controller: ScheduledController, env: Env) => {
    const shards = shardsOf(env);
    if (controller.cron === RETENTION_CRON) {
      const log = createLogger("api", { cron: "retention", request_id: crypto.randomUUID() });
      const config = readRetentionConfig(env);
      await runRetentionOnShards(shards, config, Date.now(), log);
      await runSessionArchiveOnShards(shards, env.ARCHIVE, config, Date.now(), log, { maxUserDays: 0 });
      return;
    }
    const log = createLogger("api", { cron: "alerts", request_id: crypto.randomUUID() });
    const now = Date.now();
    await onEveryShard(shards, log, "spend alerts", (db, shardLog) =>
      enqueueDueAlerts(db, env.ALERTS, now, shardLog),
    );
    const archiveLog = createLogger("api", { cron: "archive", request_id: crypto.randomUUID() });
    await runSessionArchiveOnShards(shards, env.ARCHIVE, readRetentionConfig(env), Date.now(), archiveLog, {
      maxWaitingChecks: 0,
    });
  }),
} satisfies ExportedHandler<Env, unknown>;
