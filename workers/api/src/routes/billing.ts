/**
 * The billing API, for end users holding a user token: GET /usage, GET /sessions, GET /invoices,
 * GET /invoices/{id}/sessions, POST /checkout, POST /plan, POST /portal under /api/billing.
 */
import { ApiError, accountStatus, type MeteredPrice, PaidPlanId, parseInput } from "@aigate/shared";
import { createStripe } from "@aigate/shared/stripe";
import { meteredPriceOf } from "@aigate/shared/stripeSync/convergence";
import { retrievePrice } from "@aigate/shared/stripeSync/sync";
import { type Context, Hono } from "hono";
import { z } from "zod";
import { archivedBefore, archivedInvoiceSessions, pageAfter } from "../archivedInvoiceSessions";
import { verifyUserToken } from "../auth";
import { createCheckout, createPortal, ensureStripeCustomer } from "../checkout";
import type { ApiConfig } from "../config";
import type { ApiEnv } from "../context";
import { decodeCursor, encodeCursor } from "../cursor";
import { invoiceSession, seriesPrices, sessionsCsv } from "../invoiceSessions";
import { changePlan, PlanChangeBody } from "../planChange";
import {
  activeLeases,
  currentSeries,
  failedSessions,
  type InvoiceSessionRow,
  invoiceLines,
  invoiceSessionsPage,
  invoicesPage,
  sessionsPage,
  stripeCustomerOf,
  userInvoice,
} from "../queries";
import { usageBody } from "../usage";

export const billing = new Hono<ApiEnv>();

billing.use("*", async (c, next) => {
  const userId = await verifyUserToken(c.req.header("authorization"), c.var.config.userTokenSecret);
  c.set("userId", userId);
  c.set("log", c.get("log").child({ user_id: userId }));
  await next();
});

billing.get("/usage", async (c) => {
  const userId = c.get("userId");
  const db = c.var.shards.of(userId);
  const now = Date.now();
  const { pastDueGraceDays, leaseTtlMs } = c.var.config;
  const account = await accountStatus(db, userId, now, pastDueGraceDays);
  const period = account.currentPeriod;
  const [series, failed, active] = await Promise.all([
    currentSeries(db, userId, account.series?.plan ?? "free", period.start),
    failedSessions(db, userId, period.start, period.end),
    activeLeases(db, userId, now, leaseTtlMs),
  ]);
  return c.json(
    usageBody({
      plan: account.plan,
      limitsPlan: account.limitsPlan,
      period,
      billableSessions: series.billable_sessions,
      failedSessions: failed,
      activeSessions: active,
      pendingPlan: account.pendingPlan,
      pendingEffectiveAt: account.pendingEffectiveAt,
      seriesPrice: await seriesPriceOf(c, series.stripe_price_id),
    }),
  );
});

/**
 * The metered price a series bills, read from Stripe (prices never change, so once per price and
 * isolate); null for a series naming none. When Stripe cannot be read the estimate falls back to
 * the catalog's price rather than failing the page, and says so in the log.
 */
async function seriesPriceOf(c: Context<ApiEnv>, priceId: string | null): Promise<MeteredPrice | null> {
  if (priceId === null) return null;
  try {
    return meteredPriceOf(await retrievePrice(createStripe(c.var.config.stripe), priceId));
  } catch (err) {
    c.get("log").warn("series price unreadable, estimating with the catalog", {
      stripe_price_id: priceId,
      error: err instanceof Error ? err.message : String(err),
    });
    return null;
  }
}

const SessionsQuery = z.object({
  limit: z
    .string()
    .regex(/^\d{1,3}$/, "limit must be an integer from 1 to 100")
    .transform(Number)
    .pipe(z.int().min(1).max(100))
    .optional(),
  cursor: z.string().min(1).optional(),
});

billing.get("/sessions", async (c) => {
  const query = parseInput(SessionsQuery, c.req.query());
  const limit = query.limit ?? 20;
  const after = query.cursor ? decodeCursor(query.cursor) : null;
  const userId = c.get("userId");
  const db = c.var.shards.of(userId);
  const [rows, archived] = await Promise.all([
    sessionsPage(db, userId, after, limit + 1),
    archivedBefore(db, userId),
  ]);
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return c.json({
    sessions: page.map((r) => ({
      session_id: r.session_id,
      project_id: r.project_id,
      created_at: new Date(r.billed_at).toISOString(),
      billable: r.billable === 1,
      reason: r.reason,
      audio_ms: r.audio_ms,
      plan: r.plan,
      charged: r.invoice_id !== null,
      invoice_id: r.invoice_id,
    })),
    next_cursor:
      rows.length > limit && last ? encodeCursor({ createdAt: last.billed_at, id: last.session_id }) : null,
    // sessions billed before this were archived out of this list; each invoice still lists its own
    archived_before: archived,
  });
});

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

billing.get("/invoices", async (c) => {
  const query = parseInput(SessionsQuery, c.req.query());
  const limit = query.limit ?? 20;
  const after = query.cursor ? decodeCursor(query.cursor) : null;
  const userId = c.get("userId");
  const db = c.var.shards.of(userId);
  const rows = await invoicesPage(db, userId, after, limit + 1);
  const page = rows.slice(0, limit);
  const lines = await invoiceLines(
    db,
    page.map((r) => r.stripe_invoice_id),
  );
  const last = page.at(-1);
  return c.json({
    invoices: page.map((r) => ({
      id: r.stripe_invoice_id,
      number: r.number,
      status: r.status,
      billing_reason: r.billing_reason,
      currency: r.currency,
      subtotal_cents: r.subtotal_cents,
      tax_cents: r.tax_cents,
      total_cents: r.total_cents,
      amount_paid_cents: r.amount_paid_cents,
      period_start: iso(r.period_start),
      period_end: iso(r.period_end),
      created: iso(r.stripe_created),
      finalized_at: iso(r.finalized_at),
      paid_at: iso(r.paid_at),
      hosted_invoice_url: r.hosted_invoice_url,
      invoice_pdf: r.invoice_pdf,
      lines: lines
        .filter((l) => l.stripe_invoice_id === r.stripe_invoice_id)
        .map((l) => ({
          description: l.description,
          quantity: l.quantity,
          amount_cents: l.amount_cents,
          plan: l.plan,
          metered: l.metered === 1,
          period_start: iso(l.period_start),
          period_end: iso(l.period_end),
        })),
    })),
    next_cursor:
      rows.length > limit && last
        ? encodeCursor({ createdAt: last.stripe_created, id: last.stripe_invoice_id })
        : null,
  });
});

const InvoiceSessionsQuery = SessionsQuery.extend({ format: z.enum(["json", "csv"]).optional() }).refine(
  (q) => q.format !== "csv" || (q.limit === undefined && q.cursor === undefined),
  { message: "the CSV holds all the sessions: limit and cursor do not apply to it", path: ["format"] },
);

/** Rows read per statement while gathering all of an invoice's sessions for the CSV. */
const CSV_CHUNK = 5000;

/**
 * The sessions an invoice charges, each priced at its position in its series (invoiceSessions.ts):
 * a JSON page, or all of them as a CSV download. Another user's invoice is not found, like an
 * unknown one.
 */
billing.get("/invoices/:id/sessions", async (c) => {
  const query = parseInput(InvoiceSessionsQuery, c.req.query());
  const userId = c.get("userId");
  const db = c.var.shards.of(userId);
  const invoice = await userInvoice(db, userId, c.req.param("id"));
  if (!invoice) throw new ApiError(404, "invoice_not_found", "no such invoice");
  const invoiceId = invoice.stripe_invoice_id;
  const stripe = () => createStripe(c.var.config.stripe);
  // when some of its sessions were archived, the archive and D1 together answer (same rows)
  const archived = await archivedInvoiceSessions(db, c.env.ARCHIVE, userId, invoiceId);

  if (query.format === "csv") {
    const rows: InvoiceSessionRow[] = archived ?? [];
    while (!archived) {
      const last = rows.at(-1);
      const after = last ? { createdAt: last.billed_at, id: last.session_id } : null;
      const chunk = await invoiceSessionsPage(db, userId, invoiceId, after, CSV_CHUNK);
      rows.push(...chunk);
      if (chunk.length < CSV_CHUNK) break;
    }
    const priceOf = await seriesPrices(stripe, rows);
    const name = (invoice.number ?? invoiceId).replace(/[^A-Za-z0-9_-]/g, "_");
    return c.body(sessionsCsv(rows.map((r) => invoiceSession(r, priceOf(r)))), 200, {
      "content-type": "text/csv; charset=utf-8; header=present",
      "content-disposition": `attachment; filename="invoice-${name}-sessions.csv"`,
    });
  }

  const limit = query.limit ?? 20;
  const after = query.cursor ? decodeCursor(query.cursor) : null;
  const rows = archived
    ? pageAfter(archived, after, limit + 1)
    : await invoiceSessionsPage(db, userId, invoiceId, after, limit + 1);
  const page = rows.slice(0, limit);
  const priceOf = await seriesPrices(stripe, page);
  const last = page.at(-1);
  return c.json({
    invoice_id: invoiceId,
    sessions: page.map((r) => invoiceSession(r, priceOf(r))),
    next_cursor:
      rows.length > limit && last ? encodeCursor({ createdAt: last.billed_at, id: last.session_id }) : null,
  });
});

const CheckoutBody = z.object({ plan: PaidPlanId });

billing.post("/checkout", async (c) => {
  const { plan } = parseInput(CheckoutBody, await c.req.json().catch(() => undefined));
  const userId = c.get("userId");
  const now = Date.now();
  const shards = c.var.shards;
  const account = await accountStatus(shards.of(userId), userId, now, c.var.config.pastDueGraceDays);
  if (account.plan === plan)
    throw new ApiError(409, "already_on_plan", `you are already on the ${plan} plan`);
  if (account.plan !== "free") {
    // One subscription per customer: plan changes replace its prices (POST /api/billing/plan).
    throw new ApiError(
      409,
      "already_subscribed",
      `you are on the ${account.plan} plan: change plans with POST /api/billing/plan`,
    );
  }
  const stripe = createStripe(c.var.config.stripe);
  const customerId = await ensureStripeCustomer(shards, stripe, userId, now);
  const session = await createCheckout(stripe, {
    userId,
    customerId,
    plan,
    baseUrl: baseUrl(c.var.config, c.req.url),
    tax: c.var.config.stripeTax,
  });
  c.get("log").info("checkout session created", { plan, checkout_session_id: session.id });
  return c.json(session);
});

billing.post("/plan", async (c) => {
  const body = parseInput(PlanChangeBody, await c.req.json().catch(() => undefined));
  const userId = c.get("userId");
  const { pastDueGraceDays } = c.var.config;
  const shards = c.var.shards;
  const db = shards.of(userId);
  const before = await accountStatus(db, userId, Date.now(), pastDueGraceDays);
  await changePlan(
    {
      deps: { shards, stripe: createStripe(c.var.config.stripe), log: c.get("log"), now: Date.now },
      userId,
      subscriptionId: before.subscriptionId,
    },
    body,
  );
  const after = await accountStatus(db, userId, Date.now(), pastDueGraceDays);
  c.get("log").info("plan changed", {
    from: before.plan,
    to: after.plan,
    pending_plan: after.pendingPlan,
    request: body,
  });
  return c.json({
    plan: after.plan,
    pending_plan: after.pendingPlan,
    effective_at: after.pendingEffectiveAt === null ? null : new Date(after.pendingEffectiveAt).toISOString(),
  });
});

billing.post("/portal", async (c) => {
  const userId = c.get("userId");
  const customerId = await stripeCustomerOf(c.var.shards.of(userId), userId);
  if (!customerId)
    throw new ApiError(409, "no_stripe_customer", "no billing account yet: subscribe to a plan first");
  return c.json(
    await createPortal(createStripe(c.var.config.stripe), customerId, baseUrl(c.var.config, c.req.url)),
  );
});

function baseUrl(config: ApiConfig, requestUrl: string): string {
  return (config.appBaseUrl || new URL(requestUrl).origin).replace(/\/+$/, "");
}
