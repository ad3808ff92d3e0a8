/**
 * /v1/prices: per-unit and tiered (graduated/volume) prices, licensed or metered (backed by a
 * billing meter), unique lookup keys with `transfer_lookup_key`, list filters.
 */
import { type App, type Ctx, send } from "../context";
import { invalidRequest, missingParam, missingReference, notFound } from "../errors";
import { newestFirst, paginate } from "../list";
import type { Params } from "../params";
import { type EmulatorState, newId, type PriceRec, type Tier } from "../state";
import { priceView } from "../views";
import { createProduct } from "./products";

const INTERVALS = ["day", "week", "month", "year"] as const;

export function getPrice(ctx: Ctx, id: string): PriceRec {
  const rec = ctx.state.prices.get(id);
  if (!rec) throw notFound("price", id);
  return rec;
}

function assignLookupKey(state: EmulatorState, price: PriceRec, key: string | null, transfer: boolean): void {
  if (key !== null) {
    if (key.length > 200)
      throw invalidRequest("lookup_key must be at most 200 characters.", undefined, "lookup_key");
    const holder = [...state.prices.values()].find((p) => p.lookupKey === key && p.id !== price.id);
    if (holder && !transfer) {
      throw invalidRequest(
        `A price (\`${holder.id}\`) already uses that lookup key.`,
        undefined,
        "lookup_key",
      );
    }
    if (holder) holder.lookupKey = null;
  }
  price.lookupKey = key;
}

function parseTiers(p: Params): Tier[] {
  const list = p.list("tiers");
  if (list.length === 0) throw missingParam("tiers");
  let previous = 0;
  return list.map((t, i): Tier => {
    const raw = t.optString("up_to");
    if (raw === undefined) throw missingParam(t.name("up_to"));
    const upTo = raw === "inf" ? null : t.int("up_to", { min: 1 });
    const last = i === list.length - 1;
    if ((upTo === null) !== last) {
      throw invalidRequest("Only the last tier may (and must) have `up_to=inf`.", undefined, t.name("up_to"));
    }
    if (upTo !== null && upTo <= previous) {
      throw invalidRequest("Tiers must be sorted by ascending `up_to`.", undefined, t.name("up_to"));
    }
    previous = upTo ?? previous;
    const unitAmount = t.optInt("unit_amount", { min: 0 }) ?? null;
    const flatAmount = t.optInt("flat_amount", { min: 0 }) ?? null;
    if (unitAmount === null && flatAmount === null) {
      throw invalidRequest(
        "Each tier needs a `unit_amount` or a `flat_amount`.",
        "parameter_missing",
        t.name("unit_amount"),
      );
    }
    return { upTo, unitAmount, flatAmount };
  });
}

function parseRecurring(ctx: Ctx, p: Params): PriceRec["recurring"] {
  const r = p.optObject("recurring");
  if (!r) return null;
  const usageType = r.optEnum("usage_type", ["licensed", "metered"] as const) ?? "licensed";
  const meter = r.optString("meter") ?? null;
  if (usageType === "metered" && meter === null) {
    throw invalidRequest(
      "Metered prices must be backed by a meter: set `recurring[meter]`.",
      "parameter_missing",
      "recurring[meter]",
    );
  }
  if (meter !== null) {
    if (usageType !== "metered") {
      throw invalidRequest(
        "`recurring[meter]` requires `recurring[usage_type]=metered`.",
        undefined,
        "recurring[meter]",
      );
    }
    const m = ctx.state.meters.get(meter);
    if (!m) throw missingReference("billing meter", meter, "recurring[meter]");
    if (m.status !== "active") throw invalidRequest("The meter is inactive.", undefined, "recurring[meter]");
  }
  return {
    interval: r.enumOf("interval", INTERVALS),
    intervalCount: r.optInt("interval_count", { min: 1, max: 365 }) ?? 1,
    usageType,
    meter,
  };
}

function createPrice(ctx: Ctx, p: Params): PriceRec {
  const currency = p.string("currency").toLowerCase();
  if (!/^[a-z]{3}$/.test(currency))
    throw invalidRequest(`Invalid currency: ${currency}.`, undefined, "currency");
  const productId = p.optString("product");
  const productData = p.optObject("product_data");
  if (productId && productData) {
    throw invalidRequest(
      "You may only specify one of these parameters: product, product_data.",
      undefined,
      "product",
    );
  }
  if (!productId && !productData) throw missingParam("product");
  if (productId && !ctx.state.products.has(productId))
    throw missingReference("product", productId, "product");
  const billingScheme = p.optEnum("billing_scheme", ["per_unit", "tiered"] as const) ?? "per_unit";
  const recurring = parseRecurring(ctx, p);
  let unitAmount: number | null = null;
  let tiers: Tier[] | null = null;
  let tiersMode: PriceRec["tiersMode"] = null;
  if (billingScheme === "tiered") {
    if (p.has("unit_amount")) {
      throw invalidRequest(
        "`unit_amount` cannot be used with `billing_scheme=tiered`.",
        undefined,
        "unit_amount",
      );
    }
    tiersMode = p.enumOf("tiers_mode", ["graduated", "volume"] as const);
    tiers = parseTiers(p);
  } else {
    if (p.has("tiers")) throw invalidRequest("`tiers` requires `billing_scheme=tiered`.", undefined, "tiers");
    unitAmount = p.int("unit_amount", { min: 0 });
  }
  const rec: PriceRec = {
    id: newId("price"),
    created: ctx.state.now(),
    active: p.optBool("active") ?? true,
    currency,
    product: "",
    nickname: p.optNullableString("nickname") ?? null,
    lookupKey: null,
    metadata: p.metadata(),
    billingScheme,
    unitAmount,
    tiersMode,
    tiers,
    recurring,
  };
  const lookupKey = p.optNullableString("lookup_key") ?? null;
  const transfer = p.optBool("transfer_lookup_key") ?? false;
  // Validate the lookup key before any side effect (product_data creation, transfer).
  if (lookupKey !== null && !transfer) assignLookupKey(ctx.state, { ...rec, id: "" }, lookupKey, false);
  rec.product = productId ?? createProduct(ctx, productData ?? p).id;
  assignLookupKey(ctx.state, rec, lookupKey, transfer);
  ctx.state.prices.set(rec.id, rec);
  return rec;
}

export function priceRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;

  app.post("/v1/prices", (c) => send(c, ctx, priceView(createPrice(ctx, c.get("params")))));

  app.get("/v1/prices/:id", (c) => send(c, ctx, priceView(getPrice(ctx, c.req.param("id")))));

  app.post("/v1/prices/:id", (c) => {
    const rec = getPrice(ctx, c.req.param("id"));
    const p = c.get("params");
    const active = p.optBool("active");
    const nickname = p.optNullableString("nickname");
    const metadata = p.metadata(rec.metadata);
    const lookupKey = p.optNullableString("lookup_key");
    const transfer = p.optBool("transfer_lookup_key") ?? false;
    if (lookupKey !== undefined) assignLookupKey(state, rec, lookupKey, transfer);
    if (active !== undefined) rec.active = active;
    if (nickname !== undefined) rec.nickname = nickname;
    rec.metadata = metadata;
    return send(c, ctx, priceView(rec));
  });

  app.get("/v1/prices", (c) => {
    const p = c.get("params");
    const active = p.optBool("active");
    const product = p.optString("product");
    const type = p.optEnum("type", ["one_time", "recurring"] as const);
    const currency = p.optString("currency")?.toLowerCase();
    const lookupKeys = p.stringList("lookup_keys");
    if (lookupKeys.length > 10) {
      throw invalidRequest("You may pass at most 10 lookup_keys.", undefined, "lookup_keys");
    }
    const recurring = p.optObject("recurring");
    const usageType = recurring?.optEnum("usage_type", ["licensed", "metered"] as const);
    const interval = recurring?.optEnum("interval", INTERVALS);
    const items = newestFirst(state.prices.values()).filter(
      (pr) =>
        (active === undefined || pr.active === active) &&
        (product === undefined || pr.product === product) &&
        (type === undefined || (type === "recurring") === (pr.recurring !== null)) &&
        (currency === undefined || pr.currency === currency) &&
        (lookupKeys.length === 0 || (pr.lookupKey !== null && lookupKeys.includes(pr.lookupKey))) &&
        (usageType === undefined || pr.recurring?.usageType === usageType) &&
        (interval === undefined || pr.recurring?.interval === interval),
    );
    return send(c, ctx, paginate(items, p, "/v1/prices", priceView));
  });
}
