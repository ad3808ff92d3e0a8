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
  /** The test clock whose frozen time is this customer's "now" (null: the emulator clock). */
  testClock: string | null;
  email: string | null;
  name: string | null;
  description: string | null;
  phone: string | null;
  metadata: Metadata;
  invoicePrefix: string;
  nextInvoiceSequence: number;
  /** Customer credit balance in cents: negative is credit the next invoices use up. */
  balance: number;
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
  configuration: string;
  returnUrl: string | null;
}

export type ProrationBehavior = "always_invoice" | "create_prorations" | "none";

export interface PortalConfigurationRec {
  id: string;
  created: number;
  updated: number;
  active: boolean;
  isDefault: boolean;
  name: string | null;
  defaultReturnUrl: string | null;
  headline: string | null;
  privacyPolicyUrl: string | null;
  termsOfServiceUrl: string | null;
  metadata: Metadata;
  customerUpdate: { enabled: boolean; allowedUpdates: string[] };
  invoiceHistory: { enabled: boolean };
  paymentMethodUpdate: { enabled: boolean };
  subscriptionCancel: {
    enabled: boolean;
    mode: "at_period_end" | "immediately";
    prorationBehavior: ProrationBehavior;
    cancellationReason: { enabled: boolean; options: string[] };
  };
  subscriptionUpdate: {
    enabled: boolean;
    defaultAllowedUpdates: string[];
    products: { product: string; prices: string[] }[];
    prorationBehavior: ProrationBehavior;
  };
}

/**
 * What a licensed item was charged for in its current period: the amount for [start, end), of
 * which [start, activeUntil) has not been credited back yet. Flexible billing mode credits
 * "the original debited amount" (compare page), so credits are computed from these.
 */
export interface DebitRec {
  amount: number;
  start: number;
  end: number;
  activeUntil: number;
}

export interface ItemRec {
  id: string;
  created: number;
  price: string;
  quantity: number | null; // null for metered prices
  metadata: Metadata;
  periodStart: number;
  periodEnd: number;
  /** Metered items bill usage with timestamps in [usageStart, periodEnd): the period start, or when the item (or its price) was added. */
  usageStart: number;
  /** Licensed items: what was charged for the current period (see DebitRec). */
  debits: DebitRec[];
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
  /** A scheduled cancellation time (`cancel_at`), independent of the period end. */
  cancelAt: number | null;
  canceledAt: number | null;
  endedAt: number | null;
  cancellation: { comment: string | null; feedback: string | null; reason: string | null };
  latestInvoice: string | null;
  schedule: string | null;
  items: ItemRec[];
}

/** A usage line is re-priced from the meter when its invoice is finalized. */
export interface UsageWindow {
  meter: string | null;
  start: number;
  end: number;
}

export interface InvoiceLineRec {
  id: string;
  amount: number;
  quantity: number;
  unitAmountDecimal: string | null;
  description: string;
  price: string | null;
  product: string | null;
  subscription: string | null;
  /** Set for lines of subscription items (`parent.subscription_item_details`). */
  subscriptionItem: string | null;
  /** Set for lines of invoice items (`parent.invoice_item_details`). */
  invoiceItem: string | null;
  proration: boolean;
  periodStart: number;
  periodEnd: number;
  /** Metered subscription item lines: recomputed at finalization. */
  usage: UsageWindow | null;
}

export type InvoiceStatus = "draft" | "open" | "paid" | "void" | "uncollectible";
export type BillingReason = "manual" | "subscription_create" | "subscription_cycle" | "subscription_update";
export type CollectionMethod = "charge_automatically" | "send_invoice";

export interface InvoiceRec {
  id: string;
  created: number;
  customer: string;
  subscription: string | null;
  status: InvoiceStatus;
  billingReason: BillingReason;
  collectionMethod: CollectionMethod;
  autoAdvance: boolean;
  /** When a draft finalizes by itself (null when it does not). */
  automaticallyFinalizesAt: number | null;
  currency: string;
  description: string | null;
  dueDate: number | null;
  periodStart: number;
  periodEnd: number;
  lines: InvoiceLineRec[];
  number: string | null;
  /** The customer balance applied at finalization (negative: credit). */
  startingBalance: number;
  endingBalance: number | null;
  attemptCount: number;
  finalizedAt: number | null;
  paidAt: number | null;
  nextPaymentAttempt: number | null;
  metadata: Metadata;
}

export interface InvoiceItemRec {
  id: string;
  created: number;
  customer: string;
  currency: string;
  amount: number;
  quantity: number;
  unitAmountDecimal: string;
  description: string | null;
  price: string | null;
  product: string | null;
  periodStart: number;
  periodEnd: number;
  proration: boolean;
  subscription: string | null;
  subscriptionItem: string | null;
  /** The invoice it was added to; null while pending. */
  invoice: string | null;
  discountable: boolean;
  metadata: Metadata;
}

export interface PhaseItemRec {
  price: string;
  quantity: number | null;
  metadata: Metadata;
}

export interface PhaseRec {
  start: number;
  end: number;
  items: PhaseItemRec[];
  prorationBehavior: ProrationBehavior;
  metadata: Metadata;
}

export type ScheduleStatus = "not_started" | "active" | "completed" | "released" | "canceled";

export interface ScheduleRec {
  id: string;
  created: number;
  customer: string;
  subscription: string | null;
  releasedSubscription: string | null;
  status: ScheduleStatus;
  endBehavior: "release" | "cancel";
  billingMode: BillingModeRec;
  metadata: Metadata;
  phases: PhaseRec[];
  /** Index of the phase in force (the subscription has entered it). */
  current: number;
  canceledAt: number | null;
  completedAt: number | null;
  releasedAt: number | null;
}

export interface TestClockRec {
  id: string;
  created: number;
  deletesAfter: number;
  frozenTime: number;
  name: string | null;
  status: "advancing" | "ready" | "internal_failure";
  /** While advancing: the time it is advancing to. */
  target: number | null;
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
  portalConfigurations = new Map<string, PortalConfigurationRec>();
  subscriptions = new Map<string, SubscriptionRec>();
  invoices = new Map<string, InvoiceRec>();
  invoiceItems = new Map<string, InvoiceItemRec>();
  schedules = new Map<string, ScheduleRec>();
  testClocks = new Map<string, TestClockRec>();
  /**
   * The account's invoice finalization grace period, a Dashboard setting on Stripe ("All invoices
   * have a default finalization grace period of 1 hour"; up to 72 hours).
   */
  finalizationGraceSeconds = 3600;
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

  /** The test clock a customer is attached to, if any. */
  clockOf(customer: string): TestClockRec | undefined {
    const clock = this.customers.get(customer)?.testClock;
    return clock ? this.testClocks.get(clock) : undefined;
  }

  /** "Now" for a customer's objects: its test clock's frozen time, or the emulator clock. */
  nowFor(customer: string): number {
    return this.clockOf(customer)?.frozenTime ?? this.now();
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
