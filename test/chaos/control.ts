/**
 * The chaos control server: runs in the test process on 127.0.0.1 and tells the chaos entries in
 * workerd when to crash (decisions keyed by content and the seed), which poison messages to
 * refuse until they are "fixed", and counts the crashes that really happened.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type {
  ChaosStats,
  ChaosWorker,
  CrashPlan,
  CrashPlanResponse,
  CrashReport,
  FetchPlanRequest,
  QueueMessageInfo,
  QueuePlan,
  QueuePlanRequest,
  ScheduledPlanRequest,
} from "./protocol";
import { unit } from "./random";

export interface ChaosRates {
  /** Chance that a queue batch (all of whose messages may still crash) crashes, per worker. */
  queue: Partial<Record<ChaosWorker, number>>;
  /** Chance that a request seen for the first time crashes, per worker. */
  fetch: Partial<Record<ChaosWorker, number>>;
  /** Chance that a cron run crashes, and how many cron crashes at most per worker. */
  scheduled: number;
  scheduledBudget: number;
}

export const DEFAULT_RATES: ChaosRates = {
  queue: { classifier: 0.4, biller: 0.4 },
  fetch: { webhooks: 0.3, ingest: 0.08 },
  scheduled: 0.15,
  scheduledBudget: 4,
};

/**
 * Deliveries up to which a message may still be crashed. Events are crashed on their first
 * delivery only, so that a first copy of an event is recorded within one retry delay (5 s), well
 * inside the settle window: the verdict then rests on every event sent, as the invariants expect.
 */
export const CRASH_ATTEMPTS: Record<QueueMessageInfo["kind"], number> = {
  events: 1,
  judge: 2,
  verdict: 2,
  other: 0,
};

export interface ControlServer {
  url: string;
  stats(): ChaosStats;
  close(): Promise<void>;
}

class ControlState {
  enabled = true;
  poison = new Set<string>();
  poisonFixed = false;
  refused = 0;
  crashes: CrashReport[] = [];
  private requestAttempts = new Map<string, number>();
  private scheduledRuns = new Map<string, number>();
  private scheduledCrashes = new Map<string, number>();

  constructor(
    readonly seed: number,
    readonly rates: ChaosRates,
  ) {}

  private plan(worker: ChaosWorker, key: string, maxAt: number): CrashPlan {
    return {
      at: 1 + Math.floor(unit(this.seed, worker, key, "at") * maxAt),
      mode: unit(this.seed, worker, key, "mode") < 0.5 ? "soft" : "hard",
      send: unit(this.seed, worker, key, "send") < 0.5 ? "before" : "after",
    };
  }

  queuePlan(req: QueuePlanRequest): QueuePlan {
    // Only the classifier refuses the poison: its dead-letter queue must still drain it.
    const refuse =
      this.poisonFixed || req.worker !== "classifier"
        ? []
        : req.messages.filter((m) => m.sessions.some((s) => this.poison.has(s))).map((m) => m.id);
    const rest = req.messages.filter((m) => !refuse.includes(m.id));
    const rate = this.rates.queue[req.worker] ?? 0;
    const eligible =
      this.enabled && rest.length > 0 && rest.every((m) => m.attempts <= CRASH_ATTEMPTS[m.kind]);
    if (!eligible) return { crash: null, refuse };
    const key = rest
      .map((m) => `${m.key}#${m.attempts}`)
      .sort()
      .join(",");
    // the biller's 4th write is the commit after its Stripe call: worth reaching
    const maxAt = req.worker === "biller" ? 4 : 3;
    const crash = unit(this.seed, req.worker, "queue", key) < rate ? this.plan(req.worker, key, maxAt) : null;
    return { crash, refuse };
  }

  fetchPlan(req: FetchPlanRequest): CrashPlanResponse {
    const seen = (this.requestAttempts.get(`${req.worker}|${req.key}`) ?? 0) + 1;
    this.requestAttempts.set(`${req.worker}|${req.key}`, seen);
    const rate = this.rates.fetch[req.worker] ?? 0;
    if (!this.enabled || seen > 1) return { crash: null };
    const hit = unit(this.seed, req.worker, "fetch", req.key) < rate;
    return { crash: hit ? this.plan(req.worker, req.key, req.worker === "ingest" ? 2 : 3) : null };
  }

  scheduledPlan(req: ScheduledPlanRequest): CrashPlanResponse {
    const id = `${req.worker}|${req.cron}`;
    const run = (this.scheduledRuns.get(id) ?? 0) + 1;
    this.scheduledRuns.set(id, run);
    const used = this.scheduledCrashes.get(req.worker) ?? 0;
    if (!this.enabled || used >= this.rates.scheduledBudget) return { crash: null };
    const key = `${req.cron}#${run}`;
    if (unit(this.seed, req.worker, "scheduled", key) >= this.rates.scheduled) return { crash: null };
    this.scheduledCrashes.set(req.worker, used + 1);
    return { crash: this.plan(req.worker, key, req.worker === "biller" ? 4 : 3) };
  }

  stats(): ChaosStats {
    const byWorker: Record<string, number> = {};
    const byPoint: Record<string, number> = {};
    for (const c of this.crashes) {
      byWorker[c.worker] = (byWorker[c.worker] ?? 0) + 1;
      const point = `${c.worker}:${c.point}:${c.mode}${c.sent === null ? "" : c.sent ? ":sent" : ":unsent"}`;
      byPoint[point] = (byPoint[point] ?? 0) + 1;
    }
    return {
      enabled: this.enabled,
      crashes: this.crashes.length,
      crashesByWorker: byWorker,
      crashesByPoint: byPoint,
      hardCrashes: this.crashes.filter((c) => c.mode === "hard").length,
      refused: this.refused,
      poisonFixed: this.poisonFixed,
    };
  }
}

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let text = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      text += chunk;
    });
    req.on("end", () => {
      try {
        resolve(text ? JSON.parse(text) : {});
      } catch (err) {
        reject(err);
      }
    });
    req.on("error", reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

function field<T>(body: unknown, name: string, check: (v: unknown) => v is T): T {
  const value: unknown = typeof body === "object" && body !== null ? Reflect.get(body, name) : undefined;
  if (!check(value)) throw new Error(`bad or missing field ${name}`);
  return value;
}

const isString = (v: unknown): v is string => typeof v === "string";
const isBoolean = (v: unknown): v is boolean => typeof v === "boolean";
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString);
const WORKERS: readonly string[] = ["ingest", "classifier", "biller", "webhooks", "api"];
const isWorker = (v: unknown): v is ChaosWorker => typeof v === "string" && WORKERS.includes(v);
const isMode = (v: unknown): v is CrashPlan["mode"] => v === "soft" || v === "hard";
const isSent = (v: unknown): v is boolean | null => v === null || typeof v === "boolean";
const KINDS: readonly string[] = ["events", "judge", "verdict", "other"];

function isMessageInfo(v: unknown): v is QueueMessageInfo {
  if (typeof v !== "object" || v === null) return false;
  return (
    isString(Reflect.get(v, "id")) &&
    typeof Reflect.get(v, "attempts") === "number" &&
    isString(Reflect.get(v, "key")) &&
    KINDS.includes(String(Reflect.get(v, "kind"))) &&
    isStringArray(Reflect.get(v, "sessions"))
  );
}
const isMessageInfos = (v: unknown): v is QueueMessageInfo[] => Array.isArray(v) && v.every(isMessageInfo);

export async function startControl(seed: number, rates: ChaosRates = DEFAULT_RATES): Promise<ControlServer> {
  const state = new ControlState(seed, rates);
  const server = createServer((req, res) => {
    const route = `${req.method ?? "GET"} ${req.url ?? "/"}`;
    readJson(req)
      .then((body) => {
        switch (route) {
          case "POST /plan/queue":
            return send(
              res,
              200,
              state.queuePlan({
                worker: field(body, "worker", isWorker),
                queue: field(body, "queue", isString),
                messages: field(body, "messages", isMessageInfos),
              }),
            );
          case "POST /plan/fetch":
            return send(
              res,
              200,
              state.fetchPlan({ worker: field(body, "worker", isWorker), key: field(body, "key", isString) }),
            );
          case "POST /plan/scheduled":
            return send(
              res,
              200,
              state.scheduledPlan({
                worker: field(body, "worker", isWorker),
                cron: field(body, "cron", isString),
              }),
            );
          case "POST /crashed":
            state.crashes.push({
              worker: field(body, "worker", isWorker),
              point: field(body, "point", isString),
              mode: field(body, "mode", isMode),
              sent: field(body, "sent", isSent),
            });
            return send(res, 200, { ok: true });
          case "POST /refused":
            state.refused += 1;
            return send(res, 200, { ok: true });
          case "POST /enabled":
            state.enabled = field(body, "enabled", isBoolean);
            return send(res, 200, state.stats());
          case "POST /poison":
            for (const s of field(body, "sessions", isStringArray)) state.poison.add(s);
            return send(res, 200, state.stats());
          case "POST /poison/fix":
            state.poisonFixed = true;
            return send(res, 200, state.stats());
          case "GET /stats":
            return send(res, 200, state.stats());
          default:
            return send(res, 404, { error: `no route ${route}` });
        }
      })
      .catch((err: unknown) => send(res, 400, { error: String(err) }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    stats: () => state.stats(),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
