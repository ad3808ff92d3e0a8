/** Renders internal records (state.ts) into Stripe's wire shapes (wire.ts). */
import { formatMoney } from "./pricing";
import type {
  AddressRec,
  AppliedTax,
  BillingModeRec,
  CheckoutLineRec,
  CheckoutSessionRec,
  CustomerRec,
  EmulatorState,
  InvoiceItemRec,
  InvoiceLineRec,
  InvoiceRec,
  ItemRec,
  MeterRec,
  PortalConfigurationRec,
  PortalSessionRec,
  PriceRec,
  ProductRec,
  ScheduleRec,
  SubscriptionRec,
  TestClockRec,
  Tier,
} from "./state";
import { type InvoiceTotals, invoiceTax, invoiceTotals, lineTax } from "./tax";
import type {
  BillingModeObject,
  CheckoutLineItemObject,
  CheckoutSessionObject,
  CustomerObject,
  InvoiceItemObject,
  InvoiceLineObject,
  InvoiceObject,
  ListObject,
  MeterObject,
  PortalConfigurationObject,
  PortalSessionObject,
  PriceObject,
  PricingObject,
  ProductObject,
  SchedulePhaseItemObject,
  SubscriptionItemObject,
  SubscriptionObject,
  SubscriptionScheduleObject,
  TestClockObject,
  TierObject,
} from "./wire";

export function listOf<T>(data: T[], url: string): ListObject<T> {
  return { object: "list", data, has_more: false, total_count: data.length, url };
}

export function customerView(c: CustomerRec): CustomerObject {
  return {
    id: c.id,
    object: "customer",
    address: c.address && { ...c.address },
    balance: c.balance,
    created: c.created,
    currency: null,
    default_source: null,
    delinquent: false,
    description: c.description,
    email: c.email,
    invoice_prefix: c.invoicePrefix,
    invoice_settings: {
      custom_fields: null,
      default_payment_method: null,
      footer: null,
      rendering_options: null,
    },
    livemode: false,
    metadata: { ...c.metadata },
    name: c.name,
    next_invoice_sequence: c.nextInvoiceSequence,
    phone: c.phone,
    preferred_locales: [],
    shipping: null,
    tax_exempt: "none",
    test_clock: c.testClock,
  };
}

export function productView(p: ProductRec): ProductObject {
  return {
    id: p.id,
    object: "product",
    active: p.active,
    created: p.created,
    default_price: null,
    description: p.description,
    images: [],
    livemode: false,
    marketing_features: [],
    metadata: { ...p.metadata },
    name: p.name,
    package_dimensions: null,
    shippable: null,
    statement_descriptor: null,
    tax_code: null,
    type: "service",
    unit_label: null,
    updated: p.updated,
    url: null,
  };
}

function tierView(t: Tier): TierObject {
  return {
    flat_amount: t.flatAmount,
    flat_amount_decimal: t.flatAmount === null ? null : String(t.flatAmount),
    unit_amount: t.unitAmount,
    unit_amount_decimal: t.unitAmount === null ? null : String(t.unitAmount),
    up_to: t.upTo,
  };
}

/** `tiers` is includable: always rendered here, stripped by expand.ts unless expanded. */
export function priceView(p: PriceRec): PriceObject {
  const view: PriceObject = {
    id: p.id,
    object: "price",
    active: p.active,
    billing_scheme: p.billingScheme,
    created: p.created,
    currency: p.currency,
    custom_unit_amount: null,
    livemode: false,
    lookup_key: p.lookupKey,
    metadata: { ...p.metadata },
    nickname: p.nickname,
    product: p.product,
    recurring: p.recurring && {
      interval: p.recurring.interval,
      interval_count: p.recurring.intervalCount,
      meter: p.recurring.meter,
      trial_period_days: null,
      usage_type: p.recurring.usageType,
    },
    tax_behavior: "unspecified",
    tiers_mode: p.tiersMode,
    transform_quantity: null,
    type: p.recurring ? "recurring" : "one_time",
    unit_amount: p.unitAmount,
    unit_amount_decimal: p.unitAmount === null ? null : String(p.unitAmount),
  };
  if (p.tiers) view.tiers = p.tiers.map(tierView);
  return view;
}

export function meterView(m: MeterRec): MeterObject {
  return {
    id: m.id,
    object: "billing.meter",
    created: m.created,
    customer_mapping: { event_payload_key: m.customerKey, type: "by_id" },
    default_aggregation: { formula: m.formula },
    display_name: m.displayName,
    event_name: m.eventName,
    event_time_window: m.eventTimeWindow,
    livemode: false,
    status: m.status,
    status_transitions: { deactivated_at: m.deactivatedAt },
    updated: m.updated,
    value_settings: { event_payload_key: m.valueKey },
  };
}

function priceOf(state: EmulatorState, id: string): PriceRec {
  const price = state.prices.get(id);
  if (!price) throw new Error(`emulator invariant: unknown price ${id}`);
  return price;
}

export function itemView(state: EmulatorState, sub: SubscriptionRec, i: ItemRec): SubscriptionItemObject {
  const view: SubscriptionItemObject = {
    id: i.id,
    object: "subscription_item",
    billing_thresholds: null,
    created: i.created,
    current_period_end: i.periodEnd,
    current_period_start: i.periodStart,
    discounts: [],
    metadata: { ...i.metadata },
    price: priceView(priceOf(state, i.price)),
    subscription: sub.id,
    tax_rates: [],
  };
  if (i.quantity !== null) view.quantity = i.quantity;
  return view;
}

/** Stripe shows `{type, flexible, updated_at}`; `flexible` is null in classic mode. */
export function billingModeView(mode: BillingModeRec, adoptedAt: number): BillingModeObject {
  const flexible = mode.prorationDiscounts ? { proration_discounts: mode.prorationDiscounts } : {};
  return { type: mode.type, flexible: mode.type === "flexible" ? flexible : null, updated_at: adoptedAt };
}

export function subscriptionView(state: EmulatorState, s: SubscriptionRec): SubscriptionObject {
  const periodEnd = s.items[0]?.periodEnd ?? null;
  return {
    id: s.id,
    object: "subscription",
    application: null,
    automatic_tax: {
      disabled_reason: null,
      enabled: s.automaticTax,
      liability: s.automaticTax ? { type: "self" } : null,
    },
    billing_cycle_anchor: s.billingCycleAnchor,
    billing_mode: billingModeView(s.billingMode, s.created),
    cancel_at: s.cancelAt ?? (s.cancelAtPeriodEnd ? periodEnd : null),
    cancel_at_period_end: s.cancelAtPeriodEnd,
    canceled_at: s.canceledAt,
    cancellation_details: {
      comment: s.cancellation.comment,
      feedback: s.cancellation.feedback,
      feedback_option: null,
      reason: s.cancellation.reason,
    },
    collection_method: "charge_automatically",
    created: s.created,
    currency: s.currency,
    customer: s.customer,
    days_until_due: null,
    default_payment_method: null,
    description: null,
    discounts: [],
    ended_at: s.endedAt,
    items: listOf(
      s.items.map((i) => itemView(state, s, i)),
      `/v1/subscription_items?subscription=${s.id}`,
    ),
    latest_invoice: s.latestInvoice,
    livemode: false,
    metadata: { ...s.metadata },
    pending_update: null,
    schedule: s.schedule,
    start_date: s.startDate,
    status: s.status,
    test_clock: state.customers.get(s.customer)?.testClock ?? null,
    trial_end: null,
    trial_start: null,
  };
}

function pricingView(
  price: string | null,
  product: string | null,
  unitAmountDecimal: string | null,
): PricingObject {
  const view: PricingObject = { type: "price_details", unit_amount_decimal: unitAmountDecimal };
  if (price && product) view.price_details = { price, product };
  return view;
}

/** One tax amount, as invoices (`total_taxes`) and their lines (`taxes`) show it. */
function taxView(tax: AppliedTax, amount: number, taxableAmount: number) {
  return {
    amount,
    tax_behavior: "exclusive" as const,
    tax_rate_details: { tax_rate: tax.rate.id },
    taxability_reason: tax.taxabilityReason,
    taxable_amount: tax.taxabilityReason === "not_collecting" ? 0 : taxableAmount,
    type: "tax_rate_details" as const,
  };
}

function lineView(inv: InvoiceRec, l: InvoiceLineRec, tax: AppliedTax | null): InvoiceLineObject {
  const parent: InvoiceLineObject["parent"] =
    l.invoiceItem !== null
      ? {
          type: "invoice_item_details",
          invoice_item_details: {
            invoice_item: l.invoiceItem,
            proration: l.proration,
            proration_details: { credited_items: null },
            subscription: l.subscription,
          },
          subscription_item_details: null,
        }
      : {
          type: "subscription_item_details",
          invoice_item_details: null,
          subscription_item_details: {
            invoice_item: null,
            proration: l.proration,
            proration_details: { credited_items: null },
            subscription: l.subscription,
            subscription_item: l.subscriptionItem ?? "",
          },
        };
  return {
    id: l.id,
    object: "line_item",
    amount: l.amount,
    currency: inv.currency,
    description: l.description,
    discount_amounts: [],
    discountable: l.invoiceItem === null || !l.proration,
    discounts: [],
    invoice: inv.id,
    livemode: false,
    metadata: {},
    parent,
    period: { start: l.periodStart, end: l.periodEnd },
    pretax_credit_amounts: [],
    pricing: pricingView(l.price, l.product, l.unitAmountDecimal),
    quantity: l.quantity,
    quantity_decimal: String(l.quantity),
    subscription: l.subscription,
    subtotal: l.amount,
    taxes: tax ? [taxView(tax, lineTax(l, tax), l.amount)] : [],
  };
}

/** `automatic_tax` of an invoice: computed by Stripe Tax, or turned off at finalization for want of a location. */
function invoiceAutomaticTax(inv: InvoiceRec, tax: AppliedTax | null): InvoiceObject["automatic_tax"] {
  if (!inv.automaticTax) {
    return { disabled_reason: null, enabled: false, liability: null, provider: null, status: null };
  }
  if (inv.taxDisabledReason) {
    return {
      disabled_reason: inv.taxDisabledReason,
      enabled: false,
      liability: { type: "self" },
      provider: null,
      status: "requires_location_inputs",
    };
  }
  return {
    disabled_reason: null,
    enabled: true,
    liability: { type: "self" },
    provider: "stripe",
    status: tax ? "complete" : "requires_location_inputs",
  };
}

export function invoiceView(state: EmulatorState, inv: InvoiceRec): InvoiceObject {
  const tax = invoiceTax(state, inv);
  const totals: InvoiceTotals = invoiceTotals(state, inv);
  const total = totals.total;
  const due = inv.status === "draft" ? Math.max(0, total) : Math.max(0, total + inv.startingBalance);
  const paid = inv.status === "paid" ? due : 0;
  const customer = state.customers.get(inv.customer);
  const sub = inv.subscription ? state.subscriptions.get(inv.subscription) : undefined;
  return {
    id: inv.id,
    object: "invoice",
    account_country: "US",
    account_name: "AI Gate (Stripe emulator)",
    amount_due: due,
    amount_overpaid: 0,
    amount_paid: paid,
    amount_remaining: inv.status === "void" ? 0 : due - paid,
    amount_shipping: 0,
    attempt_count: inv.attemptCount,
    attempted: inv.attemptCount > 0,
    auto_advance: inv.autoAdvance && (inv.status === "draft" || inv.status === "open"),
    automatic_tax: invoiceAutomaticTax(inv, tax),
    automatically_finalizes_at: inv.status === "draft" ? inv.automaticallyFinalizesAt : null,
    billing_reason: inv.billingReason,
    collection_method: inv.collectionMethod,
    created: inv.created,
    currency: inv.currency,
    customer: inv.customer,
    customer_email: customer?.email ?? null,
    customer_name: customer?.name ?? null,
    description: inv.description,
    due_date: inv.dueDate,
    effective_at: inv.finalizedAt,
    ending_balance: inv.endingBalance,
    hosted_invoice_url: null,
    invoice_pdf: null,
    lines: listOf(
      inv.lines.map((l) => lineView(inv, l, tax)),
      `/v1/invoices/${inv.id}/lines`,
    ),
    livemode: false,
    metadata: { ...inv.metadata },
    next_payment_attempt: inv.nextPaymentAttempt,
    number: inv.number,
    parent: inv.subscription
      ? {
          type: "subscription_details",
          quote_details: null,
          subscription_details: {
            subscription: inv.subscription,
            metadata: sub ? { ...sub.metadata } : null,
          },
        }
      : null,
    period_end: inv.periodEnd,
    period_start: inv.periodStart,
    starting_balance: inv.status === "draft" ? (customer?.balance ?? 0) : inv.startingBalance,
    status: inv.status,
    status_transitions: {
      finalized_at: inv.finalizedAt,
      marked_uncollectible_at: null,
      paid_at: inv.paidAt,
      voided_at: null,
    },
    subtotal: totals.subtotal,
    subtotal_excluding_tax: totals.subtotal,
    test_clock: customer?.testClock ?? null,
    total,
    total_excluding_tax: totals.subtotal,
    total_taxes: tax ? [taxView(tax, totals.tax, totals.subtotal)] : [],
    webhooks_delivered_at: inv.created,
  };
}

export function scheduleView(state: EmulatorState, sc: ScheduleRec): SubscriptionScheduleObject {
  const current = sc.status === "active" ? sc.phases[sc.current] : undefined;
  return {
    id: sc.id,
    object: "subscription_schedule",
    application: null,
    billing_mode: billingModeView(sc.billingMode, sc.created),
    canceled_at: sc.canceledAt,
    completed_at: sc.completedAt,
    created: sc.created,
    current_phase: current ? { start_date: current.start, end_date: current.end } : null,
    customer: sc.customer,
    default_settings: {
      application_fee_percent: null,
      billing_cycle_anchor: "automatic",
      billing_thresholds: null,
      collection_method: "charge_automatically",
      default_payment_method: null,
      description: null,
      invoice_settings: {
        account_tax_ids: null,
        custom_fields: null,
        days_until_due: null,
        description: null,
        footer: null,
        issuer: { type: "self" },
      },
      on_behalf_of: null,
      transfer_data: null,
    },
    end_behavior: sc.endBehavior,
    livemode: false,
    metadata: { ...sc.metadata },
    phases: sc.phases.map((ph) => ({
      add_invoice_items: [],
      application_fee_percent: null,
      billing_cycle_anchor: null,
      billing_thresholds: null,
      collection_method: null,
      currency: ph.items[0] ? (state.prices.get(ph.items[0].price)?.currency ?? "usd") : "usd",
      default_payment_method: null,
      description: null,
      discounts: [],
      end_date: ph.end,
      invoice_settings: null,
      items: ph.items.map((it) => {
        const item: SchedulePhaseItemObject = {
          billing_thresholds: null,
          discounts: [],
          metadata: { ...it.metadata },
          plan: it.price,
          price: it.price,
          tax_rates: [],
        };
        if (it.quantity !== null) item.quantity = it.quantity;
        return item;
      }),
      metadata: { ...ph.metadata },
      on_behalf_of: null,
      proration_behavior: ph.prorationBehavior,
      start_date: ph.start,
      transfer_data: null,
      trial_end: null,
    })),
    released_at: sc.releasedAt,
    released_subscription: sc.releasedSubscription,
    status: sc.status,
    subscription: sc.subscription,
    test_clock: state.customers.get(sc.customer)?.testClock ?? null,
  };
}

export function invoiceItemView(state: EmulatorState, ii: InvoiceItemRec): InvoiceItemObject {
  return {
    id: ii.id,
    object: "invoiceitem",
    amount: ii.amount,
    currency: ii.currency,
    customer: ii.customer,
    date: ii.created,
    description: ii.description,
    discountable: ii.discountable,
    discounts: [],
    invoice: ii.invoice,
    livemode: false,
    metadata: { ...ii.metadata },
    parent: ii.subscription
      ? {
          type: "subscription_details",
          subscription_details: {
            subscription: ii.subscription,
            ...(ii.subscriptionItem ? { subscription_item: ii.subscriptionItem } : {}),
          },
        }
      : null,
    period: { start: ii.periodStart, end: ii.periodEnd },
    pricing: pricingView(ii.price, ii.product, ii.unitAmountDecimal),
    proration: ii.proration,
    quantity: ii.quantity,
    quantity_decimal: String(ii.quantity),
    tax_rates: [],
    test_clock: state.customers.get(ii.customer)?.testClock ?? null,
  };
}

export function checkoutLineAmount(state: EmulatorState, line: CheckoutLineRec): number {
  const price = priceOf(state, line.price);
  return line.quantity === null ? 0 : (price.unitAmount ?? 0) * line.quantity;
}

export function checkoutLineView(state: EmulatorState, line: CheckoutLineRec): CheckoutLineItemObject {
  const price = priceOf(state, line.price);
  const product = state.products.get(price.product);
  const amount = checkoutLineAmount(state, line);
  return {
    id: line.id,
    object: "item",
    adjustable_quantity: null,
    amount_discount: 0,
    amount_subtotal: amount,
    amount_tax: 0,
    amount_total: amount,
    currency: price.currency,
    description: product?.name ?? null,
    metadata: {},
    price: priceView(price),
    quantity: line.quantity,
  };
}

/** A human description of a price, e.g. "$29.00 / month" or "$0.10 per unit / month (metered)". */
export function describePrice(p: PriceRec): string {
  const every = p.recurring ? ` / ${p.recurring.interval}` : "";
  const metered = p.recurring?.usageType === "metered" ? " (metered)" : "";
  if (p.billingScheme === "tiered") {
    const tiers = (p.tiers ?? [])
      .map(
        (t) =>
          `${t.upTo === null ? "above" : `up to ${t.upTo}`}: ${formatMoney(t.unitAmount ?? 0, p.currency)}`,
      )
      .join(", ");
    return `tiered per unit (${tiers})${every}${metered}`;
  }
  const per = p.recurring?.usageType === "metered" ? " per unit" : "";
  return `${formatMoney(p.unitAmount ?? 0, p.currency)}${per}${every}${metered}`;
}

export function checkoutSessionView(
  state: EmulatorState,
  s: CheckoutSessionRec,
  baseUrl: string,
): CheckoutSessionObject {
  const amount = s.lines.reduce((sum, l) => sum + checkoutLineAmount(state, l), 0);
  const firstPrice = s.lines[0] ? state.prices.get(s.lines[0].price) : undefined;
  const expired = s.status === "open" && state.now() >= s.expiresAt;
  const status = expired ? "expired" : s.status;
  const customer = s.customer ? state.customers.get(s.customer) : undefined;
  // Once complete, the tax is what the first invoice charged (computed from the address entered).
  const invoice = s.invoice ? state.invoices.get(s.invoice) : undefined;
  const tax = invoice ? invoiceTotals(state, invoice).tax : 0;
  const address = (a: AddressRec | null) => a && { ...a };
  return {
    id: s.id,
    object: "checkout.session",
    amount_subtotal: amount,
    amount_total: amount + tax,
    automatic_tax: {
      enabled: s.automaticTax,
      liability: s.automaticTax ? { type: "self" } : null,
      provider: s.automaticTax ? "stripe" : null,
      status: s.automaticTax ? (s.status === "complete" ? "complete" : "requires_location_inputs") : null,
    },
    billing_address_collection: s.billingAddressCollection,
    cancel_url: s.cancelUrl,
    client_reference_id: s.clientReferenceId,
    created: s.created,
    currency: firstPrice?.currency ?? null,
    customer: s.customer,
    customer_details:
      s.status === "complete"
        ? {
            address: address(s.details?.address ?? null),
            business_name: s.details?.businessName ?? null,
            email: customer?.email ?? s.customerEmail,
            individual_name: null,
            name: s.details?.name ?? customer?.name ?? null,
            phone: null,
            tax_exempt: "none",
            tax_ids: (s.details?.taxIds ?? []).map((t) => ({ type: t.type, value: t.value })),
          }
        : null,
    customer_email: s.customerEmail,
    expires_at: s.expiresAt,
    invoice: s.invoice,
    line_items: listOf(
      s.lines.map((l) => checkoutLineView(state, l)),
      `/v1/checkout/sessions/${s.id}/line_items`,
    ),
    livemode: false,
    metadata: { ...s.metadata },
    mode: s.mode,
    payment_status: s.status === "complete" ? (amount + tax > 0 ? "paid" : "no_payment_required") : "unpaid",
    status,
    subscription: s.subscription,
    success_url: s.successUrl,
    tax_id_collection: { ...s.taxIdCollection },
    total_details: { amount_discount: 0, amount_shipping: 0, amount_tax: tax },
    ui_mode: "hosted_page",
    url: status === "open" ? `${baseUrl}/checkout/${s.id}` : null,
  };
}

export function portalConfigurationView(c: PortalConfigurationRec): PortalConfigurationObject {
  return {
    id: c.id,
    object: "billing_portal.configuration",
    active: c.active,
    application: null,
    business_profile: {
      headline: c.headline,
      privacy_policy_url: c.privacyPolicyUrl,
      terms_of_service_url: c.termsOfServiceUrl,
    },
    created: c.created,
    default_return_url: c.defaultReturnUrl,
    features: {
      customer_update: {
        allowed_updates: [...c.customerUpdate.allowedUpdates],
        enabled: c.customerUpdate.enabled,
      },
      invoice_history: { enabled: c.invoiceHistory.enabled },
      payment_method_update: { enabled: c.paymentMethodUpdate.enabled, payment_method_configuration: null },
      subscription_cancel: {
        cancellation_reason: {
          enabled: c.subscriptionCancel.cancellationReason.enabled,
          feedback_options: null,
          options: [...c.subscriptionCancel.cancellationReason.options],
        },
        enabled: c.subscriptionCancel.enabled,
        mode: c.subscriptionCancel.mode,
        proration_behavior: c.subscriptionCancel.prorationBehavior,
      },
      subscription_pause: { duration: { interval_options: [], type: "indefinite" }, enabled: false },
      subscription_update: {
        billing_cycle_anchor: null,
        default_allowed_updates: [...c.subscriptionUpdate.defaultAllowedUpdates],
        enabled: c.subscriptionUpdate.enabled,
        products: c.subscriptionUpdate.products.map((p) => ({
          adjustable_quantity: { enabled: false, maximum: null, minimum: 1 },
          prices: [...p.prices],
          product: p.product,
        })),
        proration_behavior: c.subscriptionUpdate.prorationBehavior,
        schedule_at_period_end: { conditions: [] },
        trial_update_behavior: "end_trial",
      },
    },
    is_default: c.isDefault,
    livemode: false,
    login_page: { enabled: false, url: null },
    metadata: { ...c.metadata },
    name: c.name,
    updated: c.updated,
  };
}

export function portalSessionView(p: PortalSessionRec, baseUrl: string): PortalSessionObject {
  return {
    id: p.id,
    object: "billing_portal.session",
    configuration: p.configuration,
    created: p.created,
    customer: p.customer,
    flow: null,
    livemode: false,
    locale: null,
    on_behalf_of: null,
    return_url: p.returnUrl,
    url: `${baseUrl}/portal/${p.id}`,
  };
}

export function testClockView(c: TestClockRec): TestClockObject {
  return {
    id: c.id,
    object: "test_helpers.test_clock",
    created: c.created,
    deletes_after: c.deletesAfter,
    frozen_time: c.frozenTime,
    livemode: false,
    name: c.name,
    status: c.status,
    status_details: c.target === null ? {} : { advancing: { target_frozen_time: c.target } },
  };
}
