/**
 * One database against four shards at a higher load (docs/scale.md "Sharding"). The paced and
 * sharded phases compare them at the paced load, where the work D1 does once per invocation and
 * per database (every cron run's queries on every shard, each shard's part of a telemetry batch)
 * is a large share of a session's D1 time. These two phases run the same customers at
 * `load_factor` times the paced rate for `load_seconds`, first on the one-database stack (after
 * the paced phase), then on the sharded stack (after the sharded phase), so that the work that
 * follows the sessions weighs more: how far the mean shard's busy time falls against one
 * database's there says how much of the gap at the paced load is that fixed work.
 */
import type { Customers } from "../lib/customers";
import { feedPaced, seconds } from "../lib/feed";
import { d1BusyPerSession, type InvocationLoad, loadByInvocation, logLines, logSize } from "../lib/logs";
import { type BenchStack, earlier, type Phase, type PhaseContext } from "../lib/phase";
import { fmt } from "../lib/report";
import { BENCH_SHARDS } from "../lib/resources";
import { workload } from "../workload";
import { busyByShard, sessionsOnTheirShards } from "./sharded";

export interface AtLoadResult {
  shards: number;
  sessions: number;
  sessions_per_second: number;
  feed_seconds: number;
  d1_by_worker: Record<string, InvocationLoad>;
  /** D1 ms per session of the window: in all and per worker (on every shard), and on each shard. */
  d1_busy_ms_per_session: { total: number; by_worker: Record<string, number>; by_shard: number[] };
}

export interface ShardedAtLoadResult extends AtLoadResult {
  customers_by_shard: number[];
  sessions_by_shard: number[];
  /** The one-database busy ms per session at this load over the mean shard's, and the busiest shard's. */
  one_database_over_mean_shard: number;
  one_database_over_busiest_shard: number;
}

/** Sessions per customer at the at-load rate. */
function perCustomer(ctx: PhaseContext): number {
  const { sessions_per_customer_per_minute, load_factor, load_seconds } = ctx.settings;
  return Math.round((sessions_per_customer_per_minute * load_factor * load_seconds) / 60);
}

async function runAtLoad(
  ctx: PhaseContext,
  stack: BenchStack,
  customers: Customers,
  tag: string,
  shards: number,
): Promise<AtLoadResult> {
  const from = logSize(stack.logFile);
  const sessions = workload(customers.users, perCustomer(ctx), tag, Date.now() + 1000);
  customers.expect(sessions);
  const { load_seconds, load_factor, sessions_per_customer_per_minute } = ctx.settings;
  ctx.log(
    `${tag}: ${sessions.length} sessions over ${load_seconds} s (${load_factor} x ${sessions_per_customer_per_minute}/customer/min) on ${shards} D1 ${shards === 1 ? "database" : "shards"}`,
  );
  const fed = await feedPaced(stack.url, sessions, load_seconds);
  await customers.untilOnMeter(`${tag} on the meter`);
  const lines = logLines(stack.logFile, from);
  const load = loadByInvocation(lines);
  const all = d1BusyPerSession(load, sessions.length);
  const byShard = shards === 1 ? [all.total] : busyByShard(lines, shards).map((ms) => ms / sessions.length);
  return {
    shards,
    sessions: sessions.length,
    sessions_per_second: sessions.length / load_seconds,
    feed_seconds: seconds(fed.started, fed.finished),
    d1_by_worker: load,
    d1_busy_ms_per_session: { ...all, by_shard: byShard },
  };
}

export const pacedAtLoad: Phase<"paced_at_load", AtLoadResult> = {
  key: "paced_at_load",
  uses: ["stack", "customers"],
  async run(ctx) {
    return runAtLoad(ctx, await ctx.use("stack"), await ctx.use("customers"), "load-one", 1);
  },
  rows(r) {
    return [
      {
        label: `at ${fmt(r.sessions_per_second)} sessions/s: D1 busy ms per session, one database`,
        value: fmt(r.d1_busy_ms_per_session.total, 3),
        against: Object.entries(r.d1_busy_ms_per_session.by_worker)
          .map(([w, ms]) => `${w} ${fmt(ms, 3)}`)
          .join(", "),
      },
    ];
  },
};

export const shardedAtLoad: Phase<"sharded_at_load", ShardedAtLoadResult> = {
  key: "sharded_at_load",
  uses: ["shardedStack", "shardedCustomers"],
  async run(ctx) {
    const one = earlier(ctx, "paced_at_load").d1_busy_ms_per_session.total;
    const stack = await ctx.use("shardedStack");
    const customers = await ctx.use("shardedCustomers");
    const r = await runAtLoad(ctx, stack, customers, "load-sharded", BENCH_SHARDS);
    const sessionsByShard = await sessionsOnTheirShards(stack, "load-sharded", r.sessions);
    const customersByShard = earlier(ctx, "sharded").customers_by_shard;
    const byShard = r.d1_busy_ms_per_session.by_shard;
    const busiest = Math.max(...byShard);
    const mean = byShard.reduce((a, b) => a + b, 0) / byShard.length;
    return {
      ...r,
      customers_by_shard: customersByShard,
      sessions_by_shard: sessionsByShard,
      one_database_over_mean_shard: mean > 0 ? one / mean : 0,
      one_database_over_busiest_shard: busiest > 0 ? one / busiest : 0,
    };
  },
  rows(r, all) {
    const one = all.paced_at_load?.d1_busy_ms_per_session.total;
    return [
      {
        label: `at ${fmt(r.sessions_per_second)} sessions/s, ${r.shards} shards: D1 busy ms per session, each shard`,
        value: r.d1_busy_ms_per_session.by_shard.map((ms) => fmt(ms, 3)).join(" / "),
        against: `all shards ${fmt(r.d1_busy_ms_per_session.total, 3)}; one database ${fmt(one, 3)}`,
      },
      {
        label: `at ${fmt(r.sessions_per_second)} sessions/s, ${r.shards} shards: one database's busy time / the mean shard's`,
        value: fmt(r.one_database_over_mean_shard),
        against: `ideal ${r.shards}`,
      },
      {
        label: `at ${fmt(r.sessions_per_second)} sessions/s, ${r.shards} shards: one database's busy time / the busiest shard's`,
        value: fmt(r.one_database_over_busiest_shard),
        against: `the busiest shard holds ${Math.max(...r.customers_by_shard)} of ${r.customers_by_shard.reduce((a, b) => a + b, 0)} customers`,
      },
    ];
  },
};
