/**
 * Applying one verified Stripe event: dedupe on its id, re-fetch the objects it concerns from
 * Stripe and write what Stripe holds now (never the event's snapshot, which may be stale), in
 * one db.batch() together with the dedupe row. A crash before the batch leaves the event
 * unprocessed, so Stripe's resend applies it; a batch applied twice changes nothing.
 */
import { type IssueDetail, issueDetails, type Logger } from "@aigate/shared";
import Stripe from "stripe";
import type { z } from "zod";
import {
  billingPeriods,
  chargedUsage,
  failedInvoiceTime,
  invoiceRow,
  planHistoryRows,
  planOfSubscription,
  subscriptionRow,
} from "./convergence";
import {
  insertCustomer,
  isEventProcessed,
  markEventProcessed,
  markSessionsCharged,
  refreshCustomerPlan,
  upsertBillingPeriod,
  upsertInvoice,
  upsertPlanHistory,
  upsertSubscription,
  userOfCustomer,
} from "./queries";
import {
  CheckoutSessionRef,
  invoiceSubscriptionId,
  isHandledEventType,
  StripeCustomer,
  StripeEventEnvelope,
  type StripeEventHead,
  StripeInvoice,
  StripePrice,
  StripeSubscription,
} from "./stripeObjects";

export type Outcome =
  | { status: "processed" }
  | { status: "duplicate" }
  /** `issues` when the payload lacks what we read (logged, never sent back). */
  | { status: "ignored"; reason: string; issues?: PayloadIssue[] };

/** One thing wrong with a payload: where (a dotted path from the event's root) and what. */
export type PayloadIssue = IssueDetail;

const describeIssues = (issues: readonly PayloadIssue[]) =>
  issues
    .slice(0, 3)
    .map((i) => `${i.path || "(root)"}: ${i.message}`)
    .join("; ") + (issues.length > 3 ? `; and ${issues.length - 3} more` : "");

/**
 * An authentic event whose payload lacks what we read. Stripe would resend the same payload for
 * days on a non-2xx answer, so it is acknowledged as ignored (and logged with its issues).
 */
function unusable(issues: PayloadIssue[]): Outcome {
  return { status: "ignored", reason: `unusable payload: ${describeIssues(issues)}`, issues };
}

/**
 * An object re-fetched from Stripe that does not match what we read. Not the event's fault: our
 * reading or Stripe's answer is wrong, and the event still has to be applied. It fails the event
 * (500), so Stripe resends it until that is fixed; nothing is written meanwhile.
 */
export class UnreadableStripeObject extends Error {
  constructor(
    readonly kind: string,
    readonly objectId: string,
    readonly issues: PayloadIssue[],
  ) {
    super(`Stripe's ${kind} ${objectId} does not match what we read: ${describeIssues(issues)}`);
    this.name = "UnreadableStripeObject";
  }
}

function read<T>(schema: z.ZodType<T>, kind: string, id: string, value: unknown): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new UnreadableStripeObject(kind, id, issueDetails(parsed.error));
  return parsed.data;
}

export interface Deps {
  db: D1Database;
  stripe: Stripe;
  log: Logger;
  now: () => number;
}

/** What an event points at, before anything is fetched. */
interface Target {
  subscriptionId: string | null;
  invoiceId: string | null;
  /** User ids the event itself suggests (checkout's client_reference_id), used last. */
  userHints: string[];
}

/** The event's target, or why it has none (the outcome to answer). */
function targetOf(event: StripeEventEnvelope): Target | Outcome {
  const { type, data } = event;
  if (type === "checkout.session.completed") {
    const parsed = CheckoutSessionRef.safeParse(data.object);
    if (!parsed.success) return unusable(issueDetails(parsed.error, ["data", "object"]));
    const session = parsed.data;
    if (session.mode !== "subscription" || !session.subscription)
      return { status: "ignored", reason: "not a subscription checkout" };
    const hints = [session.client_reference_id, session.metadata.user_id].filter((h): h is string => !!h);
    return { subscriptionId: session.subscription, invoiceId: null, userHints: hints };
  }
  const { id } = data.object;
  if (type.startsWith("customer.subscription."))
    return { subscriptionId: id, invoiceId: null, userHints: [] };
  return { subscriptionId: null, invoiceId: id, userHints: [] };
}

/**
 * Applies a verified event. `head` is its id and type (already read from `payload`); the rest of
 * `payload` is read here, only for the types we handle.
 */
export async function processEvent(deps: Deps, head: StripeEventHead, payload: unknown): Promise<Outcome> {
  if (!isHandledEventType(head.type))
    return { status: "ignored", reason: `unhandled event type ${head.type}` };
  const parsed = StripeEventEnvelope.safeParse(payload);
  if (!parsed.success) return unusable(issueDetails(parsed.error));
  const event = parsed.data;
  const { type } = event;
  if (await isEventProcessed(deps.db, event.id)) return { status: "duplicate" };

  const target = targetOf(event);
  if ("status" in target) return target;

  const { stripe, db, log } = deps;
  const invoice = target.invoiceId ? await retrieveInvoice(stripe, target.invoiceId) : null;
  const subscriptionId = target.subscriptionId ?? (invoice ? invoiceSubscriptionId(invoice) : null);
  if (subscriptionId === null) return { status: "ignored", reason: "invoice without subscription" };
  const sub = read(
    StripeSubscription,
    "subscription",
    subscriptionId,
    await stripe.subscriptions.retrieve(subscriptionId),
  );

  const hints = [sub.metadata.user_id, ...target.userHints].filter((h): h is string => !!h);
  const owner = await resolveOwner(db, stripe, sub.customer, hints);
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
  const failedAt = await failedInvoiceAt(stripe, sub, invoice);
  const statements: D1PreparedStatement[] = [
    insertCustomer(db, userId, sub.customer, owner.email, now),
    upsertSubscription(db, subscriptionRow(sub, userId, plan, failedAt, now), now),
    ...planHistoryRows(sub, plan).map((r) => upsertPlanHistory(db, userId, r, now)),
    ...billingPeriods(sub).map((p) => upsertBillingPeriod(db, sub.id, p)),
    refreshCustomerPlan(db, userId, now),
  ];
  if (invoice) {
    const row = invoiceRow(invoice, userId, subscriptionId, await pricesOf(stripe, invoice));
    statements.push(upsertInvoice(db, row, now));
    if (row.usage_period_start !== null && row.usage_period_end !== null) {
      statements.push(
        upsertBillingPeriod(db, subscriptionId, { start: row.usage_period_start, end: row.usage_period_end }),
      );
    }
    const charged = chargedUsage(row);
    if (charged)
      statements.push(markSessionsCharged(db, invoice.id, userId, charged.plan, charged.periodStart));
  }
  statements.push(markEventProcessed(db, { id: event.id, type, createdMs: event.created * 1000 }, now));
  await db.batch(statements);
  log.info("stripe event applied", { user_id: userId, subscription_id: sub.id, plan, status: sub.status });
  return { status: "processed" };
}

async function retrieveInvoice(stripe: Stripe, id: string): Promise<StripeInvoice> {
  const invoice = read(StripeInvoice, "invoice", id, await stripe.invoices.retrieve(id));
  if (!invoice.lines.has_more) return invoice;
  const lines = [];
  for await (const line of stripe.invoices.listLineItems(id, { limit: 100 })) lines.push(line);
  return read(StripeInvoice, "invoice", id, { ...invoice, lines: { data: lines, has_more: false } });
}

/** The user owning a customer: our record, else the customer's metadata.user_id, else the hints. */
async function resolveOwner(
  db: D1Database,
  stripe: Stripe,
  customerId: string,
  hints: string[],
): Promise<{ userId: string; email: string } | null> {
  const known = await userOfCustomer(db, customerId);
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
  return failedInvoiceTime(read(StripeInvoice, "invoice", latest, await stripe.invoices.retrieve(latest)));
}

/** Prices never change what they bill, so they are cached for the isolate's life. */
const priceCache = new Map<string, StripePrice>();

async function pricesOf(stripe: Stripe, invoice: StripeInvoice): Promise<Map<string, StripePrice>> {
  const ids = new Set(
    invoice.lines.data.flatMap((l) => (l.pricing?.price_details ? [l.pricing.price_details.price] : [])),
  );
  const out = new Map<string, StripePrice>();
  for (const id of ids) {
    let price = priceCache.get(id);
    if (!price) {
      price = read(StripePrice, "price", id, await stripe.prices.retrieve(id));
      priceCache.set(id, price);
    }
    out.set(id, price);
  }
  return out;
}

/** A re-fetch that Stripe answers 404: the object is gone, and a retry would not change that. */
export function isMissingObject(err: unknown): boolean {
  return err instanceof Stripe.errors.StripeInvalidRequestError && err.statusCode === 404;
}
