/** /v1/events: Stripe's own event API (retrieve; list newest first, filter by type/types/created). */
import { type App, type Ctx, send } from "../context";
import { notFound } from "../errors";
import { paginate } from "../list";

export function eventRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;

  app.get("/v1/events/:id", (c) => {
    const id = c.req.param("id");
    const rec = state.events.find((e) => e.id === id);
    if (!rec) throw notFound("event", id);
    return send(c, ctx, rec.body);
  });

  app.get("/v1/events", (c) => {
    const p = c.get("params");
    const type = p.optString("type");
    const types = p.stringList("types");
    const created = p.optObject("created");
    const exact = created ? undefined : p.optInt("created");
    const gte = created?.optInt("gte") ?? Number.NEGATIVE_INFINITY;
    const gt = created?.optInt("gt") ?? Number.NEGATIVE_INFINITY;
    const lte = created?.optInt("lte") ?? Number.POSITIVE_INFINITY;
    const lt = created?.optInt("lt") ?? Number.POSITIVE_INFINITY;
    const typeMatches = (t: string) => {
      const patterns = type ? [type] : types;
      if (patterns.length === 0) return true;
      return patterns.some((pattern) =>
        pattern.endsWith(".*") ? t.startsWith(pattern.slice(0, -1)) : t === pattern,
      );
    };
    const items = [...state.events]
      .reverse()
      .filter(
        (e) =>
          typeMatches(e.type) &&
          (exact === undefined || e.created === exact) &&
          e.created >= gte &&
          e.created > gt &&
          e.created <= lte &&
          e.created < lt,
      );
    return send(
      c,
      ctx,
      paginate(items, p, "/v1/events", (e) => e.body),
    );
  });
}
