/**
 * Custom pricing (PUT /admin/customers/{user_id}/pricing, docs/billing.md "Custom pricing"): an
 * operator gives one customer its own per-session price on the plan they subscribe to. Each
 * distinct price is a version: a D1 row, then the customer's own Stripe price (the plan's product
 * and meter, `metadata.plan`, `metadata.aigate_user_id`, `metadata.aigate_pricing_version`), then
 * applied to the subscription:
 *
 * - `period_end` (default): the next phase of a subscription schedule starting at the current
 *   period's end, as plan changes at the period end are scheduled; this period stays as it is.
 * - `now`: the metered item replaced at once with the billing cycle anchor reset to now, as an
 *   upgrade is: the usage so far is billed at the old price on that invoice, a fee (pro) is
 *   prorated; the new period bills the custom price.
 *
 * Idempotent: the same price again reuses its version and Stripe price (created with an
 * idempotency key naming the version); a request already applied as asked changes nothing. A
 * retry after a failure half-way completes the same version.
 */
import { ApiError, type PaidPlanId, type PlanId } from "@aigate/shared";
import {
  CatalogTiers,
  MAX_SESSION_CENTS,
  type TiersMode,
  TiersMode as TiersModes,
} from "@aigate/shared/catalog";
import { sessionPriceParams } from "@aigate/shared/stripeCatalog";
import { meteredItem, planOfSubscription } from "@aigate/shared/stripeSync/convergence";
import type { StripeSubscription } from "@aigate/shared/stripeSync/objects";
import {
  retrievePrice,
  retrieveSubscription,
  type SyncDeps,
  syncFromStripe,
} from "@aigate/shared/stripeSync/sync";
import type Stripe from "stripe";
import { z } from "zod";
import { phaseItems, scheduleNextPhase } from "./planChange";

const When = z.enum(["period_end", "now"]);

/**
 * The request: a per-session price with sessions included at no charge, or tiers as the catalog
 * writes them (docs/billing.md "The pricing catalog").
 */
export const CustomPricingBody = z.union([
  z
    .object({
      per_session_cents: z.int().min(0).max(MAX_SESSION_CENTS),
      included_sessions: z.int().min(0).max(1_000_000_000),
      when: When.optional(),
    })
    .strict(),
  z
    .object({
      tiers_mode: TiersModes,
      tiers: CatalogTiers,
      when: When.optional(),
    })
    .strict(),
]);
export type CustomPricingBody = z.infer<typeof CustomPricingBody>;

type Tier = { up_to: number | null; unit_amount_cents: number };

/** The tiers a request asks for, canonical (a price and its included sessions become two graduated tiers). */
export function requestedTiers(body: CustomPricingBody): { mode: TiersMode; tiers: Tier[] } {
  if ("tiers" in body) return { mode: body.tiers_mode, tiers: body.tiers.map((t) => ({ ...t })) };
  if (body.included_sessions === 0)
    return { mode: "graduated", tiers: [{ up_to: null, unit_amount_cents: body.per_session_cents }] };
  return {
    mode: "graduated",
    tiers: [
      { up_to: body.included_sessions, unit_amount_cents: 0 },
      { up_to: null, unit_amount_cents: body.per_session_cents },
    ],
  };
}

export interface CustomPricingRow {
  user_id: string;
  version: number;
  plan: PaidPlanId;
  tiers_mode: TiersMode;
  tiers: string;
  stripe_price_id: string | null;
  applies: "period_end" | "now";
  state: "requested" | "applied";
  effective_at: number | null;
  requested_at: number;
  applied_at: number | null;
}

export interface CustomPricingView {
  user_id: string;
  plan: PaidPlanId;
  version: number;
  tiers_mode: TiersMode;
  tiers: Tier[];
  stripe_price_id: string | null;
  when: "period_end" | "now";
  state: "requested" | "applied";
  effective_at: string | null;
  requested_at: string;
}

export function customPricingView(r: CustomPricingRow): CustomPricingView {
  const tiers = z
    .array(z.object({ up_to: z.int().nullable(), unit_amount_cents: z.int() }))
    .parse(JSON.parse(r.tiers));
  return {
    user_id: r.user_id,
    plan: r.plan,
    version: r.version,
    tiers_mode: r.tiers_mode,
    tiers,
    stripe_price_id: r.stripe_price_id,
    when: r.applies,
    state: r.state,
    effective_at: r.effective_at === null ? null : new Date(r.effective_at).toISOString(),
    requested_at: new Date(r.requested_at).toISOString(),
  };
}

export async function customPricingRows(db: D1Database, userId: string): Promise<CustomPricingRow[]> {
  const { results } = await db
    .prepare("SELECT * FROM custom_pricing WHERE user_id = ?1 ORDER BY version DESC")
    .bind(userId)
    .all<CustomPricingRow>();
  return results;
}

async function latestRow(db: D1Database, userId: string): Promise<CustomPricingRow | null> {
  return db
    .prepare("SELECT * FROM custom_pricing WHERE user_id = ?1 ORDER BY version DESC LIMIT 1")
    .bind(userId)
    .first<CustomPricingRow>();
}

function sameRequest(row: CustomPricingRow, plan: PaidPlanId, mode: TiersMode, tiersJson: string): boolean {
  return row.plan === plan && row.tiers_mode === mode && row.tiers === tiersJson;
}

/**
 * The version for this price: the latest one when it asks the same (plan, mode, tiers), else a new
 * one numbered after it (`INSERT ... ON CONFLICT DO NOTHING RETURNING`: two racing requests get one
 * version each, never one shared by two prices).
 */
async function versionFor(
  db: D1Database,
  userId: string,
  plan: PaidPlanId,
  mode: TiersMode,
  tiersJson: string,
  when: "period_end" | "now",
  now: number,
): Promise<CustomPricingRow> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const latest = await latestRow(db, userId);
    if (latest && sameRequest(latest, plan, mode, tiersJson)) return latest;
    const created = await db
      .prepare(
        `INSERT INTO custom_pricing (user_id, version, plan, tiers_mode, tiers, applies, state, requested_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'requested', ?7)
         ON CONFLICT (user_id, version) DO NOTHING
         RETURNING *`,
      )
      .bind(userId, (latest?.version ?? 0) + 1, plan, mode, tiersJson, when, now)
      .first<CustomPricingRow>();
    if (created) return created;
  }
  throw new ApiError(409, "concurrent_request", "another pricing request for this customer is in progress");
}

/** The customer's own Stripe price for a version: created once (idempotency key of the version). */
async function ensureCustomPrice(
  stripe: Stripe,
  row: CustomPricingRow,
  sub: StripeSubscription,
  tiers: Tier[],
): Promise<string> {
  if (row.stripe_price_id) return row.stripe_price_id;
  const item = meteredItem(sub);
  if (!item) throw new Error(`subscription ${sub.id} has no metered item`);
  const current = await retrievePrice(stripe, item.price.id);
  const product = typeof current.product === "string" ? current.product : current.product.id;
  const meter = current.recurring?.meter;
  if (!meter) throw new Error(`price ${current.id} reads no meter`);
  const created = await stripe.prices.create(
    {
      product,
      currency: current.currency,
      ...sessionPriceParams(row.tiers_mode, tiers),
      recurring: { interval: "month", usage_type: "metered", meter },
      nickname: `Custom pricing v${row.version} for ${row.user_id}`,
      metadata: {
        plan: row.plan,
        aigate_user_id: row.user_id,
        aigate_pricing_version: String(row.version),
      },
    },
    { idempotencyKey: `aigate-custom-price-${row.user_id}-v${row.version}` },
  );
  return created.id;
}

function isCanceling(sub: StripeSubscription): boolean {
  return sub.cancel_at_period_end || (sub.cancel_at !== null && sub.cancel_at !== undefined);
}

/** A schedule we may overwrite: none, or one whose last phase only swaps this customer's custom price in. */
async function scheduleIsOurs(stripe: Stripe, sub: StripeSubscription, userId: string): Promise<boolean> {
  if (!sub.schedule) return true;
  const schedule = await stripe.subscriptionSchedules.retrieve(sub.schedule);
  const last = schedule.phases.at(-1);
  if (!last) return true;
  for (const item of last.items) {
    const id = typeof item.price === "string" ? item.price : item.price.id;
    const price = await retrievePrice(stripe, id);
    if (price.recurring?.usage_type === "metered") return price.metadata?.aigate_user_id === userId;
  }
  return false;
}

/** Applies `priceId` now, as an upgrade: items replaced, a new period from now. Returns its start. */
async function applyNow(stripe: Stripe, sub: StripeSubscription, priceId: string): Promise<number> {
  if (sub.schedule) await stripe.subscriptionSchedules.release(sub.schedule);
  const metered = meteredItem(sub);
  if (!metered) throw new Error(`subscription ${sub.id} has no metered item`);
  const updated = await stripe.subscriptions.update(sub.id, {
    items: [{ id: metered.id, deleted: true }, { price: priceId }],
    billing_cycle_anchor: { type: "now" },
    // the usage so far is billed at the old price on this invoice; a fee is prorated
    proration_behavior: "create_prorations",
  });
  const start = updated.items.data.find((i) => i.price.id === priceId)?.current_period_start;
  return (start ?? Math.floor(Date.now() / 1000)) * 1000;
}

export interface CustomPricingContext {
  deps: SyncDeps;
  userId: string;
  /** The user's plan and subscription as D1 holds them (null: no Stripe customer at all). */
  account: { plan: PlanId; subscriptionId: string | null } | null;
}

/** Records, creates and applies a customer's custom price; the contract's 404 and 409s for impossible ones. */
export async function setCustomPricing(
  ctx: CustomPricingContext,
  body: CustomPricingBody,
): Promise<CustomPricingView> {
  const { shards, stripe } = ctx.deps;
  const db = shards.of(ctx.userId);
  if (ctx.account === null) throw new ApiError(404, "customer_not_found", `no customer ${ctx.userId}`);
  if (ctx.account.subscriptionId === null)
    throw new ApiError(
      409,
      "no_subscription",
      "the customer has no paid subscription: custom pricing needs one",
    );
  const when = body.when ?? "period_end";
  const sub = await retrieveSubscription(stripe, ctx.account.subscriptionId);
  const plan = planOfSubscription(sub);
  if (plan === null || !meteredItem(sub)) throw new Error(`subscription ${sub.id} has no plan price`);
  const { mode, tiers } = requestedTiers(body);
  const tiersJson = JSON.stringify(tiers);
  // asked again as it was applied: nothing to do
  const latest = await latestRow(db, ctx.userId);
  if (
    latest &&
    sameRequest(latest, plan, mode, tiersJson) &&
    latest.state === "applied" &&
    latest.applies === when &&
    latest.stripe_price_id
  ) {
    const inForce = meteredItem(sub)?.price.id === latest.stripe_price_id;
    if (inForce || (when === "period_end" && sub.schedule)) return customPricingView(latest);
  }
  // refused before anything is recorded
  if (isCanceling(sub))
    throw new ApiError(409, "subscription_ending", "the subscription is set to cancel: resume it first");
  if (!(await scheduleIsOurs(stripe, sub, ctx.userId)))
    throw new ApiError(
      409,
      "change_pending",
      "a plan change is scheduled for this subscription: let it take effect or take it back first",
    );
  const row = await versionFor(db, ctx.userId, plan, mode, tiersJson, when, ctx.deps.now());
  const priceId = await ensureCustomPrice(stripe, row, sub, tiers);
  await db
    .prepare("UPDATE custom_pricing SET stripe_price_id = ?3 WHERE user_id = ?1 AND version = ?2")
    .bind(ctx.userId, row.version, priceId)
    .run();
  const billing = meteredItem(sub);
  const alreadyBilled = billing?.price.id === priceId;
  // already billed (a retry after the change was made): from the period it started
  const effectiveAt = alreadyBilled
    ? (row.effective_at ?? (billing?.current_period_start ?? 0) * 1000)
    : when === "now"
      ? await applyNow(stripe, sub, priceId)
      : await scheduleNextPhase(stripe, sub, phaseItems(sub, priceId));
  if (alreadyBilled && sub.schedule && (await scheduleIsOurs(stripe, sub, ctx.userId)))
    await stripe.subscriptionSchedules.release(sub.schedule);
  const invoiceId =
    when === "now" && !alreadyBilled ? (await retrieveSubscription(stripe, sub.id)).latest_invoice : null;
  await syncFromStripe(ctx.deps, {
    subscriptionId: sub.id,
    invoiceId: invoiceId ?? null,
    userHints: [ctx.userId],
  });
  const applied = await db
    .prepare(
      `UPDATE custom_pricing SET state = 'applied', applies = ?3, effective_at = ?4, applied_at = ?5
       WHERE user_id = ?1 AND version = ?2 RETURNING *`,
    )
    .bind(ctx.userId, row.version, when, effectiveAt, ctx.deps.now())
    .first<CustomPricingRow>();
  if (!applied) throw new Error(`custom pricing ${ctx.userId} v${row.version} vanished`);
  return customPricingView(applied);
}
