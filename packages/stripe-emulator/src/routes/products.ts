/** /v1/products: create (optional custom id), retrieve, update, list. */
import { type App, type Ctx, send } from "../context";
import { invalidRequest, notFound } from "../errors";
import { newestFirst, paginate } from "../list";
import type { Params } from "../params";
import { newId, type ProductRec } from "../state";
import { productView } from "../views";

export function getProduct(ctx: Ctx, id: string): ProductRec {
  const rec = ctx.state.products.get(id);
  if (!rec) throw notFound("product", id);
  return rec;
}

/** Creates a product from `name`, `id`, `description`, `active`, `metadata` (also for `product_data`). */
export function createProduct(ctx: Ctx, p: Params): ProductRec {
  const id = p.optString("id") || newId("prod");
  if (ctx.state.products.has(id)) {
    throw invalidRequest(`Product already exists.`, "resource_already_exists", p.name("id"));
  }
  const now = ctx.state.now();
  const rec: ProductRec = {
    id,
    created: now,
    updated: now,
    name: p.string("name"),
    description: p.optNullableString("description") ?? null,
    active: p.optBool("active") ?? true,
    metadata: p.metadata(),
  };
  ctx.state.products.set(id, rec);
  return rec;
}

export function productRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;

  app.post("/v1/products", (c) => send(c, ctx, productView(createProduct(ctx, c.get("params")))));

  app.get("/v1/products/:id", (c) => send(c, ctx, productView(getProduct(ctx, c.req.param("id")))));

  app.post("/v1/products/:id", (c) => {
    const rec = getProduct(ctx, c.req.param("id"));
    const p = c.get("params");
    const name = p.optString("name");
    if (name === "")
      throw invalidRequest("You passed an empty string for 'name'.", "parameter_invalid_empty", "name");
    const description = p.optNullableString("description");
    const active = p.optBool("active");
    const metadata = p.metadata(rec.metadata);
    if (name !== undefined) rec.name = name;
    if (description !== undefined) rec.description = description;
    if (active !== undefined) rec.active = active;
    rec.metadata = metadata;
    rec.updated = state.now();
    return send(c, ctx, productView(rec));
  });

  app.get("/v1/products", (c) => {
    const p = c.get("params");
    const active = p.optBool("active");
    const ids = p.stringList("ids");
    const items = newestFirst(state.products.values()).filter(
      (pr) => (active === undefined || pr.active === active) && (ids.length === 0 || ids.includes(pr.id)),
    );
    return send(c, ctx, paginate(items, p, "/v1/products", productView));
  });
}
