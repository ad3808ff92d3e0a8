/**
 * /v1/billing/meters (create, retrieve, update, list, deactivate, reactivate, event summaries)
 * and POST /v1/billing/meter_events.
 */
import { createHash } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { type App, type C, type Ctx, type Env, send } from "../context";
import { ApiError, invalidRequest, missingReference, notFound } from "../errors";
import { newestFirst, paginate } from "../list";
import { activeMeterFor, aggregate, recordMeterEvent, validateMeterEvent } from "../meters";
import { type MeterRec, newId } from "../state";
import { meterView } from "../views";

export function getMeter(ctx: Ctx, id: string): MeterRec {
  const rec = ctx.state.meters.get(id);
  if (!rec) throw notFound("billing meter", id);
  return rec;
}

function assertEventNameFree(ctx: Ctx, eventName: string, self?: string): void {
  const clash = activeMeterFor(ctx.state, eventName);
  if (clash && clash.id !== self) {
    throw invalidRequest(
      `An active meter with event_name '${eventName}' already exists (${clash.id}).`,
      undefined,
      "event_name",
    );
  }
}

function createMeter(ctx: Ctx, c: C): MeterRec {
  const p = c.get("params");
  const displayName = p.string("display_name");
  const eventName = p.string("event_name");
  if (eventName.length > 100)
    throw invalidRequest("event_name must be at most 100 characters.", undefined, "event_name");
  const formula = p.object("default_aggregation").enumOf("formula", ["sum", "count", "last"] as const);
  const mapping = p.optObject("customer_mapping");
  if (mapping) mapping.enumOf("type", ["by_id"] as const);
  const valueSettings = p.optObject("value_settings");
  assertEventNameFree(ctx, eventName);
  const now = ctx.state.now();
  const rec: MeterRec = {
    id: newId("mtr", 24),
    created: now,
    updated: now,
    displayName,
    eventName,
    formula,
    customerKey: mapping?.string("event_payload_key") ?? "stripe_customer_id",
    valueKey: valueSettings?.string("event_payload_key") ?? "value",
    eventTimeWindow: p.optEnum("event_time_window", ["day", "hour"] as const) ?? null,
    status: "active",
    deactivatedAt: null,
  };
  ctx.state.meters.set(rec.id, rec);
  return rec;
}

const WINDOW_SECONDS = { hour: 3600, day: 86_400 } as const;

function eventSummaries(ctx: Ctx, c: C) {
  const meter = getMeter(ctx, c.req.param("id") ?? "");
  const p = c.get("params");
  const customer = p.string("customer");
  if (!ctx.state.customers.has(customer)) throw missingReference("customer", customer, "customer");
  const start = p.int("start_time");
  const end = p.int("end_time");
  const window = p.optEnum("value_grouping_window", ["hour", "day"] as const);
  const align = window ? WINDOW_SECONDS[window] : 60;
  for (const [name, t] of [
    ["start_time", start],
    ["end_time", end],
  ] as const) {
    if (t % align !== 0) {
      throw invalidRequest(
        `${name} must be aligned with ${window ?? "minute"} boundaries.`,
        "parameter_invalid_integer",
        name,
      );
    }
  }
  if (start >= end) throw invalidRequest("start_time must be before end_time.", undefined, "start_time");
  const step = window ? WINDOW_SECONDS[window] : end - start;
  const summaries = [];
  for (let t = start; t < end; t += step) {
    const to = Math.min(end, t + step);
    const id = createHash("sha256").update(`${meter.id}:${customer}:${t}:${to}`).digest("hex").slice(0, 24);
    summaries.push({
      id: `mtrusg_${id}`,
      object: "billing.meter_event_summary" as const,
      aggregated_value: aggregate(ctx.state, meter, customer, t, to),
      end_time: to,
      livemode: false,
      meter: meter.id,
      start_time: t,
    });
  }
  return paginate(summaries, p, `/v1/billing/meters/${meter.id}/event_summaries`, (s) => s);
}

/**
 * Stripe allows one meter-event request in flight per customer and meter; a concurrent one is
 * answered 429. Runs before fault injection so that injected delays make the overlap observable.
 */
export function meterConcurrencyGuard(ctx: Ctx): MiddlewareHandler<Env> {
  return async (c, next) => {
    if (c.req.method !== "POST") return next();
    const p = c.get("params");
    const eventName = p.raw.event_name;
    const meter = typeof eventName === "string" ? activeMeterFor(ctx.state, eventName) : undefined;
    const payload = p.raw.payload;
    const customer =
      meter && typeof payload === "object" && payload !== null && !Array.isArray(payload)
        ? payload[meter.customerKey]
        : undefined;
    if (!meter || typeof customer !== "string") return next();
    const key = `${meter.id}:${customer}`;
    const inFlight = ctx.state.meterCallsInFlight;
    if (inFlight.has(key)) {
      throw new ApiError(
        429,
        "rate_limit_error",
        `Another meter event request for customer '${customer}' and meter '${meter.id}' is in progress. ` +
          "Stripe allows one concurrent meter event request per customer and meter.",
        "rate_limit",
      );
    }
    inFlight.add(key);
    try {
      await next();
    } finally {
      inFlight.delete(key);
    }
  };
}

export function meterRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;

  app.post("/v1/billing/meters", (c) => send(c, ctx, meterView(createMeter(ctx, c))));

  app.get("/v1/billing/meters", (c) => {
    const p = c.get("params");
    const status = p.optEnum("status", ["active", "inactive"] as const);
    const items = newestFirst(state.meters.values()).filter(
      (m) => status === undefined || m.status === status,
    );
    return send(c, ctx, paginate(items, p, "/v1/billing/meters", meterView));
  });

  app.get("/v1/billing/meters/:id", (c) => send(c, ctx, meterView(getMeter(ctx, c.req.param("id")))));

  app.post("/v1/billing/meters/:id", (c) => {
    const rec = getMeter(ctx, c.req.param("id"));
    const name = c.get("params").optString("display_name");
    if (name) rec.displayName = name;
    rec.updated = state.now();
    return send(c, ctx, meterView(rec));
  });

  app.post("/v1/billing/meters/:id/deactivate", (c) => {
    const rec = getMeter(ctx, c.req.param("id"));
    if (rec.status === "active") {
      rec.status = "inactive";
      rec.deactivatedAt = state.now();
      rec.updated = state.now();
    }
    return send(c, ctx, meterView(rec));
  });

  app.post("/v1/billing/meters/:id/reactivate", (c) => {
    const rec = getMeter(ctx, c.req.param("id"));
    if (rec.status === "inactive") {
      assertEventNameFree(ctx, rec.eventName, rec.id);
      rec.status = "active";
      rec.deactivatedAt = null;
      rec.updated = state.now();
    }
    return send(c, ctx, meterView(rec));
  });

  app.get("/v1/billing/meters/:id/event_summaries", (c) => send(c, ctx, eventSummaries(ctx, c)));

  app.post("/v1/billing/meter_events", (c) => {
    const { rec } = validateMeterEvent(state, c.get("params"));
    recordMeterEvent(state, rec);
    return send(c, ctx, {
      object: "billing.meter_event",
      created: rec.created,
      event_name: rec.eventName,
      identifier: rec.identifier,
      livemode: false,
      payload: rec.payload,
      timestamp: rec.timestamp,
    });
  });
}
