/**
 * The admin endpoints (admin key): dead letters, metrics, reconciliation. Mounted at /admin.
 *
 *   GET    /admin/dead-letters?queue=&state=&limit=&cursor=   list, newest first
 *   GET    /admin/dead-letters/:id                            one, with its body
 *   POST   /admin/dead-letters/replay                         {"ids":[...],"force"?} | {"queue","all":true}
 *   POST   /admin/dead-letters/purge                          {"ids":[...],"force"?} | {"queue","all":true}
 *   DELETE /admin/dead-letters/:id?force=true                 purge one
 *   GET    /admin/metrics?month=YYYY-MM
 *   GET    /admin/reconciliation?limit=
 *   PUT    /admin/customers/:user_id/pricing                  a customer's custom per-session price
 *   GET    /admin/customers/:user_id/pricing                  its versions, newest first
 *
 * D1 shards: the admin key and the dead letters are in the home database; metrics add up every
 * shard's figures and the reconciliation list merges every shard's runs; a customer's pricing is
 * on the customer's shard.
 */
import { ApiError, accountStatus, badRequest, notFound, parseInput, requireKey } from "@aigate/shared";
import { createStripe } from "@aigate/shared/stripe";
import { Hono } from "hono";
import { z } from "zod";
import {
  type DeadLetterRow,
  deadLetterById,
  deadLettersPage,
  latestReconciliationRunsOfShards,
  metricsRowsOfShards,
  purgeByIds,
  purgeReplayedInQueue,
} from "../adminQueries";
import type { ApiEnv } from "../context";
import { decodeCursor, encodeCursor } from "../cursor";
import { CustomPricingBody, customPricingRows, customPricingView, setCustomPricing } from "../customPricing";
import {
  describeBody,
  MAX_REPLAY_PER_REQUEST,
  producersOf,
  REPLAYABLE_QUEUES,
  type ReplayRequest,
  replayDeadLetters,
} from "../deadLetters";
import { metricsBody, monthWindow } from "../metrics";
import { stripeCustomerOf } from "../queries";

export const admin = new Hono<ApiEnv>();

admin.use("*", async (c, next) => {
  await requireKey(c.var.shards.home, c.req.header("authorization"), "admin");
  c.set("log", c.get("log").child({ operator: true }));
  await next();
});

const Limit = (max: number) =>
  z
    .string()
    .regex(/^\d{1,4}$/, `limit must be an integer from 1 to ${max}`)
    .transform(Number)
    .pipe(z.int().min(1).max(max));

const Queue = z.enum(REPLAYABLE_QUEUES);

const ListQuery = z.object({
  queue: Queue.optional(),
  state: z.enum(["pending", "replayed", "all"]).optional(),
  limit: Limit(100).optional(),
  cursor: z.string().min(1).optional(),
});

const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());

function summary(row: DeadLetterRow) {
  return {
    id: row.id,
    queue: row.queue,
    message_id: row.message_id,
    error: row.error,
    attempts: row.attempts,
    first_failed_at: iso(row.first_failed_at),
    last_failed_at: iso(row.last_failed_at),
    replayed_at: iso(row.replayed_at),
    replay_count: row.replay_count,
    summary: describeBody(row.queue, row.body),
    body_bytes: new TextEncoder().encode(row.body).byteLength,
  };
}

admin.get("/dead-letters", async (c) => {
  const query = parseInput(ListQuery, c.req.query());
  const limit = query.limit ?? 50;
  const rows = await deadLettersPage(c.var.shards.home, {
    queue: query.queue ?? null,
    state: query.state ?? "all",
    after: query.cursor ? decodeCursor(query.cursor) : null,
    limit: limit + 1,
  });
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return c.json({
    dead_letters: page.map(summary),
    next_cursor:
      rows.length > limit && last ? encodeCursor({ createdAt: last.first_failed_at, id: last.id }) : null,
  });
});

const IdsBody = z.object({
  ids: z.array(z.string().min(1).max(500)).min(1).max(100),
  force: z.boolean().optional(),
});
const QueueBody = z.object({ queue: Queue, all: z.literal(true) });
const SelectionBody = z.union([IdsBody.strict(), QueueBody.strict()]);

async function selection(c: { req: { json(): Promise<unknown> } }) {
  const body = SelectionBody.safeParse(await c.req.json().catch(() => undefined));
  if (!body.success) {
    throw badRequest(
      "invalid_request",
      'expected {"ids":[...],"force"?:true} or {"queue":"...","all":true}',
      [{ path: "", message: `queue must be one of ${REPLAYABLE_QUEUES.join(", ")}; ids 1 to 100` }],
    );
  }
  return body.data;
}

admin.post("/dead-letters/replay", async (c) => {
  const body = await selection(c);
  const request: ReplayRequest =
    "ids" in body
      ? { kind: "ids", ids: body.ids, force: body.force ?? false }
      : { kind: "queue", queue: body.queue };
  const log = c.get("log");
  const result = await replayDeadLetters(c.var.shards.home, producersOf(c.env), request, Date.now(), log);
  log.info("dead letter replay", {
    replayed: result.replayed,
    skipped: result.skipped.length,
    failed: result.failed.length,
    more: result.more,
  });
  if (result.failed.length > 0) {
    throw new ApiError(
      503,
      "replay_incomplete",
      "some dead letters could not be re-sent; repeating the request is safe",
      [result],
    );
  }
  return c.json(result);
});

admin.post("/dead-letters/purge", async (c) => {
  const body = await selection(c);
  if ("ids" in body) {
    const purged = await purgeByIds(c.var.shards.home, body.ids, body.force ?? false);
    const gone = new Set(purged);
    return c.json({
      purged: purged.length,
      ids: purged,
      skipped: body.ids
        .filter((id) => !gone.has(id))
        .map((id) => ({ id, reason: body.force ? "not_found" : "not_found_or_not_replayed" })),
    });
  }
  const purged = await purgeReplayedInQueue(c.var.shards.home, body.queue, MAX_REPLAY_PER_REQUEST);
  return c.json({ purged: purged.length, ids: purged, more: purged.length === MAX_REPLAY_PER_REQUEST });
});

admin.get("/dead-letters/:id", async (c) => {
  const row = await deadLetterById(c.var.shards.home, c.req.param("id"));
  if (!row) throw notFound("no dead letter with this id");
  let body: unknown = row.body;
  try {
    body = JSON.parse(row.body);
  } catch {
    // shown as stored
  }
  return c.json({ ...summary(row), body });
});

admin.delete("/dead-letters/:id", async (c) => {
  const id = c.req.param("id");
  const force = c.req.query("force") === "true";
  const row = await deadLetterById(c.var.shards.home, id);
  if (!row) throw notFound("no dead letter with this id");
  const purged = await purgeByIds(c.var.shards.home, [id], force);
  if (purged.length === 0) {
    throw new ApiError(
      409,
      "not_replayed",
      "this dead letter was never replayed: replay it first, or purge it with force=true to drop it",
    );
  }
  return c.json({ purged: 1, ids: purged });
});

admin.get("/metrics", async (c) => {
  const month = c.req.query("month");
  const w = monthWindow(month, Date.now());
  if (!w.ok) throw badRequest("invalid_request", w.message, [{ path: "month", message: w.message }]);
  return c.json(metricsBody(w.month, w.window, await metricsRowsOfShards(c.var.shards.all, w.window)));
});

const ReconciliationQuery = z.object({ limit: Limit(50).optional() });

admin.get("/reconciliation", async (c) => {
  const query = parseInput(ReconciliationQuery, c.req.query());
  const rows = await latestReconciliationRunsOfShards(c.var.shards.all, query.limit ?? 10);
  return c.json({
    runs: rows.map((r) => ({
      id: r.id,
      started_at: iso(r.started_at),
      finished_at: iso(r.finished_at),
      periods_checked: r.periods_checked,
      mismatches: r.mismatches,
      repaired: r.repaired,
      report: parseReport(r.report),
    })),
  });
});

function parseReport(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** A user id in a path: what users are named by (tokens, sessions), bounded. */
const UserIdParam = z.string().min(1).max(200);

admin.put("/customers/:user_id/pricing", async (c) => {
  const userId = parseInput(UserIdParam, c.req.param("user_id"));
  const body = parseInput(CustomPricingBody, await c.req.json().catch(() => undefined));
  const shards = c.var.shards;
  const db = shards.of(userId);
  const customer = await stripeCustomerOf(db, userId);
  const account = customer
    ? await accountStatus(db, userId, Date.now(), c.var.config.pastDueGraceDays)
    : null;
  const view = await setCustomPricing(
    {
      deps: { shards, stripe: createStripe(c.var.config.stripe), log: c.get("log"), now: Date.now },
      userId,
      account: account && { plan: account.plan, subscriptionId: account.subscriptionId },
    },
    body,
  );
  c.get("log").info("custom pricing set", {
    user_id: userId,
    version: view.version,
    stripe_price_id: view.stripe_price_id,
    when: view.when,
  });
  return c.json(view);
});

admin.get("/customers/:user_id/pricing", async (c) => {
  const userId = parseInput(UserIdParam, c.req.param("user_id"));
  const db = c.var.shards.of(userId);
  const rows = await customPricingRows(db, userId);
  if (rows.length === 0 && !(await stripeCustomerOf(db, userId)))
    throw new ApiError(404, "customer_not_found", `no customer ${userId}`);
  return c.json({ user_id: userId, versions: rows.map(customPricingView) });
});
