/**
 * The ingest worker's SQL: the admission decision. See docs/architecture.md, "The sessions row":
 * the row is the lease; `open = 1` counts against the free quota until the session is billed or
 * judged unbillable; the lease is live while the session has no `ended_at`, no verdict and
 * max(admitted_at, last_seen_at) + LEASE_TTL_SECONDS is in the future.
 *
 * Parameters shared by both statements (numbered, so the two see the same values):
 *   ?1 session_id  ?2 user_id  ?3 period_start (usage period)  ?4 lease_cutoff (now - TTL)
 *   ?5 usage plan (the usage_periods row counted)
 * and for the decision only:
 *   ?6 project_id  ?7 now  ?8 admitted_plan  ?9 monthly quota (NULL = none)
 *   ?10 concurrent limit (NULL = none)
 *   ?11 the sessions a spend cap of 0 allows (the plan's included sessions; NULL = no spend cap
 *       on these limits)  ?12 the price per session beyond them, in cents (both integers: the
 *       division rounds down, D1 may bind numbers as reals, hence the casts)
 * The spend cap itself is read inside the statements (spend_limits): the sessions it allows are
 * ?11 + cap / ?12 (integer division), the same number as capSessions() (shared/src/spendLimits.ts).
 */
import { z } from "zod";

/** The user's other live leases (uses idx_sessions_open). */
const LIVE_OTHERS = `(SELECT count(*) FROM sessions
    WHERE user_id = ?2 AND open = 1 AND session_id <> ?1
      AND ended_at IS NULL AND verdict_at IS NULL
      AND max(coalesce(admitted_at, 0), last_seen_at) > ?4)`;

/** The user's other admitted sessions of this period not yet billed or judged unbillable. */
const IN_FLIGHT_OTHERS = `(SELECT count(*) FROM sessions
    WHERE user_id = ?2 AND open = 1 AND session_id <> ?1 AND admitted_at >= ?3)`;

/** Billable sessions already recorded for the period. */
const BILLABLE = `coalesce((SELECT billable_sessions FROM usage_periods
    WHERE user_id = ?2 AND plan = ?5 AND period_start = ?3), 0)`;

/** The user's spend cap in cents (NULL = none). */
const CAP_CENTS = `(SELECT monthly_cap_cents FROM spend_limits WHERE user_id = ?2)`;

/** A session admitted earlier whose lease still holds, or that has ended or been judged. */
const ALREADY_ADMITTED = `EXISTS (SELECT 1 FROM sessions
    WHERE session_id = ?1 AND user_id = ?2 AND admitted_at IS NOT NULL
      AND (ended_at IS NOT NULL OR verdict_at IS NOT NULL OR max(admitted_at, last_seen_at) > ?4))`;

/** On an existing row: take (or renew) the lease unless it is judged or already admitted. */
const TAKE_LEASE = `(sessions.verdict_at IS NULL AND NOT (sessions.admitted_at IS NOT NULL
    AND (sessions.ended_at IS NOT NULL OR max(sessions.admitted_at, sessions.last_seen_at) > ?4)))`;

export const AdmissionCountsRow = z.object({
  owner_id: z.string().nullable(),
  /** 1 when the session itself is already counted in flight (admitted this period, not judged). */
  self_in_flight: z.number().int(),
  live_others: z.number().int(),
  in_flight_others: z.number().int(),
  billable: z.number().int(),
  /** The user's spend cap in cents, null when none is set. */
  cap_cents: z.number().int().nullable(),
});
export type AdmissionCountsRow = z.infer<typeof AdmissionCountsRow>;

export const LeaseRow = z.object({
  open: z.number().int(),
  admitted_at: z.number().nullable(),
  ended_at: z.number().nullable(),
  verdict_at: z.number().nullable(),
  last_seen_at: z.number(),
});
export type LeaseRow = z.infer<typeof LeaseRow>;

export interface AdmitParams {
  sessionId: string;
  userId: string;
  projectId: string;
  now: number;
  periodStart: number;
  leaseCutoff: number;
  usagePlan: string;
  admittedPlan: string;
  quota: number | null;
  concurrentLimit: number | null;
  /** How the spend cap converts to sessions on these limits (null: the cap does not apply). */
  capPricing: { includedSessions: number; perSessionCents: number } | null;
}

/**
 * Admission in one transaction (a D1 batch): first the counts the decision sees (for the response
 * and the refusal reason), then the decision itself, ONE statement: the lease row is inserted or
 * updated only when the limits allow it (or the session already holds it), and RETURNING yields
 * the row exactly when the session is admitted. Concurrent calls cannot both pass the limit.
 */
export async function admitSession(
  db: D1Database,
  p: AdmitParams,
): Promise<{ counts: AdmissionCountsRow; lease: LeaseRow | null }> {
  const shared = [p.sessionId, p.userId, p.periodStart, p.leaseCutoff, p.usagePlan] as const;
  const counts = db
    .prepare(
      `SELECT (SELECT user_id FROM sessions WHERE session_id = ?1) AS owner_id,
              EXISTS (SELECT 1 FROM sessions WHERE session_id = ?1 AND user_id = ?2 AND open = 1
                        AND admitted_at >= ?3) AS self_in_flight,
              ${LIVE_OTHERS} AS live_others,
              ${IN_FLIGHT_OTHERS} AS in_flight_others,
              ${BILLABLE} AS billable,
              ${CAP_CENTS} AS cap_cents`,
    )
    .bind(...shared);
  const decide = db
    .prepare(
      `WITH counts AS MATERIALIZED (
         SELECT ${LIVE_OTHERS} AS live_others, ${IN_FLIGHT_OTHERS} AS in_flight_others, ${BILLABLE} AS billable,
                ${ALREADY_ADMITTED} AS admitted, ${CAP_CENTS} AS cap_cents
       )
       INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at,
                             admitted_at, admitted_plan, open)
       SELECT ?1, ?2, ?6, ?7, ?7, ?7, ?8, 1 FROM counts
       WHERE counts.admitted
          OR ((?10 IS NULL OR counts.live_others < ?10)
              AND (?9 IS NULL OR counts.billable + counts.in_flight_others < ?9)
              AND (?11 IS NULL OR counts.cap_cents IS NULL
                   OR counts.billable + counts.in_flight_others
                      < ?11 + CAST(counts.cap_cents AS INTEGER) / CAST(?12 AS INTEGER)))
       ON CONFLICT (session_id) DO UPDATE SET
         admitted_at = CASE WHEN ${TAKE_LEASE} THEN excluded.admitted_at ELSE sessions.admitted_at END,
         admitted_plan = CASE WHEN ${TAKE_LEASE} THEN excluded.admitted_plan ELSE sessions.admitted_plan END,
         open = CASE WHEN ${TAKE_LEASE} THEN 1 ELSE sessions.open END
       WHERE sessions.user_id = excluded.user_id
       RETURNING open, admitted_at, ended_at, verdict_at, last_seen_at`,
    )
    .bind(
      ...shared,
      p.projectId,
      p.now,
      p.admittedPlan,
      p.quota,
      p.concurrentLimit,
      p.capPricing?.includedSessions ?? null,
      p.capPricing?.perSessionCents ?? null,
    );
  // A lease taken now puts the session on the classifier's agenda (session_due), due at once: the
  // classifier's cron lists it again for when it turns stale, and judges it then if no telemetry
  // came (a gateway that admitted a session and never reported on it).
  const listDue = db
    .prepare(
      `INSERT INTO session_due (due_at, id, session_ids)
       SELECT ?3, ?4, json_array(session_id) FROM sessions
       WHERE session_id = ?1 AND user_id = ?2 AND admitted_at = ?3 AND verdict_at IS NULL`,
    )
    .bind(p.sessionId, p.userId, p.now, `admit:${crypto.randomUUID()}`);
  const [countsResult, decideResult] = await db.batch([counts, decide, listDue]);
  const countsRow = AdmissionCountsRow.parse(countsResult?.results[0]);
  const leaseRaw = decideResult?.results[0];
  return { counts: countsRow, lease: leaseRaw === undefined ? null : LeaseRow.parse(leaseRaw) };
}
