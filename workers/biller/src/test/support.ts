/**
 * Test helpers for the biller's suites (imported by *.test.ts only): paid customers as the
 * webhooks worker would record them, verdict messages, consumed batches, the emulator's view
 * of the meter, and a D1 wrapper that fails chosen statements (crash injection).
 */

import { createExecutionContext, createMessageBatch, env, getQueueResult } from "cloudflare:test";
import type { PaidPlanId, VerdictMessage } from "@aigate/shared";
import { createStripe } from "@aigate/shared/stripe";
import { ensureStripeCatalog } from "@aigate/shared/stripeCatalog";
import { EmulatorClient } from "@aigate/stripe-emulator/client";
import worker from "../index";

export const DAY = 86_400_000;

export function emulator(): EmulatorClient {
  return new EmulatorClient(env.STRIPE_API_BASE);
}

export function stripe() {
  return createStripe(env);
}

export async function setupCatalog() {
  return ensureStripeCatalog(stripe(), env.STRIPE_METER_EVENT_NAME);
}

export interface PaidCustomer {
  userId: string;
  customerId: string;
  subscriptionId: string;
  plan: PaidPlanId;
  period: { start: number; end: number };
}

let seq = 0;
export function uniqueId(prefix: string): string {
  seq += 1;
  return `${prefix}_${Date.now().toString(36)}_${seq}_${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * A paid customer as the webhooks worker records one: a real emulator customer, then the
 * stripe_customers, subscriptions, plan_history and billing_periods rows.
 */
export async function createPaidCustomer(
  opts: {
    plan?: PaidPlanId;
    periodStart?: number;
    periodEnd?: number;
    periods?: { start: number; end: number }[];
  } = {},
): Promise<PaidCustomer> {
  const plan = opts.plan ?? "payg";
  const userId = uniqueId("user");
  const now = Date.now();
  const start = opts.periodStart ?? Math.floor((now - 10 * DAY) / 1000) * 1000;
  const end = opts.periodEnd ?? start + 30 * DAY;
  const customer = await stripe().customers.create({
    email: `${userId}@example.test`,
    metadata: { user_id: userId },
  });
  const subscriptionId = uniqueId("sub");
  const periods = opts.periods ?? [{ start, end }];
  const first = periods[0] ?? { start, end };
  await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO stripe_customers (user_id, stripe_customer_id, email, plan, created_at, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?5)`,
    ).bind(userId, customer.id, `${userId}@example.test`, plan, now),
    env.DB.prepare(
      `INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, plan, status,
         current_period_start, current_period_end, started_at, updated_at)
       VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?7, ?8)`,
    ).bind(subscriptionId, userId, customer.id, plan, start, end, first.start, now),
    env.DB.prepare(
      `INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at)
       VALUES (?1, ?2, ?3, ?4, ?5)`,
    ).bind(userId, first.start, plan, subscriptionId, now),
    ...periods.map((p) =>
      env.DB.prepare(
        "INSERT INTO billing_periods (stripe_subscription_id, period_start, period_end) VALUES (?1, ?2, ?3)",
      ).bind(subscriptionId, p.start, p.end),
    ),
  ]);
  return { userId, customerId: customer.id, subscriptionId, plan, period: { start, end } };
}

export function verdict(user: string, over: Partial<VerdictMessage> = {}): VerdictMessage {
  const createdAt = over.created_at ?? Date.now() - 60 * 60_000;
  return {
    v: 1,
    kind: "verdict",
    session_id: over.session_id ?? uniqueId("sess"),
    user_id: user,
    project_id: "proj_1",
    created_at: createdAt,
    billable: true,
    reason: "success",
    rule_version: 1,
    audio_ms: 60_000,
    judged_at: createdAt + 120_000,
    ...over,
  };
}

/** Fails verdicts billable=false with the first failure reason. */
export function failedVerdict(user: string, over: Partial<VerdictMessage> = {}): VerdictMessage {
  return verdict(user, { billable: false, reason: "too_short", audio_ms: 1000, ...over });
}

export interface BatchResult {
  acked: string[];
  retried: string[];
  ids: string[];
}

/** Runs the worker's queue handler on one batch, as the runtime would deliver it. */
export async function consume(
  bodies: unknown[],
  opts: { attempts?: number; env?: Env; ids?: string[] } = {},
): Promise<BatchResult> {
  const ids = bodies.map((_, i) => opts.ids?.[i] ?? uniqueId("msg"));
  const batch = createMessageBatch<unknown>(
    "aigate-verdicts",
    bodies.map((body, i) => ({
      id: ids[i] ?? "",
      timestamp: new Date(),
      attempts: opts.attempts ?? 1,
      body,
    })),
  );
  const ctx = createExecutionContext();
  await worker.queue(batch, opts.env ?? env);
  const result = await getQueueResult(batch, ctx);
  return {
    acked: result.explicitAcks,
    retried: result.retryMessages.map((m: { msgId: string }) => m.msgId),
    ids,
  };
}

/** What the emulator's meter holds for a customer over a window (seconds). */
export async function meterUsage(customer: string, window?: { start: number; end: number }) {
  const usage = await emulator().meterUsage(env.STRIPE_METER_EVENT_NAME, {
    customer,
    ...(window ? { start: Math.floor(window.start / 1000), end: Math.ceil(window.end / 1000) } : {}),
  });
  return usage ?? { value: 0, events: 0, duplicates_ignored: 0 };
}

export async function billableInD1(userId: string, periodStart?: number): Promise<number> {
  const row = await env.DB.prepare(
    `SELECT count(*) AS n FROM session_usage WHERE user_id = ?1 AND status = 'success'
       AND (?2 IS NULL OR period_start = ?2)`,
  )
    .bind(userId, periodStart ?? null)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

export interface UsagePeriodView {
  user_id: string;
  plan: string;
  period_start: number;
  period_end: number;
  billable_sessions: number;
  posted_total: number;
  last_meter_ts: number | null;
  closed_at: number | null;
  post_failures: number;
  post_error: string | null;
}

export async function usagePeriods(userId: string): Promise<UsagePeriodView[]> {
  const { results } = await env.DB.prepare(
    "SELECT * FROM usage_periods WHERE user_id = ?1 ORDER BY period_start",
  )
    .bind(userId)
    .all<UsagePeriodView>();
  return results;
}

/**
 * A position in the emulator's call log. (Positions, not times: workerd's clock only moves on
 * I/O, so a time taken here can lag the emulator's own timestamps.)
 */
export async function callMark(): Promise<number> {
  return (await emulator().calls()).length;
}

/** Meter-event POSTs the emulator received after a call-log position. */
export async function meterEventCalls(mark: number): Promise<number> {
  const calls = (await emulator().calls()).slice(mark);
  return calls.filter((c) => c.method === "POST" && c.path === "/v1/billing/meter_events").length;
}

/**
 * env.DB whose batches containing a statement matching `pattern` throw (the first `times`
 * such batches) before anything is written: a crash at that point of the handler.
 */
export function failingDb(
  db: D1Database,
  pattern: RegExp,
  times = 1,
): { db: D1Database; failures: () => number } {
  const sqlOf = new WeakMap<D1PreparedStatement, string>();
  let left = times;
  let failures = 0;
  const tag = (stmt: D1PreparedStatement, sql: string): D1PreparedStatement => {
    sqlOf.set(stmt, sql);
    const bind = stmt.bind.bind(stmt);
    stmt.bind = (...values: unknown[]) => tag(bind(...values), sql);
    return stmt;
  };
  const wrapped = new Proxy(db, {
    get(target, prop) {
      if (prop === "prepare") return (sql: string) => tag(target.prepare(sql), sql);
      if (prop === "batch") {
        return async (stmts: D1PreparedStatement[]) => {
          if (left > 0 && stmts.some((s) => pattern.test(sqlOf.get(s) ?? ""))) {
            left -= 1;
            failures += 1;
            throw new Error("D1_ERROR: injected failure");
          }
          return target.batch(stmts);
        };
      }
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { db: wrapped, failures: () => failures };
}
