/**
 * Injected faults: the next N matching /v1 requests are delayed and/or fail with 429/500/503
 * (with `Stripe-Should-Retry: true`), before execution and before the idempotency store.
 */
import type { MiddlewareHandler } from "hono";
import type { Ctx, Env } from "./context";
import { faultError, invalidRequest } from "./errors";
import type { FaultRequest, FaultView } from "./protocol";
import type { FaultRule } from "./state";

const STATUSES = [0, 429, 500, 503];

export function parseFault(body: FaultRequest): FaultRule {
  const status = body.status ?? 0;
  const count = body.count ?? 1;
  const delayMs = body.delay_ms ?? 0;
  const pathPrefix = body.path_prefix ?? "/v1";
  if (!STATUSES.includes(status))
    throw invalidRequest("status must be 0, 429, 500 or 503", undefined, "status");
  if (!Number.isInteger(count) || count < 1)
    throw invalidRequest("count must be a positive integer", undefined, "count");
  if (!Number.isInteger(delayMs) || delayMs < 0 || delayMs > 60_000) {
    throw invalidRequest("delay_ms must be an integer between 0 and 60000", undefined, "delay_ms");
  }
  if (typeof pathPrefix !== "string" || !pathPrefix.startsWith("/v1")) {
    throw invalidRequest("path_prefix must start with /v1", undefined, "path_prefix");
  }
  if (status === 0 && delayMs === 0)
    throw invalidRequest("a fault needs a status or a delay_ms", undefined, "status");
  return { status, remaining: count, delayMs, pathPrefix };
}

export function faultView(f: FaultRule): FaultView {
  return { status: f.status, remaining: f.remaining, delay_ms: f.delayMs, path_prefix: f.pathPrefix };
}

export function faults(ctx: Ctx): MiddlewareHandler<Env> {
  return async (c, next) => {
    const rules = ctx.state.faults;
    const index = rules.findIndex((f) => f.remaining > 0 && c.req.path.startsWith(f.pathPrefix));
    const rule = rules[index];
    if (rule) {
      rule.remaining -= 1;
      if (rule.remaining === 0) rules.splice(index, 1);
      if (rule.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, rule.delayMs));
      if (rule.status !== 0) throw faultError(rule.status);
    }
    return next();
  };
}
