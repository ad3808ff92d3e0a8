/**
 * `Idempotency-Key` on POST: the first successful response is stored for 24 h (emulator clock) and
 * replayed with `Idempotent-Replayed: true`; the same key with other parameters is a 400
 * idempotency_error; a key whose first request is still running is a 409. Errors (4xx/5xx,
 * including injected faults, which run before this) are not stored, so they can be retried.
 */
import type { MiddlewareHandler } from "hono";
import type { Ctx, Env } from "./context";
import { idempotencyInFlight, idempotencyMismatch } from "./errors";
import { DAY, type EmulatorState, type IdempotencyRec } from "./state";

/** JSON with object keys sorted, so parameter order does not matter. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) return v;
    const entries = Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return Object.fromEntries(entries);
  });
}

let pruneCounter = 0;

function prune(state: EmulatorState, now: number): void {
  pruneCounter = (pruneCounter + 1) % 1000;
  if (pruneCounter !== 0) return;
  for (const [key, rec] of state.idempotency) {
    if (rec.response && now - rec.createdAt >= DAY) state.idempotency.delete(key);
  }
}

export function idempotency(ctx: Ctx): MiddlewareHandler<Env> {
  return async (c, next) => {
    const key = c.req.header("Idempotency-Key");
    if (c.req.method !== "POST" || !key) return next();
    const { state } = ctx;
    const now = state.now();
    prune(state, now);
    const fingerprint = canonical([c.req.method, c.req.path, c.get("params").raw]);
    const existing = state.idempotency.get(key);
    if (existing && now - existing.createdAt < DAY) {
      if (existing.fingerprint !== fingerprint) throw idempotencyMismatch(key);
      if (!existing.response) throw idempotencyInFlight();
      c.set("replayed", true);
      return new Response(existing.response.body, {
        status: existing.response.status,
        headers: {
          "Content-Type": "application/json",
          "Idempotent-Replayed": "true",
          "Original-Request": existing.response.requestId,
        },
      });
    }
    const rec: IdempotencyRec = { fingerprint, createdAt: now, response: null };
    state.idempotency.set(key, rec);
    let stored = false;
    try {
      await next();
      if (c.res.status < 400 && !c.error) {
        rec.response = {
          status: c.res.status,
          body: await c.res.clone().text(),
          requestId: c.get("requestId"),
        };
        stored = true;
      }
    } finally {
      if (!stored && state.idempotency.get(key) === rec) state.idempotency.delete(key);
    }
  };
}
