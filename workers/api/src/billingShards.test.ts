/**
 * The billing API's Stripe paths in a deployment of four D1 shards, with the Stripe emulator and
 * the webhooks worker's handler on the same databases: a customer created at checkout is recorded
 * on the user's shard and in the customer directory (home), the webhooks then find the user there,
 * and a plan change converges on the user's shard.
 */

import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { userToken } from "@aigate/test-support";
import { shardedEnv, userOnShard } from "@aigate/test-support/shards";
import { createApp as createWebhooksApp, StripeScenario, webhookRequest } from "@aigate/webhooks/test";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createApp } from "./app";

const WEBHOOK_SECRET = "whsec_api_shards";
const scenario = new StripeScenario(env, WEBHOOK_SECRET);
const api = createApp();
const webhooks = createWebhooksApp();
const SHARDS = [env.DB, env.DB_1, env.DB_2, env.DB_3] as const;

let seq = 0;
const userOn = (i: number) => userOnShard(`user_api_shards_${Date.now().toString(36)}_${++seq}_`, i);

type TestEnv = typeof env & { D1_SHARDS: string; STRIPE_WEBHOOK_SECRET: string };
let sharded: TestEnv;

beforeAll(async () => {
  await scenario.setup();
});

// each test starts from its own storage: the shards are migrated again
beforeEach(async () => {
  sharded = await shardedEnv({ ...env, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET });
});

async function call(user: string, path: string, body?: unknown): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await api.fetch(
    new Request(`http://api.test${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${await userToken(user)}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    }),
    sharded,
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return res;
}

async function deliverAll(ids: readonly string[]) {
  for (const d of await scenario.eventsById(ids)) {
    const ctx = createExecutionContext();
    const res = await webhooks.fetch(webhookRequest(d.payload, await scenario.sign(d.payload)), sharded, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.status, `${d.type}: ${await res.clone().text()}`).toBe(200);
  }
}

/** Per shard (index 0..3), the number of rows `sql` (one `?1` parameter) counts. */
async function countsPerShard(sql: string, param: string): Promise<number[]> {
  const out: number[] = [];
  for (const db of SHARDS) out.push((await db.prepare(sql).bind(param).first<{ n: number }>())?.n ?? 0);
  return out;
}

/** Per shard: `n` rows on shard `i`, none elsewhere. */
const onlyOn = (i: number, n: number) => [0, 1, 2, 3].map((k) => (k === i ? n : 0));

/** A user on `shard` subscribed to `plan` through the api's checkout and the webhooks. */
async function subscribeThroughCheckout(shard: number, plan: "payg" | "pro") {
  const user = userOn(shard);
  const res = await call(user, "/api/billing/checkout", { plan });
  expect(res.status, await res.clone().text()).toBe(200);
  const { id } = await res.json<{ id: string }>();
  const customerId =
    (
      await SHARDS[shard]
        ?.prepare("SELECT stripe_customer_id FROM stripe_customers WHERE user_id = ?1")
        .bind(user)
        .first<{ stripe_customer_id: string }>()
    )?.stripe_customer_id ?? "";
  const done = await scenario.emulator.completeCheckout(id);
  return { user, customerId, done };
}

describe("billing on four D1 shards", () => {
  it("records a checkout's new customer on the user's shard and in the directory on home; its webhooks then land on that shard", async () => {
    for (const shard of [3, 0]) {
      const { user, customerId, done } = await subscribeThroughCheckout(shard, "payg");
      expect(customerId).toMatch(/^cus_/);
      expect(
        await countsPerShard("SELECT count(*) AS n FROM stripe_customers WHERE user_id = ?1", user),
      ).toEqual(onlyOn(shard, 1));
      expect(
        await env.DB.prepare("SELECT user_id FROM customer_directory WHERE stripe_customer_id = ?1")
          .bind(customerId)
          .first(),
      ).toEqual({ user_id: user });
      expect(
        await countsPerShard(
          "SELECT count(*) AS n FROM customer_directory WHERE stripe_customer_id = ?1",
          customerId,
        ),
      ).toEqual(onlyOn(0, 1));

      await deliverAll(done.events);
      expect(
        await countsPerShard(
          "SELECT count(*) AS n FROM subscriptions WHERE stripe_customer_id = ?1",
          customerId,
        ),
      ).toEqual(onlyOn(shard, 1));
      expect(await countsPerShard("SELECT count(*) AS n FROM plan_history WHERE user_id = ?1", user)).toEqual(
        onlyOn(shard, 1),
      );
      // the account as the api reads it from the user's shard: a second checkout is refused
      const again = await call(user, "/api/billing/checkout", { plan: "payg" });
      expect(again.status).toBe(409);
      expect(await again.json()).toMatchObject({ error: { code: "already_on_plan" } });
      // and the portal finds the customer there
      const portal = await call(user, "/api/billing/portal");
      expect(portal.status, await portal.clone().text()).toBe(200);
    }
  });

  it("converges a plan change on the user's shard at once, before any webhook", async () => {
    const { user, done } = await subscribeThroughCheckout(2, "payg");
    await deliverAll(done.events);
    const res = await call(user, "/api/billing/plan", { plan: "pro" });
    expect(res.status, await res.clone().text()).toBe(200);
    expect(await res.json()).toEqual({ plan: "pro", pending_plan: null, effective_at: null });

    const subscriptionId = done.subscription.id;
    expect(
      await env.DB_2.prepare("SELECT plan, status FROM subscriptions WHERE stripe_subscription_id = ?1")
        .bind(subscriptionId)
        .first(),
    ).toEqual({ plan: "pro", status: "active" });
    const history = await env.DB_2.prepare(
      "SELECT plan FROM plan_history WHERE user_id = ?1 ORDER BY effective_from",
    )
      .bind(user)
      .all<{ plan: string }>();
    // the change is in force from now (a change within the subscription's first second replaces its row)
    expect(history.results.at(-1)?.plan).toBe("pro");
    expect(
      await env.DB_2.prepare("SELECT plan FROM stripe_customers WHERE user_id = ?1").bind(user).first(),
    ).toEqual({ plan: "pro" });
    for (const table of ["subscriptions", "plan_history", "stripe_customers"]) {
      const n = table === "plan_history" ? history.results.length : 1;
      expect(
        await countsPerShard(`SELECT count(*) AS n FROM ${table} WHERE user_id = ?1`, user),
        table,
      ).toEqual(onlyOn(2, n));
    }
  });
});
