/**
 * Local development only: one origin for the whole stack, routed as the contract says
 * (`/v1/*` -> ingest, `/api/webhooks/stripe` -> webhooks, everything else -> api).
 * In production the same paths are mounted as Workers routes on each worker.
 *
 * `wrangler dev` does not fire cron triggers, so the dev launcher plays Cloudflare's scheduler:
 * `POST /__dev/scheduled?worker=classifier&cron=* * * * *` runs that worker's scheduled handler.
 * `POST /__dev/query {"sql": "SELECT ..."}` reads the local D1 for tests and the benchmark (a
 * second process opening the same SQLite file while the stack writes gets SQLITE_BUSY).
 */
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
}

type HttpTarget = "INGEST" | "WEBHOOKS" | "API";

export function route(pathname: string): HttpTarget {
  if (pathname === "/v1" || pathname.startsWith("/v1/")) return "INGEST";
  if (pathname === "/api/webhooks/stripe") return "WEBHOOKS";
  return "API";
}

const SCHEDULED: Record<string, "CLASSIFIER" | "BILLER"> = { classifier: "CLASSIFIER", biller: "BILLER" };

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/__dev/scheduled" && request.method === "POST") {
      const target = SCHEDULED[url.searchParams.get("worker") ?? ""];
      if (!target) return Response.json({ error: "unknown worker" }, { status: 404 });
      const result = await env[target].scheduled({
        cron: url.searchParams.get("cron") ?? "* * * * *",
        scheduledTime: new Date(),
      });
      return Response.json(result, { status: result.outcome === "ok" ? 200 : 500 });
    }
    if (url.pathname === "/__dev/query" && request.method === "POST") {
      const body: unknown = await request.json();
      const sql = body && typeof body === "object" && "sql" in body ? String(body.sql) : "";
      if (!/^\s*(SELECT|WITH)\b/i.test(sql))
        return Response.json({ error: "read-only queries only" }, { status: 400 });
      const result = await env.DB.prepare(sql).all();
      return Response.json({ results: result.results });
    }
    return env[route(url.pathname)].fetch(request);
  },
} satisfies ExportedHandler<RouterEnv>;
