/**
 * The usage series rows (usage_periods), created by whoever first attributes usage to a series:
 * the classifier with each verdict, the biller when it re-attributes sessions.
 */

/** A usage series a batch's verdicts may add to (created if missing; an existing row is kept). */
export interface SeriesToEnsure {
  user_id: string;
  plan: string;
  period_start: number;
  period_end: number;
  stripe_customer_id: string | null;
  stripe_subscription_id: string | null;
  stripe_price_id: string | null;
  meter_event_name: string | null;
}

/** Creates the series that do not exist yet (an existing series keeps its row). */
export function ensureSeries(db: D1Database, series: SeriesToEnsure[], now: number): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO usage_periods (user_id, plan, period_start, period_end, stripe_customer_id, stripe_subscription_id,
         stripe_price_id, meter_event_name, billable_sessions, posted_total, updated_at)
       SELECT j.value->>'$.user_id', j.value->>'$.plan', j.value->>'$.period_start', j.value->>'$.period_end',
         j.value->>'$.stripe_customer_id', j.value->>'$.stripe_subscription_id', j.value->>'$.stripe_price_id',
         j.value->>'$.meter_event_name', 0, 0, ?2
       FROM json_each(?1) j WHERE true
       ON CONFLICT (user_id, plan, period_start) DO NOTHING`,
    )
    .bind(JSON.stringify(series), now);
}

/** The row of the series an attribution names. */
export function seriesToEnsure(
  userId: string,
  s: {
    plan: string;
    start: number;
    end: number;
    stripeCustomerId: string | null;
    subscriptionId: string | null;
    priceId: string | null;
    meterEventName: string | null;
  },
): SeriesToEnsure {
  return {
    user_id: userId,
    plan: s.plan,
    period_start: s.start,
    period_end: s.end,
    stripe_customer_id: s.stripeCustomerId,
    stripe_subscription_id: s.subscriptionId,
    stripe_price_id: s.priceId,
    meter_event_name: s.meterEventName,
  };
}

/**
 * Asks the biller to (re-)attribute the users' sessions billed from `from_ms` on (the earliest
 * time per user wins): sessions judged while their account could not be attributed yet, or
 * verdicts parked before the series model.
 */
export function requestReattributions(
  db: D1Database,
  pending: { user_id: string; from_ms: number }[],
  now: number,
): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO reattributions (user_id, from_ms, requested_at)
       SELECT value->>'$.user_id', min(value->>'$.from_ms'), ?2 FROM json_each(?1) GROUP BY 1
       ON CONFLICT (user_id) DO UPDATE SET from_ms = min(reattributions.from_ms, excluded.from_ms),
         requested_at = excluded.requested_at`,
    )
    .bind(JSON.stringify(pending), now);
}
