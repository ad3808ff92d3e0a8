/**
 * Local development only: one origin for the whole stack, routed as the contract says
 * (`/v1/*` -> ingest, `/api/webhooks/stripe` -> webhooks, everything else -> api).
 * In production the same paths are mounted as Workers routes on each worker.
 */
interface RouterEnv {
  INGEST: Fetcher;
  WEBHOOKS: Fetcher;
  API: Fetcher;
}

export function route(pathname: string): keyof RouterEnv {
  if (pathname === "/v1" || pathname.startsWith("/v1/")) return "INGEST";
  if (pathname === "/api/webhooks/stripe") return "WEBHOOKS";
  return "API";
}

export default {
  async fetch(request, env) {
    return env[route(new URL(request.url).pathname)].fetch(request);
  },
} satisfies ExportedHandler<RouterEnv>;
