/**
 * Local development only: one origin for the whole stack, routed as the contract says
 * (`/v1/*` -> ingest, `/api/webhooks/stripe` -> webhooks, everything else -> api).
 * In production the same paths are mounted as Workers routes on each worker.
 *
 * `wrangler dev` does not fire cron triggers, so the dev launcher plays Cloudflare's scheduler:
 * `POST /__dev/scheduled?worker=classifier&cron=* * * * *` runs that worker's scheduled handler.
 */
interface ScheduledFetcher {
  fetch(request: Request): Promise<Response>;
  scheduled(options: { cron?: string; scheduledTime?: Date }): Promise<{ outcome: string; noRetry: boolean }>;
}

interface RouterEnv {
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

const SCHEDULED: Record<string, keyof RouterEnv> = { classifier: "CLASSIFIER", biller: "BILLER" };

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
    return env[route(url.pathname)].fetch(request);
  },
} satisfies ExportedHandler<RouterEnv>;
