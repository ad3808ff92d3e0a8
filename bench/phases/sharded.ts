/**
 * The step past one database's ceiling (docs/scale.md "Sharding"): the paced load again, the same
 * customers and rate, on a stack whose D1 is four shards (users spread by a hash of their id).
 * Reports D1 busy time per session on each shard, from the `d1_duration_ms_by_shard` of every
 * invocation of the window, beside the one-database figure of the paced phase: one shard carries
 * about a quarter of the load, so the sessions a second the deployment carries grow about 4x.
 * Also checks where the rows went: every session on its user's shard and on no other, and every
 * meter total exact.
 */
import { shardBucket } from "@aigate/shared/shardKey";
import { pacedSessionsPerUser } from "../lib/customers";
import { feedPaced, seconds } from "../lib/feed";
import {
  d1BusyPerSession,
  type InvocationLoad,
  isDone,
  type LogLine,
  loadByInvocation,
  logLines,
  logSize,
} from "../lib/logs";
import { type BenchStack, earlier, type Phase } from "../lib/phase";
import { fmt } from "../lib/report";
import { BENCH_SHARDS } from "../lib/resources";
import { workload } from "../workload";

export interface ShardedResult {
  shards: number;
  sessions: number;
  billed: number;
  feed_seconds: number;
  /** Paying customers whose rows live on each shard. */
  customers_by_shard: number[];
  /** Sessions found on each shard after the window (all on their user's shard). */
  sessions_by_shard: number[];
  /** Invocations, D1 rows and D1 time (all shards) per kind of invocation (`<worker> <done line>`). */
  d1_by_worker: Record<string, InvocationLoad>;
  /** Milliseconds D1 spent per session of the window: on all shards (in all and per worker), and on each shard. */
  d1_busy_ms_per_session: { total: number; by_worker: Record<string, number>; by_shard: number[] };
  /** The paced phase's (one database) busy ms per session over the busiest shard's, and over the mean shard's. */
  one_database_over_busiest_shard: number;
  one_database_over_mean_shard: number;
}

/** D1 milliseconds per shard over the invocations of the window (a sampled line stands for 1 / rate). */
export function busyByShard(lines: LogLine[], shards: number): number[] {
  const out = Array.from({ length: shards }, () => 0);
  for (const l of lines) {
    if (!isDone(l)) continue;
    const by = l.d1_duration_ms_by_shard;
    const w = typeof l.sample_rate === "number" && l.sample_rate > 0 ? 1 / l.sample_rate : 1;
    if (Array.isArray(by)) {
      by.forEach((ms, i) => {
        if (typeof ms === "number" && i < shards) out[i] = (out[i] ?? 0) + ms * w;
      });
    } else if (typeof l.d1_duration_ms === "number" && l.d1_duration_ms > 0) {
      // every worker of a sharded stack logs the split; a line without it is a wiring fault
      throw new Error(`a done line without d1_duration_ms_by_shard: ${JSON.stringify(l)}`);
    }
  }
  return out;
}

/**
 * Where the rows are: each shard holds exactly its users' sessions of the window (ids
 * `<tag>-...`), and all of them are found. Returns the sessions found on each shard.
 */
export async function sessionsOnTheirShards(
  stack: BenchStack,
  tag: string,
  expected: number,
): Promise<number[]> {
  const perShard = await stack.queryEach<{ user_id: string; n: number }>(
    `SELECT user_id, count(*) AS n FROM sessions WHERE session_id LIKE '${tag}-%' GROUP BY user_id`,
  );
  const sessionsByShard = perShard.map((rows, shard) => {
    for (const r of rows) {
      if (shardBucket(r.user_id) % BENCH_SHARDS !== shard) {
        throw new Error(`sessions of ${r.user_id} found on shard ${shard}, not on the user's shard`);
      }
    }
    return rows.reduce((a, r) => a + r.n, 0);
  });
  const found = sessionsByShard.reduce((a, b) => a + b, 0);
  if (found !== expected) throw new Error(`${found} of ${expected} sessions found on the shards`);
  return sessionsByShard;
}

export const sharded: Phase<"sharded", ShardedResult> = {
  key: "sharded",
  uses: ["shardedStack", "shardedCustomers"],
  async run(ctx) {
    const oneDatabase = earlier(ctx, "paced").d1_busy_ms_per_session.total;
    const stack = await ctx.use("shardedStack");
    const customers = await ctx.use("shardedCustomers");
    const { paced_seconds, sessions_per_customer_per_minute } = ctx.settings;
    const from = logSize(stack.logFile);
    const sessions = workload(
      customers.users,
      pacedSessionsPerUser(ctx.settings),
      "sharded",
      Date.now() + 1000,
    );
    customers.expect(sessions);
    ctx.log(
      `sharded: ${sessions.length} sessions over ${paced_seconds} s (${sessions_per_customer_per_minute}/customer/min) on ${BENCH_SHARDS} D1 shards`,
    );
    const fed = await feedPaced(stack.url, sessions, paced_seconds);
    await customers.untilOnMeter("sharded on the meter");
    const lines = logLines(stack.logFile, from);

    const sessionsByShard = await sessionsOnTheirShards(stack, "sharded", sessions.length);

    const busy = busyByShard(lines, BENCH_SHARDS);
    const per = (ms: number) => ms / sessions.length;
    const byShard = busy.map(per);
    const load = loadByInvocation(lines);
    const busyAll = d1BusyPerSession(load, sessions.length);
    const busiest = Math.max(...byShard);
    const mean = byShard.reduce((a, b) => a + b, 0) / BENCH_SHARDS;
    const customersByShard = Array.from({ length: BENCH_SHARDS }, () => 0);
    for (const u of customers.users) {
      const i = shardBucket(u) % BENCH_SHARDS;
      customersByShard[i] = (customersByShard[i] ?? 0) + 1;
    }
    return {
      shards: BENCH_SHARDS,
      sessions: sessions.length,
      billed: sessions.filter((s) => s.billable).length,
      feed_seconds: seconds(fed.started, fed.finished),
      customers_by_shard: customersByShard,
      sessions_by_shard: sessionsByShard,
      d1_by_worker: load,
      d1_busy_ms_per_session: { ...busyAll, by_shard: byShard },
      one_database_over_busiest_shard: busiest > 0 ? oneDatabase / busiest : 0,
      one_database_over_mean_shard: mean > 0 ? oneDatabase / mean : 0,
    };
  },
  rows(r, all) {
    const one = all.paced?.d1_busy_ms_per_session.total;
    return [
      {
        label: `${r.shards} shards: D1 busy ms per session, each shard`,
        value: r.d1_busy_ms_per_session.by_shard.map((ms) => fmt(ms, 3)).join(" / "),
        against: `all shards ${fmt(r.d1_busy_ms_per_session.total, 3)}; one database ${fmt(one, 3)}; customers per shard ${r.customers_by_shard.join("/")}`,
      },
      {
        label: `${r.shards} shards: D1 busy ms per session, all shards, per worker`,
        value: fmt(r.d1_busy_ms_per_session.total, 3),
        against: Object.entries(r.d1_busy_ms_per_session.by_worker)
          .map(
            ([w, ms]) =>
              `${w} ${fmt(ms, 3)} (one database ${fmt(all.paced?.d1_busy_ms_per_session.by_worker[w], 3)})`,
          )
          .join(", "),
      },
      {
        label: `${r.shards} shards: one database's busy time / the mean shard's`,
        value: fmt(r.one_database_over_mean_shard),
        against: `ideal ${r.shards}`,
      },
      {
        label: `${r.shards} shards: one database's busy time / the busiest shard's`,
        value: fmt(r.one_database_over_busiest_shard),
        against: `the busiest shard holds ${Math.max(...r.customers_by_shard)} of ${r.customers_by_shard.reduce((a, b) => a + b, 0)} customers`,
      },
      {
        label: `${r.shards} shards: a deployment's ceiling, sessions/s (1000 / busiest shard's ms)`,
        value: fmt(1000 / Math.max(...r.d1_busy_ms_per_session.by_shard)),
        against: `one database ${fmt(one ? 1000 / one : null)}`,
      },
    ];
  },
};
