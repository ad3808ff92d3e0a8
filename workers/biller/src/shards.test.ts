/**
 * The biller over four D1 shards: each user's series are read, posted, locked, frozen and
 * reconciled on the user's shard and nowhere else; the crons cover every shard; a message naming
 * users of several shards is settled once every shard's part is done.
 */
import { createScheduledController, env } from "cloudflare:test";
import { shardedEnv, userOnShard } from "@aigate/test-support/shards";
import { beforeEach, describe, expect, it } from "vitest";
import { createBiller } from "./config";
import worker from "./index";
import { reconcile } from "./reconcile";
import { sweep } from "./sweep";
import {
  consume,
  createPaidCustomer,
  customerAcrossPeriods,
  DAY,
  failingDb,
  finalizedInvoice,
  judge,
  meterOf,
  meterUsage,
  type PaidCustomer,
  setupCatalog,
  stripe,
  tick,
  uniqueId,
  usageMessage,
  usagePeriods,
  verdictMessage,
} from "./test/support";

const GRACE = 3600 * 1000; // STRIPE_INVOICE_GRACE_SECONDS in wrangler.jsonc

beforeEach(async () => {
  await setupCatalog();
});

function shardDbs(): D1Database[] {
  return [env.DB, env.DB_1, env.DB_2, env.DB_3];
}

function dbOf(shard: number): D1Database {
  const db = shardDbs()[shard];
  if (!db) throw new Error(`no shard ${shard}`);
  return db;
}

/** A paid customer whose user lives on shard `shard` of four, recorded on that shard. */
async function customerOn(shard: number, opts: { plan?: "payg" | "pro" } = {}): Promise<PaidCustomer> {
  return createPaidCustomer({ ...opts, userId: userOnShard(`${uniqueId("u")}_`, shard), db: dbOf(shard) });
}

/** Rows naming a user in a table, per shard (index = shard). */
async function rowsPerShard(table: string, userId: string): Promise<number[]> {
  return Promise.all(
    shardDbs().map(async (db) => {
      const row = await db
        .prepare(`SELECT count(*) AS n FROM ${table} WHERE user_id = ?1`)
        .bind(userId)
        .first<{ n: number }>();
      return row?.n ?? 0;
    }),
  );
}

async function deadLettersPerShard(): Promise<number[]> {
  return Promise.all(
    shardDbs().map(
      async (db) =>
        (await db.prepare("SELECT count(*) AS n FROM dead_letters").first<{ n: number }>())?.n ?? 0,
    ),
  );
}

async function meterLocksPerShard(): Promise<number[]> {
  return Promise.all(
    shardDbs().map(
      async (db) =>
        (await db.prepare("SELECT count(*) AS n FROM meter_locks").first<{ n: number }>())?.n ?? 0,
    ),
  );
}

describe("usage of users on several shards", () => {
  it("posts each user's exact total from one message naming users of four shards, each series updated on its user's shard only", async () => {
    const e = await shardedEnv({ ...env });
    const customers = [
      await customerOn(0),
      await customerOn(1),
      await customerOn(2, { plan: "pro" }),
      await customerOn(3),
    ];
    const runs = [];
    for (const [i, c] of customers.entries()) runs.push(await judge(c.userId, i + 2, { db: dbOf(i) }));
    // one judge run's message naming every user, and one naming a single user (duplicate work)
    const mixed = usageMessage(runs.flatMap((r) => r.series));
    const single = runs[3]?.message;
    const lettersBefore = await deadLettersPerShard();
    const result = await consume([mixed, single], { env: e });
    expect(result.acked.sort()).toEqual([...result.ids].sort());
    expect(result.retried).toEqual([]);
    for (const [i, c] of customers.entries()) {
      expect((await meterUsage(c.customerId, c.plan, c.period)).value).toBe(i + 2);
      expect(await usagePeriods(c.userId, dbOf(i))).toMatchObject([
        { plan: c.plan, billable_sessions: i + 2, posted_total: i + 2, post_failures: 0 },
      ]);
      const elsewhere = (await rowsPerShard("usage_periods", c.userId)).map((n, k) => (k === i ? 0 : n));
      expect(elsewhere).toEqual([0, 0, 0, 0]);
    }
    expect(await deadLettersPerShard()).toEqual(lettersBefore);
    expect(await meterLocksPerShard()).toEqual([0, 0, 0, 0]);
  });

  it("reads a version 1 verdict's session on its user's shard", async () => {
    const e = await shardedEnv({ ...env });
    const c = await customerOn(3, { plan: "pro" });
    const run = await judge(c.userId, 2, { db: dbOf(3) });
    const result = await consume([verdictMessage(run.ids[0] ?? "", c.userId)], { env: e });
    expect(result.acked).toEqual(result.ids);
    expect((await meterUsage(c.customerId, "pro", c.period)).value).toBe(2);
    expect(await usagePeriods(c.userId, dbOf(3))).toMatchObject([{ billable_sessions: 2, posted_total: 2 }]);
  });

  it("retries a message until every shard's part is done; messages of the other shards are acked", async () => {
    const sharded = await shardedEnv({ ...env });
    const a = await customerOn(1);
    const z = await customerOn(2);
    const runA = await judge(a.userId, 3, { db: dbOf(1) });
    const runZ = await judge(z.userId, 4, { db: dbOf(2) });
    const mixed = usageMessage([...runA.series, ...runZ.series]);
    // shard 2 fails when its customer's meter lock is taken
    const crash = failingDb(env.DB_2, /INSERT INTO meter_locks/);
    const e = { ...sharded, DB_2: crash.db };
    const first = await consume([mixed, runA.message], { env: e, ids: ["mixed", "only_a"] });
    expect(crash.failures()).toBe(1);
    expect(first).toMatchObject({ acked: ["only_a"], retried: ["mixed"] });
    expect((await meterUsage(a.customerId, "payg", a.period)).value).toBe(3);
    expect((await meterUsage(z.customerId, "payg", z.period)).value).toBe(0);

    const again = await consume([mixed], { env: e, attempts: 2, ids: ["mixed"] });
    expect(again.acked).toEqual(["mixed"]);
    expect((await meterUsage(z.customerId, "payg", z.period)).value).toBe(4);
    expect(await usagePeriods(z.userId, dbOf(2))).toMatchObject([{ billable_sessions: 4, posted_total: 4 }]);
  });

  it("parks a message Stripe rejects in the home database's dead letters", async () => {
    const e = await shardedEnv({ ...env });
    const c = await customerOn(3);
    await dbOf(3)
      .prepare("UPDATE subscriptions SET stripe_customer_id = 'cus_gone' WHERE user_id = ?1")
      .bind(c.userId)
      .run();
    // a series naming no customer Stripe knows
    const run = await judge(c.userId, 1, { db: dbOf(3) });
    const before = await deadLettersPerShard();
    const result = await consume([run.message], { env: e });
    expect(result.acked).toEqual(result.ids);
    const after = await deadLettersPerShard();
    expect(after.map((n, k) => n - (before[k] ?? 0))).toEqual([1, 0, 0, 0]);
  });
});

describe("crons over every shard", () => {
  it("sweeps every shard: posts what no message carried, freezes a series billed on shard 3, one summed result", async () => {
    const e = await shardedEnv({ ...env });
    const customers = [await customerOn(0), await customerOn(1), await customerOn(2)];
    for (const [i, c] of customers.entries()) await judge(c.userId, i + 1, { db: dbOf(i) }); // messages lost
    const billed = await customerAcrossPeriods(2 * GRACE, "payg", {
      userId: userOnShard(`${uniqueId("u")}_`, 3),
      db: dbOf(3),
    });
    await judge(billed.c.userId, 4, { at: billed.p1.end - DAY, db: dbOf(3) });
    await finalizedInvoice(billed.c, {
      created: billed.p1.end + GRACE,
      window: billed.p1,
      quantity: 4,
      db: dbOf(3),
    });

    const b = createBiller(e);
    const result = await sweep(b, tick());
    // every shard's statements are counted, each on its own
    expect(b.d1.byShard?.map((s) => s.queries > 0)).toEqual([true, true, true, true]);
    // three open series and the ended one (posted before it is frozen)
    expect(result).toMatchObject({ attempted: 4, posted: 4, failed: 0, frozen: 1 });
    for (const [i, c] of customers.entries()) {
      expect((await meterUsage(c.customerId, "payg", c.period)).value).toBe(i + 1);
      expect(await usagePeriods(c.userId, dbOf(i))).toMatchObject([{ posted_total: i + 1 }]);
    }
    const [frozen] = await usagePeriods(billed.c.userId, dbOf(3));
    expect(frozen).toMatchObject({ period_start: billed.p1.start, billable_sessions: 4, stripe_billed: 4 });
    expect(frozen?.frozen_at).not.toBeNull();
    expect(await meterLocksPerShard()).toEqual([0, 0, 0, 0]);
    // nothing left on any shard
    expect(await sweep(createBiller(e), tick())).toMatchObject({ attempted: 0, frozen: 0 });
  });

  it("parks a series Stripe rejects, found by the sweep on shard 2, in the home database's dead letters", async () => {
    const e = await shardedEnv({ ...env });
    const c = await customerOn(2);
    await dbOf(2)
      .prepare("UPDATE subscriptions SET stripe_customer_id = 'cus_gone' WHERE user_id = ?1")
      .bind(c.userId)
      .run();
    await judge(c.userId, 1, { db: dbOf(2) }); // its message was lost
    const before = await deadLettersPerShard();
    expect(await sweep(createBiller(e), tick())).toMatchObject({ attempted: 1, failed: 1 });
    const after = await deadLettersPerShard();
    expect(after.map((n, k) => n - (before[k] ?? 0))).toEqual([1, 0, 0, 0]);
    expect(await usagePeriods(c.userId, dbOf(2))).toMatchObject([{ post_failures: 1, posted_total: 0 }]);
  });

  it("sweeps the other shards when one fails, then reports the failure", async () => {
    const sharded = await shardedEnv({ ...env });
    const a = await customerOn(1);
    const z = await customerOn(2);
    await judge(a.userId, 2, { db: dbOf(1) });
    await judge(z.userId, 3, { db: dbOf(2) });
    const crash = failingDb(env.DB_1, /INSERT INTO meter_locks/);
    await expect(sweep(createBiller({ ...sharded, DB_1: crash.db }), tick())).rejects.toThrow(/injected/);
    expect((await meterUsage(z.customerId, "payg", z.period)).value).toBe(3);
    expect((await meterUsage(a.customerId, "payg", a.period)).value).toBe(0);
    // the next run takes up what the failed shard left
    expect(await sweep(createBiller(sharded), tick())).toMatchObject({ attempted: 1, posted: 1 });
    expect((await meterUsage(a.customerId, "payg", a.period)).value).toBe(2);
  });

  it("reconciles the other shards when one fails, then reports the failure", async () => {
    const sharded = await shardedEnv({ ...env });
    const crash = failingDb(env.DB_1, /INSERT INTO reconciliation_runs/);
    await expect(
      reconcile(createBiller({ ...sharded, DB_1: crash.db }), { now: tick(), settleMs: 0 }),
    ).rejects.toThrow(/injected/);
    const finished = await Promise.all(
      shardDbs().map(
        async (db) =>
          (
            await db
              .prepare("SELECT count(*) AS n FROM reconciliation_runs WHERE finished_at IS NOT NULL")
              .first<{ n: number }>()
          )?.n ?? 0,
      ),
    );
    expect(finished).toEqual([1, 0, 1, 1]);
  });

  it("reconciles every shard, each keeping its own run; repairs a wrong total on shard 3", async () => {
    const e = await shardedEnv({ ...env });
    const ok = await customerOn(1);
    const wrong = await customerOn(3, { plan: "pro" });
    const runs = [await judge(ok.userId, 2, { db: dbOf(1) }), await judge(wrong.userId, 5, { db: dbOf(3) })];
    await consume(
      runs.map((r) => r.message),
      { env: e },
    );
    const [posted] = await usagePeriods(wrong.userId, dbOf(3));
    // someone posts a wrong absolute total, later than ours
    await stripe().billing.meterEvents.create({
      event_name: meterOf("pro"),
      payload: { stripe_customer_id: wrong.customerId, value: "1" },
      timestamp: (posted?.last_meter_ts ?? 0) + 1,
    });

    const result = await reconcile(createBiller(e), { now: tick() + 3000, settleMs: 0 });
    expect(result.runs).toHaveLength(4);
    expect(result.report).toMatchObject([{ user_id: wrong.userId, ours: 5, stripe: 1, action: "reposted" }]);
    expect((await meterUsage(wrong.customerId, "pro", wrong.period)).value).toBe(5);
    for (const [shard, db] of shardDbs().entries()) {
      const run = await db
        .prepare(
          "SELECT periods_checked, mismatches, repaired, report, finished_at FROM reconciliation_runs WHERE id = ?1",
        )
        .bind(result.runs[shard] ?? "")
        .first<{
          periods_checked: number;
          mismatches: number;
          repaired: number;
          report: string;
          finished_at: number;
        }>();
      expect(run?.finished_at).not.toBeNull();
      const reported = JSON.parse(run?.report ?? "null") as { user_id: string }[];
      expect(reported.map((r) => r.user_id)).toEqual(shard === 3 ? [wrong.userId] : []);
      if (shard === 1) expect(run).toMatchObject({ mismatches: 0 });
      if (shard === 3) expect(run).toMatchObject({ mismatches: 1, repaired: 1 });
      expect(run?.periods_checked ?? 0).toBeGreaterThanOrEqual(shard === 1 || shard === 3 ? 1 : 0);
    }
  });

  it("the hourly cron writes a finished run on every shard", async () => {
    const e = await shardedEnv({ ...env });
    const count = () =>
      Promise.all(
        shardDbs().map(
          async (db) =>
            (
              await db
                .prepare("SELECT count(*) AS n FROM reconciliation_runs WHERE finished_at IS NOT NULL")
                .first<{
                  n: number;
                }>()
            )?.n ?? 0,
        ),
      );
    const before = await count();
    await worker.scheduled(createScheduledController({ cron: "17 * * * *", scheduledTime: Date.now() }), e);
    const after = await count();
    expect(after.map((n, k) => n - (before[k] ?? 0))).toEqual([1, 1, 1, 1]);
  });
});
