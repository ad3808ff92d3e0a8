/**
 * The D1 side of a user's spend limits (docs/billing.md "Spend caps and alerts"): the cap and
 * thresholds, the alert endpoint and its signing secret, and the thresholds crossed so far.
 */
import { DEFAULT_ALERT_THRESHOLDS } from "@aigate/shared";
import { z } from "zod";

export interface SpendLimits {
  monthlyCapCents: number | null;
  alertThresholds: number[];
  alertUrl: string | null;
  alertEndpointAt: number | null;
}

const LimitsRow = z.object({
  monthly_cap_cents: z.number().int().nullable(),
  alert_thresholds: z.string(),
  alert_url: z.string().nullable(),
  alert_endpoint_at: z.number().nullable(),
});

/** A user's limits; a user who never set any has no cap and the default thresholds. */
export async function readSpendLimits(db: D1Database, userId: string): Promise<SpendLimits> {
  const raw = await db
    .prepare(
      "SELECT monthly_cap_cents, alert_thresholds, alert_url, alert_endpoint_at FROM spend_limits WHERE user_id = ?1",
    )
    .bind(userId)
    .first();
  if (!raw) {
    return {
      monthlyCapCents: null,
      alertThresholds: [...DEFAULT_ALERT_THRESHOLDS],
      alertUrl: null,
      alertEndpointAt: null,
    };
  }
  const row = LimitsRow.parse(raw);
  return {
    monthlyCapCents: row.monthly_cap_cents,
    alertThresholds: z.array(z.int()).parse(JSON.parse(row.alert_thresholds)),
    alertUrl: row.alert_url,
    alertEndpointAt: row.alert_endpoint_at,
  };
}

/** Sets the cap and thresholds; the endpoint is kept. */
export async function writeSpendLimits(
  db: D1Database,
  userId: string,
  limits: { monthlyCapCents: number | null; alertThresholds: number[] },
  now: number,
): Promise<void> {
  await db
    .prepare(
      `INSERT INTO spend_limits (user_id, monthly_cap_cents, alert_thresholds, updated_at) VALUES (?1, ?2, ?3, ?4)
       ON CONFLICT (user_id) DO UPDATE SET monthly_cap_cents = excluded.monthly_cap_cents,
         alert_thresholds = excluded.alert_thresholds, updated_at = excluded.updated_at`,
    )
    .bind(userId, limits.monthlyCapCents, JSON.stringify(limits.alertThresholds), now)
    .run();
}

/** Registers (or replaces) the alert endpoint and its secret; the cap and thresholds are kept. */
export async function writeAlertEndpoint(
  db: D1Database,
  userId: string,
  endpoint: { url: string; secret: string } | null,
  now: number,
): Promise<void> {
  await db
    .prepare(
      `INSERT INTO spend_limits (user_id, alert_url, alert_secret, alert_endpoint_at, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5)
       ON CONFLICT (user_id) DO UPDATE SET alert_url = excluded.alert_url, alert_secret = excluded.alert_secret,
         alert_endpoint_at = excluded.alert_endpoint_at, updated_at = excluded.updated_at`,
    )
    .bind(userId, endpoint?.url ?? null, endpoint?.secret ?? null, endpoint ? now : null, now)
    .run();
}

export const SpendAlertRow = z.object({
  plan: z.string(),
  period_start: z.number(),
  threshold: z.number().int(),
  cap_cents: z.number().int(),
  usage_cents: z.number().int(),
  sessions: z.number().int(),
  crossed_at: z.number(),
  delivery: z.enum(["none", "pending", "delivered", "failed"]),
  attempts: z.number().int(),
  delivered_at: z.number().nullable(),
});
export type SpendAlertRow = z.infer<typeof SpendAlertRow>;

/** The thresholds crossed in one series, lowest first. */
export async function seriesAlerts(
  db: D1Database,
  userId: string,
  plan: string,
  periodStart: number,
): Promise<SpendAlertRow[]> {
  const { results } = await db
    .prepare(
      `SELECT plan, period_start, threshold, cap_cents, usage_cents, sessions, crossed_at, delivery, attempts, delivered_at
       FROM spend_alerts WHERE user_id = ?1 AND plan = ?2 AND period_start = ?3 ORDER BY threshold`,
    )
    .bind(userId, plan, periodStart)
    .all();
  return results.map((r) => SpendAlertRow.parse(r));
}
