/** /v1/subscriptions: retrieve, list, update, cancel (DELETE). Created only through Checkout. */
import { type App, type Ctx, requestInfo, send } from "../context";
import { notFound } from "../errors";
import { Emission } from "../invoicing";
import { newestFirst, paginate } from "../list";
import type { SubscriptionRec } from "../state";
import { cancelSubscription, updateSubscription } from "../subscriptions";
import { subscriptionView } from "../views";

const STATUSES = ["active", "past_due", "canceled", "incomplete", "unpaid", "all", "ended"] as const;

export function getSubscription(ctx: Ctx, id: string): SubscriptionRec {
  const rec = ctx.state.subscriptions.get(id);
  if (!rec) throw notFound("subscription", id);
  return rec;
}

export function subscriptionRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;
  const view = (s: SubscriptionRec) => subscriptionView(state, s);

  app.get("/v1/subscriptions/:id", (c) => send(c, ctx, view(getSubscription(ctx, c.req.param("id")))));

  app.post("/v1/subscriptions/:id", (c) => {
    const sub = getSubscription(ctx, c.req.param("id"));
    updateSubscription(ctx, sub, c.get("params"), new Emission(ctx, requestInfo(c)));
    return send(c, ctx, view(sub));
  });

  app.delete("/v1/subscriptions/:id", (c) => {
    const sub = getSubscription(ctx, c.req.param("id"));
    cancelSubscription(ctx, sub, c.get("params"), new Emission(ctx, requestInfo(c)));
    return send(c, ctx, view(sub));
  });

  app.get("/v1/subscriptions", (c) => {
    const p = c.get("params");
    const customer = p.optString("customer");
    const price = p.optString("price");
    const status = p.optEnum("status", STATUSES);
    const statusMatches = (s: SubscriptionRec) => {
      if (status === "all") return true;
      if (status === undefined) return s.status !== "canceled";
      if (status === "ended") return s.status === "canceled";
      return s.status === status;
    };
    const items = newestFirst(state.subscriptions.values()).filter(
      (s) =>
        (customer === undefined || s.customer === customer) &&
        (price === undefined || s.items.some((i) => i.price === price)) &&
        statusMatches(s),
    );
    return send(c, ctx, paginate(items, p, "/v1/subscriptions", view));
  });
}
