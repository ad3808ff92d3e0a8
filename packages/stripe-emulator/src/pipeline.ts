/** Request plumbing for /v1: request ids, the call log, auth and parameter parsing. */
import type { MiddlewareHandler } from "hono";
import type { Ctx, Env } from "./context";
import { authError } from "./errors";
import { Params, parseForm } from "./params";
import { API_VERSION } from "./protocol";
import { newId } from "./state";

const MAX_CALLS = 100_000;

/** Every response gets a `Request-Id`; /v1 responses also `Stripe-Version`. */
export function requestIds(log: ((line: string) => void) | null): MiddlewareHandler<Env> {
  return async (c, next) => {
    const requestId = newId("req");
    const started = Date.now();
    c.set("requestId", requestId);
    c.set("replayed", false);
    await next();
    c.res.headers.set("Request-Id", requestId);
    if (c.req.path.startsWith("/v1/")) c.res.headers.set("Stripe-Version", API_VERSION);
    log?.(`${c.req.method} ${c.req.path} ${c.res.status} ${Date.now() - started}ms`);
  };
}

/** Records each /v1 call for GET /_emulator/calls. */
export function callLog(ctx: Ctx): MiddlewareHandler<Env> {
  return async (c, next) => {
    try {
      await next();
    } finally {
      const calls = ctx.state.calls;
      if (calls.length >= MAX_CALLS) calls.splice(0, MAX_CALLS / 10); // drop the oldest 10%
      const url = new URL(c.req.url);
      calls.push({
        method: c.req.method,
        path: url.pathname,
        query: url.search.slice(1),
        status: c.res.status,
        idempotency_key: c.req.header("Idempotency-Key") ?? null,
        replayed: c.get("replayed"),
        time: Date.now(),
        request_id: c.get("requestId"),
      });
    }
  };
}

function apiKeyOf(header: string | undefined): string | null {
  if (!header) return null;
  const bearer = /^Bearer\s+(\S+)$/i.exec(header);
  if (bearer?.[1]) return bearer[1];
  const basic = /^Basic\s+(\S+)$/i.exec(header);
  if (basic?.[1]) return Buffer.from(basic[1], "base64").toString("utf8").split(":")[0] ?? null;
  return null;
}

/** Any test-mode secret or restricted key (`sk_test_...`, `rk_test_...`) is accepted. */
export const auth: MiddlewareHandler<Env> = async (c, next) => {
  const key = apiKeyOf(c.req.header("Authorization"));
  if (!key) {
    throw authError(
      "You did not provide an API key. You need to provide your API key in the Authorization header, " +
        "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
    );
  }
  if (!/^(sk|rk)_test_\w+$/.test(key)) {
    throw authError(
      `Invalid API Key provided: ${key.slice(0, 8)}${"*".repeat(Math.max(0, key.length - 12))}${key.slice(-4)}`,
    );
  }
  return next();
};

/** Query parameters, then (for POST) the form body on top; sets `params` and `request`. */
export const parseParams: MiddlewareHandler<Env> = async (c, next) => {
  const url = new URL(c.req.url);
  const raw = parseForm(url.search);
  if (c.req.method === "POST") Object.assign(raw, parseForm(await c.req.text()));
  c.set("params", new Params(raw));
  c.set("request", {
    id: c.get("requestId"),
    idempotencyKey: c.req.method === "POST" ? (c.req.header("Idempotency-Key") ?? null) : null,
  });
  return next();
};
