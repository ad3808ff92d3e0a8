/**
 * End-to-end throughput: the paying customers' sessions sent as fast as 4 connections take them,
 * timed from the first request until every session has its billing record and every customer's
 * Stripe meter total is exact (the settle window included).
 */

import { feedBurst, seconds } from "../lib/feed";
import type { Phase } from "../lib/phase";
import { until } from "../lib/processes";
import { fmt } from "../lib/report";
import { EVENTS_PER_SESSION, workload } from "../workload";

export interface BurstResult {
  sessions: number;
  events: number;
  ingest_seconds: number;
  sessions_per_second_to_billing_records: number;
  sessions_per_second_to_meter_total: number;
  seconds_to_meter_total: number;
}

/** Requests in flight while feeding a burst (ours and the naive baseline's). */
export const BURST_CONNECTIONS = 4;

export const burst: Phase<"burst", BurstResult> = {
  key: "burst",
  uses: ["stack", "customers"],
  async run(ctx) {
    const stack = await ctx.use("stack");
    const customers = await ctx.use("customers");
    const { burst_sessions, customers: n } = ctx.settings;
    // created after the upgrades
    const sessions = workload(customers.users, Math.ceil(burst_sessions / n), "burst", Date.now() + 1000);
    customers.expect(sessions);
    ctx.log(`burst: ${sessions.length} sessions as fast as ingest takes them`);
    const fed = await feedBurst(stack.url, sessions, BURST_CONNECTIONS);
    const recordedAt = await until(
      async () => {
        const r = await stack.query<{ n: number }>(
          "SELECT count(*) AS n FROM sessions WHERE session_id LIKE 'burst-%' AND verdict_at IS NOT NULL",
        );
        return (r[0]?.n ?? 0) === sessions.length ? Date.now() : 0;
      },
      (t) => t > 0,
      600_000,
      "burst recorded",
    );
    const meteredAt = await customers.untilOnMeter("burst on the meter");
    return {
      sessions: sessions.length,
      events: sessions.length * EVENTS_PER_SESSION,
      ingest_seconds: seconds(fed.started, fed.finished),
      sessions_per_second_to_billing_records: sessions.length / seconds(fed.started, recordedAt),
      sessions_per_second_to_meter_total: sessions.length / seconds(fed.started, meteredAt),
      seconds_to_meter_total: seconds(fed.started, meteredAt),
    };
  },
  rows(r, all) {
    return [
      { label: "burst: sessions/s to billing records", value: fmt(r.sessions_per_second_to_billing_records) },
      {
        label: "burst: sessions/s to Stripe meter total",
        value: fmt(r.sessions_per_second_to_meter_total),
        against: `naive ${fmt(all.naive?.burst_sessions_per_second_to_meter)}`,
      },
    ];
  },
};
