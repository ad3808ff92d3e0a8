/**
 * Wire shapes. Each is a `Pick` of the official SDK type for API version 2026-10-28.endive, so the
 * compiler checks field names and types against the `stripe` package; fields the emulator does not
 * model are left out rather than invented. Decimal fields are strings on the wire.
 * Type-only (no Node imports), so client.ts can use it inside workerd.
 */
import type Stripe from "stripe";

export interface ListObject<T> {
  object: "list";
  data: T[];
  has_more: boolean;
  url: string;
  total_count?: number;
}

export type CustomerObject = Pick<
  Stripe.Customer,
  | "id"
  | "object"
  | "address"
  | "balance"
  | "created"
  | "currency"
  | "default_source"
  | "delinquent"
  | "description"
  | "email"
  | "invoice_prefix"
  | "invoice_settings"
  | "livemode"
  | "metadata"
  | "name"
  | "next_invoice_sequence"
  | "phone"
  | "preferred_locales"
  | "shipping"
  | "tax_exempt"
  | "test_clock"
>;

export type ProductObject = Pick<
  Stripe.Product,
  | "id"
  | "object"
  | "active"
  | "created"
  | "default_price"
  | "description"
  | "images"
  | "livemode"
  | "marketing_features"
  | "metadata"
  | "name"
  | "package_dimensions"
  | "shippable"
  | "statement_descriptor"
  | "tax_code"
  | "type"
  | "unit_label"
  | "updated"
  | "url"
>;

export type TierObject = Omit<Stripe.Price.Tier, "flat_amount_decimal" | "unit_amount_decimal"> & {
  flat_amount_decimal: string | null;
  unit_amount_decimal: string | null;
};

export type PriceObject = Pick<
  Stripe.Price,
  | "id"
  | "object"
  | "active"
  | "billing_scheme"
  | "created"
  | "currency"
  | "custom_unit_amount"
  | "livemode"
  | "lookup_key"
  | "metadata"
  | "nickname"
  | "recurring"
  | "tax_behavior"
  | "tiers_mode"
  | "transform_quantity"
  | "type"
  | "unit_amount"
> & { product: string; unit_amount_decimal: string | null; tiers?: TierObject[] };

export type SubscriptionItemObject = Pick<
  Stripe.SubscriptionItem,
  | "id"
  | "object"
  | "billing_thresholds"
  | "created"
  | "current_period_end"
  | "current_period_start"
  | "discounts"
  | "metadata"
  | "quantity"
  | "subscription"
  | "tax_rates"
> & { price: PriceObject };

export type BillingModeObject = Stripe.Subscription.BillingMode;

export type SubscriptionObject = Pick<
  Stripe.Subscription,
  | "id"
  | "object"
  | "application"
  | "automatic_tax"
  | "billing_cycle_anchor"
  | "billing_mode"
  | "cancel_at"
  | "cancel_at_period_end"
  | "canceled_at"
  | "cancellation_details"
  | "collection_method"
  | "created"
  | "currency"
  | "days_until_due"
  | "default_payment_method"
  | "description"
  | "discounts"
  | "ended_at"
  | "livemode"
  | "metadata"
  | "pending_update"
  | "schedule"
  | "start_date"
  | "status"
  | "test_clock"
  | "trial_end"
  | "trial_start"
> & { customer: string; latest_invoice: string | null; items: ListObject<SubscriptionItemObject> };

/** Basil+ `pricing`: `price_details` is absent for amount-only invoice items. Decimals are strings. */
export interface PricingObject {
  type: "price_details";
  price_details?: { price: string; product: string };
  unit_amount_decimal: string | null;
}

export type InvoiceLineObject = Pick<
  Stripe.InvoiceLineItem,
  | "id"
  | "object"
  | "amount"
  | "currency"
  | "description"
  | "discount_amounts"
  | "discountable"
  | "discounts"
  | "invoice"
  | "livemode"
  | "metadata"
  | "parent"
  | "period"
  | "pretax_credit_amounts"
  | "quantity"
  | "subtotal"
  | "taxes"
> & {
  subscription: string | null;
  quantity_decimal: string;
  pricing: PricingObject;
};

export type InvoiceObject = Pick<
  Stripe.Invoice,
  | "id"
  | "object"
  | "account_country"
  | "account_name"
  | "amount_due"
  | "amount_overpaid"
  | "amount_paid"
  | "amount_remaining"
  | "amount_shipping"
  | "attempt_count"
  | "attempted"
  | "auto_advance"
  | "automatic_tax"
  | "automatically_finalizes_at"
  | "billing_reason"
  | "collection_method"
  | "created"
  | "currency"
  | "customer_email"
  | "customer_name"
  | "description"
  | "due_date"
  | "effective_at"
  | "ending_balance"
  | "hosted_invoice_url"
  | "invoice_pdf"
  | "livemode"
  | "metadata"
  | "next_payment_attempt"
  | "number"
  | "period_end"
  | "period_start"
  | "starting_balance"
  | "status"
  | "status_transitions"
  | "subtotal"
  | "subtotal_excluding_tax"
  | "total"
  | "total_excluding_tax"
  | "total_taxes"
  | "webhooks_delivered_at"
> & {
  customer: string;
  lines: ListObject<InvoiceLineObject>;
  parent: {
    type: "subscription_details";
    quote_details: null;
    subscription_details: { subscription: string; metadata: Stripe.Metadata | null };
  } | null;
  test_clock: string | null;
};

export type InvoiceItemObject = Pick<
  Stripe.InvoiceItem,
  | "id"
  | "object"
  | "amount"
  | "currency"
  | "date"
  | "description"
  | "discountable"
  | "discounts"
  | "livemode"
  | "metadata"
  | "period"
  | "proration"
  | "quantity"
  | "tax_rates"
> & {
  customer: string;
  invoice: string | null;
  parent: {
    type: "subscription_details";
    subscription_details: { subscription: string; subscription_item?: string };
  } | null;
  pricing: PricingObject;
  quantity_decimal: string;
  test_clock: string | null;
};

export type SchedulePhaseItemObject = Pick<
  Stripe.SubscriptionSchedule.Phase.Item,
  "billing_thresholds" | "discounts" | "metadata" | "quantity" | "tax_rates"
> & { plan: string; price: string };

export type SchedulePhaseObject = Pick<
  Stripe.SubscriptionSchedule.Phase,
  | "add_invoice_items"
  | "application_fee_percent"
  | "billing_cycle_anchor"
  | "billing_thresholds"
  | "collection_method"
  | "currency"
  | "default_payment_method"
  | "description"
  | "discounts"
  | "end_date"
  | "invoice_settings"
  | "metadata"
  | "on_behalf_of"
  | "proration_behavior"
  | "start_date"
  | "transfer_data"
  | "trial_end"
> & { items: SchedulePhaseItemObject[] };

export type SubscriptionScheduleObject = Pick<
  Stripe.SubscriptionSchedule,
  | "id"
  | "object"
  | "application"
  | "billing_mode"
  | "canceled_at"
  | "completed_at"
  | "created"
  | "current_phase"
  | "default_settings"
  | "end_behavior"
  | "livemode"
  | "metadata"
  | "released_at"
  | "released_subscription"
  | "status"
> & {
  customer: string;
  phases: SchedulePhaseObject[];
  subscription: string | null;
  test_clock: string | null;
};

export interface DeletedObject<T extends string> {
  id: string;
  object: T;
  deleted: true;
}

export type CheckoutLineItemObject = Pick<
  Stripe.LineItem,
  | "id"
  | "object"
  | "adjustable_quantity"
  | "amount_discount"
  | "amount_subtotal"
  | "amount_tax"
  | "amount_total"
  | "currency"
  | "description"
  | "metadata"
  | "quantity"
> & { price: PriceObject };

export type CheckoutSessionObject = Pick<
  Stripe.Checkout.Session,
  | "id"
  | "object"
  | "amount_subtotal"
  | "amount_total"
  | "automatic_tax"
  | "billing_address_collection"
  | "cancel_url"
  | "client_reference_id"
  | "created"
  | "currency"
  | "customer_details"
  | "customer_email"
  | "expires_at"
  | "livemode"
  | "metadata"
  | "mode"
  | "payment_status"
  | "status"
  | "success_url"
  | "tax_id_collection"
  | "total_details"
  | "ui_mode"
  | "url"
> & {
  customer: string | null;
  invoice: string | null;
  subscription: string | null;
  line_items?: ListObject<CheckoutLineItemObject>;
};

export type PortalSessionObject = Pick<
  Stripe.BillingPortal.Session,
  | "id"
  | "object"
  | "configuration"
  | "created"
  | "customer"
  | "flow"
  | "livemode"
  | "locale"
  | "on_behalf_of"
  | "return_url"
  | "url"
>;

export type MeterObject = Stripe.Billing.Meter;

export type PortalConfigurationObject = Pick<
  Stripe.BillingPortal.Configuration,
  | "id"
  | "object"
  | "active"
  | "application"
  | "business_profile"
  | "created"
  | "default_return_url"
  | "features"
  | "is_default"
  | "livemode"
  | "login_page"
  | "metadata"
  | "name"
  | "updated"
>;

export type TestClockObject = Pick<
  Stripe.TestHelpers.TestClock,
  | "id"
  | "object"
  | "created"
  | "deletes_after"
  | "frozen_time"
  | "livemode"
  | "name"
  | "status"
  | "status_details"
>;
