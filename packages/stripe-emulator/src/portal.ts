/**
 * Customer portal configurations (`/v1/billing_portal/configurations`) and what the hosted portal
 * lets a customer do with them: cancel (at the period end or at once) and switch a licensed plan.
 * Source: API reference `BillingPortal.Configuration`, https://docs.stripe.com/customer-management,
 * https://docs.stripe.com/billing/subscriptions/billing-mode/compare.
 */
import type { Ctx } from "./context";
import { invalidRequest, missingParam, missingReference } from "./errors";
import { type Emission, isMetered, priceOf } from "./invoicing";
import { Params } from "./params";
import { newId, type PortalConfigurationRec, type ProrationBehavior, type SubscriptionRec } from "./state";
import { cancelNow } from "./subscriptions";
import { applyPlan, planFromParams } from "./updates";

const CANCEL_REASONS = [
  "customer_service",
  "low_quality",
  "missing_features",
  "other",
  "switched_service",
  "too_complex",
  "too_expensive",
  "unused",
] as const;
const CUSTOMER_UPDATES = ["address", "email", "name", "phone", "shipping", "tax_id"] as const;
const ALLOWED_UPDATES = ["price", "promotion_code", "quantity"] as const;

function enums<T extends string>(p: Params, key: string, allowed: readonly T[]): T[] {
  return p.stringList(key).map((v, i) => {
    const match = allowed.find((a) => a === v);
    if (!match)
      throw invalidRequest(
        `Invalid ${p.name(key)}[${i}]: must be one of ${allowed.join(", ")}`,
        undefined,
        `${p.name(key)}[${i}]`,
      );
    return match;
  });
}

function disabled(now: number, id: string): PortalConfigurationRec {
  return {
    id,
    created: now,
    updated: now,
    active: true,
    isDefault: false,
    name: null,
    defaultReturnUrl: null,
    headline: null,
    privacyPolicyUrl: null,
    termsOfServiceUrl: null,
    metadata: {},
    customerUpdate: { enabled: false, allowedUpdates: [] },
    invoiceHistory: { enabled: false },
    paymentMethodUpdate: { enabled: false },
    subscriptionCancel: {
      enabled: false,
      mode: "at_period_end",
      prorationBehavior: "none",
      cancellationReason: { enabled: false, options: [] },
    },
    subscriptionUpdate: {
      enabled: false,
      defaultAllowedUpdates: [],
      products: [],
      prorationBehavior: "none",
    },
  };
}

/**
 * The account's default configuration, which Stripe keeps in the Dashboard; the emulator creates
 * it on first use with cancellation at the period end, invoice history and payment method updates
 * enabled (its exact Dashboard defaults are not documented).
 */
export function defaultConfiguration(ctx: Ctx): PortalConfigurationRec {
  for (const c of ctx.state.portalConfigurations.values()) if (c.isDefault) return c;
  const rec = disabled(ctx.state.now(), newId("bpc", 24));
  rec.isDefault = true;
  rec.invoiceHistory.enabled = true;
  rec.paymentMethodUpdate.enabled = true;
  rec.subscriptionCancel.enabled = true;
  ctx.state.portalConfigurations.set(rec.id, rec);
  return rec;
}

/** Applies `features[...]`, `business_profile[...]`, `default_return_url`, `name`, `metadata`, `active`. */
export function applyConfiguration(
  ctx: Ctx,
  rec: PortalConfigurationRec,
  p: Params,
  creating: boolean,
): void {
  const features = creating ? p.object("features") : p.optObject("features");
  const cancel = features?.optObject("subscription_cancel");
  if (cancel) {
    const c = rec.subscriptionCancel;
    const enabled = cancel.optBool("enabled");
    if (creating && enabled === undefined) throw missingParam(cancel.name("enabled"));
    if (enabled !== undefined) c.enabled = enabled;
    c.mode = cancel.optEnum("mode", ["at_period_end", "immediately"] as const) ?? c.mode;
    const behavior = cancel.optEnum("proration_behavior", [
      "always_invoice",
      "create_prorations",
      "none",
    ] as const);
    // "Possible values are `none` and `create_prorations`, which is only compatible with
    // `mode=immediately`. Passing `always_invoice` will result in an error."
    if (behavior === "always_invoice") {
      throw invalidRequest(
        "`always_invoice` is not supported for subscription cancellation.",
        undefined,
        cancel.name("proration_behavior"),
      );
    }
    if (behavior) c.prorationBehavior = behavior;
    if (c.prorationBehavior === "create_prorations" && c.mode !== "immediately") {
      throw invalidRequest(
        "`proration_behavior=create_prorations` is only compatible with `mode=immediately`.",
        undefined,
        cancel.name("proration_behavior"),
      );
    }
    const reason = cancel.optObject("cancellation_reason");
    if (reason) {
      const on = reason.optBool("enabled");
      if (on === undefined) throw missingParam(reason.name("enabled"));
      c.cancellationReason = {
        enabled: on,
        options: reason.has("options")
          ? enums(reason, "options", CANCEL_REASONS)
          : c.cancellationReason.options,
      };
    }
  }
  const update = features?.optObject("subscription_update");
  if (update) {
    const u = rec.subscriptionUpdate;
    const enabled = update.optBool("enabled");
    if (creating && enabled === undefined) throw missingParam(update.name("enabled"));
    if (enabled !== undefined) u.enabled = enabled;
    if (update.has("default_allowed_updates"))
      u.defaultAllowedUpdates = enums(update, "default_allowed_updates", ALLOWED_UPDATES);
    if (update.has("products")) {
      u.products = update.list("products").map((prod) => {
        const product = prod.string("product");
        if (!ctx.state.products.has(product))
          throw missingReference("product", product, prod.name("product"));
        const prices = prod.stringList("prices");
        if (prices.length === 0) throw missingParam(prod.name("prices"));
        prices.forEach((id, i) => {
          const price = ctx.state.prices.get(id);
          if (!price) throw missingReference("price", id, `${prod.name("prices")}[${i}]`);
          if (price.product !== product) {
            throw invalidRequest(
              `The price ${id} does not belong to ${product}.`,
              undefined,
              `${prod.name("prices")}[${i}]`,
            );
          }
        });
        return { product, prices };
      });
    }
    u.prorationBehavior =
      update.optEnum("proration_behavior", ["always_invoice", "create_prorations", "none"] as const) ??
      u.prorationBehavior;
  }
  for (const [key, target] of [
    ["invoice_history", rec.invoiceHistory],
    ["payment_method_update", rec.paymentMethodUpdate],
  ] as const) {
    const f = features?.optObject(key);
    if (!f) continue;
    const on = f.optBool("enabled");
    if (on === undefined) throw missingParam(f.name("enabled"));
    target.enabled = on;
  }
  const customerUpdate = features?.optObject("customer_update");
  if (customerUpdate) {
    const on = customerUpdate.optBool("enabled");
    if (creating && on === undefined) throw missingParam(customerUpdate.name("enabled"));
    if (on !== undefined) rec.customerUpdate.enabled = on;
    if (customerUpdate.has("allowed_updates")) {
      rec.customerUpdate.allowedUpdates = enums(customerUpdate, "allowed_updates", CUSTOMER_UPDATES);
    }
  }
  const profile = p.optObject("business_profile");
  if (profile) {
    const headline = profile.optNullableString("headline");
    if (headline !== undefined) rec.headline = headline;
    const privacy = profile.optNullableString("privacy_policy_url");
    if (privacy !== undefined) rec.privacyPolicyUrl = privacy;
    const terms = profile.optNullableString("terms_of_service_url");
    if (terms !== undefined) rec.termsOfServiceUrl = terms;
  }
  const returnUrl = p.optNullableString("default_return_url");
  if (returnUrl !== undefined) rec.defaultReturnUrl = returnUrl;
  const name = p.optNullableString("name");
  if (name !== undefined) rec.name = name;
  if (!creating) {
    const active = p.optBool("active");
    if (active !== undefined) {
      if (!active && rec.isDefault)
        throw invalidRequest("The default configuration cannot be deactivated.", undefined, "active");
      rec.active = active;
    }
  }
  rec.metadata = p.metadata(rec.metadata);
  rec.updated = ctx.state.now();
}

export function createConfiguration(ctx: Ctx, p: Params): PortalConfigurationRec {
  const rec = disabled(ctx.state.now(), newId("bpc", 24));
  applyConfiguration(ctx, rec, p, true);
  ctx.state.portalConfigurations.set(rec.id, rec);
  return rec;
}

/**
 * "We have detected that this plan is not one that is supported by the portal for updates (see
 * limitations). As a result, we can only support cancellation for this subscription."
 * (https://support.stripe.com/questions/billing-customer-portal): subscriptions with usage-based
 * prices can be canceled in the portal but not updated.
 */
export function portalCanUpdate(ctx: Ctx, config: PortalConfigurationRec, sub: SubscriptionRec): boolean {
  if (
    !config.subscriptionUpdate.enabled ||
    !config.subscriptionUpdate.defaultAllowedUpdates.includes("price")
  )
    return false;
  if (sub.status === "canceled" || sub.items.length !== 1) return false;
  if (sub.items.some((i) => isMetered(priceOf(ctx, i.price)))) return false;
  return config.subscriptionUpdate.products.length > 0;
}

/** The prices the portal offers to switch to (configured, active, other than the current one). */
export function portalPriceChoices(ctx: Ctx, config: PortalConfigurationRec, sub: SubscriptionRec): string[] {
  const current = sub.items[0]?.price;
  return config.subscriptionUpdate.products
    .flatMap((p) => p.prices)
    .filter((id) => id !== current && ctx.state.prices.get(id)?.active);
}

/**
 * Cancels from the portal. `at_period_end`: classic sets `cancel_at_period_end`; flexible sets
 * `cancel_at` to "the maximum `current_period_end` across all subscription items" with
 * `cancel_at_period_end` false (compare page). `immediately`: ends it now, with a proration when
 * `proration_behavior=create_prorations`, without a final invoice (`invoice_now` keeps the API
 * default, false: UNCONFIRMED for the portal).
 */
export function portalCancel(
  ctx: Ctx,
  config: PortalConfigurationRec,
  sub: SubscriptionRec,
  reason: string | undefined,
  em: Emission,
): void {
  const c = config.subscriptionCancel;
  if (!c.enabled) throw invalidRequest("This portal does not allow cancellation.");
  if (sub.status === "canceled") throw invalidRequest(`Subscription ${sub.id} is already canceled.`);
  const feedback =
    c.cancellationReason.enabled && reason && (CANCEL_REASONS as readonly string[]).includes(reason)
      ? reason
      : undefined;
  if (c.mode === "immediately") {
    cancelNow(
      ctx,
      sub,
      { invoiceNow: false, prorate: c.prorationBehavior === "create_prorations", feedback },
      em,
    );
    return;
  }
  em.updateSubscription(sub, () => {
    if (sub.billingMode.type === "flexible") {
      sub.cancelAtPeriodEnd = false;
      sub.cancelAt = Math.max(...sub.items.map((i) => i.periodEnd));
    } else {
      sub.cancelAtPeriodEnd = true;
      sub.cancelAt = null;
    }
    if (feedback) sub.cancellation.feedback = feedback;
  });
}

/** Switches a licensed single-item subscription to another configured price. */
export function portalSwitch(
  ctx: Ctx,
  config: PortalConfigurationRec,
  sub: SubscriptionRec,
  priceId: string,
  em: Emission,
): void {
  if (!portalCanUpdate(ctx, config, sub) || !portalPriceChoices(ctx, config, sub).includes(priceId)) {
    throw invalidRequest("This plan cannot be changed in the portal.");
  }
  const item = sub.items[0];
  if (!item) return;
  const prorationBehavior: ProrationBehavior = config.subscriptionUpdate.prorationBehavior;
  const plan = planFromParams(ctx, sub, [new Params({ id: item.id, price: priceId }, "items[0]")]);
  applyPlan(
    ctx,
    sub,
    plan,
    {
      at: ctx.state.nowFor(sub.customer),
      prorationBehavior,
      resetAnchor: false,
      source: "api",
      paymentBehavior: "allow_incomplete",
    },
    em,
  );
}
