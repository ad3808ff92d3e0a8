/**
 * The naive baseline of the pricing strategy (bench/naive): every `ended` event does one D1
 * update and, when billable, one Stripe meter event, inline, on the seed's schema. Runs the same
 * burst and paced loads for the same customers, on its own Stripe emulator, with the stack
 * stopped.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { DEV_SECRETS } from "@aigate/scripts/dev/credentials";
import { freePort, ROOT } from "@aigate/scripts/dev/stack";
import { createStripe } from "@aigate/shared/stripe";
import { ensureStripeCatalog } from "@aigate/shared/stripeCatalog";
import { startStripeEmulator } from "@aigate/stripe-emulator";
import { EmulatorClient } from "@aigate/stripe-emulator/client";
import { type Cost, cost } from "../lib/cost";
import { meterEventCalls, pacedSessionsPerUser, payingUsers } from "../lib/customers";
import { feedBurst, feedPaced, seconds } from "../lib/feed";
import { logLines, logSize, sum } from "../lib/logs";
import type { Phase } from "../lib/phase";
import { pexec, startWrangler, WRANGLER } from "../lib/processes";
import { BENCH } from "../lib/settings";
import { EVENTS_PER_SESSION, workload } from "../workload";
import { BURST_CONNECTIONS } from "./burst";

export interface NaiveResult {
  /** The naive baseline bills inline, so its sessions are on the meter once accepted. */
  burst_sessions_per_second_to_meter: number;
  paced_feed_seconds: number;
  cost: Cost;
}

/** The naive baseline's meters (one per plan); its customers are all on the payg one. */
const METER_PREFIX = "aigate_naive";

export const naive: Phase<"naive", NaiveResult> = {
  key: "naive",
  uses: [],
  async run(ctx) {
    ctx.log("starting the naive baseline");
    const stripe = await startStripeEmulator({ port: await freePort() });
    try {
      const sdk = createStripe({
        STRIPE_SECRET_KEY: DEV_SECRETS.STRIPE_SECRET_KEY,
        STRIPE_API_BASE: stripe.url,
      });
      const meter = (await ensureStripeCatalog(sdk, METER_PREFIX)).meters.payg.eventName;
      mkdirSync(ctx.dir, { recursive: true });
      const config = {
        name: "aigate-bench-naive",
        main: path.join(BENCH, "naive/worker.ts"),
        compatibility_date: "2026-04-20",
        compatibility_flags: ["nodejs_compat"],
        // the emulator's test key, so a plain var is fine here
        vars: {
          STRIPE_API_BASE: stripe.url,
          STRIPE_METER_EVENT_NAME: meter,
          STRIPE_SECRET_KEY: DEV_SECRETS.STRIPE_SECRET_KEY,
        },
        d1_databases: [
          {
            binding: "DB",
            database_name: "aigate-bench-naive",
            database_id: "00000000-0000-4000-8000-00000000bbbb",
            migrations_dir: path.join(BENCH, "naive/migrations"),
          },
        ],
      };
      const configFile = path.join(ctx.dir, "wrangler.json");
      writeFileSync(configFile, JSON.stringify(config));
      const state = path.join(ctx.dir, "state");
      const local = ["--local", "--persist-to", state, "--config", configFile];
      await pexec(WRANGLER, ["d1", "migrations", "apply", "aigate-bench-naive", ...local], { cwd: ROOT });
      const users = payingUsers(ctx.settings);
      const inserts: string[] = [];
      for (const user of users) {
        const customer = await sdk.customers.create({ metadata: { user_id: user } });
        inserts.push(`('${user}', '${customer.id}', '', 'payg', 0, 0)`);
      }
      await pexec(
        WRANGLER,
        [
          "d1",
          "execute",
          "aigate-bench-naive",
          ...local,
          "--command",
          `INSERT INTO stripe_customers VALUES ${inserts.join(",")}`,
        ],
        { cwd: ROOT },
      );
      const logFile = path.join(ctx.dir, "wrangler.log");
      const server = await startWrangler([configFile], state, logFile, {
        STRIPE_SECRET_KEY: DEV_SECRETS.STRIPE_SECRET_KEY,
      });
      try {
        const emu = new EmulatorClient(stripe.url);
        const { burst_sessions, customers, paced_seconds } = ctx.settings;
        const burst = workload(users, Math.ceil(burst_sessions / customers), "burst", Date.now());
        ctx.log(`naive burst: ${burst.length} sessions`);
        const burstFed = await feedBurst(server.url, burst, BURST_CONNECTIONS);
        await emu.resetCalls();
        const from = logSize(logFile);
        const paced = workload(users, pacedSessionsPerUser(ctx.settings), "paced", Date.now());
        ctx.log(`naive paced: ${paced.length} sessions over ${paced_seconds} s`);
        const pacedFed = await feedPaced(server.url, paced, paced_seconds);
        const calls = await meterEventCalls(emu);
        const lines = logLines(logFile, from).filter((l) => l.msg === "naive batch");
        return {
          burst_sessions_per_second_to_meter: burst.length / seconds(burstFed.started, burstFed.finished),
          paced_feed_seconds: seconds(pacedFed.started, pacedFed.finished),
          cost: cost({
            sessions: paced.length,
            billed_sessions: paced.filter((s) => s.billable).length,
            events: paced.length * EVENTS_PER_SESSION,
            queue_messages: 0,
            queue_messages_beyond_ingest: 0,
            queue_messages_per_event: null,
            d1_rows_read: sum(lines, "d1_rows_read"),
            d1_rows_written: sum(lines, "d1_rows_written"),
            stripe_calls: calls.length,
            worker_invocations: lines.length,
          }),
        };
      } finally {
        await server.stop();
      }
    } finally {
      await stripe.close();
    }
  },
};
