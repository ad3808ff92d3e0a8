/**
 * Test helpers (imported by *.test.ts only): event builders, recording queue doubles, a counting
 * D1 wrapper, a way to run the real queue handler on a batch at a chosen time, paid accounts as
 * the webhooks worker records them, and readers of the rows judging writes.
 */

import { createExecutionContext, createMessageBatch, env, getQueueResult } from "cloudflare:test";
import {
  type EventsMessage,
  type EventType,
  JudgeMessage,
  type PaidPlanId,
  type TelemetryEvent,
  UsageMessage,
} from "@aigate/shared";
import { meterEventName } from "@aigate/shared/stripeCatalog";
import { handleTelemetryBatch } from "../queue";

export const T0 = Date.UTC(2026, 4, 14, 12, 0, 0);

export interface Sent {
  body: unknown;
  delaySeconds: number;
}

/** A Queue that records what is sent; `failNext` makes the next send throw (a crash or outage). */
export class RecordingQueue implements Queue {
  sent: Sent[] = [];
  failNext = 0;

  async metrics(): Promise<QueueMetrics> {
    return { backlogCount: 0, backlogBytes: 0 };
  }

  async send(body: unknown, options?: QueueSendOptions): Promise<QueueSendResponse> {
    this.maybeFail();
    this.sent.push({ body, delaySeconds: options?.delaySeconds ?? 0 });
    return { metadata: { metrics: { backlogCount: 0, backlogBytes: 0 } } };
  }

  async sendBatch(
    messages: Iterable<MessageSendRequest>,
    options?: QueueSendBatchOptions,
  ): Promise<QueueSendBatchResponse> {
    this.maybeFail();
    for (const m of messages)
      this.sent.push({ body: m.body, delaySeconds: m.delaySeconds ?? options?.delaySeconds ?? 0 });
    return { metadata: { metrics: { backlogCount: 0, backlogBytes: 0 } } };
  }

  /** Removes and returns everything sent so far. */
  drain(): Sent[] {
    const out = this.sent;
    this.sent = [];
    return out;
  }

  private maybeFail(): void {
    if (this.failNext > 0) {
      this.failNext -= 1;
      throw new Error("injected queue failure");
    }
  }
}

const WRITE_SQL = /^\s*(INSERT|UPDATE|DELETE|REPLACE)\b/i;

/**
 * Wraps a D1Database: sums rows_written of every statement run, and can fail a batch on purpose.
 * The injected faults and interleavings apply to the next batch that writes (the telemetry upsert,
 * the verdict batch); read-only batches (loading accounts) pass through untouched.
 */
export class MeteredD1 {
  rowsWritten = 0;
  rowsRead = 0;
  statements = 0;
  /** Every statement run: its first words and the rows it read and wrote. */
  log: { statement: string; rowsWritten: number; rowsRead: number }[] = [];
  /** Fail the next N writing batches before they run (nothing written). */
  failBeforeBatch = 0;
  /** Fail the next N writing batches after they committed (written, but the caller sees an error). */
  failAfterBatch = 0;
  /** Runs once just before the next writing batch: another writer getting in between a read and a write. */
  beforeNextBatch: (() => Promise<void>) | null = null;
  readonly db: D1Database;

  constructor(inner: D1Database) {
    const sqlOf = new WeakMap<D1PreparedStatement, string>();
    const count = (meta: D1Meta | undefined, stmt?: D1PreparedStatement) => {
      this.statements += 1;
      this.rowsWritten += meta?.rows_written ?? 0;
      this.rowsRead += meta?.rows_read ?? 0;
      const sql = (stmt && sqlOf.get(stmt)) ?? "?";
      this.log.push({
        statement: sql.trim().split(/\s+/).slice(0, 3).join(" "),
        rowsWritten: meta?.rows_written ?? 0,
        rowsRead: meta?.rows_read ?? 0,
      });
    };
    const wrapStatement = (stmt: D1PreparedStatement, sql: string): D1PreparedStatement => {
      sqlOf.set(stmt, sql);
      const original = { bind: stmt.bind.bind(stmt), all: stmt.all.bind(stmt), run: stmt.run.bind(stmt) };
      Object.assign(stmt, {
        bind: (...values: unknown[]) => wrapStatement(original.bind(...values), sql),
        all: async () => {
          const r = await original.all();
          count(r.meta, stmt);
          return r;
        },
        run: async () => {
          const r = await original.run();
          count(r.meta, stmt);
          return r;
        },
      });
      return stmt;
    };
    const self = this;
    this.db = {
      prepare: (sql: string) => wrapStatement(inner.prepare(sql), sql),
      async batch<T>(statements: D1PreparedStatement[]): Promise<D1Result<T>[]> {
        const writes = statements.some((st) => WRITE_SQL.test(sqlOf.get(st) ?? ""));
        if (!writes) {
          const results = await inner.batch<T>(statements);
          results.forEach((r, i) => {
            count(r.meta, statements[i]);
          });
          return results;
        }
        if (self.failBeforeBatch > 0) {
          self.failBeforeBatch -= 1;
          throw new Error("injected D1 failure before the batch");
        }
        const interleaved = self.beforeNextBatch;
        self.beforeNextBatch = null;
        if (interleaved) await interleaved();
        const results = await inner.batch<T>(statements);
        results.forEach((r, i) => {
          count(r.meta, statements[i]);
        });
        if (self.failAfterBatch > 0) {
          self.failAfterBatch -= 1;
          throw new Error("injected crash after the batch committed");
        }
        return results;
      },
      exec: (query: string) => inner.exec(query),
      withSession: () => {
        throw new Error("not used by the classifier");
      },
      dump: () => {
        throw new Error("not used by the classifier");
      },
    } as unknown as D1Database;
  }
}

export interface Harness {
  env: Env;
  telemetry: RecordingQueue;
  verdicts: RecordingQueue;
  d1: MeteredD1;
}

/** The settle window and stale period the unit tests assume (the contract's defaults). */
export const TEST_VARS = { VERDICT_SETTLE_SECONDS: "60", STALE_SESSION_MINUTES: "15" } as const;

export function harness(
  vars: Partial<Pick<Env, "VERDICT_SETTLE_SECONDS" | "STALE_SESSION_MINUTES">> = {},
): Harness {
  const telemetry = new RecordingQueue();
  const verdicts = new RecordingQueue();
  const d1 = new MeteredD1(env.DB);
  return {
    env: { ...env, ...TEST_VARS, ...vars, DB: d1.db, TELEMETRY: telemetry, VERDICTS: verdicts },
    telemetry,
    verdicts,
    d1,
  };
}

let messageSeq = 0;

export interface Delivery {
  id?: string;
  body: unknown;
  attempts?: number;
}

/** Runs the real queue handler on one batch at time `now`; returns what it acked and retried. */
export async function deliver(h: Harness, deliveries: Delivery[], now: number) {
  const batch = createMessageBatch(
    "aigate-telemetry",
    deliveries.map((d) => {
      messageSeq += 1;
      return {
        id: d.id ?? `msg-${messageSeq}`,
        timestamp: new Date(now),
        attempts: d.attempts ?? 1,
        body: d.body,
      };
    }),
  );
  // getQueueResult drops retry delays: record them on the way through.
  const retryDelays = new Map<string, number | undefined>();
  const messages = batch.messages.map(
    (m) =>
      new Proxy(m, {
        get(target, prop) {
          if (prop === "retry") {
            return (options?: QueueRetryOptions) => {
              retryDelays.set(target.id, options?.delaySeconds);
              target.retry(options);
            };
          }
          const value: unknown = Reflect.get(target, prop, target);
          return typeof value === "function" ? value.bind(target) : value;
        },
      }),
  );
  const observed: MessageBatch<unknown> = {
    queue: batch.queue,
    messages,
    metadata: batch.metadata,
    ackAll: () => batch.ackAll(),
    retryAll: (options?: QueueRetryOptions) => batch.retryAll(options),
  };
  const ctx = createExecutionContext();
  await handleTelemetryBatch(observed, h.env, now);
  const result = await getQueueResult(batch, ctx);
  const retried = result.retryMessages.map((m: { msgId: string }) => m.msgId).sort();
  return {
    acked: [...result.explicitAcks].sort(),
    retried,
    retryDelays: retried.map((id: string) => ({ id, delaySeconds: retryDelays.get(id) })),
  };
}

export interface EventSpec {
  session: string;
  user?: string;
  project?: string;
  time: number;
  id?: string;
  source?: string;
  latency?: number;
  audio?: number;
  status?: number;
  code?: string;
  reason?: string;
}

const shortType: Record<string, EventType> = {
  created: "aigate.session.created",
  connected: "aigate.session.connected",
  turn_failed: "aigate.session.turn_failed",
  upstream_error: "aigate.session.upstream_error",
  heartbeat: "aigate.session.heartbeat",
  ended: "aigate.session.ended",
};

let eventSeq = 0;

export function ev(
  type: "created" | "connected" | "turn_failed" | "upstream_error" | "heartbeat" | "ended",
  spec: EventSpec,
): TelemetryEvent {
  eventSeq += 1;
  const t = shortType[type];
  if (t === undefined) throw new Error(`unknown type ${type}`);
  const e: TelemetryEvent = {
    id: spec.id ?? `evt-${eventSeq}`,
    source: spec.source ?? "gw-1",
    type: t,
    session_id: spec.session,
    user_id: spec.user ?? "user-1",
    project_id: spec.project ?? "proj-1",
    time: spec.time,
  };
  if (type === "connected") e.connect_latency_ms = spec.latency ?? 300;
  if (type === "heartbeat" || type === "ended") e.audio_ms = spec.audio ?? 0;
  if (type === "upstream_error") {
    if (spec.status !== undefined) e.status = spec.status;
    if (spec.code !== undefined) e.code = spec.code;
  }
  if (type === "ended" && spec.reason !== undefined) e.reason = spec.reason;
  return e;
}

export function eventsMessage(
  events: TelemetryEvent[],
  receivedAt: number,
  requestId = "req-1",
): EventsMessage {
  return { v: 1, kind: "events", request_id: requestId, received_at: receivedAt, events };
}

export function judgeMessage(sessionIds: string[], dueAt: number): JudgeMessage {
  return { v: 1, kind: "judge", session_ids: sessionIds, due_at: dueAt };
}

/** A typical working session: created, connected, 3 heartbeats, ended (6 events). */
export function typicalSession(session: string, start: number, user = "user-1"): TelemetryEvent[] {
  return [
    ev("created", { session, user, time: start }),
    ev("connected", { session, user, time: start + 400, latency: 400 }),
    ev("heartbeat", { session, user, time: start + 10_000, audio: 9_000 }),
    ev("heartbeat", { session, user, time: start + 20_000, audio: 19_000 }),
    ev("heartbeat", { session, user, time: start + 30_000, audio: 29_000 }),
    ev("ended", { session, user, time: start + 35_000, audio: 33_000, reason: "hangup" }),
  ];
}

/** The agenda (session_due) as stored: due time and sorted session ids of each row, in key order. */
export async function agenda(): Promise<{ due_at: number; ids: string[] }[]> {
  const { results } = await env.DB.prepare(
    "SELECT due_at, session_ids FROM session_due ORDER BY due_at, id",
  ).all<{
    due_at: number;
    session_ids: string;
  }>();
  return results.map((r) => ({ due_at: r.due_at, ids: (JSON.parse(r.session_ids) as string[]).sort() }));
}

/** The usage messages sent to the biller (anything else on that queue fails the parse). */
export function usageOf(q: RecordingQueue): UsageMessage[] {
  return q.sent.map((s) => UsageMessage.parse(s.body));
}

export function judgesOf(sent: Sent[]): { body: JudgeMessage; delaySeconds: number }[] {
  return sent.map((s) => ({ body: JudgeMessage.parse(s.body), delaySeconds: s.delaySeconds }));
}

export interface SessionRow {
  session_id: string;
  user_id: string;
  project_id: string;
  source: string | null;
  created_at: number | null;
  first_event_at: number | null;
  last_event_at: number | null;
  connected: number;
  connect_latency_ms: number | null;
  turn_failed: number;
  upstream_error: number;
  upstream_status: number | null;
  upstream_code: string | null;
  audio_ms: number;
  ended_at: number | null;
  end_reason: string | null;
  first_seen_at: number;
  last_seen_at: number;
  settle_due_at: number | null;
  late_events: number;
  event_digest: string | null;
  conflicting_events: number;
  open: number;
  verdict_at: number | null;
  billable: number | null;
  reason: string | null;
  rule_version: number | null;
  verdict_token: string | null;
  billed_at: number | null;
  plan: string | null;
  period_start: number | null;
  seq: number | null;
}

export async function sessionRow(id: string): Promise<SessionRow | null> {
  return env.DB.prepare("SELECT * FROM sessions WHERE session_id = ?1").bind(id).first<SessionRow>();
}

export interface RollupRow {
  user_id: string;
  day: string;
  reason: string;
  sessions: number;
  audio_ms: number;
}

export async function rollups(): Promise<RollupRow[]> {
  const { results } = await env.DB.prepare(
    "SELECT user_id, day, reason, sessions, audio_ms FROM daily_rollups ORDER BY user_id, day, reason",
  ).all<RollupRow>();
  return results;
}

export interface DeadLetterRow {
  id: string;
  queue: string;
  message_id: string | null;
  body: string;
  error: string;
  attempts: number;
}

export async function deadLetters(): Promise<DeadLetterRow[]> {
  const { results } = await env.DB.prepare(
    "SELECT id, queue, message_id, body, error, attempts FROM dead_letters ORDER BY id",
  ).all<DeadLetterRow>();
  return results;
}

/** The calendar month of T0 (May 2026): the free series of sessions billed in it. */
export const MAY = { start: Date.UTC(2026, 4, 1), end: Date.UTC(2026, 5, 1) };

export interface PaidAccount {
  userId: string;
  plan: PaidPlanId;
  customerId: string;
  subscriptionId: string;
  priceId: string;
  meter: string;
}

/**
 * A paid account as the webhooks worker records one: stripe_customers, subscriptions, the
 * plan-history row (with the plan's metered price and meter) and the reported billing periods.
 * `subscription: false` leaves the subscription and its periods out (Checkout completed, its
 * webhook still on the way): the plan history names a subscription D1 does not know yet.
 */
export async function paidAccount(
  userId: string,
  opts: {
    plan?: PaidPlanId;
    effectiveFrom?: number;
    periods?: { start: number; end: number }[];
    subscription?: boolean;
    /** The database to write to (the user's shard; default the home database). */
    db?: D1Database;
  } = {},
): Promise<PaidAccount> {
  const db = opts.db ?? env.DB;
  const plan = opts.plan ?? "payg";
  const periods = opts.periods ?? [{ start: Date.UTC(2026, 4, 3), end: Date.UTC(2026, 5, 3) }];
  const first = periods[0];
  if (first === undefined) throw new Error("a paid account needs a billing period");
  const account: PaidAccount = {
    userId,
    plan,
    customerId: `cus_${userId}`,
    subscriptionId: `sub_${userId}`,
    priceId: `price_${plan}_metered`,
    meter: meterEventName(plan),
  };
  const statements = [
    db
      .prepare(
        `INSERT INTO stripe_customers (user_id, stripe_customer_id, email, plan, created_at, updated_at)
       VALUES (?1, ?2, '', ?3, ?4, ?4)`,
      )
      .bind(userId, account.customerId, plan, first.start),
    db
      .prepare(
        `INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at, stripe_price_id,
         meter_event_name)
       VALUES (?1, ?2, ?3, ?4, ?2, ?5, ?6)`,
      )
      .bind(
        userId,
        opts.effectiveFrom ?? first.start,
        plan,
        account.subscriptionId,
        account.priceId,
        account.meter,
      ),
  ];
  if (opts.subscription !== false) {
    const last = periods[periods.length - 1] ?? first;
    statements.push(
      db
        .prepare(
          `INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, plan, status,
           current_period_start, current_period_end, started_at, updated_at, billing_mode)
         VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?7, ?7, 'flexible')`,
        )
        .bind(account.subscriptionId, userId, account.customerId, plan, last.start, last.end, first.start),
      ...periods.map((p) =>
        db
          .prepare(
            "INSERT INTO billing_periods (stripe_subscription_id, period_start, period_end) VALUES (?1, ?2, ?3)",
          )
          .bind(account.subscriptionId, p.start, p.end),
      ),
    );
  }
  await db.batch(statements);
  return account;
}

export interface SeriesRow {
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
}

/** The usage series (usage_periods rows), by user, plan and window. */
export async function seriesRows(): Promise<SeriesRow[]> {
  const { results } = await env.DB.prepare(
    `SELECT user_id, plan, period_start, period_end, stripe_customer_id, stripe_subscription_id, stripe_price_id,
       meter_event_name, billable_sessions, seq_top, posted_total
     FROM usage_periods ORDER BY user_id, plan, period_start`,
  ).all<SeriesRow>();
  return results;
}

/** The ranks given in each series: "<user>|<plan>|<period_start>" -> the sorted seq of its sessions. */
export async function ranksBySeries(): Promise<Map<string, number[]>> {
  const { results } = await env.DB.prepare(
    `SELECT user_id, plan, period_start, seq FROM sessions WHERE seq IS NOT NULL ORDER BY seq`,
  ).all<{ user_id: string; plan: string; period_start: number; seq: number }>();
  const ranks = new Map<string, number[]>();
  for (const r of results) {
    const key = `${r.user_id}|${r.plan}|${r.period_start}`;
    ranks.set(key, [...(ranks.get(key) ?? []), r.seq]);
  }
  return ranks;
}

/** 1..n */
export function dense(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

export async function reattributions(): Promise<
  { user_id: string; from_ms: number; requested_at: number }[]
> {
  const { results } = await env.DB.prepare(
    "SELECT user_id, from_ms, requested_at FROM reattributions ORDER BY user_id",
  ).all<{ user_id: string; from_ms: number; requested_at: number }>();
  return results;
}

export interface StoredSession {
  id: string;
  user?: string;
  /** The creation time the gateway reported (null: admission only, no telemetry). */
  created?: number | null;
  /** Ingest's first receipt of its telemetry (or its admission). */
  firstSeen: number;
  admitted?: number | null;
  /** A success (connected fast, 9 s of audio) or not_connected. */
  success?: boolean;
}

/**
 * Sessions written straight into D1 with their facts complete and their settle window over at
 * `firstSeen` (due for a verdict from then on): many sessions, or times telemetry cannot produce.
 */
export async function storeSessions(list: StoredSession[]): Promise<void> {
  const rows = list.map((s) => ({
    session_id: s.id,
    user_id: s.user ?? "user-1",
    created_at: s.created === undefined ? s.firstSeen : s.created,
    first_seen_at: s.firstSeen,
    admitted_at: s.admitted ?? null,
    connected: s.success === false ? 0 : 1,
    connect_latency_ms: s.success === false ? null : 300,
    audio_ms: s.success === false ? 0 : 9000,
  }));
  await env.DB.prepare(
    `INSERT INTO sessions (session_id, user_id, project_id, created_at, first_event_at, first_seen_at, last_seen_at,
       settle_due_at, admitted_at, connected, connect_latency_ms, audio_ms)
     SELECT value->>'$.session_id', value->>'$.user_id', 'proj-1', value->>'$.created_at', value->>'$.created_at',
       value->>'$.first_seen_at', value->>'$.first_seen_at', value->>'$.first_seen_at', value->>'$.admitted_at',
       value->>'$.connected', value->>'$.connect_latency_ms', value->>'$.audio_ms'
     FROM json_each(?1)`,
  )
    .bind(JSON.stringify(rows))
    .run();
}
