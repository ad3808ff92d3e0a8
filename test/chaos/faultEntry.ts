/**
 * Test builds of the workers for the chaos suite (runs inside workerd). `withChaos(worker, ...)`
 * returns the real worker with its bindings wrapped, so that crashes happen where production
 * crashes would, without touching product code:
 *
 * - `env.DB`: a write (a `batch()` holding one, or `run()` / `all()` / `first()` of an INSERT,
 *   UPDATE or DELETE) executes for real and THEN throws (a crash after some writes);
 * - `env.TELEMETRY` / `env.VERDICTS`: `send` / `sendBatch` throw before or after sending;
 * - a "hard" crash also drops every later ack/retry and fails the invocation, as if the isolate
 *   died, so the runtime redelivers what was not acked before it.
 *
 * Which invocation crashes, and where, is asked from the control server (test/chaos/control.ts)
 * over loopback; crashes that happen are reported back to it. The classifier build also refuses
 * messages carrying the poison session until the control server says it is fixed, and the api
 * build answers read-only SQL at POST /__chaos/sql (one D1 batch: a consistent snapshot) so the
 * suite can check its invariants against D1 while the stack runs.
 */
import type {
  ChaosWorker,
  CrashPlan,
  CrashPlanResponse,
  CrashReport,
  QueueMessageInfo,
  QueuePlan,
} from "./protocol";

export interface ChaosEntryOptions {
  worker: ChaosWorker;
  /** Base URL of the control server. */
  control: string;
  /** Serve POST /__chaos/sql (the api build only). */
  sql?: boolean;
}

export class ChaosCrash extends Error {
  override name = "ChaosCrash";
}

type Report = (r: Omit<CrashReport, "worker">) => Promise<void>;

/** Counts the effects of one invocation and fires the planned crash at the planned one. */
class Fuse {
  dead = false;
  private calls = 0;
  private fired = false;

  constructor(
    private readonly plan: CrashPlan | null,
    private readonly report: Report,
  ) {}

  /** A call that cannot crash by itself (a read), but fails once the isolate is down. */
  async alive<T>(point: string, run: () => Promise<T>): Promise<T> {
    if (this.dead) throw new ChaosCrash(`chaos: isolate is down, ${point} not run`);
    return run();
  }

  /** A write or a send: counted, and the planned one crashes (after it ran, or before a send). */
  async effect<T>(point: string, kind: "db" | "send", run: () => Promise<T>): Promise<T> {
    if (this.dead) throw new ChaosCrash(`chaos: isolate is down, ${point} not run`);
    this.calls += 1;
    const plan = this.plan;
    if (plan === null || this.fired || this.calls !== plan.at) return run();
    this.fired = true;
    if (kind === "send" && plan.send === "before") return this.crash(point, plan.mode, false);
    await run();
    return this.crash(point, plan.mode, kind === "send" ? true : null);
  }

  private async crash(point: string, mode: CrashPlan["mode"], sent: boolean | null): Promise<never> {
    if (mode === "hard") this.dead = true;
    await this.report({ point, mode, sent });
    throw new ChaosCrash(
      `chaos: ${mode} crash at ${point}${sent === null ? "" : sent ? " (sent)" : " (unsent)"}`,
    );
  }
}

function isD1(v: unknown): v is D1Database {
  return (
    typeof v === "object" &&
    v !== null &&
    typeof Reflect.get(v, "prepare") === "function" &&
    typeof Reflect.get(v, "batch") === "function"
  );
}

function isQueue(v: unknown): v is Queue {
  return (
    typeof v === "object" &&
    v !== null &&
    typeof Reflect.get(v, "send") === "function" &&
    typeof Reflect.get(v, "sendBatch") === "function"
  );
}

function passThrough(target: object, prop: string | symbol): unknown {
  const value: unknown = Reflect.get(target, prop);
  return typeof value === "function" ? value.bind(target) : value;
}

/** Statements that change data; reads never crash (a crash is "after some writes"). */
function isWrite(sql: string): boolean {
  return /\b(insert|update|delete|replace)\b/i.test(sql);
}

function wrapD1(db: D1Database, fuse: Fuse): D1Database {
  const originals = new WeakMap<D1PreparedStatement, D1PreparedStatement>();
  const sqlOf = new WeakMap<D1PreparedStatement, string>();
  const guarded = <T>(point: string, write: boolean, run: () => Promise<T>): Promise<T> =>
    write ? fuse.effect(point, "db", run) : fuse.alive(point, run);
  const wrapStatement = (stmt: D1PreparedStatement, sql: string): D1PreparedStatement => {
    sqlOf.set(stmt, sql);
    const write = isWrite(sql);
    const proxy = new Proxy(stmt, {
      get(target, prop) {
        switch (prop) {
          case "bind":
            return (...values: unknown[]) => wrapStatement(target.bind(...values), sql);
          case "run":
            return () => guarded("db.run", write, () => target.run());
          case "all":
            return () => guarded("db.all", write, () => target.all());
          case "first":
            return (column?: string) =>
              guarded("db.first", write, () =>
                column === undefined ? target.first() : target.first(column),
              );
          default:
            return passThrough(target, prop);
        }
      },
    });
    originals.set(proxy, stmt);
    return proxy;
  };
  return new Proxy(db, {
    get(target, prop) {
      if (prop === "prepare") return (sql: string) => wrapStatement(target.prepare(sql), sql);
      if (prop === "batch") {
        return (statements: D1PreparedStatement[]) => {
          const real = statements.map((s) => originals.get(s) ?? s);
          const write = real.some((s) => isWrite(sqlOf.get(s) ?? "insert"));
          return guarded("db.batch", write, () => target.batch(real));
        };
      }
      return passThrough(target, prop);
    },
  });
}

function wrapQueue(queue: Queue, name: string, fuse: Fuse): Queue {
  return new Proxy(queue, {
    get(target, prop) {
      if (prop === "send") {
        return (body: unknown, options?: QueueSendOptions) =>
          fuse.effect(`${name}.send`, "send", () => target.send(body, options));
      }
      if (prop === "sendBatch") {
        return (messages: Iterable<MessageSendRequest>, options?: QueueSendBatchOptions) =>
          fuse.effect(`${name}.sendBatch`, "send", () => target.sendBatch(messages, options));
      }
      return passThrough(target, prop);
    },
  });
}

/** The env's D1 shards, in order: `DB`, `DB_1`, `DB_2`, ... (as many as are bound). */
function shardNames(env: object): string[] {
  const names: string[] = [];
  for (let i = 0; isD1(Reflect.get(env, i === 0 ? "DB" : `DB_${i}`)); i++)
    names.push(i === 0 ? "DB" : `DB_${i}`);
  return names;
}

function wrapEnv<E extends object>(env: E, fuse: Fuse): E {
  const out = { ...env };
  // every shard crashes the same way (a write that ran, then throws)
  for (const name of shardNames(env))
    Reflect.set(out, name, wrapD1(Reflect.get(env, name) as D1Database, fuse));
  for (const name of ["TELEMETRY", "VERDICTS"]) {
    const queue: unknown = Reflect.get(env, name);
    if (isQueue(queue)) Reflect.set(out, name, wrapQueue(queue, name, fuse));
  }
  return out;
}

function text(v: unknown, name: string): string | null {
  const value: unknown = typeof v === "object" && v !== null ? Reflect.get(v, name) : undefined;
  return typeof value === "string" ? value : null;
}

/** A stable description of a queue message: its kind, a content key, the sessions it carries. */
export function describeMessage(m: { id: string; attempts: number; body: unknown }): QueueMessageInfo {
  const body = m.body;
  const kind = text(body, "kind");
  const base = { id: m.id, attempts: m.attempts };
  if (kind === "events") {
    const events: unknown = typeof body === "object" && body !== null ? Reflect.get(body, "events") : null;
    const list = Array.isArray(events) ? events : [];
    const first: unknown = list[0];
    const sessions = [...new Set(list.map((e) => text(e, "session_id")).filter((s) => s !== null))];
    return {
      ...base,
      kind: "events",
      key: `ev:${text(first, "source")}/${text(first, "id")}:${list.length}`,
      sessions,
    };
  }
  if (kind === "judge") {
    const ids: unknown = typeof body === "object" && body !== null ? Reflect.get(body, "session_ids") : null;
    const list = Array.isArray(ids) ? ids.filter((s) => typeof s === "string") : [];
    return { ...base, kind: "judge", key: `judge:${list[0] ?? ""}:${list.length}`, sessions: [] };
  }
  if (kind === "verdict")
    return { ...base, kind: "verdict", key: `v:${text(body, "session_id")}`, sessions: [] };
  return { ...base, kind: "other", key: `other:${m.id}`, sessions: [] };
}

/** A message whose ack/retry are dropped once the isolate is "dead". */
function guard(m: Message<unknown>, fuse: Fuse): Message<unknown> {
  return {
    get id() {
      return m.id;
    },
    get timestamp() {
      return m.timestamp;
    },
    get body() {
      return m.body;
    },
    get attempts() {
      return m.attempts;
    },
    ack() {
      if (!fuse.dead) m.ack();
    },
    retry(options?: QueueRetryOptions) {
      if (!fuse.dead) m.retry(options);
    },
  };
}

async function hex(data: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(data));
  return [...new Uint8Array(digest).slice(0, 12)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

interface SqlQuery {
  sql: string;
  params: unknown[];
}

function parseQueries(body: unknown): SqlQuery[] | null {
  const list: unknown = typeof body === "object" && body !== null ? Reflect.get(body, "queries") : null;
  if (!Array.isArray(list)) return null;
  const out: SqlQuery[] = [];
  for (const q of list) {
    const sql = text(q, "sql");
    const params: unknown = typeof q === "object" && q !== null ? Reflect.get(q, "params") : undefined;
    if (sql === null || !/^\s*(select|with)\b/i.test(sql) || sql.includes(";")) return null;
    out.push({ sql, params: Array.isArray(params) ? params : [] });
  }
  return out;
}

/**
 * Runs the queries on every D1 shard (one batch per shard: a consistent snapshot of each) and
 * answers each query's rows of all shards, shard after shard. A count is then one row per shard:
 * the suite adds them up (clients.ts `count`).
 */
async function answerSql(request: Request, env: object): Promise<Response> {
  const shards = shardNames(env).map((name) => Reflect.get(env, name) as D1Database);
  const queries = parseQueries(await request.json());
  if (shards.length === 0 || queries === null)
    return Response.json({ error: "read-only queries only" }, { status: 400 });
  const perShard = await Promise.all(
    shards.map((db) => db.batch(queries.map((q) => db.prepare(q.sql).bind(...q.params)))),
  );
  return Response.json({
    results: queries.map((_, i) => perShard.flatMap((results) => results[i]?.results ?? [])),
  });
}

export function withChaos<E extends object>(
  worker: ExportedHandler<E, unknown>,
  opts: ChaosEntryOptions,
): ExportedHandler<E, unknown> {
  const post = async <T>(
    path: string,
    body: unknown,
    read: (v: unknown) => T | null,
    fallback: T,
  ): Promise<T> => {
    try {
      const res = await fetch(`${opts.control}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return (res.ok ? read(await res.json()) : null) ?? fallback;
    } catch {
      return fallback;
    }
  };
  const report: Report = async (r) => {
    await post("/crashed", { worker: opts.worker, ...r }, () => null, null);
  };
  const handler: ExportedHandler<E, unknown> = { ...worker };

  const { fetch: realFetch, queue: realQueue, scheduled: realScheduled } = worker;
  if (realFetch) {
    handler.fetch = async (request, env, ctx) => {
      const url = new URL(request.url);
      if (opts.sql && url.pathname === "/__chaos/sql" && request.method === "POST") {
        return answerSql(request, env);
      }
      if (opts.worker === "api") return realFetch(request, env, ctx);
      const body = request.method === "GET" || request.method === "HEAD" ? "" : await request.clone().text();
      const eventId = opts.worker === "webhooks" ? safeEventId(body) : null;
      const key = eventId ?? `${request.method} ${url.pathname} ${await hex(body)}`;
      const plan = await post("/plan/fetch", { worker: opts.worker, key }, readCrashPlan, { crash: null });
      const fuse = new Fuse(plan.crash, report);
      const response = await realFetch(request, wrapEnv(env, fuse), ctx);
      if (fuse.dead) throw new ChaosCrash(`chaos: ${opts.worker} died while handling ${url.pathname}`);
      return response;
    };
  }
  if (realQueue && opts.worker !== "api") {
    handler.queue = async (batch, env, ctx) => {
      const infos = batch.messages.map(describeMessage);
      const plan = await post(
        "/plan/queue",
        { worker: opts.worker, queue: batch.queue, messages: infos },
        readQueuePlan,
        { crash: null, refuse: [] },
      );
      const refused = new Set(plan.refuse);
      for (const m of batch.messages) {
        if (!refused.has(m.id)) continue;
        m.retry();
        await post("/refused", { worker: opts.worker, id: m.id }, () => null, null);
      }
      const rest = batch.messages.filter((m) => !refused.has(m.id));
      if (rest.length === 0) return;
      const fuse = new Fuse(plan.crash, report);
      const messages = rest.map((m) => guard(m, fuse));
      const sub: MessageBatch<unknown> = {
        queue: batch.queue,
        messages,
        get metadata() {
          return batch.metadata;
        },
        ackAll: () => {
          for (const m of messages) m.ack();
        },
        retryAll: (options?: QueueRetryOptions) => {
          for (const m of messages) m.retry(options);
        },
      };
      try {
        await realQueue(sub, wrapEnv(env, fuse), ctx);
      } catch (err) {
        if (!fuse.dead) throw err;
      }
      if (fuse.dead) throw new ChaosCrash(`chaos: ${opts.worker} died while consuming ${batch.queue}`);
    };
  }
  if (realScheduled) {
    handler.scheduled = async (controller, env, ctx) => {
      const plan = await post(
        "/plan/scheduled",
        { worker: opts.worker, cron: controller.cron },
        readCrashPlan,
        { crash: null },
      );
      const fuse = new Fuse(plan.crash, report);
      try {
        await realScheduled(controller, wrapEnv(env, fuse), ctx);
      } catch (err) {
        if (!fuse.dead) throw err;
      }
      if (fuse.dead) throw new ChaosCrash(`chaos: ${opts.worker} died in its cron "${controller.cron}"`);
    };
  }
  return handler;
}

function crashOf(v: unknown): CrashPlan | null | undefined {
  if (v === null) return null;
  if (typeof v !== "object") return undefined;
  const at: unknown = Reflect.get(v, "at");
  const mode: unknown = Reflect.get(v, "mode");
  const send: unknown = Reflect.get(v, "send");
  if (
    typeof at !== "number" ||
    (mode !== "soft" && mode !== "hard") ||
    (send !== "before" && send !== "after")
  ) {
    return undefined;
  }
  return { at, mode, send };
}

/** The control server's answers, checked (a malformed one means: no fault). */
function readCrashPlan(v: unknown): CrashPlanResponse | null {
  const crash = typeof v === "object" && v !== null ? crashOf(Reflect.get(v, "crash")) : undefined;
  return crash === undefined ? null : { crash };
}

function readQueuePlan(v: unknown): QueuePlan | null {
  const plan = readCrashPlan(v);
  const refuse: unknown = typeof v === "object" && v !== null ? Reflect.get(v, "refuse") : undefined;
  if (plan === null || !Array.isArray(refuse)) return null;
  return { crash: plan.crash, refuse: refuse.filter((id) => typeof id === "string") };
}

function safeEventId(body: string): string | null {
  try {
    const parsed: unknown = JSON.parse(body);
    const id = text(parsed, "id");
    return id === null ? null : `evt:${id}`;
  } catch {
    return null;
  }
}
