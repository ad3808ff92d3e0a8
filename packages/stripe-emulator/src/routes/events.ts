/** /v1/events: Stripe's own event API (retrieve; list newest first, filter by type/types/created). */
import { type App, type Ctx, send } from "../context";
import { notFound } from "../errors";
import { createdFilter, paginate } from "../list";

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
    const createdMatches = createdFilter(p);
    const typeMatches = (t: string) => {
      const patterns = type ? [type] : types;
      if (patterns.length === 0) return true;
      return patterns.some((pattern) =>
        pattern.endsWith(".*") ? t.startsWith(pattern.slice(0, -1)) : t === pattern,
      );
    };
    const items = [...state.events].reverse().filter((e) => typeMatches(e.type) && createdMatches(e.created));
    return send(
      c,
      ctx,
      paginate(items, p, "/v1/events", (e) => e.body),
    );
  });
}
