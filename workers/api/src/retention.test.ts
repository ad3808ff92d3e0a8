/**
 * Retention of the operational tables on the local runtime, with the real migrations: what is past
 * its window goes, what is younger stays, pending dead letters stay whatever their age, a backlog
 * is worked off in bounded batches over several runs, a run cut off half-way loses nothing, and a
 * Stripe event resent within Stripe's horizon is still deduplicated (checked through the webhooks
 * worker's handler and the Stripe emulator).
 */

import {
  createExecutionContext,
  createScheduledController,
  env,
  waitOnExecutionContext,
} from "cloudflare:test";
import type { LogFields, Logger } from "@aigate/shared";
import {
  createApp as createWebhooksApp,
  StripeScenario,
  type WebhooksEnv,
  webhookRequest,
} from "@aigate/webhooks/test";
import { beforeAll, describe, expect, it } from "vitest";
import { RETENTION_CRON, RETENTION_DEFAULTS, type RetentionConfig, readRetentionConfig } from "./config";
import worker from "./index";
import { RETAINED_TABLES, type RetainedTable, runRetention } from "./retention";
import { deadLetter, insertDeadLetterRows } from "./test/admin";

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 5, 15, 12);
const CONFIG: RetentionConfig = readRetentionConfig({});

/** A logger that keeps its lines. */
function recordingLogger(): Logger & { lines: Array<{ msg: string; fields?: LogFields }> } {
  const lines: Array<{ msg: string; fields?: LogFields }> = [];
  const logger: Logger & { lines: typeof lines } = {
    lines,
    info: (msg, fields) => lines.push({ msg, fields }),
    warn: (msg, fields) => lines.push({ msg, fields }),
    error: (msg, fields) => lines.push({ msg, fields }),
    child: () => logger,
  };
  return logger;
}

async function insertStripeEvents(ids: readonly string[], processedAt: number) {
  await env.DB.prepare(
    `INSERT INTO processed_stripe_events (event_id, type, stripe_created, processed_at)
     SELECT value, 'customer.subscription.updated', ?2 - 1000, ?2 FROM json_each(?1)`,
  )
    .bind(JSON.stringify(ids), processedAt)
    .run();
}

async function insertRuns(ids: readonly string[], startedAt: number) {
  await env.DB.prepare(
    `INSERT INTO reconciliation_runs (id, started_at, finished_at, report)
     SELECT value, ?2, ?2 + 60000, '[]' FROM json_each(?1)`,
  )
    .bind(JSON.stringify(ids), startedAt)
    .run();
}

async function insertReplayed(ids: readonly string[], replayedAt: number, failedAt = replayedAt - DAY) {
  await insertDeadLetterRows(
    env.DB,
    ids.map((id) =>
      deadLetter({
        id,
        first_failed_at: failedAt,
        last_failed_at: failedAt,
        replayed_at: replayedAt,
        replay_count: 1,
      }),
    ),
  );
}

async function insertPending(ids: readonly string[], failedAt: number) {
  await insertDeadLetterRows(
    env.DB,
    ids.map((id) => deadLetter({ id, first_failed_at: failedAt, last_failed_at: failedAt })),
  );
}

const KEY: Record<RetainedTable, string> = {
  processed_stripe_events: "event_id",
  dead_letters: "id",
  reconciliation_runs: "id",
};

async function ids(table: RetainedTable): Promise<string[]> {
  const { results } = await env.DB.prepare(`SELECT ${KEY[table]} AS id FROM ${table} ORDER BY 1`).all<{
    id: string;
  }>();
  return results.map((r) => r.id);
}

const names = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${prefix}_${String(i).padStart(3, "0")}`);

describe("retention windows (Worker vars)", () => {
  it("defaults to 7 days of Stripe event dedupe, 30 of replayed dead letters, 90 of reconciliation runs and 45 of sessions", () => {
    expect(RETENTION_DEFAULTS).toEqual({
      RETENTION_STRIPE_EVENTS_DAYS: 7,
      RETENTION_DEAD_LETTERS_DAYS: 30,
      RETENTION_RECONCILIATION_DAYS: 90,
      RETENTION_SESSIONS_DAYS: 45,
    });
    const windows = {
      stripeEventsMs: 7 * DAY,
      deadLettersMs: 30 * DAY,
      reconciliationMs: 90 * DAY,
      sessionsMs: 45 * DAY,
    };
    expect(readRetentionConfig({})).toEqual(windows);
    expect(
      readRetentionConfig({
        RETENTION_STRIPE_EVENTS_DAYS: "",
        RETENTION_DEAD_LETTERS_DAYS: "",
        RETENTION_RECONCILIATION_DAYS: "",
        RETENTION_SESSIONS_DAYS: "",
      }),
    ).toEqual(windows);
    // the committed wrangler.jsonc says the same
    expect(readRetentionConfig(env)).toEqual(windows);
  });

  it("takes other whole numbers of days within the bounds", () => {
    expect(
      readRetentionConfig({
        RETENTION_STRIPE_EVENTS_DAYS: "4",
        RETENTION_DEAD_LETTERS_DAYS: "1",
        RETENTION_RECONCILIATION_DAYS: "3650",
      }),
    ).toEqual({
      stripeEventsMs: 4 * DAY,
      deadLettersMs: DAY,
      reconciliationMs: 3650 * DAY,
      sessionsMs: 45 * DAY,
    });
  });

  it("refuses a Stripe event window within Stripe's three days of resends, saying why", () => {
    for (const days of ["3", "0", "-1"]) {
      expect(() => readRetentionConfig({ RETENTION_STRIPE_EVENTS_DAYS: days })).toThrow(
        `invalid worker settings: RETENTION_STRIPE_EVENTS_DAYS: at least 4 days (Stripe resends an event for up to 3 days: its dedupe row must outlive that by a day), got ${days}`,
      );
    }
  });

  it("refuses windows that are not whole numbers of days within the bounds, naming each", () => {
    expect(() => readRetentionConfig({ RETENTION_DEAD_LETTERS_DAYS: "0" })).toThrow(
      "RETENTION_DEAD_LETTERS_DAYS: at least 1 days",
    );
    expect(() => readRetentionConfig({ RETENTION_RECONCILIATION_DAYS: "1.5" })).toThrow(
      "RETENTION_RECONCILIATION_DAYS: a whole number of days from 1 to 3650 is required, got 1.5",
    );
    expect(() => readRetentionConfig({ RETENTION_STRIPE_EVENTS_DAYS: "a week" })).toThrow(
      "RETENTION_STRIPE_EVENTS_DAYS: a whole number of days from 4 to 3650 is required",
    );
    expect(() =>
      readRetentionConfig({ RETENTION_DEAD_LETTERS_DAYS: "3651", RETENTION_RECONCILIATION_DAYS: "x" }),
    ).toThrow(
      /RETENTION_DEAD_LETTERS_DAYS: a whole number of days from 1 to 3650 is required, got 3651; RETENTION_RECONCILIATION_DAYS: /,
    );
  });
});

describe("runRetention", () => {
  it("deletes the rows past each window and keeps the younger ones, the cutoff itself included", async () => {
    await insertStripeEvents(["evt_old"], NOW - 7 * DAY - 1);
    await insertStripeEvents(["evt_cutoff"], NOW - 7 * DAY);
    await insertStripeEvents(["evt_young"], NOW - 3 * DAY);
    await insertReplayed(["dl_old"], NOW - 30 * DAY - 1);
    await insertReplayed(["dl_cutoff"], NOW - 30 * DAY);
    // failed long ago but replayed recently: the window counts from the replay
    await insertReplayed(["dl_young"], NOW - DAY, NOW - 400 * DAY);
    await insertRuns(["run_old"], NOW - 90 * DAY - 1);
    await insertRuns(["run_cutoff"], NOW - 90 * DAY);
    await insertRuns(["run_young"], NOW - 2 * DAY);

    const log = recordingLogger();
    const result = await runRetention(env.DB, CONFIG, NOW, log);

    expect(result).toEqual({
      deleted: { processed_stripe_events: 1, dead_letters: 1, reconciliation_runs: 1 },
      more: [],
    });
    expect(await ids("processed_stripe_events")).toEqual(["evt_cutoff", "evt_young"]);
    expect(await ids("dead_letters")).toEqual(["dl_cutoff", "dl_young"]);
    expect(await ids("reconciliation_runs")).toEqual(["run_cutoff", "run_young"]);
    // one line per run, with the counts
    expect(log.lines).toEqual([{ msg: "retention done", fields: result }]);
  });

  it("never deletes a pending dead letter, whatever its age", async () => {
    await insertPending(["dl_pending_ancient"], NOW - 3000 * DAY);
    await insertPending(["dl_pending_old"], NOW - 31 * DAY);
    await insertReplayed(["dl_replayed_old"], NOW - 31 * DAY);
    const config = { ...CONFIG, deadLettersMs: DAY };

    const result = await runRetention(env.DB, config, NOW, recordingLogger());

    expect(result.deleted.dead_letters).toBe(1);
    expect(await ids("dead_letters")).toEqual(["dl_pending_ancient", "dl_pending_old"]);
    // and again, much later: still there
    await runRetention(env.DB, config, NOW + 3650 * DAY, recordingLogger());
    expect(await ids("dead_letters")).toEqual(["dl_pending_ancient", "dl_pending_old"]);
  });

  it("works off a backlog in bounded batches over several runs, then finds nothing more to do", async () => {
    await insertStripeEvents(names("evt_old", 25), NOW - 30 * DAY);
    await insertStripeEvents(names("evt_young", 3), NOW - DAY);
    await insertReplayed(names("dl_old", 25), NOW - 60 * DAY);
    await insertPending(names("dl_pending", 3), NOW - 60 * DAY);
    await insertRuns(names("run_old", 25), NOW - 200 * DAY);
    await insertRuns(names("run_young", 3), NOW - DAY);
    const opts = { batchSize: 10, maxBatches: 2 };
    const survivors = {
      processed_stripe_events: names("evt_young", 3),
      dead_letters: names("dl_pending", 3),
      reconciliation_runs: names("run_young", 3),
    };

    const first = await runRetention(env.DB, CONFIG, NOW, recordingLogger(), opts);
    expect(first).toEqual({
      deleted: { processed_stripe_events: 20, dead_letters: 20, reconciliation_runs: 20 },
      more: [...RETAINED_TABLES],
    });
    // the oldest first: evt_old_000..019 are gone, 020..024 wait for the next run
    expect(await ids("processed_stripe_events")).toEqual([
      ...names("evt_old", 25).slice(20),
      ...survivors.processed_stripe_events,
    ]);

    const second = await runRetention(env.DB, CONFIG, NOW, recordingLogger(), opts);
    expect(second).toEqual({
      deleted: { processed_stripe_events: 5, dead_letters: 5, reconciliation_runs: 5 },
      more: [],
    });
    for (const table of RETAINED_TABLES) expect(await ids(table)).toEqual(survivors[table]);

    // idempotent: running again changes nothing
    const third = await runRetention(env.DB, CONFIG, NOW, recordingLogger(), opts);
    expect(third).toEqual({
      deleted: { processed_stripe_events: 0, dead_letters: 0, reconciliation_runs: 0 },
      more: [],
    });
    for (const table of RETAINED_TABLES) expect(await ids(table)).toEqual(survivors[table]);
  });

  it("reports a table as having more when its last allowed batch was full", async () => {
    await insertStripeEvents(names("evt_old", 20), NOW - 30 * DAY);
    const result = await runRetention(env.DB, CONFIG, NOW, recordingLogger(), {
      batchSize: 10,
      maxBatches: 2,
    });
    expect(result.more).toEqual(["processed_stripe_events"]);
    // the next run finds the table empty past the window
    const next = await runRetention(env.DB, CONFIG, NOW, recordingLogger(), { batchSize: 10, maxBatches: 2 });
    expect(next.deleted.processed_stripe_events).toBe(0);
  });

  it("loses nothing when a run is cut off mid-way: the next run continues where it stopped", async () => {
    await insertStripeEvents(names("evt_old", 25), NOW - 30 * DAY);
    await insertStripeEvents(names("evt_young", 2), NOW - DAY);
    await insertReplayed(names("dl_old", 5), NOW - 60 * DAY);
    await insertPending(names("dl_pending", 2), NOW - 60 * DAY);
    await insertRuns(names("run_old", 5), NOW - 200 * DAY);

    // D1 fails on the third statement: two batches of Stripe events are done, nothing else
    let statements = 0;
    const failing = {
      prepare: (sql: string) => {
        const prepared = env.DB.prepare(sql);
        return {
          bind: (...values: unknown[]) => {
            const bound = prepared.bind(...values);
            return {
              run: async () => {
                statements += 1;
                if (statements === 3) throw new Error("D1_ERROR: network connection lost");
                return bound.run();
              },
            };
          },
        };
      },
    } as unknown as D1Database;
    await expect(runRetention(failing, CONFIG, NOW, recordingLogger(), { batchSize: 10 })).rejects.toThrow(
      "network connection lost",
    );
    expect(await ids("processed_stripe_events")).toEqual([
      ...names("evt_old", 25).slice(20),
      ...names("evt_young", 2),
    ]);
    expect((await ids("dead_letters")).length).toBe(7);
    expect((await ids("reconciliation_runs")).length).toBe(5);

    const next = await runRetention(env.DB, CONFIG, NOW, recordingLogger(), { batchSize: 10 });
    expect(next.deleted).toEqual({ processed_stripe_events: 5, dead_letters: 5, reconciliation_runs: 5 });
    expect(await ids("processed_stripe_events")).toEqual(names("evt_young", 2));
    expect(await ids("dead_letters")).toEqual(names("dl_pending", 2));
    expect(await ids("reconciliation_runs")).toEqual([]);
  });
});

describe("the hourly cron", () => {
  it("runs retention with the Worker's windows; the minute cron does not", async () => {
    const now = Date.now();
    await insertStripeEvents(["evt_old"], now - 8 * DAY);
    await insertStripeEvents(["evt_young"], now - 6 * DAY);
    await insertReplayed(["dl_old"], now - 31 * DAY);
    await insertPending(["dl_pending"], now - 31 * DAY);
    await insertRuns(["run_old"], now - 91 * DAY);

    const minute = createExecutionContext();
    await worker.scheduled(createScheduledController({ cron: "* * * * *", scheduledTime: now }), env, minute);
    await waitOnExecutionContext(minute);
    expect(await ids("processed_stripe_events")).toEqual(["evt_old", "evt_young"]);

    const hourly = createExecutionContext();
    await worker.scheduled(
      createScheduledController({ cron: RETENTION_CRON, scheduledTime: now }),
      env,
      hourly,
    );
    await waitOnExecutionContext(hourly);
    expect(await ids("processed_stripe_events")).toEqual(["evt_young"]);
    expect(await ids("dead_letters")).toEqual(["dl_pending"]);
    expect(await ids("reconciliation_runs")).toEqual([]);
  });

  it("fails with the offending setting and deletes nothing when a window is out of bounds", async () => {
    const now = Date.now();
    await insertStripeEvents(["evt_old"], now - 8 * DAY);
    const ctx = createExecutionContext();
    await expect(
      worker.scheduled(
        createScheduledController({ cron: RETENTION_CRON, scheduledTime: now }),
        { ...env, RETENTION_STRIPE_EVENTS_DAYS: "2" },
        ctx,
      ),
    ).rejects.toThrow("RETENTION_STRIPE_EVENTS_DAYS: at least 4 days");
    await waitOnExecutionContext(ctx);
    expect(await ids("processed_stripe_events")).toEqual(["evt_old"]);
  });

  it("is a trigger of the committed wrangler.jsonc, next to the minute cron", () => {
    expect(JSON.parse(String(Reflect.get(env, "TEST_CRONS")))).toEqual(["* * * * *", RETENTION_CRON]);
  });
});

describe("Stripe events resent around the window", () => {
  const webhooks = createWebhooksApp();
  const WEBHOOK_SECRET = "whsec_api_retention";
  const scenario = new StripeScenario(env, WEBHOOK_SECRET);
  const webhooksEnv: WebhooksEnv = {
    DB: env.DB,
    STRIPE_SECRET_KEY: env.STRIPE_SECRET_KEY,
    STRIPE_API_BASE: env.STRIPE_API_BASE,
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
  };
  let seq = 0;

  beforeAll(async () => {
    await scenario.setup();
  });

  async function deliver(payload: string): Promise<string> {
    const ctx = createExecutionContext();
    const res = await webhooks.fetch(webhookRequest(payload, await scenario.sign(payload)), webhooksEnv, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(200);
    return (await res.json<{ status: string }>()).status;
  }

  /** What the events wrote for the user. */
  async function stateOf(user: string) {
    const q = (sql: string) => env.DB.prepare(sql).bind(user).all();
    return {
      customers: (
        await q("SELECT user_id, stripe_customer_id, plan FROM stripe_customers WHERE user_id = ?1")
      ).results,
      subscriptions: (
        await q(
          "SELECT stripe_subscription_id, plan, status, current_period_start, current_period_end FROM subscriptions WHERE user_id = ?1",
        )
      ).results,
      planHistory: (
        await q(
          "SELECT effective_from, plan, stripe_subscription_id FROM plan_history WHERE user_id = ?1 ORDER BY 1",
        )
      ).results,
      invoices: (
        await q("SELECT stripe_invoice_id, status, total_cents FROM invoices WHERE user_id = ?1 ORDER BY 1")
      ).results,
      reattributions: (await q("SELECT from_ms FROM reattributions WHERE user_id = ?1")).results,
    };
  }

  it("deduplicates a resend within Stripe's horizon; a copy after the window (only a manual resend can come that late) converges to the same state", async () => {
    const user = `retention_user_${++seq}_${Date.now().toString(36)}`;
    const sub = await scenario.subscribe(user, "payg");
    for (const e of sub.events) expect(await deliver(e.payload), e.type).toBe("processed");
    const applied = await stateOf(user);
    expect(applied.customers).toEqual([{ user_id: user, stripe_customer_id: sub.customerId, plan: "payg" }]);
    const eventIds = sub.events.map((e) => e.id).sort();
    const dedupeRows = async () =>
      (await ids("processed_stripe_events")).filter((id) => eventIds.includes(id)).sort();
    expect(await dedupeRows()).toEqual(eventIds);

    // Stripe's last automatic resend comes at most 3 days after the event: its dedupe row is still there
    await runRetention(env.DB, CONFIG, Date.now() + 3 * DAY, recordingLogger());
    expect(await dedupeRows()).toEqual(eventIds);
    for (const e of sub.events) expect(await deliver(e.payload), e.type).toBe("duplicate");
    // so is it on the last day of the window
    await runRetention(env.DB, CONFIG, Date.now() + 7 * DAY - 60_000, recordingLogger());
    for (const e of sub.events) expect(await deliver(e.payload), e.type).toBe("duplicate");
    expect(await stateOf(user)).toEqual(applied);

    // after the window the rows are gone; a copy arriving now (a manual resend from the Dashboard)
    // is applied again, and convergence to Stripe's current state writes the same state
    await runRetention(env.DB, CONFIG, Date.now() + 7 * DAY + 60_000, recordingLogger());
    expect(await dedupeRows()).toEqual([]);
    for (const e of sub.events) expect(await deliver(e.payload), e.type).toBe("processed");
    expect(await stateOf(user)).toEqual(applied);
    expect(await dedupeRows()).toEqual(eventIds);
  });
});
