/** /v1/customers: create, retrieve, update, list (email filter), search (metadata/email/name). */
import { type App, type Ctx, requestInfo, send } from "../context";
import { diff } from "../diff";
import { invalidRequest, missingReference, notFound } from "../errors";
import { newestFirst, paginate } from "../list";
import type { Params } from "../params";
import { type CustomerRec, newId, randomString } from "../state";
import { customerView } from "../views";

export function createCustomer(
  ctx: Ctx,
  fields: { email: string | null; name?: string | null; testClock?: string | null },
): CustomerRec {
  const rec: CustomerRec = {
    id: newId("cus"),
    created: fields.testClock
      ? (ctx.state.testClocks.get(fields.testClock)?.frozenTime ?? ctx.state.now())
      : ctx.state.now(),
    email: fields.email,
    name: fields.name ?? null,
    description: null,
    phone: null,
    address: null,
    taxIds: [],
    metadata: {},
    invoicePrefix: randomString(8).toUpperCase(),
    nextInvoiceSequence: 1,
    balance: 0,
    testClock: fields.testClock ?? null,
    failNextPayment: false,
  };
  ctx.state.customers.set(rec.id, rec);
  return rec;
}

export function getCustomer(ctx: Ctx, id: string): CustomerRec {
  const rec = ctx.state.customers.get(id);
  if (!rec) throw notFound("customer", id);
  return rec;
}

type Predicate = (c: CustomerRec) => boolean;

/** Parses the subset `metadata['k']:'v'`, `email:'x'`, `name:'x'` joined by AND. */
export function parseSearchQuery(query: string): Predicate {
  const term = /^\s*(metadata\[(?:'([^']*)'|"([^"]*)")\]|email|name)\s*:\s*(?:'([^']*)'|"([^"]*)")\s*$/;
  const parts = query.split(/\s+AND\s+/);
  const predicates = parts.map((part): Predicate => {
    const m = term.exec(part);
    if (!m) {
      throw invalidRequest(
        `The emulator cannot parse this search query: ${JSON.stringify(part.trim())}. ` +
          "Supported: metadata['key']:'value', email:'...', name:'...' joined with AND.",
        undefined,
        "query",
      );
    }
    const value = m[4] ?? m[5] ?? "";
    const metaKey = m[2] ?? m[3];
    if (metaKey !== undefined) return (c) => c.metadata[metaKey] === value;
    if (m[1] === "email") return (c) => (c.email ?? "").toLowerCase() === value.toLowerCase();
    return (c) => (c.name ?? "").toLowerCase() === value.toLowerCase();
  });
  return (c) => predicates.every((p) => p(c));
}

function applyFields(rec: CustomerRec, p: Params): void {
  const email = p.optNullableString("email");
  if (email !== undefined) rec.email = email;
  const name = p.optNullableString("name");
  if (name !== undefined) rec.name = name;
  const description = p.optNullableString("description");
  if (description !== undefined) rec.description = description;
  const phone = p.optNullableString("phone");
  if (phone !== undefined) rec.phone = phone;
  // "address: The customer's address" (a hash: city, country, line1, line2, postal_code, state);
  // the country is what Stripe Tax locates the customer by
  const address = p.optObject("address");
  if (address) {
    const text = (key: string) => address.optNullableString(key) ?? null;
    rec.address = {
      city: text("city"),
      country: text("country")?.toUpperCase() ?? null,
      line1: text("line1"),
      line2: text("line2"),
      postal_code: text("postal_code"),
      state: text("state"),
    };
  }
  rec.metadata = p.metadata(rec.metadata);
}

export function customerRoutes(app: App, ctx: Ctx): void {
  const { state, webhooks } = ctx;

  app.post("/v1/customers", (c) => {
    const p = c.get("params");
    const testClock = p.optString("test_clock");
    if (testClock !== undefined && !state.testClocks.has(testClock)) {
      throw missingReference("test_helpers.test_clock", testClock, "test_clock");
    }
    const rec = createCustomer(ctx, { email: null, testClock: testClock ?? null });
    try {
      applyFields(rec, p);
    } catch (err) {
      state.customers.delete(rec.id);
      throw err;
    }
    const view = customerView(rec);
    webhooks.emit("customer.created", view, requestInfo(c));
    return send(c, ctx, view);
  });

  app.get("/v1/customers/search", (c) => {
    const p = c.get("params");
    const matches = parseSearchQuery(p.string("query"));
    const limit = p.optInt("limit", { min: 1, max: 100 }) ?? 10;
    const page = p.optString("page");
    const offset = page ? Number.parseInt(Buffer.from(page, "base64url").toString("utf8"), 10) || 0 : 0;
    const all = newestFirst(state.customers.values()).filter(matches);
    const data = all.slice(offset, offset + limit).map(customerView);
    const hasMore = offset + limit < all.length;
    return send(c, ctx, {
      object: "search_result",
      data,
      has_more: hasMore,
      next_page: hasMore ? Buffer.from(String(offset + limit)).toString("base64url") : null,
      total_count: all.length,
      url: "/v1/customers/search",
    });
  });

  app.get("/v1/customers/:id", (c) => send(c, ctx, customerView(getCustomer(ctx, c.req.param("id")))));

  app.post("/v1/customers/:id", (c) => {
    const rec = getCustomer(ctx, c.req.param("id"));
    const before = customerView(rec);
    const draft = { ...rec };
    applyFields(draft, c.get("params"));
    Object.assign(rec, draft);
    const view = customerView(rec);
    const changed = diff(before, view);
    if (Object.keys(changed).length > 0) webhooks.emit("customer.updated", view, requestInfo(c), changed);
    return send(c, ctx, view);
  });

  app.get("/v1/customers", (c) => {
    const p = c.get("params");
    const email = p.optString("email");
    // `test_clock`: "The response will not include customers with test clocks if this parameter is not set."
    const testClock = p.optString("test_clock") ?? null;
    const items = newestFirst(state.customers.values()).filter(
      (cu) => (email === undefined || cu.email === email) && cu.testClock === testClock,
    );
    return send(c, ctx, paginate(items, p, "/v1/customers", customerView));
  });
}
