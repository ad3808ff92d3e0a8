/**
 * The ingest worker's HTTP API (contract v1): POST /v1/events and POST /v1/sessions/admit, both
 * with an ingest key. One error handler renders every failure in the contract's envelope.
 */
import {
  ApiError,
  annotateRequest,
  createLogger,
  errorFields,
  errorResponse,
  internalErrorResponse,
  type Logger,
  notFound,
  requireKey,
} from "@aigate/shared";
import { Hono } from "hono";
import { createMiddleware } from "hono/factory";
import { HTTPException } from "hono/http-exception";
import { AdmitRequest, admit } from "./admission";
import { parseJson, readBodyText, requireJsonMediaType } from "./body";
import { settings } from "./config";
import { invalidRequest, methodNotAllowed } from "./errors";
import { acceptEvents } from "./telemetry";

/** Admission bodies are tiny; anything larger is a client bug. */
export const MAX_ADMIT_BODY_BYTES = 16 * 1024;

type AppEnv = { Bindings: Env; Variables: { requestId: string; log: Logger; now: number } };

export interface AppOptions {
  /** Clock (epoch ms), injectable for tests. */
  now?: () => number;
}

/** The one place errors become responses: the contract's envelope; 5xx logged, never leaked. */
function render(err: unknown, log: Logger | undefined): Response {
  const logger = log ?? createLogger("ingest");
  if (err instanceof HTTPException && err.status < 500) {
    return render(new ApiError(err.status, "invalid_request", err.message || "bad request"), log);
  }
  if (!(err instanceof ApiError)) {
    logger.error("unhandled error", errorFields(err));
    return internalErrorResponse();
  }
  if (err.status >= 500) logger.error("request failed", { code: err.code, status: err.status });
  else logger.info("request rejected", { code: err.code, status: err.status });
  const headers: Record<string, string> = {};
  if (err.status === 503) headers["retry-after"] = "1";
  if (err.status === 405) headers.allow = "POST";
  return errorResponse(err, headers);
}

export function createApp(opts: AppOptions = {}) {
  const clock = opts.now ?? Date.now;
  const app = new Hono<AppEnv>();

  app.use("*", async (c, next) => {
    const requestId = crypto.randomUUID();
    c.set("requestId", requestId);
    c.set("now", clock());
    c.set("log", createLogger("ingest", { request_id: requestId }));
    await next();
    c.header("x-request-id", requestId);
  });

  /** 401 without a known key, 403 for a key of another scope (lookups cached, see apiKeys.ts). */
  const ingestKey = createMiddleware<AppEnv>(async (c, next) => {
    await requireKey(c.env.DB, c.req.header("authorization"), "ingest", c.var.now);
    await next();
  });

  app.post("/v1/events", ingestKey, async (c) => {
    const result = await acceptEvents(c.req.raw, {
      queue: c.env.TELEMETRY,
      now: c.var.now,
      requestId: c.var.requestId,
      log: c.var.log,
    });
    annotateRequest(c.req.raw, {
      events_accepted: result.accepted,
      events_enqueued: result.enqueued,
      queue_messages: result.messages,
    });
    return c.json({ accepted: result.accepted }, 202);
  });

  app.post("/v1/sessions/admit", ingestKey, async (c) => {
    requireJsonMediaType(c.req.header("content-type") ?? null);
    const parsed = AdmitRequest.safeParse(parseJson(await readBodyText(c.req.raw, MAX_ADMIT_BODY_BYTES)));
    if (!parsed.success) {
      throw invalidRequest(
        "body must be {session_id, user_id, project_id} with non-empty strings of at most 200 characters",
        parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })),
      );
    }
    const result = await admit(c.env.DB, parsed.data, { now: c.var.now, ...settings(c.env) });
    c.var.log.info("admission", {
      session_id: parsed.data.session_id,
      user_id: parsed.data.user_id,
      allowed: result.allowed,
      reason: result.reason,
      active_sessions: result.active_sessions,
    });
    return c.json(result, 200);
  });

  for (const path of ["/v1/events", "/v1/sessions/admit"]) {
    app.all(path, () => {
      throw methodNotAllowed("POST");
    });
  }

  app.notFound((c) => render(notFound(`no route for ${c.req.method} ${c.req.path}`), c.var.log));
  app.onError((err, c) => render(err, c.var.log));

  return app;
}
