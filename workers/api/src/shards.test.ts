/**
 * The api worker on a sharded D1 (four shards): a user's API answers from the user's shard only,
 * the admin's lists and metrics cover every shard, the crons work every shard (the global tables
 * in the home database only), and the alerts consumer reads and marks each alert on its user's
 * shard, parking dead letters in the home database.
 */
import {
  createExecutionContext,
  createMessageBatch,
  createScheduledController,
  env,
  getQueueResult,
} from "cloudflare:test";
import { type SpendAlertMessage, shardsOf, shardsOver } from "@aigate/shared";
import { DEV_ADMIN_KEY, seedKeys, userToken } from "@aigate/test-support";
import { shardedEnv, userOnShard } from "@aigate/test-support/shards";
import { parse } from "csv-parse/sync";
import { describe, expect, it } from "vitest";
import { deliverAlerts } from "./alerts";
import { RETENTION_CRON, readRetentionConfig } from "./config";
import worker from "./index";
import { runRetentionOnShards } from "./retention";
import { runSessionArchiveOnShards } from "./sessionArchive";
import { deadLetterRows, recordingProducers } from "./test/admin";
import { insertFrozenSeries, insertJudged } from "./test/support";

const DAY = 86_400_000;
const quiet = { info() {}, warn() {}, error() {}, child: () => quiet };

type ShardedEnv = Env & { D1_SHARDS: string };

/** The four shards of the test run, by index: DB, DB_1, DB_2, DB_3. */
const SHARDS = [env.DB, env.DB_1, env.DB_2, env.DB_3];

function shard(i: number): D1Database {
  const db = SHARDS[i];
  if (!db) throw new Error(`no shard ${i}`);
  return db;
}

async function request(e: ShardedEnv, path: string, authorization: string, init: RequestInit = {}) {
  const headers = new Headers(init.headers);
  headers.set("authorization", authorization);
  if (init.body) headers.set("content-type", "application/json");
  return worker.fetch(
    new Request(`http://api.test${path}`, { ...init, headers }),
    e,
    createExecutionContext(),
  );
}

async function asUser(e: ShardedEnv, user: string, path: string, init: RequestInit = {}) {
  return request(e, path, `Bearer ${await userToken(user)}`, init);
}

async function json<T>(res: Response): Promise<T> {
  expect(res.status, await res.clone().text()).toBe(200);
  return res.json<T>();
}

async function count(db: D1Database, sql: string, ...params: unknown[]): Promise<number> {
  const row = await db
    .prepare(`SELECT count(*) AS n FROM ${sql}`)
    .bind(...params)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

async function insertInvoice(db: D1Database, user: string, id: string, created: number) {
  await db
    .prepare(
      `INSERT INTO invoices (stripe_invoice_id, user_id, stripe_customer_id, status, currency, subtotal_cents,
         total_cents, amount_paid_cents, period_start, period_end, stripe_created, updated_at, number)
       VALUES (?1, ?2, 'cus_x', 'paid', 'usd', 0, 0, 0, ?3, ?3, ?3, 0, ?1)`,
    )
    .bind(id, user, created)
    .run();
}

async function insertLine(db: D1Database, invoiceId: string, lineId: string, description: string) {
  await db
    .prepare(
      `INSERT INTO invoice_lines (stripe_invoice_id, line_id, plan, metered, period_start, period_end, quantity,
         amount_cents, description) VALUES (?1, ?2, 'payg', 1, 0, 0, 2, 20, ?3)`,
    )
    .bind(invoiceId, lineId, description)
    .run();
}

async function insertRollup(db: D1Database, user: string, day: string, reason: string, sessions: number) {
  await db
    .prepare(
      `INSERT INTO daily_rollups (user_id, day, reason, sessions, audio_ms) VALUES (?1, ?2, ?3, ?4, 0)
       ON CONFLICT (user_id, day, reason) DO UPDATE SET sessions = daily_rollups.sessions + excluded.sessions`,
    )
    .bind(user, day, reason, sessions)
    .run();
}

/** A pro subscription covering now, as the webhooks worker records it. */
async function insertSubscription(db: D1Database, user: string, plan: "payg" | "pro") {
  const start = Date.now() - 5 * DAY;
  const end = start + 30 * DAY;
  const sub = `sub_${plan}_${user}`;
  await db.batch([
    db
      .prepare(
        "INSERT INTO stripe_customers (user_id, stripe_customer_id, email, plan, created_at, updated_at) VALUES (?1, ?2, '', ?3, 0, 0)",
      )
      .bind(user, `cus_${user}`, plan),
    db
      .prepare(
        `INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, plan, status,
           current_period_start, current_period_end, started_at, updated_at) VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?5, 0)`,
      )
      .bind(sub, user, `cus_${user}`, plan, start, end),
    db
      .prepare(
        "INSERT INTO billing_periods (stripe_subscription_id, period_start, period_end) VALUES (?1, ?2, ?3)",
      )
      .bind(sub, start, end),
    db
      .prepare(
        "INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at) VALUES (?1, ?2, ?3, ?4, 0)",
      )
      .bind(user, start, plan, sub),
  ]);
}

describe("a user's billing API on a sharded D1", () => {
  it("answers sessions, invoices, invoice sessions (JSON, CSV, archived), daily usage, usage and limits from the user's shard only", async () => {
    const e = await shardedEnv({ ...env });
    const user = userOnShard("api_user_", 2);
    const own = shard(2);
    const home = shard(0);
    const period = Date.UTC(2026, 6, 1);
    const at = (day: number) => period + (day - 1) * DAY + 9 * 3_600_000;
    const today = new Date().toISOString().slice(0, 10);

    // the user's rows, on shard 2: two sessions charged on in_own, a pro subscription, today's usage
    await insertJudged(own, [
      { id: `s1_${user}`, user, billedAt: at(2), plan: "payg", periodStart: period, seq: 1 },
      { id: `s2_${user}`, user, billedAt: at(3), plan: "payg", periodStart: period, seq: 2 },
    ]);
    await insertFrozenSeries(own, {
      user,
      plan: "payg",
      periodStart: period,
      billable: 2,
      stripeBilled: 2,
      invoiceId: "in_own",
    });
    await insertInvoice(own, user, "in_own", period + 31 * DAY);
    await insertLine(own, "in_own", "il_own", "July sessions");
    await insertRollup(own, user, "2026-07-02", "success", 1);
    await insertRollup(own, user, "2026-07-03", "success", 1);
    await insertRollup(own, user, today, "success", 5);
    await insertSubscription(own, user, "pro");
    // decoys for the same user in the home database, which must never answer for them
    await insertJudged(home, [
      { id: `decoy_${user}`, user, billedAt: at(4), plan: "payg", periodStart: period },
    ]);
    await insertInvoice(home, user, "in_decoy", period + 32 * DAY);
    await insertLine(home, "in_own", "il_decoy", "not this one");
    await insertRollup(home, user, today, "too_short", 7);
    await insertSubscription(home, user, "payg");

    const sessions = await json<{ sessions: { session_id: string }[]; archived_before: string | null }>(
      await asUser(e, user, "/api/billing/sessions?limit=100"),
    );
    expect(sessions.sessions.map((s) => s.session_id)).toEqual([`s2_${user}`, `s1_${user}`]);
    expect(sessions.archived_before).toBeNull();

    const invoices = await json<{ invoices: { id: string; lines: { description: string }[] }[] }>(
      await asUser(e, user, "/api/billing/invoices"),
    );
    expect(invoices.invoices.map((i) => i.id)).toEqual(["in_own"]);
    expect(invoices.invoices[0]?.lines.map((l) => l.description)).toEqual(["July sessions"]);

    const charged = await json<{ sessions: { session_id: string }[] }>(
      await asUser(e, user, "/api/billing/invoices/in_own/sessions"),
    );
    expect(charged.sessions.map((s) => s.session_id)).toEqual([`s1_${user}`, `s2_${user}`]);
    const csvRes = await asUser(e, user, "/api/billing/invoices/in_own/sessions?format=csv");
    expect(csvRes.status).toBe(200);
    const csv = parse(await csvRes.text(), { columns: true }) as { session_id: string }[];
    expect(csv.map((r) => r.session_id)).toEqual([`s1_${user}`, `s2_${user}`]);
    expect((await asUser(e, user, "/api/billing/invoices/in_decoy/sessions")).status).toBe(404);

    const daily = await json<{ days: { day: string; sessions: number; billable: number }[] }>(
      await asUser(e, user, "/api/billing/daily?days=1"),
    );
    expect(daily.days).toMatchObject([{ day: today, sessions: 5, billable: 5 }]);

    const usage = await json<{ plan: string }>(await asUser(e, user, "/api/billing/usage"));
    expect(usage.plan).toBe("pro");

    // limits and the alert endpoint are written on the user's shard, and read back from it
    const put = await asUser(e, user, "/api/billing/limits", {
      method: "PUT",
      body: JSON.stringify({ monthly_cap_cents: 5000, alert_thresholds: [50] }),
    });
    expect(await json<{ monthly_cap_cents: number; plan: string }>(put)).toMatchObject({
      monthly_cap_cents: 5000,
      plan: "pro",
    });
    const endpoint = await asUser(e, user, "/api/billing/alert-endpoint", {
      method: "PUT",
      body: JSON.stringify({ url: "https://hooks.example.com/shard" }),
    });
    expect(endpoint.status).toBe(200);
    expect(await count(own, "spend_limits WHERE user_id = ?1 AND alert_url IS NOT NULL", user)).toBe(1);
    expect(await count(home, "spend_limits WHERE user_id = ?1", user)).toBe(0);
    const limits = await json<{ alert_endpoint: { url: string } | null }>(
      await asUser(e, user, "/api/billing/limits"),
    );
    expect(limits.alert_endpoint?.url).toBe("https://hooks.example.com/shard");

    // archived on shard 2 (its own manifest rows), the invoice still lists the same sessions
    const run = await runSessionArchiveOnShards(
      shardsOf(e),
      env.ARCHIVE,
      readRetentionConfig({}),
      period + 90 * DAY,
      quiet,
    );
    expect(run).toMatchObject({ archived: 2, deleted: 2 });
    expect(await count(own, "session_archives WHERE user_id = ?1", user)).toBe(2);
    expect(await count(home, "session_archives")).toBe(0);
    expect(await count(home, "sessions WHERE user_id = ?1", user)).toBe(1); // the decoy, untouched
    const archived = await json<{ sessions: { session_id: string }[] }>(
      await asUser(e, user, "/api/billing/invoices/in_own/sessions"),
    );
    expect(archived.sessions.map((s) => s.session_id)).toEqual([`s1_${user}`, `s2_${user}`]);
    const after = await json<{ archived_before: string | null }>(
      await asUser(e, user, "/api/billing/sessions"),
    );
    expect(after.archived_before).toBe("2026-07-04T00:00:00.000Z");
  });
});

describe("the admin API on a sharded D1", () => {
  it("lists the reconciliation runs of every shard, newest first, the limit applied after the merge", async () => {
    const e = await shardedEnv({ ...env });
    await seedKeys(env.DB);
    const run = (db: D1Database, id: string, startedAt: number) =>
      db
        .prepare(
          `INSERT INTO reconciliation_runs (id, started_at, finished_at, periods_checked, mismatches, repaired, report)
           VALUES (?1, ?2, ?2 + 1000, 1, 0, 0, '{}')`,
        )
        .bind(id, startedAt)
        .run();
    // shard 0 has the oldest and the newest; shards 2 and 3 a tie, broken by id
    await run(shard(0), "run_a", 1_000);
    await run(shard(0), "run_h", 8_000);
    await run(shard(1), "run_b", 2_000);
    await run(shard(1), "run_f", 6_000);
    await run(shard(2), "run_c", 3_000);
    await run(shard(2), "run_g", 7_000);
    await run(shard(2), "run_d", 5_000);
    await run(shard(3), "run_e", 5_000);

    const list = async (limit: number) =>
      (
        await json<{ runs: { id: string }[] }>(
          await request(e, `/admin/reconciliation?limit=${limit}`, `Bearer ${DEV_ADMIN_KEY}`),
        )
      ).runs.map((r) => r.id);
    expect(await list(5)).toEqual(["run_h", "run_g", "run_f", "run_e", "run_d"]);
    expect(await list(50)).toEqual(["run_h", "run_g", "run_f", "run_e", "run_d", "run_c", "run_b", "run_a"]);
  });
});

describe("a customer's pricing (admin) on a sharded D1", () => {
  it("reads the customer's versions on the customer's shard", async () => {
    const e = await shardedEnv({ ...env });
    await seedKeys(env.DB);
    const user = userOnShard("priced_user_", 3);
    const version = (db: D1Database, v: number) =>
      db
        .prepare(
          `INSERT INTO custom_pricing (user_id, version, plan, tiers_mode, tiers, applies, state, requested_at)
           VALUES (?1, ?2, 'payg', 'volume', '[{"up_to":null,"unit_amount_cents":7}]', 'period_end', 'requested', 0)`,
        )
        .bind(user, v)
        .run();
    await version(shard(3), 1);
    await version(shard(3), 2);
    await version(shard(0), 9); // a decoy in the home database
    const body = await json<{ versions: { version: number }[] }>(
      await request(e, `/admin/customers/${user}/pricing`, `Bearer ${DEV_ADMIN_KEY}`),
    );
    expect(body.versions.map((v) => v.version)).toEqual([2, 1]);
  });
});

describe("the crons on a sharded D1", () => {
  it("archive every shard's due user-days, enqueue every shard's due alerts, keep retention of the global tables to the home database", async () => {
    const e = await shardedEnv({ ...env });
    const { producers, sent } = recordingProducers();
    const withQueue: ShardedEnv = { ...e, ALERTS: producers["aigate-alerts"] as Queue };
    const u1 = userOnShard("cron_user_", 1);
    const u3 = userOnShard("cron_user_", 3);
    const now = Date.now();
    const old = now - 60 * DAY;
    const oldDay = new Date(old).toISOString().slice(0, 10);
    for (const [user, i] of [
      [u1, 1],
      [u3, 3],
    ] as const) {
      // a free user-day past the archive's window, and a due spend alert
      await insertJudged(shard(i), [{ id: `old_${user}`, user, billedAt: old }]);
      await insertRollup(shard(i), user, oldDay, "success", 1);
      await shard(i)
        .prepare(
          `INSERT INTO spend_alerts (user_id, plan, period_start, threshold, cap_cents, usage_cents, sessions,
             crossed_at, delivery, next_attempt_at) VALUES (?1, 'payg', 0, 50, 1000, 500, 50, ?2, 'pending', ?2)`,
        )
        .bind(user, now - 1000)
        .run();
    }
    // every shard has a reconciliation run past its window; the global tables' old rows are in the
    // home database, and stray copies on shard 2 show that only the home database's are looked at
    const ancient = now - 400 * DAY;
    for (const db of SHARDS) {
      await db
        .prepare(
          `INSERT INTO reconciliation_runs (id, started_at, finished_at, periods_checked, mismatches, repaired, report)
           VALUES ('run_old', ?1, ?1, 0, 0, 0, '{}')`,
        )
        .bind(ancient)
        .run();
    }
    for (const db of [shard(0), shard(2)]) {
      await db.batch([
        db
          .prepare(
            "INSERT INTO processed_stripe_events (event_id, type, stripe_created, processed_at) VALUES ('evt_old', 'x', 0, ?1)",
          )
          .bind(ancient),
        db
          .prepare(
            `INSERT INTO dead_letters (id, queue, message_id, body, error, attempts, first_failed_at, last_failed_at,
               replayed_at, replay_count) VALUES ('aigate-verdicts:old', 'aigate-verdicts', 'old', '{}', 'x', 1, ?1, ?1, ?1, 1)`,
          )
          .bind(ancient),
      ]);
    }

    // the minute cron: alerts handed to the queue, then new user-days archived, on every shard
    await worker.scheduled(
      createScheduledController({ cron: "* * * * *", scheduledTime: now }),
      withQueue,
      createExecutionContext(),
    );
    const enqueued = sent.flatMap((s) => s.messages.map((m) => (m.body as SpendAlertMessage).user_id));
    expect(enqueued.sort()).toEqual([u1, u3].sort());
    for (const [user, i] of [
      [u1, 1],
      [u3, 3],
    ] as const) {
      expect(await count(shard(i), "sessions WHERE user_id = ?1", user)).toBe(0);
      expect(await count(shard(i), "session_archives WHERE user_id = ?1 AND day = ?2", user, oldDay)).toBe(1);
      expect(await count(shard(i), "session_archive_cursor WHERE user_id = ?1", user)).toBe(1);
      expect(
        await env.ARCHIVE.head(`sessions/v1/${oldDay}/${encodeURIComponent(user)}.ndjson.gz`),
      ).not.toBeNull();
    }
    expect(await count(shard(0), "session_archive_cursor")).toBe(0);

    // the hourly cron: reconciliation runs on every shard, the global tables in the home database
    await worker.scheduled(
      createScheduledController({ cron: RETENTION_CRON, scheduledTime: now }),
      withQueue,
      createExecutionContext(),
    );
    for (const db of SHARDS) expect(await count(db, "reconciliation_runs")).toBe(0);
    expect(await count(shard(0), "processed_stripe_events")).toBe(0);
    expect(await count(shard(0), "dead_letters")).toBe(0);
    expect(await count(shard(2), "processed_stripe_events")).toBe(1);
    expect(await count(shard(2), "dead_letters")).toBe(1);
  });
});

describe("the session archive's limits on a sharded D1", () => {
  it("shares a run's limit among the shards, so one invocation stays within D1's queries", async () => {
    const e = await shardedEnv({ ...env });
    const user = userOnShard("limit_user_", 1);
    const now = Date.now();
    for (const daysAgo of [60, 61]) {
      const at = now - daysAgo * DAY;
      await insertJudged(shard(1), [{ id: `s${daysAgo}_${user}`, user, billedAt: at }]);
      await insertRollup(shard(1), user, new Date(at).toISOString().slice(0, 10), "success", 1);
    }
    const config = readRetentionConfig({});
    // four user-days a run over four shards: one each
    const first = await runSessionArchiveOnShards(shardsOf(e), env.ARCHIVE, config, now, quiet, {
      maxUserDays: 4,
    });
    expect(first).toMatchObject({ archived: 1, more: true });
    expect(await count(shard(1), "sessions")).toBe(1);
    const second = await runSessionArchiveOnShards(shardsOf(e), env.ARCHIVE, config, now, quiet, {
      maxUserDays: 4,
    });
    expect(second).toMatchObject({ archived: 1, more: false });
    expect(await count(shard(1), "sessions")).toBe(0);
  });
});

describe("a shard that fails", () => {
  it("does not keep the other shards' retention from being done, and the run still fails", async () => {
    await shardedEnv({ ...env });
    const now = Date.now();
    for (const db of SHARDS) {
      await db
        .prepare(
          `INSERT INTO reconciliation_runs (id, started_at, finished_at, periods_checked, mismatches, repaired, report)
           VALUES ('run_old', ?1, ?1, 0, 0, 0, '{}')`,
        )
        .bind(now - 400 * DAY)
        .run();
    }
    const unavailable = new Proxy(shard(1), {
      get(target, prop) {
        if (prop === "prepare")
          return () => {
            throw new Error("D1_ERROR: shard 1 unavailable");
          };
        const value: unknown = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const shards = shardsOver([shard(0), unavailable, shard(2), shard(3)]);
    await expect(runRetentionOnShards(shards, readRetentionConfig({}), now, quiet)).rejects.toThrow(
      "shard 1 unavailable",
    );
    expect(await count(shard(1), "reconciliation_runs")).toBe(1);
    for (const i of [0, 2, 3]) expect(await count(shard(i), "reconciliation_runs")).toBe(0);
  });
});

describe("the alerts consumer on a sharded D1", () => {
  it("delivers each alert from its user's shard, marks it there, and parks dead letters in the home database", async () => {
    const e = await shardedEnv({ ...env });
    const u1 = userOnShard("alert_user_", 1);
    const u3 = userOnShard("alert_user_", 3);
    const now = Date.UTC(2026, 10, 5);
    const seed = async (db: D1Database, user: string, url: string) => {
      await db.batch([
        db
          .prepare(
            `INSERT INTO spend_limits (user_id, monthly_cap_cents, alert_thresholds, alert_url, alert_secret, updated_at)
             VALUES (?1, 1000, '[50,100]', ?2, 'aigwhsec_test', 0)`,
          )
          .bind(user, url),
        db
          .prepare(
            `INSERT INTO spend_alerts (user_id, plan, period_start, threshold, cap_cents, usage_cents, sessions,
               crossed_at, delivery, next_attempt_at) VALUES (?1, 'payg', 0, 50, 1000, 500, 50, ?2, 'pending', ?2)`,
          )
          .bind(user, now - 1000),
      ]);
    };
    await seed(shard(1), u1, "https://hooks.example.com/one");
    await seed(shard(3), u3, "https://hooks.example.com/three");
    // the same users in the home database, with another endpoint: never read
    await seed(shard(0), u1, "https://decoy.example.com/");
    await seed(shard(0), u3, "https://decoy.example.com/");

    const posted: string[] = [];
    const fetchFn = (async (input: RequestInfo | URL) => {
      posted.push(String(input));
      // u3's endpoint fails: its last attempt is parked
      return new Response("", { status: String(input).endsWith("/three") ? 500 : 200 });
    }) as typeof fetch;
    const message = (user: string): SpendAlertMessage => ({
      v: 1,
      kind: "spend_alert",
      user_id: user,
      plan: "payg",
      period_start: 0,
      threshold: 50,
    });
    const batch = createMessageBatch("aigate-alerts", [
      { id: "m1", timestamp: new Date(now), attempts: 1, body: message(u1) },
      { id: "m3", timestamp: new Date(now), attempts: 8, body: message(u3) },
      { id: "bad", timestamp: new Date(now), attempts: 1, body: { v: 1, kind: "nonsense" } },
    ]);
    const ctx = createExecutionContext();
    await deliverAlerts(batch, { shards: shardsOf(e), fetch: fetchFn, now: () => now, log: quiet });
    const result = await getQueueResult(batch, ctx);
    expect(result.explicitAcks.sort()).toEqual(["bad", "m1", "m3"]);

    expect(posted.sort()).toEqual(["https://hooks.example.com/one", "https://hooks.example.com/three"]);
    const delivery = async (db: D1Database, user: string) =>
      (
        await db
          .prepare("SELECT delivery FROM spend_alerts WHERE user_id = ?1")
          .bind(user)
          .first<{ delivery: string }>()
      )?.delivery;
    expect(await delivery(shard(1), u1)).toBe("delivered");
    expect(await delivery(shard(3), u3)).toBe("failed");
    expect(await delivery(shard(0), u1)).toBe("pending");
    expect(await delivery(shard(0), u3)).toBe("pending");
    expect((await deadLetterRows(shard(0))).map((d) => d.id)).toEqual([
      "aigate-alerts:bad",
      "aigate-alerts:m3",
    ]);
    for (const i of [1, 2, 3]) expect(await count(shard(i), "dead_letters")).toBe(0);
  });

  it("parks the dead-letter queues' messages in the home database", async () => {
    const e = await shardedEnv({ ...env });
    const user = userOnShard("dlq_user_", 1);
    const batch = createMessageBatch("aigate-verdicts-dlq", [
      { id: "v1", timestamp: new Date(1_000), attempts: 1, body: { v: 1, kind: "verdict", user_id: user } },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(batch, e);
    expect((await getQueueResult(batch, ctx)).explicitAcks).toEqual(["v1"]);
    expect((await deadLetterRows(shard(0))).map((d) => d.id)).toEqual(["aigate-verdicts:v1"]);
    for (const i of [1, 2, 3]) expect(await count(shard(i), "dead_letters")).toBe(0);
  });
});
