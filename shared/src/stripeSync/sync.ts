/**
 * Converging D1 on what Stripe holds for one subscription (and, for invoice events, one invoice):
 * re-fetch the objects, derive the rows (convergence.ts), write them in one db.batch() on the
 * user's shard, then the customer's directory row and the caller's statements (the webhooks
 * worker's event dedupe row) in the home database: in the same batch when the user lives on home
 * (customers.ts). Every statement is idempotent, so a crash between the two batches is repaired
 * by writing the same state again (Stripe resends the event: it was not marked). Used by the webhooks
 * worker for every subscription, schedule and invoice event, and by the api right after it
 * changes a plan, so that sessions created after the change are attributed to the new plan
 * without waiting for the webhook.
 */
import Stripe from "stripe";
import type { z } from "zod";
import { type IssueDetail, issueDetails } from "../errors";
import type { Logger } from "../log";
import type { PaidPlanId } from "../plans";
import type { Shards } from "../shards";
import {
  billingPeriods,
  failedInvoiceTime,
  type InvoiceLineRow,
  invoiceCoversUntil,
  invoiceLineRows,
  invoiceRow,
  isFinal,
  pendingChange,
  planHistoryRows,
  planOfPrice,
  planOfSubscription,
  subscriptionRow,
} from "./convergence";
import { writeForUser } from "./customers";
import {
  invoiceSubscriptionId,
  StripeCustomer,
  StripeInvoice,
  StripePrice,
  StripeSchedule,
  StripeSubscription,
} from "./objects";
import {
  endSeriesAt,
  freezeBilledSeries,
  freezeEndedSeries,
  insertCustomer,
  linkAdjustments,
  markDraftsSettled,
  reattributeIfChanged,
  refreshCustomerPlan,
  shortenSeries,
  upsertBillingPeriod,
  upsertInvoice,
  upsertInvoiceLines,
  upsertPlanHistory,
  upsertSubscription,
  userOfCustomer,
} from "./queries";

export interface SyncDeps {
  /** The D1 shards: the user's rows go to the user's shard, the directory (and `extra`) to home. */
  shards: Shards;
  stripe: Stripe;
  log: Logger;
  now: () => number;
}

export type SyncOutcome = { status: "processed" } | { status: "ignored"; reason: string };

/**
 * An object re-fetched from Stripe that does not match what we read. Not the event's fault: our
 * reading or Stripe's answer is wrong, and the event still has to be applied. It fails the event
 * (500), so Stripe resends it until that is fixed; nothing is written meanwhile.
 */
export class UnreadableStripeObject extends Error {
  constructor(
    readonly kind: string,
    readonly objectId: string,
    readonly issues: IssueDetail[],
  ) {
    super(
      `Stripe's ${kind} ${objectId} does not match what we read: ${issues
        .slice(0, 3)
        .map((i) => `${i.path || "(root)"}: ${i.message}`)
        .join("; ")}`,
    );
    this.name = "UnreadableStripeObject";
  }
}

function read<T>(schema: z.ZodType<T>, kind: string, id: string, value: unknown): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new UnreadableStripeObject(kind, id, issueDetails(parsed.error));
  return parsed.data;
}

/** A re-fetch that Stripe answers 404: the object is gone, and a retry would not change that. */
export function isMissingObject(err: unknown): boolean {
  return err instanceof Stripe.errors.StripeInvalidRequestError && err.statusCode === 404;
}

export async function retrieveSubscription(stripe: Stripe, id: string): Promise<StripeSubscription> {
  return read(
    StripeSubscription,
    "subscription",
    id,
    await stripe.subscriptions.retrieve(id, { expand: ["items.data.price.product"] }),
  );
}

export async function retrieveInvoice(stripe: Stripe, id: string): Promise<StripeInvoice> {
  const invoice = read(StripeInvoice, "invoice", id, await stripe.invoices.retrieve(id));
  if (!invoice.lines.has_more) return invoice;
  const lines = [];
  for await (const line of stripe.invoices.listLineItems(id, { limit: 100 })) lines.push(line);
  return read(StripeInvoice, "invoice", id, { ...invoice, lines: { data: lines, has_more: false } });
}

/** Prices never change what they bill, so they are cached for the isolate's life. */
const priceCache = new Map<string, StripePrice>();

export async function retrievePrice(stripe: Stripe, id: string): Promise<StripePrice> {
  let price = priceCache.get(id);
  if (!price) {
    price = read(
      StripePrice,
      "price",
      id,
      await stripe.prices.retrieve(id, { expand: ["product", "tiers"] }),
    );
    priceCache.set(id, price);
  }
  return price;
}

/** Meter event names never change for a meter id. */
const meterNames = new Map<string, string>();

async function meterEventNameOf(stripe: Stripe, meterId: string | null | undefined): Promise<string | null> {
  if (!meterId) return null;
  let name = meterNames.get(meterId);
  if (!name) {
    name = (await stripe.billing.meters.retrieve(meterId)).event_name;
    meterNames.set(meterId, name);
  }
  return name;
}

async function pricesOf(stripe: Stripe, invoice: StripeInvoice): Promise<Map<string, StripePrice>> {
  const ids = new Set(
    invoice.lines.data.flatMap((l) => (l.pricing?.price_details ? [l.pricing.price_details.price] : [])),
  );
  const out = new Map<string, StripePrice>();
  for (const id of ids) out.set(id, await retrievePrice(stripe, id));
  return out;
}

/**
 * The user owning a customer: the customer directory (home), else the customer's
 * metadata.user_id, else the hints.
 */
async function resolveOwner(
  home: D1Database,
  stripe: Stripe,
  customerId: string,
  hints: string[],
): Promise<{ userId: string; email: string } | null> {
  const known = await userOfCustomer(home, customerId);
  if (known) return { userId: known, email: "" };
  const customer = read(StripeCustomer, "customer", customerId, await stripe.customers.retrieve(customerId));
  if (customer.deleted === true) return hints[0] ? { userId: hints[0], email: "" } : null;
  const userId = customer.metadata.user_id || hints[0];
  return userId ? { userId, email: customer.email ?? "" } : null;
}

/** When the failing payment's invoice was finalized, if Stripe says the payment is failing. */
async function failedInvoiceAt(
  stripe: Stripe,
  sub: StripeSubscription,
  invoice: StripeInvoice | null,
): Promise<number | null> {
  if (sub.status !== "past_due" && sub.status !== "unpaid") return null;
  const latest = sub.latest_invoice;
  if (!latest) return invoice ? failedInvoiceTime(invoice) : null;
  if (invoice && invoice.id === latest) return failedInvoiceTime(invoice);
  return failedInvoiceTime(await retrieveInvoice(stripe, latest));
}

async function scheduleOf(stripe: Stripe, sub: StripeSubscription): Promise<StripeSchedule | null> {
  if (!sub.schedule) return null;
  return read(
    StripeSchedule,
    "subscription schedule",
    sub.schedule,
    await stripe.subscriptionSchedules.retrieve(sub.schedule),
  );
}

/** Whether Stripe still holds a draft invoice of the subscription (it may bill usage yet). */
/** When the subscription's latest draft invoice was created (ms), null when it has none. */
/** What Stripe holds of a subscription's invoices, for freezing its series. */
export interface InvoicesInStripe {
  /** The lines of every finalized invoice created since `sinceMs`. */
  lines: InvoiceLineRow[];
  /** When the latest draft invoice was created (it may still bill usage), or null. */
  latestDraft: number | null;
}

/**
 * Reads, from Stripe, the subscription's finalized invoices created since `sinceMs` (the oldest
 * unfrozen series' start) with their lines, and its drafts. A freeze reads Stripe's billed
 * quantity from invoice_lines: storing these lines in the freezing batch means a series is never
 * frozen from D1's partial copy (an invoice whose webhook has not been applied yet, webhooks
 * coming in any order).
 */
export async function invoicesInStripe(
  stripe: Stripe,
  subscriptionId: string,
  sinceMs: number,
): Promise<InvoicesInStripe> {
  const lines: InvoiceLineRow[] = [];
  let latestDraft: number | null = null;
  for await (const listed of stripe.invoices.list({
    subscription: subscriptionId,
    created: { gte: Math.floor(sinceMs / 1000) },
    limit: 100,
  })) {
    if (listed.status === "draft") {
      latestDraft = Math.max(latestDraft ?? 0, listed.created * 1000);
      continue;
    }
    // the listing carries the invoice's lines; only an invoice with more lines is fetched again
    const invoice = listed.lines.has_more
      ? await retrieveInvoice(stripe, listed.id)
      : read(StripeInvoice, "invoice", listed.id, listed);
    if (isFinal(invoice)) lines.push(...invoiceLineRows(invoice, await pricesOf(stripe, invoice)));
  }
  return { lines, latestDraft };
}

/** The start of the subscription's oldest series not frozen yet, if any. */
async function oldestOpenSeries(db: D1Database, subscriptionId: string): Promise<number | null> {
  const row = await db
    .prepare(
      "SELECT min(period_start) AS start FROM usage_periods WHERE stripe_subscription_id = ?1 AND frozen_at IS NULL",
    )
    .bind(subscriptionId)
    .first<{ start: number | null }>();
  return row?.start ?? null;
}

async function latestDraftInvoice(stripe: Stripe, subscriptionId: string): Promise<number | null> {
  let latest: number | null = null;
  for await (const draft of stripe.invoices.list({
    subscription: subscriptionId,
    status: "draft",
    limit: 100,
  })) {
    latest = Math.max(latest ?? 0, draft.created * 1000);
  }
  return latest;
}

export interface SyncTarget {
  subscriptionId: string | null;
  invoiceId: string | null;
  /** User ids the caller knows (checkout's client_reference_id, the api's user), used last. */
  userHints: string[];
}

/**
 * Writes what Stripe holds now for the target on the user's shard, then `extra` (statements on
 * `deps.shards.home`) in home: in the same transaction when the user lives on home. Returns
 * "ignored" (and writes nothing, not even `extra`) when the objects are not ours.
 */
export async function syncFromStripe(
  deps: SyncDeps,
  target: SyncTarget,
  extra: (now: number) => D1PreparedStatement[] = () => [],
): Promise<SyncOutcome> {
  const { stripe, shards, log } = deps;
  const invoice = target.invoiceId ? await retrieveInvoice(stripe, target.invoiceId) : null;
  const subscriptionId = target.subscriptionId ?? (invoice ? invoiceSubscriptionId(invoice) : null);
  if (subscriptionId === null) {
    if (invoice) return syncCustomerInvoice(deps, invoice, extra);
    return { status: "ignored", reason: "invoice without subscription" };
  }
  const sub = await retrieveSubscription(stripe, subscriptionId);
  const hints = [sub.metadata.user_id, ...target.userHints].filter((h): h is string => !!h);
  const owner = await resolveOwner(shards.home, stripe, sub.customer, hints);
  if (owner === null) {
    log.warn("stripe customer without user", { stripe_customer_id: sub.customer, subscription_id: sub.id });
    return { status: "ignored", reason: "customer has no metadata.user_id" };
  }
  const plan = planOfSubscription(sub);
  if (plan === null) {
    log.warn("subscription without a plan price", { subscription_id: sub.id });
    return { status: "ignored", reason: "subscription prices match no plan" };
  }

  const now = deps.now();
  const userId = owner.userId;
  const db = shards.of(userId);
  const failedAt = await failedInvoiceAt(stripe, sub, invoice);
  const schedule = await scheduleOf(stripe, sub);
  const phasePlans = new Map<string, PaidPlanId | null>();
  for (const phase of schedule?.phases ?? []) {
    for (const item of phase.items) {
      if (!phasePlans.has(item.price))
        phasePlans.set(item.price, planOfPrice(await retrievePrice(stripe, item.price)));
    }
  }
  const pending = pendingChange(sub, schedule, (id) => phasePlans.get(id) ?? null);
  const metered = sub.items.data.find((i) => i.price.recurring?.usage_type === "metered");
  const meter = await meterEventNameOf(stripe, metered?.price.recurring?.meter);

  const statements: D1PreparedStatement[] = [
    insertCustomer(db, userId, sub.customer, owner.email, now),
    upsertSubscription(db, subscriptionRow(sub, userId, plan, failedAt, pending, now), now),
  ];
  for (const row of planHistoryRows(sub, plan, meter)) {
    statements.push(
      upsertPlanHistory(db, userId, row, now),
      ...reattributeIfChanged(db, userId, row.effective_from, now),
      endSeriesAt(db, sub.id, row.effective_from),
      ...reattributeIfChanged(db, userId, row.effective_from, now),
    );
  }
  const periods = billingPeriods(sub);
  let lines: ReturnType<typeof invoiceLineRows> = [];
  if (invoice) {
    const prices = await pricesOf(stripe, invoice);
    const row = invoiceRow(invoice, userId, subscriptionId, prices);
    statements.push(upsertInvoice(db, row, now));
    if (
      row.usage_period_start !== null &&
      row.usage_period_end !== null &&
      row.usage_period_end > row.usage_period_start
    ) {
      periods.push({ start: row.usage_period_start, end: row.usage_period_end });
    }
    if (isFinal(invoice)) lines = invoiceLineRows(invoice, prices);
  }
  for (const p of periods) {
    statements.push(
      upsertBillingPeriod(db, sub.id, p),
      ...reattributeIfChanged(db, userId, p.start, now),
      shortenSeries(db, sub.id, p),
      ...reattributeIfChanged(db, userId, p.end, now),
    );
  }
  statements.push(refreshCustomerPlan(db, userId, now));
  const ended = subscriptionRow(sub, userId, plan, failedAt, pending, now).ended_at;
  const freezing = (invoice && isFinal(invoice)) || ended !== null;
  const openSince = freezing ? await oldestOpenSeries(db, sub.id) : null;
  // what Stripe billed so far (every finalized invoice since the oldest open series), not only
  // this event's invoice: the freezes below read it from invoice_lines
  const inStripe = openSince !== null ? await invoicesInStripe(stripe, sub.id, openSince) : null;
  if (inStripe && inStripe.lines.length > 0) statements.push(upsertInvoiceLines(db, inStripe.lines));
  const latestDraft = !freezing
    ? null
    : inStripe
      ? inStripe.latestDraft
      : await latestDraftInvoice(stripe, sub.id);
  if (invoice && isFinal(invoice)) {
    if (lines.length > 0) statements.push(upsertInvoiceLines(db, lines));
    const items = lines.flatMap((l) => (l.stripe_invoice_item_id ? [l.stripe_invoice_item_id] : []));
    if (items.length > 0) statements.push(linkAdjustments(db, invoice.id, items));
    const coversUntilMs = invoiceCoversUntil(invoice);
    statements.push(freezeBilledSeries(db, sub.id, { id: invoice.id, coversUntilMs }, now, latestDraft));
  }
  if (ended !== null && latestDraft === null) {
    statements.push(freezeEndedSeries(db, sub.id, ended, now), markDraftsSettled(db, sub.id, now));
  }
  await writeForUser(shards, { userId, user: statements, home: extra(now), customerId: sub.customer });
  log.info("stripe state applied", {
    user_id: userId,
    subscription_id: sub.id,
    plan,
    status: sub.status,
    pending_plan: pending?.plan ?? null,
  });
  return { status: "processed" };
}

/** An invoice of no subscription (ours: adjustments billed on a one-off invoice). */
async function syncCustomerInvoice(
  deps: SyncDeps,
  invoice: StripeInvoice,
  extra: (now: number) => D1PreparedStatement[],
): Promise<SyncOutcome> {
  const { shards, stripe } = deps;
  const owner = await resolveOwner(shards.home, stripe, invoice.customer, []);
  if (owner === null) return { status: "ignored", reason: "customer has no metadata.user_id" };
  const db = shards.of(owner.userId);
  const now = deps.now();
  const prices = await pricesOf(stripe, invoice);
  const statements = [upsertInvoice(db, invoiceRow(invoice, owner.userId, null, prices), now)];
  if (isFinal(invoice)) {
    const lines = invoiceLineRows(invoice, prices);
    if (lines.length > 0) statements.push(upsertInvoiceLines(db, lines));
    const items = lines.flatMap((l) => (l.stripe_invoice_item_id ? [l.stripe_invoice_item_id] : []));
    if (items.length > 0) statements.push(linkAdjustments(db, invoice.id, items));
  }
  await writeForUser(shards, { userId: owner.userId, user: statements, home: extra(now) });
  return { status: "processed" };
}
