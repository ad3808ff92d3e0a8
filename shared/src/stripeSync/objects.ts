/**
 * The parts of Stripe's objects we rely on (webhooks and the api's plan changes), parsed with zod (webhook payloads and
 * re-fetched objects alike are untrusted input). Unknown fields are stripped; timestamps are
 * Stripe's unix seconds.
 */
import { z } from "zod";

/**
 * A Stripe id: Stripe's are short ASCII (letters, digits, underscores). Anything else (control
 * characters, lone surrogates, kilobytes) is refused before it reaches a Stripe URL or D1.
 */
const Id = z.string().regex(/^[!-~]{1,255}$/, "expected a Stripe id (1 to 255 printable ASCII characters)");
/** An id field that Stripe may return expanded. */
const Ref = z.union([Id, z.object({ id: Id })]).transform((v) => (typeof v === "string" ? v : v.id));
const Metadata = z
  .record(z.string(), z.string())
  .nullish()
  .transform((m) => m ?? {});
/** Unix seconds up to the end of year 9999, so that milliseconds stay exact integers. */
const Seconds = z.int().nonnegative().max(253_402_300_799);

export const HANDLED_EVENT_TYPES = [
  "checkout.session.completed",
  "customer.subscription.created",
  "customer.subscription.updated",
  "customer.subscription.deleted",
  "invoice.created",
  "invoice.finalized",
  "invoice.updated",
  "invoice.paid",
  "invoice.payment_succeeded",
  "invoice.payment_failed",
  "subscription_schedule.created",
  "subscription_schedule.updated",
  "subscription_schedule.released",
  "subscription_schedule.canceled",
  "subscription_schedule.completed",
] as const;
export type HandledEventType = (typeof HANDLED_EVENT_TYPES)[number];

export function isHandledEventType(type: string): type is HandledEventType {
  return (HANDLED_EVENT_TYPES as readonly string[]).includes(type);
}

/**
 * What every Stripe event has, whatever its type or payload style (snapshot or thin): enough to
 * log it and decide whether we handle it. JSON without it is not a Stripe event.
 */
export const StripeEventHead = z.object({ id: z.string().min(1), type: z.string().min(1) });
export type StripeEventHead = z.infer<typeof StripeEventHead>;

/** The envelope of an event we handle: what dedupe and routing need. */
export const StripeEventEnvelope = z.object({
  id: Id,
  type: z.enum(HANDLED_EVENT_TYPES),
  created: Seconds,
  data: z.object({ object: z.object({ id: Id }).loose() }),
});
export type StripeEventEnvelope = z.infer<typeof StripeEventEnvelope>;

/** checkout.session.completed: only the ids; the subscription is re-fetched. */
export const CheckoutSessionRef = z.object({
  id: Id,
  mode: z.string(),
  customer: Ref.nullish(),
  subscription: Ref.nullish(),
  client_reference_id: z.string().nullish(),
  metadata: Metadata,
});
export type CheckoutSessionRef = z.infer<typeof CheckoutSessionRef>;

/** A price's product, as an id or expanded (its metadata names the plan too). */
const ProductRef = z.union([
  Id.transform((id) => ({ id, metadata: {} as Record<string, string> })),
  z.object({ id: Id, metadata: Metadata }),
]);

const Tier = z.object({
  up_to: z.int().nonnegative().nullable(),
  unit_amount: z.int().nullish(),
  flat_amount: z.int().nullish(),
});

export const StripePrice = z.object({
  id: Id,
  currency: z.string(),
  lookup_key: z.string().nullish(),
  metadata: Metadata,
  product: ProductRef,
  billing_scheme: z.enum(["per_unit", "tiered"]).nullish(),
  unit_amount: z.int().nullish(),
  tiers_mode: z.enum(["graduated", "volume"]).nullish(),
  tiers: z.array(Tier).nullish(),
  recurring: z.object({ usage_type: z.enum(["licensed", "metered"]), meter: z.string().nullish() }).nullish(),
});
export type StripePrice = z.infer<typeof StripePrice>;

export const StripeSubscription = z.object({
  id: Id,
  customer: Ref,
  status: z.string(),
  created: Seconds,
  start_date: Seconds,
  ended_at: Seconds.nullish(),
  canceled_at: Seconds.nullish(),
  cancel_at_period_end: z.boolean(),
  cancel_at: Seconds.nullish(),
  billing_mode: z.object({ type: z.string() }).nullish(),
  schedule: Ref.nullish(),
  metadata: Metadata,
  latest_invoice: Ref.nullish(),
  items: z.object({
    data: z.array(
      z.object({
        id: Id,
        created: Seconds,
        current_period_start: Seconds,
        current_period_end: Seconds,
        quantity: z.int().nullish(),
        price: StripePrice,
      }),
    ),
  }),
});
export type StripeSubscription = z.infer<typeof StripeSubscription>;

export const StripeInvoiceLine = z.object({
  id: Id,
  amount: z.int(),
  quantity: z.int().nullish(),
  description: z.string().nullish(),
  period: z.object({ start: Seconds, end: Seconds }),
  pricing: z.object({ price_details: z.object({ price: Ref }).nullish() }).nullish(),
  parent: z
    .object({
      invoice_item_details: z.object({ invoice_item: Ref.nullish(), subscription: Ref.nullish() }).nullish(),
      subscription_item_details: z.object({ subscription: Ref.nullish() }).nullish(),
    })
    .nullish(),
});
export type StripeInvoiceLine = z.infer<typeof StripeInvoiceLine>;

export const StripeInvoice = z.object({
  id: Id,
  customer: Ref,
  status: z.enum(["draft", "open", "paid", "uncollectible", "void"]),
  currency: z.string(),
  created: Seconds,
  billing_reason: z.string().nullish(),
  subtotal: z.int(),
  total: z.int(),
  /** Its taxes (API 2025-03-31.basil and later); `total` includes the exclusive ones. */
  total_taxes: z.array(z.object({ amount: z.int() })).nullish(),
  amount_paid: z.int(),
  period_start: Seconds,
  period_end: Seconds,
  number: z.string().nullish(),
  hosted_invoice_url: z.string().nullish(),
  invoice_pdf: z.string().nullish(),
  parent: z.object({ subscription_details: z.object({ subscription: Ref }).nullish() }).nullish(),
  status_transitions: z.object({ finalized_at: Seconds.nullish(), paid_at: Seconds.nullish() }),
  lines: z.object({ data: z.array(StripeInvoiceLine), has_more: z.boolean() }),
});
export type StripeInvoice = z.infer<typeof StripeInvoice>;

export const StripeCustomer = z.union([
  z.object({ id: Id, deleted: z.literal(true) }),
  z.object({ id: Id, deleted: z.literal(false).optional(), email: z.string().nullish(), metadata: Metadata }),
]);
export type StripeCustomer = z.infer<typeof StripeCustomer>;

export function invoiceSubscriptionId(invoice: StripeInvoice): string | null {
  return invoice.parent?.subscription_details?.subscription ?? null;
}

/** A subscription schedule: the phases after the current one say what Stripe will change, and when. */
export const StripeSchedule = z.object({
  id: Id,
  status: z.string(),
  subscription: Ref.nullish(),
  current_phase: z.object({ start_date: Seconds, end_date: Seconds }).nullish(),
  phases: z.array(
    z.object({
      start_date: Seconds,
      end_date: Seconds.nullish(),
      items: z.array(z.object({ price: Ref, quantity: z.int().nullish() })),
    }),
  ),
});
export type StripeSchedule = z.infer<typeof StripeSchedule>;

/** A subscription schedule event's object: the subscription it manages. */
export const ScheduleRef = z.object({
  id: Id,
  subscription: Ref.nullish(),
  released_subscription: Ref.nullish(),
});

export function invoiceLineSubscriptionId(line: StripeInvoiceLine): string | null {
  return (
    line.parent?.subscription_item_details?.subscription ??
    line.parent?.invoice_item_details?.subscription ??
    null
  );
}
