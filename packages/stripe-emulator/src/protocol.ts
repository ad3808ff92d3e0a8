/**
 * Shapes of the `/_emulator/*` control API, shared by the server and client.ts.
 * Type-only plus constants: no Node imports, so it also loads inside workerd.
 */
import type { CheckoutSessionObject, InvoiceObject, SubscriptionObject } from "./wire";

export const API_VERSION = "2026-10-28.endive";

export interface CompleteCheckoutResult {
  checkout_session: CheckoutSessionObject;
  subscription: SubscriptionObject;
  invoice: InvoiceObject;
  /** Ids of the events emitted, in order. */
  events: string[];
}

/** What the customer enters on the Checkout page (all optional). */
export interface CheckoutDetailsRequest {
  /** The billing address; `country` is a two-letter code. Without it, a session that collects an address gets country US. */
  address?: {
    country: string;
    line1?: string;
    line2?: string;
    city?: string;
    postal_code?: string;
    state?: string;
  };
  name?: string;
  /** With a tax ID: the business it belongs to (saved as the customer's name). */
  business_name?: string;
  /** Only when the session has `tax_id_collection[enabled]=true`. */
  tax_id?: { type: string; value: string };
}

/** The flat tax rates (percent) per country the emulator's Stripe Tax applies. */
export interface TaxRatesView {
  rates: Record<string, number>;
}

export interface ClosePeriodRequest {
  /** Close the period at this time instead of at its scheduled end (start < at <= end). */
  at?: number;
}

export interface ClosePeriodResult {
  invoice: InvoiceObject;
  subscription: SubscriptionObject;
  events: string[];
}

export interface PayInvoiceResult {
  invoice: InvoiceObject;
  /** Null for a one-off invoice. */
  subscription: SubscriptionObject | null;
  events: string[];
}

export interface FaultRequest {
  /** 429, 500 or 503; 0 or omitted = only delay. */
  status?: number;
  count?: number;
  delay_ms?: number;
  path_prefix?: string;
}

export interface FaultView {
  status: number;
  remaining: number;
  delay_ms: number;
  path_prefix: string;
}

/**
 * Set or advance the emulator clock; `frozen: true` stops it there, `false` lets it run again.
 * Moving it forward runs the work that falls due on the way (renewals, finalizations, ...) unless
 * `process: false`.
 */
export type ClockRequest = ({ advance_seconds: number } | { now: number }) & {
  frozen?: boolean;
  process?: boolean;
};

export interface ClockView {
  now: number;
  offset_seconds: number;
  frozen: boolean;
}

/** The clock after a move, with the ids of the events sent by the work that fell due. */
export interface ClockMoveResult extends ClockView {
  events: string[];
}

/** The account's invoice settings that Stripe keeps in the Dashboard. */
export interface InvoiceSettingsView {
  /** Seconds between an invoice's creation and its automatic finalization (0 to 259200, default 3600). */
  finalization_grace_seconds: number;
}

export interface CallView {
  method: string;
  path: string;
  query: string;
  status: number;
  idempotency_key: string | null;
  replayed: boolean;
  /** Real time, unix milliseconds. */
  time: number;
  request_id: string;
}

export interface StripeEventView {
  id: string;
  object: "event";
  api_version: string;
  created: number;
  type: string;
  data: { object: Record<string, unknown>; previous_attributes?: Record<string, unknown> };
  livemode: false;
  pending_webhooks: number;
  request: { id: string | null; idempotency_key: string | null };
}

export interface DrainedDelivery {
  event_id: string;
  type: string;
  /** The exact raw body to POST to the webhook endpoint. */
  payload: string;
  /** The `Stripe-Signature` header value, signed at drain time. */
  signature: string;
}

export interface WebhookDeliveryView {
  event_id: string;
  type: string;
  status: "none" | "pending" | "delivered" | "failed" | "drained";
  attempts: number;
  http_status: number | null;
  error: string | null;
}

export interface WebhookConfigRequest {
  url: string | null;
  secret?: string;
}

export interface MeterUsage {
  value: number;
  events: number;
  duplicates_ignored: number;
}

/** One accepted meter event, as `GET /_emulator/meters/{event_name}/events` lists it. */
export interface MeterEventView {
  identifier: string;
  customer: string;
  value: number;
  timestamp: number;
  received_at_ms: number;
  counted: boolean;
}

export interface MeterUsageByCustomer {
  event_name: string;
  customers: Record<string, MeterUsage>;
}
