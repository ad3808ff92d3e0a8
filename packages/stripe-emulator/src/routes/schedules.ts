/** /v1/subscription_schedules: create (from_subscription), retrieve, update, release, cancel, list. */
import { type App, type Ctx, requestInfo, send } from "../context";
import { invalidRequest, missingParam, missingReference, notFound } from "../errors";
import { Emission } from "../invoicing";
import { newestFirst, paginate } from "../list";
import { cancelSchedule, createFromSubscription, releaseSchedule, updateSchedule } from "../schedules";
import type { ScheduleRec } from "../state";
import { scheduleView } from "../views";

export function getSchedule(ctx: Ctx, id: string): ScheduleRec {
  const rec = ctx.state.schedules.get(id);
  if (!rec) throw notFound("subscription_schedule", id);
  return rec;
}

/** Parameters that `from_subscription` excludes: "other parameters (such as phase values) cannot be set". */
const NOT_WITH_FROM_SUBSCRIPTION = ["phases", "customer", "start_date", "end_behavior", "default_settings"];

export function scheduleRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;
  const view = (sc: ScheduleRec) => scheduleView(state, sc);

  app.post("/v1/subscription_schedules", (c) => {
    const p = c.get("params");
    const from = p.optString("from_subscription");
    if (!from) {
      if (p.has("customer") || p.has("phases")) {
        throw invalidRequest(
          "The emulator creates subscription schedules only with `from_subscription` (subscriptions start through Checkout).",
          undefined,
          "customer",
        );
      }
      throw missingParam("from_subscription");
    }
    const clash = NOT_WITH_FROM_SUBSCRIPTION.find((k) => p.has(k));
    if (clash) {
      throw invalidRequest(`You cannot set \`${clash}\` when using \`from_subscription\`.`, undefined, clash);
    }
    const sub = state.subscriptions.get(from);
    if (!sub) throw missingReference("subscription", from, "from_subscription");
    const sc = createFromSubscription(ctx, sub, new Emission(ctx, requestInfo(c)));
    sc.metadata = p.metadata();
    return send(c, ctx, view(sc));
  });

  app.get("/v1/subscription_schedules/:id", (c) => send(c, ctx, view(getSchedule(ctx, c.req.param("id")))));

  app.post("/v1/subscription_schedules/:id", (c) => {
    const sc = getSchedule(ctx, c.req.param("id"));
    updateSchedule(ctx, sc, c.get("params"), new Emission(ctx, requestInfo(c)));
    return send(c, ctx, view(sc));
  });

  app.post("/v1/subscription_schedules/:id/release", (c) => {
    const sc = getSchedule(ctx, c.req.param("id"));
    const preserve = c.get("params").optBool("preserve_cancel_date") ?? false;
    releaseSchedule(ctx, sc, preserve, new Emission(ctx, requestInfo(c)));
    return send(c, ctx, view(sc));
  });

  app.post("/v1/subscription_schedules/:id/cancel", (c) => {
    const sc = getSchedule(ctx, c.req.param("id"));
    const p = c.get("params");
    cancelSchedule(
      ctx,
      sc,
      { invoiceNow: p.optBool("invoice_now") ?? true, prorate: p.optBool("prorate") ?? true },
      new Emission(ctx, requestInfo(c)),
    );
    return send(c, ctx, view(sc));
  });

  app.get("/v1/subscription_schedules", (c) => {
    const p = c.get("params");
    const customer = p.optString("customer");
    const scheduled = p.optBool("scheduled");
    const items = newestFirst(state.schedules.values()).filter(
      (sc) =>
        (customer === undefined || sc.customer === customer) &&
        (scheduled === undefined || (sc.status === "not_started") === scheduled),
    );
    return send(c, ctx, paginate(items, p, "/v1/subscription_schedules", view));
  });
}
