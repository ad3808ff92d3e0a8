/**
 * Test helpers for the biller's suites (imported by *.test.ts only): paid customers as the
 * webhooks worker records them (D1 rows, or a real subscription on the emulator converged with
 * the same code as the webhooks), sessions judged as the classifier records them (verdict, series,
 * rank and count in one transaction) with the usage message it sends, consumed batches, the
 * emulator's view of each plan's meter, and a D1 wrapper that fails chosen statements (crashes).
 *
 * The helpers that write or read a user's rows take the D1 shard to use (`db`, default `env.DB`):
 * with `shardedEnv`, pass the user's shard (`env.DB_1`, ...).
 */

import { createExecutionContext, createMessageBatch, env, getQueueResult } from "cloudflare:test";
import {
  attribute,
  createLogger,
  ensureSeries,
  listSessions,
  loadAccounts,
  type PaidPlanId,
  PLANS,
  PRICE_LOOKUP_KEYS,
  type SeriesRef,
  type SeriesToEnsure,
  seriesToEnsure,
  shardsOf,
  type UsageMessage,
  type VerdictMessage,
} from "@aigate/shared";
import { createStripe } from "@aigate/shared/stripe";
import { catalogPrice, ensureStripeCatalog, type StripeCatalog } from "@aigate/shared/stripeCatalog";
import { syncFromStripe } from "@aigate/shared/stripeSync/sync";
import { EmulatorClient } from "@aigate/stripe-emulator/client";
import { createBiller } from "../config";
import { consumeVerdicts } from "../consumer";

export const DAY = 86_400_000;
export const MIN = 60_000;

export function emulator(): EmulatorClient {
  return new EmulatorClient(env.STRIPE_API_BASE);
}

export function stripe() {
  return createStripe(env);
}

let current: StripeCatalog | null = null;

/** The Stripe catalog (meters per plan, prices, portal configuration), created if missing. */
export async function setupCatalog(): Promise<StripeCatalog> {
  current = await ensureStripeCatalog(stripe());
  return current;
}

export function catalog(): StripeCatalog {
  if (!current) throw new Error("call setupCatalog() first (beforeEach)");
  return current;
}

/** The plan's meter event name and metered price, as plan_history records them. */
export function meterOf(plan: PaidPlanId): string {
  return catalog().meters[plan].eventName;
}

export function meteredPriceId(plan: PaidPlanId): string {
  return catalogPrice(
    catalog(),
    plan === "payg" ? PRICE_LOOKUP_KEYS.paygSession : PRICE_LOOKUP_KEYS.proSession,
  );
}

let seq = 0;
export function uniqueId(prefix: string): string {
  seq += 1;
  return `${prefix}_${Date.now().toString(36)}_${seq}_${Math.random().toString(36).slice(2, 8)}`;
}

let lastTick = 0;
/**
 * The time of the next consumed batch or cron run: now, but at least a second after the previous
 * one, as queue deliveries and cron runs are in production (a series is posted at most once per
 * second: its timestamps increase strictly and are never in the future).
 */
export function tick(): number {
  lastTick = Math.max(Date.now(), lastTick + 1000);
  return lastTick;
}

export interface PaidCustomer {
  userId: string;
  customerId: string;
  subscriptionId: string;
  plan: PaidPlanId;
  /** The subscription's current period (the first of `periods` unless given). */
  period: { start: number; end: number };
}

/**
 * A paid customer as the webhooks worker records one: a real emulator customer (meter events
 * name it), then the stripe_customers, subscriptions, plan_history (with the plan's metered price
 * and meter) and billing_periods rows. The subscription itself exists in D1 only: enough for
 * posting; adjustments and invoices need `subscribe`.
 */
export async function createPaidCustomer(
  opts: {
    /** An existing (free) user subscribing; a new user by default. */
    userId?: string;
    plan?: PaidPlanId;
    periodStart?: number;
    periodEnd?: number;
    periods?: { start: number; end: number }[];
    /** The user's D1 shard. */
    db?: D1Database;
  } = {},
): Promise<PaidCustomer> {
  const db = opts.db ?? env.DB;
  const plan = opts.plan ?? "payg";
  const userId = opts.userId ?? uniqueId("user");
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
  await db.batch([
    db
      .prepare(
        `INSERT INTO stripe_customers (user_id, stripe_customer_id, email, plan, created_at, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?5)`,
      )
      .bind(userId, customer.id, `${userId}@example.test`, plan, now),
    db
      .prepare(
        `INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, plan, status,
         current_period_start, current_period_end, started_at, updated_at, billing_mode)
       VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?7, ?8, 'flexible')`,
      )
      .bind(subscriptionId, userId, customer.id, plan, start, end, first.start, now),
    db
      .prepare(
        `INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at, stripe_price_id,
         meter_event_name)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)`,
      )
      .bind(userId, first.start, plan, subscriptionId, now, meteredPriceId(plan), meterOf(plan)),
    ...periods.map((p) =>
      db
        .prepare(
          "INSERT INTO billing_periods (stripe_subscription_id, period_start, period_end) VALUES (?1, ?2, ?3)",
        )
        .bind(subscriptionId, p.start, p.end),
    ),
  ]);
  return { userId, customerId: customer.id, subscriptionId, plan, period: { start, end } };
}

/** A customer whose previous period ended `endedAgo` ms ago, and the current one. */
export async function customerAcrossPeriods(
  endedAgo: number,
  plan: "payg" | "pro" = "pro",
  opts: { userId?: string; db?: D1Database } = {},
) {
  const end = Math.floor((Date.now() - endedAgo) / 1000) * 1000;
  const p1 = { start: end - 30 * DAY, end };
  const p2 = { start: end, end: end + 30 * DAY };
  const c = await createPaidCustomer({ ...opts, plan, periods: [p1, p2] });
  return { c, p1, p2 };
}

/** A finalized invoice of the customer's subscription as the webhooks record it, with its metered line. */
export async function finalizedInvoice(
  c: PaidCustomer,
  o: {
    id?: string;
    created: number;
    window: { start: number; end: number };
    quantity: number;
    status?: string;
    /** The user's D1 shard. */
    db?: D1Database;
  },
) {
  const db = o.db ?? env.DB;
  const id = o.id ?? `in_${c.userId}_${o.window.start}`;
  await db.batch([
    db
      .prepare(
        `INSERT INTO invoices (stripe_invoice_id, user_id, stripe_customer_id, stripe_subscription_id, status, currency,
         subtotal_cents, total_cents, amount_paid_cents, period_start, period_end, finalized_at, stripe_created, updated_at,
         billing_reason)
       VALUES (?1, ?2, ?3, ?4, ?5, 'usd', 0, 0, 0, ?6, ?7, ?8, ?9, ?9, 'subscription_cycle')`,
      )
      .bind(
        id,
        c.userId,
        c.customerId,
        c.subscriptionId,
        o.status ?? "paid",
        o.window.start,
        o.window.end,
        o.status === "draft" ? null : o.created,
        o.created,
      ),
    db
      .prepare(
        `INSERT INTO invoice_lines (stripe_invoice_id, line_id, stripe_subscription_id, stripe_price_id, plan, metered,
         period_start, period_end, quantity, amount_cents)
       VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?9)`,
      )
      .bind(
        id,
        `il_${id}`,
        c.subscriptionId,
        meteredPriceId(c.plan),
        c.plan,
        o.window.start,
        o.window.end,
        o.quantity,
        c.plan === "payg" ? o.quantity * 10 : 0,
      ),
  ]);
  return id;
}

/** Writes what Stripe holds for a subscription (and an invoice of it), as the webhooks worker does. */
export async function syncStripe(target: { subscriptionId?: string; invoiceId?: string; userId?: string }) {
  return syncFromStripe(
    { shards: shardsOf(env), stripe: stripe(), log: createLogger("test-sync"), now: () => Date.now() },
    {
      subscriptionId: target.subscriptionId ?? null,
      invoiceId: target.invoiceId ?? null,
      userHints: target.userId ? [target.userId] : [],
    },
  );
}

/**
 * A customer subscribed through Checkout on the emulator (flexible billing mode, as the api
 * creates it), its state written to D1 by the webhooks' convergence code.
 */
export async function subscribe(plan: PaidPlanId): Promise<PaidCustomer> {
  const userId = uniqueId("user");
  const s = stripe();
  const customer = await s.customers.create({
    email: `${userId}@example.test`,
    metadata: { user_id: userId },
  });
  const { data: prices } = await s.prices.list({ lookup_keys: PLANS[plan].stripeLookupKeys, active: true });
  const session = await s.checkout.sessions.create({
    mode: "subscription",
    customer: customer.id,
    client_reference_id: userId,
    line_items: prices.map((p) =>
      p.recurring?.usage_type === "metered" ? { price: p.id } : { price: p.id, quantity: 1 },
    ),
    subscription_data: { metadata: { user_id: userId }, billing_mode: { type: "flexible" } },
    success_url: "http://app.test/ok",
    cancel_url: "http://app.test/cancel",
  });
  const done = await emulator().completeCheckout(session.id);
  const item = done.subscription.items.data[0];
  if (!item) throw new Error("subscription without items");
  await syncStripe({ subscriptionId: done.subscription.id, invoiceId: done.invoice.id, userId });
  // a post's timestamp is a whole second of the window before now: let the first one pass
  const start = item.current_period_start * 1000;
  while (Date.now() < start + 1000) await new Promise((resolve) => setTimeout(resolve, 50));
  return {
    userId,
    customerId: customer.id,
    subscriptionId: done.subscription.id,
    plan,
    period: { start: item.current_period_start * 1000, end: item.current_period_end * 1000 },
  };
}

export interface SessionSpec {
  /** Billing time (default: now). */
  at?: number;
  billable?: boolean;
  id?: string;
}

export interface Judged {
  ids: string[];
  /** The paid series that grew. */
  series: SeriesRef[];
  /** What the classifier sends for this run: null when no paid series grew. */
  message: UsageMessage | null;
}

/**
 * Sessions judged as the classifier records them, in one D1 transaction: the series created if
 * missing (attributed by the one rule over the account as D1 holds it), the verdict with the
 * session's billing time, series and rank (the series' highest rank plus its rank in the
 * statement), the series' count and highest rank; a paid session that cannot be attributed yet is
 * judged without a series and left to re-attribution. Returns the usage message the classifier
 * would send.
 */
export async function judge(
  userId: string,
  specs: number | SessionSpec[],
  opts: { at?: number; billable?: boolean; now?: number; db?: D1Database } = {},
): Promise<Judged> {
  const db = opts.db ?? env.DB;
  const list: SessionSpec[] = typeof specs === "number" ? Array.from({ length: specs }, () => ({})) : specs;
  const now = opts.now ?? Date.now();
  const account = (await loadAccounts(db, [userId])).get(userId);
  const series = new Map<string, SeriesToEnsure>();
  const unattributed: { user_id: string; from_ms: number }[] = [];
  const rows = list.map((spec) => {
    const at = spec.at ?? opts.at ?? now;
    const billable = spec.billable ?? opts.billable ?? true;
    const attributed = account ? attribute(account, at) : null;
    const target = attributed?.ok ? seriesToEnsure(userId, attributed.series) : null;
    if (target) series.set(`${target.plan}|${target.period_start}`, target);
    else unattributed.push({ user_id: userId, from_ms: at });
    return {
      session_id: spec.id ?? uniqueId("sess"),
      billable: billable ? 1 : 0,
      reason: billable ? "success" : "too_short",
      billed_at: at,
      plan: target?.plan ?? null,
      period_start: target?.period_start ?? null,
    };
  });
  const token = crypto.randomUUID();
  const ids = JSON.stringify(rows.map((r) => r.session_id));
  await db.batch([
    ensureSeries(db, [...series.values()], now),
    db
      .prepare(
        `INSERT INTO sessions (session_id, user_id, project_id, created_at, first_seen_at, last_seen_at, connected,
           audio_ms, open, verdict_at, billable, reason, rule_version, verdict_token, billed_at, plan, period_start, seq)
         SELECT j.session_id, ?2, 'proj_1', j.billed_at, j.billed_at, j.billed_at, 1, 60000, 0, ?3, j.billable, j.reason,
           1, ?4, j.billed_at, j.plan, j.period_start,
           CASE WHEN j.billable = 1 AND j.plan IS NOT NULL THEN
             coalesce(p.seq_top, 0)
             + row_number() OVER (PARTITION BY j.plan, j.period_start, j.billable = 1 AND j.plan IS NOT NULL
                                  ORDER BY j.session_id)
           END
         FROM (
           SELECT value->>'$.session_id' AS session_id, value->>'$.billable' AS billable, value->>'$.reason' AS reason,
             value->>'$.billed_at' AS billed_at, value->>'$.plan' AS plan, value->>'$.period_start' AS period_start
           FROM json_each(?1)) AS j
         LEFT JOIN usage_periods p ON p.user_id = ?2 AND p.plan = j.plan AND p.period_start = j.period_start
         WHERE true`,
      )
      .bind(JSON.stringify(rows), userId, now, token),
    db
      .prepare(
        `UPDATE usage_periods SET billable_sessions = billable_sessions + c.n, seq_top = seq_top + c.n, updated_at = ?3
         FROM (
           SELECT user_id, plan, period_start, count(*) AS n FROM sessions
           WHERE session_id IN (SELECT value FROM json_each(?1)) AND verdict_token = ?2 AND billable = 1
             AND plan IS NOT NULL
           GROUP BY user_id, plan, period_start
         ) AS c
         WHERE usage_periods.user_id = c.user_id AND usage_periods.plan = c.plan
           AND usage_periods.period_start = c.period_start`,
      )
      .bind(ids, token, now),
    db
      .prepare(
        `INSERT INTO reattributions (user_id, from_ms, requested_at)
         SELECT value->>'$.user_id', min(value->>'$.from_ms'), ?2 FROM json_each(?1) GROUP BY 1
         ON CONFLICT (user_id) DO UPDATE SET from_ms = min(reattributions.from_ms, excluded.from_ms),
           requested_at = excluded.requested_at`,
      )
      .bind(JSON.stringify(unattributed), now),
    ...listSessions(
      db,
      rows.map((r) => ({ user_id: userId, session_id: r.session_id, billed_at: r.billed_at })),
    ),
  ]);
  const grown = new Map<string, SeriesRef>();
  for (const r of rows) {
    if (r.billable === 1 && r.plan !== null && r.plan !== "free" && r.period_start !== null) {
      grown.set(`${r.plan}|${r.period_start}`, {
        user_id: userId,
        plan: r.plan as PaidPlanId,
        period_start: r.period_start,
      });
    }
  }
  const refs = [...grown.values()];
  return {
    ids: rows.map((r) => r.session_id),
    series: refs,
    message: refs.length > 0 ? usageMessage(refs, rows.length, now) : null,
  };
}

export function usageMessage(
  series: SeriesRef[],
  judged = series.length,
  judgedAt = Date.now(),
): UsageMessage {
  return { v: 2, kind: "usage", series, judged, judged_at: judgedAt };
}

/** A version 1 verdict message (an old dead letter) for a recorded session. */
export function verdictMessage(sessionId: string, userId: string, billable = true): VerdictMessage {
  const t = Date.now() - MIN;
  return {
    v: 1,
    kind: "verdict",
    session_id: sessionId,
    user_id: userId,
    project_id: "proj_1",
    created_at: t,
    billable,
    reason: billable ? "success" : "too_short",
    rule_version: 1,
    audio_ms: billable ? 60_000 : 1000,
    judged_at: t + 1000,
  };
}

export interface BatchResult {
  acked: string[];
  retried: string[];
  ids: string[];
}

/**
 * Consumes one batch as the runtime delivers it, at `now` (default: `tick()`). The queue handler
 * (index.ts) is the same call with the current time; see consumer.test.ts for it.
 */
export async function consume(
  bodies: unknown[],
  opts: { attempts?: number; env?: Env; ids?: string[]; now?: number } = {},
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
  await consumeVerdicts(
    createBiller(opts.env ?? env, { queue: batch.queue }),
    batch.messages,
    opts.now ?? tick(),
  );
  const result = await getQueueResult(batch, ctx);
  return {
    acked: result.explicitAcks,
    retried: result.retryMessages.map((m: { msgId: string }) => m.msgId),
    ids,
  };
}

/** What the plan's meter holds for a customer over a window (ms; whole seconds inside it). */
export async function meterUsage(
  customer: string,
  plan: PaidPlanId,
  window?: { start: number; end: number },
) {
  const usage = await emulator().meterUsage(meterOf(plan), {
    customer,
    ...(window ? { start: Math.floor(window.start / 1000), end: Math.ceil(window.end / 1000) } : {}),
  });
  return usage ?? { value: 0, events: 0, duplicates_ignored: 0 };
}

/** The events the plan's meter received for a customer, oldest first (duplicates marked). */
export async function meterEvents(customer: string, plan: PaidPlanId) {
  return emulator().meterEvents(meterOf(plan), customer);
}

/** Billable sessions recorded for a user (in one series when plan and start are given). */
export async function billableInD1(
  userId: string,
  plan?: string,
  periodStart?: number,
  db: D1Database = env.DB,
): Promise<number> {
  const row = await db
    .prepare(
      `SELECT count(*) AS n FROM sessions WHERE user_id = ?1 AND billable = 1 AND plan IS NOT NULL AND plan <> 'free'
       AND (?2 IS NULL OR plan = ?2) AND (?3 IS NULL OR period_start = ?3)`,
    )
    .bind(userId, plan ?? null, periodStart ?? null)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

export interface UsagePeriodView {
  user_id: string;
  plan: string;
  period_start: number;
  period_end: number;
  stripe_customer_id: string | null;
  stripe_subscription_id: string | null;
  stripe_price_id: string | null;
  meter_event_name: string | null;
  billable_sessions: number;
  seq_top: number;
  posted_total: number;
  last_meter_ts: number | null;
  posted_at: number | null;
  post_failures: number;
  post_error: string | null;
  next_post_at: number | null;
  frozen_at: number | null;
  stripe_billed: number | null;
  stripe_invoice_id: string | null;
  billed_seq: number | null;
  adjusted: number;
}

export async function usagePeriods(userId: string, db: D1Database = env.DB): Promise<UsagePeriodView[]> {
  const { results } = await db
    .prepare("SELECT * FROM usage_periods WHERE user_id = ?1 ORDER BY period_start, plan")
    .bind(userId)
    .all<UsagePeriodView>();
  return results;
}

export interface SessionView {
  session_id: string;
  billable: number;
  billed_at: number;
  plan: string | null;
  period_start: number | null;
  seq: number | null;
}

export async function sessionsOf(userId: string): Promise<SessionView[]> {
  const { results } = await env.DB.prepare(
    `SELECT session_id, billable, billed_at, plan, period_start, seq FROM sessions WHERE user_id = ?1
     ORDER BY billed_at, session_id`,
  )
    .bind(userId)
    .all<SessionView>();
  return results;
}

/**
 * A position in the emulator's call log. (Positions, not times: workerd's clock only moves on
 * I/O, so a time taken here can lag the emulator's own timestamps.)
 */
export async function callMark(): Promise<number> {
  return (await emulator().calls()).length;
}

/** Stripe calls the emulator received after a call-log position, by method and path prefix. */
export async function stripeCalls(mark: number, method: string, pathPrefix: string) {
  const calls = (await emulator().calls()).slice(mark);
  return calls.filter((c) => c.method === method && c.path.startsWith(pathPrefix));
}

/** Meter-event POSTs the emulator received after a call-log position. */
export async function meterEventCalls(mark: number): Promise<number> {
  return (await stripeCalls(mark, "POST", "/v1/billing/meter_events")).length;
}

/**
 * env.DB whose writes matching `pattern` throw (`times` of them, after the first `after`) before
 * anything is written: a batch containing such a statement, or such a statement run on its own. A crash (or
 * D1 failing) at that point of the handler.
 */
export function failingDb(
  db: D1Database,
  pattern: RegExp,
  times = 1,
  /** Matching writes that go through before the failures start. */
  after = 0,
): { db: D1Database; failures: () => number } {
  const sqlOf = new WeakMap<D1PreparedStatement, string>();
  let passing = after;
  let left = times;
  let failures = 0;
  const fail = (): boolean => {
    if (passing > 0) {
      passing -= 1;
      return false;
    }
    if (left <= 0) return false;
    left -= 1;
    failures += 1;
    return true;
  };
  const tag = (stmt: D1PreparedStatement, sql: string): D1PreparedStatement => {
    sqlOf.set(stmt, sql);
    const bind = stmt.bind.bind(stmt);
    const run = stmt.run.bind(stmt);
    const all = stmt.all.bind(stmt);
    const check = () => {
      if (pattern.test(sql) && fail()) throw new Error("D1_ERROR: injected failure");
    };
    stmt.bind = (...values: unknown[]) => tag(bind(...values), sql);
    stmt.run = async <T = Record<string, unknown>>() => {
      check();
      return run<T>();
    };
    // (the workers' counting wrapper runs statements through all())
    stmt.all = async <T = Record<string, unknown>>() => {
      check();
      return all<T>();
    };
    return stmt;
  };
  const wrapped = new Proxy(db, {
    get(target, prop) {
      if (prop === "prepare") return (sql: string) => tag(target.prepare(sql), sql);
      if (prop === "batch") {
        return async (stmts: D1PreparedStatement[]) => {
          if (stmts.some((s) => pattern.test(sqlOf.get(s) ?? "")) && fail()) {
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
