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

/** A postal address as Stripe holds it (`customer.address`, `customer_details.address`). */
export interface AddressRec {
  city: string | null;
  country: string | null;
  line1: string | null;
  line2: string | null;
  postal_code: string | null;
  state: string | null;
}

/** A customer tax ID collected by Checkout (`customer_details.tax_ids`). */
export interface TaxIdRec {
  type: string;
  value: string;
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
  /** The billing address (Checkout saves it for new customers, and with `customer_update[address]=auto`). */
  address: AddressRec | null;
  taxIds: TaxIdRec[];
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
  /** `automatic_tax[enabled]`: the subscription it creates computes tax (Stripe Tax). */
  automaticTax: boolean;
  billingAddressCollection: "auto" | "required" | null;
  taxIdCollection: { enabled: boolean; required: "if_supported" | "never" };
  /** `customer_update`: what Checkout saves onto an existing customer. */
  customerUpdate: { address: "auto" | "never"; name: "auto" | "never"; shipping: "auto" | "never" };
  /** What the customer entered, once complete (`customer_details`). */
  details: {
    address: AddressRec | null;
    name: string | null;
    businessName: string | null;
    taxIds: TaxIdRec[];
  } | null;
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
  /** `automatic_tax.enabled`: its invoices compute tax (set by a Checkout Session with automatic tax). */
  automaticTax: boolean;
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
  /** `automatic_tax[enabled]` (from its subscription, or given on a one-off invoice). */
  automaticTax: boolean;
  /**
   * The tax applied, fixed at finalization ("Stripe calculates the tax at the published rate at the
   * time of invoice finalization"); null before, and for invoices without automatic tax.
   */
  tax: AppliedTax | null;
  /** Set when finalization found no customer location and automatic tax was turned off. */
  taxDisabledReason: "finalization_requires_location_inputs" | null;
}

/** A tax rate object Stripe Tax applies (emulator: one per country and percentage). */
export interface TaxRateRec {
  id: string;
  created: number;
  country: string;
  /** Percent, as a decimal string with up to 4 decimals ("19", "7.5"). */
  percentage: string;
}

/** The tax of an invoice: the customer's country, its rate and why. */
export interface AppliedTax {
  country: string;
  rate: TaxRateRec;
  taxabilityReason: "standard_rated" | "zero_rated" | "not_collecting";
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

/** The emulator's default tax registrations: standard VAT rates of a few countries, percent. */
export const DEFAULT_TAX_RATES: Readonly<Record<string, string>> = {
  DE: "19",
  FR: "20",
  GB: "20",
  IE: "23",
  NL: "21",
};

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
  /**
   * Emulator simplification of Stripe Tax: a flat percentage per country (ISO 3166-1 alpha-2) where
   * the account "is registered"; other countries are not taxed (`not_collecting`).
   */
  taxRates = new Map<string, string>(Object.entries(DEFAULT_TAX_RATES));
  /** The tax rate objects applied so far, by id. */
  taxRateObjects = new Map<string, TaxRateRec>();
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
