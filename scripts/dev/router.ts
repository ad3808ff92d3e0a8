/**
 * Local development only: one origin for the whole stack, routed as the contract says
 * (`/v1/*` -> ingest, `/api/webhooks/stripe` -> webhooks, everything else -> api).
 * In production the same paths are mounted as Workers routes on each worker.
 *
 * `wrangler dev` does not fire cron triggers, so the dev launcher plays Cloudflare's scheduler:
 * `POST /__dev/scheduled?worker=classifier&cron=* * * * *` runs that worker's scheduled handler.
 * `POST /__dev/query {"sql": "SELECT ...", "shard"?: n}` reads a local D1 shard (default 0) for tests and the benchmark (a
 * second process opening the same SQLite file while the stack writes gets SQLITE_BUSY): one
 * statement, refused unless SQLite's plan for it only reads (see readOnlySql.ts).
 * `GET /__dev/ping` answers this stack's id, so the launcher knows the port is served by the stack
 * it started and not by some other server.
 * Errors use the contract's envelope `{"error":{"code","message"}}` and never carry internals.
 */
import { shardBinding } from "@aigate/shared/shardKey";
import { type PlanStep, planIsReadOnly, singleStatement } from "./readOnlySql";

interface ScheduledFetcher {
  fetch(request: Request): Promise<Response>;
  scheduled(options: { cron?: string; scheduledTime?: Date }): Promise<{ outcome: string; noRetry: boolean }>;
}

interface RouterEnv {
  DB: D1Database;
  INGEST: ScheduledFetcher;
  WEBHOOKS: ScheduledFetcher;
  API: ScheduledFetcher;
  CLASSIFIER: ScheduledFetcher;
  BILLER: ScheduledFetcher;
  /** Set by the launcher for each start (scripts/dev/stack.ts). */
  DEV_STACK_ID?: string;
}

type HttpTarget = "INGEST" | "WEBHOOKS" | "API";

export function route(pathname: string): HttpTarget {
  if (pathname === "/v1" || pathname.startsWith("/v1/")) return "INGEST";
  if (pathname === "/api/webhooks/stripe") return "WEBHOOKS";
  return "API";
}

const SCHEDULED: Record<string, "CLASSIFIER" | "BILLER" | "API"> = {
  classifier: "CLASSIFIER",
  biller: "BILLER",
  api: "API",
};

function error(status: number, code: string, message: string): Response {
  return Response.json({ error: { code, message } }, { status });
}

/** D1's message for a statement SQLite refused, without the "D1_ERROR:" prefix and result code. */
function sqliteMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/^D1_ERROR:\s*/, "").replace(/:\s*SQLITE_[A-Z_]+$/, "");
}

async function readOnlyQuery(request: Request, env: RouterEnv): Promise<Response> {
  let body: unknown;
  try {
    body = await request.json();
  } catch {
    return error(400, "invalid_json", 'the body must be JSON: {"sql": "SELECT ..."}');
  }
  const raw = body && typeof body === "object" && "sql" in body ? body.sql : undefined;
  if (typeof raw !== "string") return error(400, "invalid_request", 'the body must be {"sql": "SELECT ..."}');
  const shard = body && typeof body === "object" && "shard" in body ? body.shard : 0;
  const db = Number.isInteger(shard)
    ? (env as unknown as Record<string, D1Database | undefined>)[shardBinding(Number(shard))]
    : undefined;
  if (!db) return error(400, "invalid_request", `no D1 shard ${String(shard)} in this stack`);
  const sql = singleStatement(raw);
  if (sql === null) return error(400, "read_only", "exactly one SQL statement is accepted");
  if (!/^(SELECT|WITH)\b/i.test(sql))
    return error(400, "read_only", "read-only queries only (SELECT or WITH)");
  let plan: PlanStep[];
  try {
    plan = (await db.prepare(`EXPLAIN ${sql}`).all<PlanStep>()).results;
  } catch (err) {
    return error(400, "invalid_query", sqliteMessage(err));
  }
  if (!planIsReadOnly(plan)) return error(400, "read_only", "read-only queries only: this statement writes");
  try {
    const result = await db.prepare(sql).all();
    return Response.json({ results: result.results });
  } catch (err) {
    return error(400, "invalid_query", sqliteMessage(err));
  }
}

async function dev(url: URL, request: Request, env: RouterEnv): Promise<Response> {
  if (url.pathname === "/__dev/ping" && request.method === "GET") {
    return Response.json({ stack: env.DEV_STACK_ID ?? null });
  }
  if (url.pathname === "/__dev/scheduled" && request.method === "POST") {
    const target = SCHEDULED[url.searchParams.get("worker") ?? ""];
    if (!target) return error(404, "not_found", "unknown worker: use classifier, biller or api");
    const result = await env[target].scheduled({
      cron: url.searchParams.get("cron") ?? "* * * * *",
      scheduledTime: new Date(),
    });
    return Response.json(result, { status: result.outcome === "ok" ? 200 : 500 });
  }
  if (url.pathname === "/__dev/query" && request.method === "POST") return readOnlyQuery(request, env);
  return error(404, "not_found", "unknown dev endpoint");
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname.startsWith("/__dev/")) {
      try {
        return await dev(url, request, env);
      } catch (err) {
        console.error("dev router:", err);
        return error(500, "internal_error", "internal error");
      }
    }
    return env[route(url.pathname)].fetch(request);
  },
} satisfies ExportedHandler<RouterEnv>;
