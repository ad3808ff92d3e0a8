/**
 * The ingest worker's HTTP API (contract v1): POST /v1/events and POST /v1/sessions/admit, both
 * with an ingest key. The shared error handler renders every failure in the contract's envelope.
 */
import { annotateRequest, parseInput, requireKey, type Shards, shardsOf } from "@aigate/shared";
import { errorHandling, type RequestVariables, requestContext } from "@aigate/shared/http";
import { Hono } from "hono";
import { createMiddleware } from "hono/factory";
import { AdmitRequest, admit } from "./admission";
import { parseJson, readBodyText, requireJsonMediaType } from "./body";
import { type IngestConfig, readConfig } from "./config";
import { methodNotAllowed } from "./errors";
import { acceptEvents } from "./telemetry";

/** Admission bodies are tiny; anything larger is a client bug. */
export const MAX_ADMIT_BODY_BYTES = 16 * 1024;

type AppEnv = {
  Bindings: Env;
  Variables: RequestVariables & { config: IngestConfig; now: number; shards: Shards };
};

export interface AppOptions {
  /** Clock (epoch ms), injectable for tests. */
  now?: () => number;
}

export function createApp(opts: AppOptions = {}) {
  const clock = opts.now ?? (() => Date.now());
  const app = new Hono<AppEnv>();
  const errors = errorHandling<AppEnv>({
    worker: "ingest",
    failureMessage: "unhandled error",
    logContractErrors: true,
  });

  app.use("*", requestContext("ingest"));
  app.use("*", async (c, next) => {
    c.set("now", clock());
    c.set("config", readConfig(c.env));
    c.set("shards", shardsOf(c.env));
    await next();
  });

  /**
   * 401 without a known key, 403 for a key of another scope (lookups cached, see apiKeys.ts).
   * Keys are global: they live in the home database (shard 0).
   */
  const ingestKey = createMiddleware<AppEnv>(async (c, next) => {
    await requireKey(c.var.shards.home, c.req.header("authorization"), "ingest", c.var.now);
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
    const body = parseInput(
      AdmitRequest,
      parseJson(await readBodyText(c.req.raw, MAX_ADMIT_BODY_BYTES)),
      "invalid_request",
      "body must be {session_id, user_id, project_id} with non-empty strings of at most 200 characters",
    );
    const { leaseTtlMs, pastDueGraceDays } = c.var.config;
    // the decision reads and writes only the user's rows: all on the user's shard
    const result = await admit(c.var.shards.of(body.user_id), body, {
      now: c.var.now,
      leaseTtlMs,
      pastDueGraceDays,
    });
    c.var.log.info("admission", {
      session_id: body.session_id,
      user_id: body.user_id,
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

  app.notFound(errors.notFound);
  app.onError(errors.onError);

  return app;
}
