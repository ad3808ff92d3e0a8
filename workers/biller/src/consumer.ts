/**
 * The aigate-verdicts consumer: record each verdict once, attributed to its plan and period,
 * then post the touched paid periods' absolute totals to the Stripe meter.
 *
 * A message is acked only when its usage is durably recorded and, for billable paid usage,
 * the period's total is confirmed by Stripe or handed to the minute sweep (the customer's lock
 * is held elsewhere, or the customer's one call of this batch went to another period); it is
 * retried with backoff when anything transient failed (D1, Stripe 429/5xx/network, attribution
 * not possible yet), and parked in dead_letters with the reason when it can never succeed
 * (schema errors, Stripe validation errors, attribution impossible after many attempts).
 * The recorded usage itself is never dropped: usage_periods keeps billable > posted until a
 * post succeeds.
 */
import {
  deadLetterOf,
  describeIssues,
  errorFields,
  insertDeadLetters,
  QUEUES,
  VerdictMessage,
} from "@aigate/shared";
import { attribute, isPaid } from "./attribution";
import { ATTRIBUTION_PARK_ATTEMPTS, type Biller } from "./config";
import { retryDelaySeconds } from "./meter";
import { type PostOutcome, postTotals, refKey } from "./posting";
import { loadAccounts, type PeriodInsert, type PeriodRef, recordUsage, type UsageInsert } from "./queries";

export type Decision = { kind: "ack" } | { kind: "retry"; reason: string } | { kind: "park"; reason: string };

interface SessionGroup {
  verdict: VerdictMessage;
  messages: Message<unknown>[];
}

/** Handles one consumed batch; every message ends acked, retried or parked. */
export async function consumeVerdicts(
  b: Biller,
  messages: readonly Message<unknown>[],
  now: number,
): Promise<void> {
  const decisions = new Map<Message<unknown>, Decision>();
  const sessions = new Map<string, SessionGroup>();
  for (const msg of messages) {
    const parsed = VerdictMessage.safeParse(msg.body);
    if (!parsed.success) {
      decisions.set(msg, {
        kind: "park",
        reason: `invalid verdict message: ${describeIssues(parsed.error)}`,
      });
      continue;
    }
    const group = sessions.get(parsed.data.session_id);
    if (group) group.messages.push(msg);
    else sessions.set(parsed.data.session_id, { verdict: parsed.data, messages: [msg] });
  }
  if (sessions.size > 0) {
    try {
      await recordAndPost(b, sessions, decisions, now);
    } catch (err) {
      b.log.error("verdict batch failed; retrying", { ...errorFields(err), sessions: sessions.size });
    }
  }
  for (const msg of messages) {
    if (!decisions.has(msg)) decisions.set(msg, { kind: "retry", reason: "not completed" });
  }
  await settle(b, messages, decisions, now);
}

async function recordAndPost(
  b: Biller,
  sessions: Map<string, SessionGroup>,
  decisions: Map<Message<unknown>, Decision>,
  now: number,
): Promise<void> {
  const decide = (group: SessionGroup, d: Decision) => {
    for (const m of group.messages) decisions.set(m, d);
  };
  const groups = [...sessions.values()];
  const users = [...new Set(groups.map((g) => g.verdict.user_id))];
  const since = Math.min(...groups.map((g) => g.verdict.created_at));
  const snapshot = await loadAccounts(b.db, users, since);

  const usage: UsageInsert[] = [];
  const periods = new Map<string, PeriodInsert>();
  for (const group of groups) {
    const v = group.verdict;
    const result = attribute(v, snapshot, now, b.config.graceMs);
    if (!result.ok) {
      const attempts = Math.max(...group.messages.map((m) => m.attempts));
      b.log.warn("verdict cannot be attributed yet", {
        session_id: v.session_id,
        reason: result.reason,
        attempts,
      });
      decide(
        group,
        attempts >= ATTRIBUTION_PARK_ATTEMPTS
          ? { kind: "park", reason: `cannot attribute after ${attempts} attempts: ${result.reason}` }
          : { kind: "retry", reason: result.reason },
      );
      continue;
    }
    const a = result.usage;
    usage.push({
      session_id: v.session_id,
      user_id: v.user_id,
      project_id: v.project_id,
      status: v.billable ? "success" : "failed",
      duration_ms: v.audio_ms,
      created_at: v.created_at,
      reason: v.reason,
      rule_version: v.rule_version,
      plan: a.plan,
      period_start: a.period.start,
      period_end: a.period.end,
      adjusted_from_period: a.adjustedFrom,
    });
    if (v.billable) {
      periods.set(`${v.user_id}|${a.plan}|${a.period.start}`, {
        user_id: v.user_id,
        plan: a.plan,
        period_start: a.period.start,
        period_end: a.period.end,
        stripe_customer_id: a.stripeCustomerId,
        stripe_subscription_id: a.subscriptionId,
      });
    }
  }
  if (usage.length === 0) return;

  const token = crypto.randomUUID();
  const stored = await recordUsage(b.db, usage, [...periods.values()], token, now);
  const storedById = new Map(stored.map((row) => [row.id, row]));

  // Billable paid usage needs its period posted; everything else is done once recorded.
  const toPost = new Map<string, PeriodRef[]>();
  const seen = new Set<string>();
  const paid: { group: SessionGroup; key: string }[] = [];
  for (const u of usage) {
    const group = sessions.get(u.session_id);
    const row = storedById.get(u.session_id);
    if (!group || !row) continue; // not recorded: stays undecided, hence retried
    if (row.status !== "success" || !isPaid(row.plan) || row.stripe_customer_id === null) {
      decide(group, { kind: "ack" });
      continue;
    }
    const ref: PeriodRef = { user_id: row.user_id, plan: row.plan, period_start: row.period_start };
    const key = refKey(ref);
    paid.push({ group, key });
    if (seen.has(key)) continue;
    seen.add(key);
    const list = toPost.get(row.stripe_customer_id) ?? [];
    list.push(ref);
    toPost.set(row.stripe_customer_id, list);
  }
  b.log.info("verdicts recorded", { sessions: usage.length, paid: paid.length, customers: toPost.size });
  if (paid.length === 0) return;

  const outcomes = await postTotals(b, toPost, { now, minIntervalMs: b.config.postIntervalMs });
  for (const { group, key } of paid) {
    decide(group, decisionFor(outcomes.get(key)));
  }
}

/** What a posting outcome means for the messages whose usage is in that period. */
export function decisionFor(outcome: PostOutcome | undefined): Decision {
  switch (outcome?.kind) {
    case "posted":
    case "up_to_date":
    case "deferred":
      return { kind: "ack" };
    case "rejected":
      return { kind: "park", reason: `Stripe rejected the meter post: ${outcome.error}` };
    case "transient":
      return { kind: "retry", reason: outcome.error };
    default:
      return { kind: "retry", reason: "no posting outcome" };
  }
}

async function settle(
  b: Biller,
  messages: readonly Message<unknown>[],
  decisions: Map<Message<unknown>, Decision>,
  now: number,
): Promise<void> {
  const parked = messages.filter((m) => decisions.get(m)?.kind === "park");
  let parkFailed = false;
  if (parked.length > 0) {
    try {
      await insertDeadLetters(
        b.db,
        parked.map((m) => {
          const d = decisions.get(m);
          return deadLetterOf(m, {
            queue: QUEUES.verdicts,
            error: d?.kind === "park" ? d.reason : "parked",
            now,
          });
        }),
      ).run();
      for (const m of parked) {
        const d = decisions.get(m);
        b.log.warn("verdict parked", { message_id: m.id, reason: d?.kind === "park" ? d.reason : "" });
      }
    } catch (err) {
      parkFailed = true;
      b.log.error("parking verdicts failed; retrying them", { ...errorFields(err), count: parked.length });
    }
  }
  for (const m of messages) {
    const d = decisions.get(m);
    if (d?.kind === "ack" || (d?.kind === "park" && !parkFailed)) m.ack();
    else m.retry({ delaySeconds: retryDelaySeconds(m.attempts) });
  }
}
