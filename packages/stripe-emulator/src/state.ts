/**
 * In-memory state of the emulator: internal records (not the wire shapes; see views.ts),
 * the emulator clock and id generation. Everything here is forgotten by `reset()`.
 */
import { randomBytes } from "node:crypto";
import type { CallView } from "./protocol";

export type Metadata = Record<string, string>;
export type Formula = "sum" | "count" | "last";
export type Interval = "day" | "week" | "month" | "year";

/** How prorations and invoices of a subscription are calculated (`billing_mode`). */
export interface BillingModeRec {
  type: "classic" | "flexible";
  /** `billing_mode.flexible.proration_discounts` when it was given. */
  prorationDiscounts: "included" | "itemized" | null;
}

export interface CustomerRec {
  id: string;
  created: number;
  email: string | null;
  name: string | null;
  description: string | null;
  phone: string | null;
  metadata: Metadata;
  invoicePrefix: string;
  nextInvoiceSequence: number;
  failNextPayment: boolean;
}

export interface ProductRec {
  id: string;
  created: number;
  updated: number;
  name: string;
  description: string | null;
  active: boolean;
  metadata: Metadata;
}

export interface Tier {
  upTo: number | null; // null = inf
  unitAmount: number | null;
  flatAmount: number | null;
}

export interface PriceRec {
  id: string;
  created: number;
  active: boolean;
  currency: string;
  product: string;
  nickname: string | null;
  lookupKey: string | null;
  metadata: Metadata;
  billingScheme: "per_unit" | "tiered";
  unitAmount: number | null;
  tiersMode: "graduated" | "volume" | null;
  tiers: Tier[] | null;
  recurring: {
    interval: Interval;
    intervalCount: number;
    usageType: "licensed" | "metered";
    meter: string | null;
  } | null;
}

export interface MeterRec {
  id: string;
  created: number;
  updated: number;
  displayName: string;
  eventName: string;
  formula: Formula;
  customerKey: string;
  valueKey: string;
  eventTimeWindow: "day" | "hour" | null;
  status: "active" | "inactive";
  deactivatedAt: number | null;
}

export interface MeterEventRec {
  seq: number;
  meter: string;
  eventName: string;
  identifier: string;
  customer: string;
  value: number;
  timestamp: number;
  created: number;
  /** Real time (epoch ms) the emulator received it: for latency measurements. */
  receivedAtMs: number;
  payload: Metadata;
}

export interface CheckoutLineRec {
  id: string;
  price: string;
  quantity: number | null; // null for metered prices
}

export interface CheckoutSessionRec {
  id: string;
  created: number;
  expiresAt: number;
  mode: "subscription";
  status: "open" | "complete";
  customer: string | null;
  customerEmail: string | null;
  clientReferenceId: string | null;
  successUrl: string | null;
  cancelUrl: string | null;
  metadata: Metadata;
  subscriptionMetadata: Metadata;
  billingMode: BillingModeRec;
  lines: CheckoutLineRec[];
  subscription: string | null;
  invoice: string | null;
}

export interface PortalSessionRec {
  id: string;
  created: number;
  customer: string;
  returnUrl: string | null;
}

export interface ItemRec {
  id: string;
  created: number;
  price: string;
  quantity: number | null; // null for metered prices
  metadata: Metadata;
  periodStart: number;
  periodEnd: number;
}

export type SubscriptionStatus = "active" | "past_due" | "canceled" | "incomplete" | "unpaid";

export interface SubscriptionRec {
  id: string;
  created: number;
  customer: string;
  currency: string;
  status: SubscriptionStatus;
  metadata: Metadata;
  billingMode: BillingModeRec;
  startDate: number;
  billingCycleAnchor: number;
  cancelAtPeriodEnd: boolean;
  canceledAt: number | null;
  endedAt: number | null;
  cancellation: { comment: string | null; feedback: string | null; reason: string | null };
  latestInvoice: string | null;
  items: ItemRec[];
}

export interface InvoiceLineRec {
  id: string;
  amount: number;
  quantity: number;
  unitAmountDecimal: string | null;
  description: string;
  price: string;
  product: string;
  subscriptionItem: string;
  periodStart: number;
  periodEnd: number;
}

export type InvoiceStatus = "draft" | "open" | "paid" | "void" | "uncollectible";
export type BillingReason = "subscription_create" | "subscription_cycle" | "subscription_update";

export interface InvoiceRec {
  id: string;
  created: number;
  customer: string;
  subscription: string;
  status: InvoiceStatus;
  billingReason: BillingReason;
  currency: string;
  periodStart: number;
  periodEnd: number;
  lines: InvoiceLineRec[];
  number: string | null;
  attemptCount: number;
  finalizedAt: number | null;
  paidAt: number | null;
  nextPaymentAttempt: number | null;
  metadata: Metadata;
}

export interface EventRec {
  id: string;
  type: string;
  created: number;
  /** The exact JSON body delivered to webhook endpoints (pretty-printed like Stripe). */
  payload: string;
  body: Record<string, unknown>;
  delivery: DeliveryRec;
}

export interface DeliveryRec {
  status: "none" | "pending" | "delivered" | "failed" | "drained";
  attempts: number;
  httpStatus: number | null;
  error: string | null;
}

export interface FaultRule {
  status: number; // 0 = only delay
  remaining: number;
  delayMs: number;
  pathPrefix: string;
}

export interface IdempotencyRec {
  fingerprint: string;
  createdAt: number;
  response: { status: number; body: string; requestId: string } | null; // null while in flight
}

const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

export function randomString(length: number): string {
  const bytes = randomBytes(length);
  let out = "";
  for (const byte of bytes) out += ALPHABET[byte % ALPHABET.length];
  return out;
}

/** Stripe-style ids: `cus_` + 14 characters, `cs_test_` + 58, `evt_` + 24, ... */
export function newId(prefix: string, length = 14): string {
  return `${prefix}_${randomString(length)}`;
}

export const DAY = 86_400;

export class EmulatorState {
  /** Seconds added to the real clock; changed by POST /_emulator/clock. */
  clockOffset = 0;
  /** When set, the emulator clock stands still at this time. */
  frozenAt: number | null = null;
  customers = new Map<string, CustomerRec>();
  products = new Map<string, ProductRec>();
  prices = new Map<string, PriceRec>();
  meters = new Map<string, MeterRec>();
  meterEvents: MeterEventRec[] = [];
  /** The same events indexed by `${meter}:${customer}`, for aggregation. */
  meterEventsByKey = new Map<string, MeterEventRec[]>();
  /** Rejected meter events whose identifier was seen in the last 24 h. */
  duplicateMeterEvents: MeterEventRec[] = [];
  /** identifier -> emulator time it was first accepted (dedupe window start). */
  meterIdentifiers = new Map<string, number>();
  checkoutSessions = new Map<string, CheckoutSessionRec>();
  portalSessions = new Map<string, PortalSessionRec>();
  subscriptions = new Map<string, SubscriptionRec>();
  invoices = new Map<string, InvoiceRec>();
  events: EventRec[] = [];
  calls: CallView[] = [];
  faults: FaultRule[] = [];
  idempotency = new Map<string, IdempotencyRec>();
  /** Meter-event requests in flight per meter and customer (Stripe allows one at a time). */
  meterCallsInFlight = new Set<string>();
  private seq = 0;

  /** Emulator time in unix seconds. */
  now(): number {
    return this.frozenAt ?? Math.floor(Date.now() / 1000) + this.clockOffset;
  }

  /** Moves the clock to `time`; `frozen` stops or restarts it (undefined keeps the mode). */
  setClock(time: number, frozen = this.frozenAt !== null): void {
    this.clockOffset = time - Math.floor(Date.now() / 1000);
    this.frozenAt = frozen ? time : null;
  }

  nextSeq(): number {
    this.seq += 1;
    return this.seq;
  }

  reset(): void {
    const fresh = new EmulatorState();
    Object.assign(this, fresh);
  }

  /** Finds an item and its subscription by item id. */
  findItem(itemId: string): { sub: SubscriptionRec; item: ItemRec } | undefined {
    for (const sub of this.subscriptions.values()) {
      const item = sub.items.find((i) => i.id === itemId);
      if (item) return { sub, item };
    }
    return undefined;
  }
}
