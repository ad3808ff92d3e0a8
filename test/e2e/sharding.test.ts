/**
 * The whole pipeline on four D1 shards (docs/scale.md "Sharding"), as a deployment past one
 * database's storage runs it: a paying user on every shard subscribes through Checkout (the
 * emulator's signed webhooks), sends telemetry in one shared request, and is billed exactly on
 * the Stripe meter. Each user's rows are on the user's shard and on no other; the global tables
 * (customer directory, Stripe event dedupe) are in the home database only; the operator metrics
 * add up every shard.
 */
import { shardBucket } from "@aigate/shared/shardKey";
import { DEV_ADMIN_KEY } from "@aigate/test-support";
import { describe, expect, inject, it } from "vitest";
import {
  asUser,
  eventually,
  postEvents,
  queryD1,
  sessionEvents,
  shardOf,
  stackUrl,
  stripeUrl,
} from "./helpers";

const SHARDS = 4;

/** A user id with the given prefix whose rows live on shard `shard` of the stack. */
function userOnShard(prefix: string, shard: number): string {
  for (let k = 0; k < 10_000; k++) {
    const id = `${prefix}-${k}`;
    if (shardBucket(id) % SHARDS === shard) return id;
  }
  throw new Error(`no id for shard ${shard}`);
}

async function subscribe(userId: string): Promise<string> {
  const checkout = await asUser(userId, "/api/billing/checkout", {
    method: "POST",
    body: JSON.stringify({ plan: "payg" }),
  });
  expect(checkout.status).toBe(200);
  const { id } = (await checkout.json()) as { id: string };
  const completed = await fetch(stripeUrl(`/_emulator/checkout/sessions/${id}/complete`), { method: "POST" });
  expect(completed.status).toBe(200);
  const { subscription } = (await completed.json()) as { subscription: { customer: string } };
  await eventually(
    async () => ((await (await asUser(userId, "/api/billing/usage")).json()) as { plan: string }).plan,
    (plan) => plan === "payg",
  );
  return subscription.customer;
}

describe("four D1 shards", () => {
  it("runs on four shards", () => {
    expect(inject("stackShards")).toBe(SHARDS);
  });

  it("keeps every user's rows on the user's shard, the global tables at home, and bills each exactly", async () => {
    const run = crypto.randomUUID().slice(0, 8);
    const users = [0, 1, 2, 3].map((shard) => userOnShard(`shard-${run}`, shard));
    expect(users.map(shardOf)).toEqual([0, 1, 2, 3]);
    const customers = new Map<string, string>();
    for (const user of users) customers.set(user, await subscribe(user));

    // sessions of every user, in one request: ingest and the classifier split them by shard
    const perUser = [1, 2, 3, 4];
    const start = Date.now() + 1000;
    const events = users.flatMap((userId, u) =>
      Array.from({ length: perUser[u] ?? 0 }, (_, i) =>
        sessionEvents({ sessionId: `s-${run}-${u}-${i}`, userId, start: start + i * 10 }),
      ).flat(),
    );
    const accepted = await postEvents(events);
    expect(accepted.status).toBe(202);

    // every meter total exact
    const meter = inject("paygMeter");
    for (const [u, user] of users.entries()) {
      const customer = customers.get(user) ?? "";
      const usage = await eventually(
        async () =>
          (await (
            await fetch(
              stripeUrl(`/_emulator/meters/${meter}/usage?customer=${encodeURIComponent(customer)}`),
            )
          ).json()) as { value: number },
        (v) => v.value >= (perUser[u] ?? 0),
      );
      expect(usage.value).toBe(perUser[u]);
      const api = (await (await asUser(user, "/api/billing/usage")).json()) as {
        sessions_this_month: number;
      };
      expect(api.sessions_this_month).toBe(perUser[u]);
    }

    // each user's rows on the user's shard only
    const inList = users.map((u) => `'${u}'`).join(", ");
    for (let shard = 0; shard < SHARDS; shard++) {
      const sessions = await queryD1<{ user_id: string; n: number }>(
        `SELECT user_id, count(*) AS n FROM sessions WHERE user_id IN (${inList}) GROUP BY user_id`,
        shard,
      );
      expect(sessions).toEqual([{ user_id: users[shard], n: perUser[shard] }]);
      for (const table of ["stripe_customers", "subscriptions", "usage_periods", "plan_history"]) {
        const owners = await queryD1<{ user_id: string }>(
          `SELECT DISTINCT user_id FROM ${table} WHERE user_id IN (${inList})`,
          shard,
        );
        expect(
          owners.map((r) => r.user_id),
          `${table} on shard ${shard}`,
        ).toEqual([users[shard]]);
      }
    }

    // the global tables: every customer in the home database's directory, and only there
    const ids = [...customers.values()].map((c) => `'${c}'`).join(", ");
    const directory = await queryD1<{ stripe_customer_id: string; user_id: string }>(
      `SELECT stripe_customer_id, user_id FROM customer_directory WHERE stripe_customer_id IN (${ids}) ORDER BY user_id`,
    );
    expect(directory).toEqual(
      [...customers]
        .map(([user, customer]) => ({ stripe_customer_id: customer, user_id: user }))
        .sort((a, b) => a.user_id.localeCompare(b.user_id)),
    );
    for (let shard = 1; shard < SHARDS; shard++) {
      expect(await queryD1(`SELECT 1 FROM customer_directory LIMIT 1`, shard)).toEqual([]);
      expect(await queryD1(`SELECT 1 FROM processed_stripe_events LIMIT 1`, shard)).toEqual([]);
    }
    expect(
      (await queryD1<{ n: number }>("SELECT count(*) AS n FROM processed_stripe_events"))[0]?.n,
    ).toBeGreaterThan(0);
  });

  it("adds up the operator metrics over every shard", async () => {
    const month = new Date().toISOString().slice(0, 7);
    // the month's judged sessions as every shard's rollups hold them (read before and after the
    // answer: a verdict landing in between would make them differ, and then we look again)
    const rollups = async () => {
      const perShard = await Promise.all(
        [0, 1, 2, 3].map((shard) =>
          queryD1<{ n: number | null }>(
            `SELECT sum(sessions) AS n FROM daily_rollups WHERE day >= '${month}-01' AND day <= '${month}-31'`,
            shard,
          ),
        ),
      );
      return perShard.map((rows) => rows[0]?.n ?? 0);
    };
    const seen = await eventually(
      async () => {
        const before = await rollups();
        const res = await fetch(stackUrl(`/admin/metrics?month=${month}`), {
          headers: { authorization: `Bearer ${DEV_ADMIN_KEY}` },
        });
        expect(res.status).toBe(200);
        const body = (await res.json()) as { sessions_total: number };
        return { before, after: await rollups(), answered: body.sessions_total };
      },
      (r) => JSON.stringify(r.before) === JSON.stringify(r.after),
    );
    // sessions on more than one shard, and the answer is all of them
    expect(seen.before.filter((n) => n > 0).length).toBeGreaterThan(1);
    expect(seen.answered).toBe(seen.before.reduce((a, b) => a + b, 0));
  });
});
