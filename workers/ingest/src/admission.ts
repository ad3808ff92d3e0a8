/**
 * POST /v1/sessions/admit: may a gateway start this session? The decision is one SQL statement
 * (queries.ts); this module picks the limits from the user's plan and explains the outcome.
 */
import {
  type AccountStatus,
  accountStatus,
  calendarMonth,
  capSessions,
  displayedQuota,
  Identifier,
  isPaidPlan,
  type PaidPlanId,
  PLANS,
  PlanId,
} from "@aigate/shared";
import { z } from "zod";
import { sessionOwnerMismatch } from "./errors";
import { type AdmissionCountsRow, admitSession, type LeaseRow } from "./queries";

export const AdmitRequest = z.object({ session_id: Identifier, user_id: Identifier, project_id: Identifier });
export type AdmitRequest = z.infer<typeof AdmitRequest>;

export const RefusalReason = z.enum([
  "monthly_quota_exhausted",
  "spend_cap_reached",
  "concurrency_limit_reached",
]);
export type RefusalReason = z.infer<typeof RefusalReason>;

/** The contract's admission answer (exact fields). */
export const AdmitResponse = z
  .object({
    allowed: z.boolean(),
    reason: RefusalReason.nullable(),
    plan: PlanId,
    used: z.int().min(0),
    quota: z.int().min(0).nullable(),
    active_sessions: z.int().min(0),
    concurrent_limit: z.int().min(0).nullable(),
  })
  .strict();
export type AdmitResponse = z.infer<typeof AdmitResponse>;

export interface AdmissionLimits {
  /** Hard cap on successful plus in-flight sessions per period (free limits only). */
  monthlyQuota: number | null;
  concurrentLimit: number | null;
  /** The paid plan whose prices turn the user's spend cap into sessions; null on free limits. */
  spendCapPlan: PaidPlanId | null;
}

/** Which usage the decision counts and which limits apply, from the account's status. */
export function admissionPolicy(status: AccountStatus, now: number) {
  const limitsPlan = status.limitsPlan;
  const onFreeLimits = limitsPlan === "free";
  return {
    limits: {
      monthlyQuota: PLANS[limitsPlan].monthlyQuota,
      concurrentLimit: PLANS[limitsPlan].concurrentLimit,
      // the cap bounds usage charges: free usage costs nothing
      spendCapPlan: isPaidPlan(limitsPlan) ? limitsPlan : null,
    } satisfies AdmissionLimits,
    /** Free limits count the free plan's calendar month; paid plans their current period. */
    usagePlan: onFreeLimits ? ("free" as const) : status.plan,
    periodStart: onFreeLimits ? calendarMonth(now).start : status.currentPeriod.start,
    displayedQuota: displayedQuota(limitsPlan),
  };
}

/** The admission rule, as the SQL applies it to the counts (excluding the session itself). */
export function withinLimits(counts: AdmissionCountsRow, limits: AdmissionLimits): RefusalReason | null {
  if (limits.monthlyQuota !== null && counts.billable + counts.in_flight_others >= limits.monthlyQuota) {
    return "monthly_quota_exhausted";
  }
  if (
    limits.spendCapPlan !== null &&
    counts.cap_cents !== null &&
    counts.billable + counts.in_flight_others >= capSessions(limits.spendCapPlan, counts.cap_cents)
  ) {
    return "spend_cap_reached";
  }
  if (limits.concurrentLimit !== null && counts.live_others >= limits.concurrentLimit) {
    return "concurrency_limit_reached";
  }
  return null;
}

export function leaseIsLive(lease: LeaseRow, leaseCutoff: number): boolean {
  return (
    lease.open === 1 &&
    lease.ended_at === null &&
    lease.verdict_at === null &&
    Math.max(lease.admitted_at ?? 0, lease.last_seen_at) > leaseCutoff
  );
}

/**
 * The response fields from the counts the decision saw and the session's row after it (null
 * when refused). `used` = billable sessions of the period + sessions in flight (this one
 * included while it is); `active_sessions` = live leases (this one included).
 */
export function explainAdmission(
  counts: AdmissionCountsRow,
  lease: LeaseRow | null,
  limits: AdmissionLimits,
  window: { periodStart: number; leaseCutoff: number },
): Pick<AdmitResponse, "allowed" | "reason" | "used" | "active_sessions"> {
  // the session's own row: after the decision when admitted, unchanged (as counted) when refused
  const inFlightSelf =
    lease === null
      ? counts.self_in_flight === 1
      : lease.open === 1 && lease.admitted_at !== null && lease.admitted_at >= window.periodStart;
  const liveSelf = lease !== null && leaseIsLive(lease, window.leaseCutoff);
  let reason: RefusalReason | null = null;
  if (lease === null) {
    reason = withinLimits(counts, limits);
    // Same transaction, same counts: a refusal always has a reason. Anything else is a bug.
    if (reason === null) throw new Error("admission refused although within limits");
  }
  return {
    allowed: lease !== null,
    reason,
    used: counts.billable + counts.in_flight_others + (inFlightSelf ? 1 : 0),
    active_sessions: counts.live_others + (liveSelf ? 1 : 0),
  };
}

export interface AdmitOptions {
  now: number;
  leaseTtlMs: number;
  pastDueGraceDays: number;
}

export async function admit(db: D1Database, req: AdmitRequest, opts: AdmitOptions): Promise<AdmitResponse> {
  const status = await accountStatus(db, req.user_id, opts.now, opts.pastDueGraceDays);
  const policy = admissionPolicy(status, opts.now);
  const leaseCutoff = opts.now - opts.leaseTtlMs;
  const { counts, lease } = await admitSession(db, {
    sessionId: req.session_id,
    userId: req.user_id,
    projectId: req.project_id,
    now: opts.now,
    periodStart: policy.periodStart,
    leaseCutoff,
    usagePlan: policy.usagePlan,
    admittedPlan: status.plan,
    quota: policy.limits.monthlyQuota,
    concurrentLimit: policy.limits.concurrentLimit,
    capPricing:
      policy.limits.spendCapPlan === null
        ? null
        : {
            includedSessions: PLANS[policy.limits.spendCapPlan].includedSessions,
            perSessionCents: PLANS[policy.limits.spendCapPlan].perSessionCents,
          },
  });
  if (counts.owner_id !== null && counts.owner_id !== req.user_id) throw sessionOwnerMismatch();
  const outcome = explainAdmission(counts, lease, policy.limits, {
    periodStart: policy.periodStart,
    leaseCutoff,
  });
  return {
    allowed: outcome.allowed,
    reason: outcome.reason,
    plan: status.plan,
    used: outcome.used,
    quota: policy.displayedQuota,
    active_sessions: outcome.active_sessions,
    concurrent_limit: policy.limits.concurrentLimit,
  };
}
