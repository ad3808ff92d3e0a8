/**
 * Spend caps and alerts (docs/billing.md "Spend caps and alerts"). A user's cap bounds the usage
 * charges of each usage series (plan and billing period): the metered sessions, not pro's fixed
 * fee. Admission turns the cap into a number of sessions (`capSessions`); a threshold is crossed
 * when the series' usage charges reach its percentage of the cap (`recordSpendCrossings`). Both
 * price with the plan catalog, so they agree with the usage API's estimate.
 */
import { z } from "zod";
import { catalogMeteredPrice, type PaidPlanId, PLANS } from "./plans";
import { amountFor, type MeteredPrice } from "./pricing";

export const DEFAULT_ALERT_THRESHOLDS: readonly number[] = [50, 80, 100];
/** The largest cap accepted: $1,000,000 a period. */
export const MAX_CAP_CENTS = 100_000_000;

/** What `sessions` billable sessions of one series add in usage charges (pro's fee excluded). */
export function usageChargeCents(plan: PaidPlanId, sessions: number): number {
  return amountFor(catalogMeteredPrice(plan), sessions);
}

/**
 * The most billable sessions one series of `plan` may hold without its usage charges passing
 * `capCents`: the included sessions cost nothing, every later one the plan's per-session price
 * (its highest tier's when the catalog has several paid tiers, so the cap is never passed; with
 * cheaper later tiers admission stops before the cap is quite reached).
 */
export function capSessions(plan: PaidPlanId, capCents: number): number {
  if (!Number.isInteger(capCents) || capCents < 0)
    throw new RangeError(`cap must be a non-negative integer: ${capCents}`);
  const p = PLANS[plan];
  return p.includedSessions + Math.floor(capCents / p.perSessionCents);
}

/** Alert thresholds: percentages of the cap, 1..100, strictly ascending (so no duplicates). */
export const AlertThresholds = z
  .array(z.int().min(1).max(100))
  .max(10)
  .refine((a) => a.every((v, i) => i === 0 || v > (a[i - 1] ?? 0)), {
    message: "thresholds must be strictly ascending (sorted, no duplicates)",
  });

/** `PUT /api/billing/limits`. */
export const SpendLimitsBody = z
  .object({
    monthly_cap_cents: z.int().min(0).max(MAX_CAP_CENTS).nullable(),
    alert_thresholds: AlertThresholds.default([...DEFAULT_ALERT_THRESHOLDS]),
  })
  .strict();
export type SpendLimitsBody = z.infer<typeof SpendLimitsBody>;

/**
 * `amountFor(price, n)` as an SQL expression of the integer expression `n` (the same cents: tiers
 * carry no flat amounts in the catalog, so only unit amounts are summed).
 */
export function meteredAmountSql(price: MeteredPrice, n: string): string {
  if (price.kind === "per_unit") return `(${price.unit_amount} * ${n})`;
  if (price.kind === "volume") {
    const cases = price.tiers.map((t) =>
      t.up_to === null
        ? `ELSE ${t.unit_amount} * ${n}`
        : `WHEN ${n} <= ${t.up_to} THEN ${t.unit_amount} * ${n}`,
    );
    return `(CASE ${cases.join(" ")} END)`;
  }
  let below = 0;
  const terms = price.tiers.map((t) => {
    const from = below;
    below = t.up_to ?? below;
    const top = t.up_to === null ? n : `min(${n}, ${t.up_to})`;
    return `${t.unit_amount} * max(0, ${top} - ${from})`;
  });
  return `(${terms.join(" + ")})`;
}

/** The usage charges of a series in SQL, from its billable sessions (`u` is the usage_periods row). */
function usageChargeSql(alias: string): string {
  const cases = (["payg", "pro"] as const).map(
    (plan) =>
      `WHEN '${plan}' THEN ${meteredAmountSql(catalogMeteredPrice(plan), `${alias}.billable_sessions`)}`,
  );
  return `(CASE ${alias}.plan ${cases.join(" ")} ELSE 0 END)`;
}

/** A series whose usage grew: (user, plan, window start). */
export interface SeriesKey {
  user_id: string;
  plan: string;
  period_start: number;
}

/**
 * Records the thresholds the given series have crossed, once each: `INSERT ... ON CONFLICT DO
 * NOTHING` on (user, plan, period_start, threshold), so a retried or duplicated batch records
 * nothing twice. Meant to run in the transaction that adds to the series' counts. An alert is
 * `pending` delivery when the user has an endpoint, else `none`. A cap of 0 raises no alerts.
 */
export function recordSpendCrossings(
  db: D1Database,
  series: readonly SeriesKey[],
  now: number,
): D1PreparedStatement {
  const usage = usageChargeSql("u");
  return db
    .prepare(
      `INSERT INTO spend_alerts (user_id, plan, period_start, threshold, cap_cents, usage_cents, sessions, crossed_at,
         delivery, next_attempt_at)
       SELECT u.user_id, u.plan, u.period_start, t.value, l.monthly_cap_cents, ${usage}, u.billable_sessions, ?2,
         CASE WHEN l.alert_url IS NULL THEN 'none' ELSE 'pending' END,
         CASE WHEN l.alert_url IS NULL THEN NULL ELSE ?2 END
       FROM json_each(?1) s
       JOIN usage_periods u ON u.user_id = s.value->>'$.user_id' AND u.plan = s.value->>'$.plan'
         AND u.period_start = s.value->>'$.period_start'
       JOIN spend_limits l ON l.user_id = u.user_id
       JOIN json_each(l.alert_thresholds) t
       WHERE u.plan IN ('payg', 'pro') AND l.monthly_cap_cents > 0
         AND ${usage} * 100 >= t.value * l.monthly_cap_cents
       ON CONFLICT (user_id, plan, period_start, threshold) DO NOTHING`,
    )
    .bind(JSON.stringify(series), now);
}

/** The header carrying an alert's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`. */
export const ALERT_SIGNATURE_HEADER = "AIGate-Signature";

/**
 * Signs an alert's body the way Stripe signs its webhooks: HMAC-SHA256, keyed with the endpoint's
 * secret, over `<t>.<body>`, as `t=<t>,v1=<hex>`.
 */
export async function alertSignature(secret: string, body: string, unixSeconds: number): Promise<string> {
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey(
    "raw",
    enc.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(`${unixSeconds}.${body}`)));
  const hex = Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
  return `t=${unixSeconds},v1=${hex}`;
}
