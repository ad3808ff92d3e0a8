/**
 * The biller Worker: consumes verdicts (aigate-verdicts), posts paid usage to the Stripe meter,
 * and on crons sweeps unconfirmed totals and closes periods (every minute) and reconciles with
 * Stripe (hourly, at minute 17). With D1 shards, each user's series are worked on the user's
 * shard, the crons run on every shard in turn, and the D1 counts logged cover every shard.
 */
import { d1LogFields, queueLogFields, withQueueStats } from "@aigate/shared";
import { createBiller, RECONCILE_CRON } from "./config";
import { consumeVerdicts } from "./consumer";
import { reconcile } from "./reconcile";
import { sweep } from "./sweep";

export default {
  async queue(batch, env) {
    const started = Date.now();
    const counted = withQueueStats(env);
    const biller = createBiller(counted.env, { queue: batch.queue });
    await consumeVerdicts(biller, batch.messages, started);
    biller.log.info("batch done", {
      messages: batch.messages.length,
      duration_ms: Date.now() - started,
      ...d1LogFields(biller.d1),
      ...queueLogFields(counted.stats),
    });
  },
  async scheduled(controller, env) {
    const started = Date.now();
    const counted = withQueueStats(env);
    const biller = createBiller(counted.env, { cron: controller.cron });
    if (controller.cron === RECONCILE_CRON) await reconcile(biller, { now: started });
    else await sweep(biller, started);
    biller.log.info("cron done", {
      duration_ms: Date.now() - started,
      ...d1LogFields(biller.d1),
      ...queueLogFields(counted.stats),
    });
  },
} satisfies ExportedHandler<Env, unknown>;
