/**
 * The aigate-verdicts consumer: the classifier records usage with each verdict (in D1, in the
 * session's usage series) and tells the biller which paid series grew; the biller posts their
 * absolute totals to the Stripe meter.
 *
 * A message is acked once its series' totals are confirmed by Stripe or handed to the minute sweep
 * (posted less than the posting interval ago, the customer's lock held elsewhere, or the
 * customer's one call of this batch went to another series): the totals are read from D1 at post
 * time, so the sweep posts the same thing later. It is retried with backoff when anything
 * transient failed (D1, Stripe 429/5xx/network), and parked in dead_letters with the reason when it
 * can never succeed (schema errors, Stripe validation errors). The usage itself is never dropped:
 * a series keeps billable != posted until a post succeeds.
 *
 * A version 1 message (one verdict, from a dead letter parked before usage moved to the classifier)
 * posts its session's series; a session judged without a series is left to re-attribution.
 *
 * Sharded D1: a message's series (and a version 1 message's session) are read and posted on their
 * user's shard, one shard after the other; a message naming users of several shards is acked only
 * once every shard's part is done (a shard that fails leaves its messages to be retried, the others'
 * are settled as usual). Parked messages go to dead_letters in the home database.
 */
import {
  BillerMessage,
  deadLetterOf,
  describeIssues,
  errorFields,
  groupByShard,
  insertDeadLetters,
  QUEUES,
  requestReattributions,
  type SeriesRef,
} from "@aigate/shared";
import { type Biller, onShard } from "./config";
import { retryDelaySeconds } from "./meter";
import { type PostOutcome, postTotals, refKey } from "./posting";
import { seriesOfSessions } from "./queries";

export type Decision = { kind: "ack" } | { kind: "retry"; reason: string } | { kind: "park"; reason: string };

/** Handles one consumed batch; every message ends acked, retried or parked. */
export async function consumeVerdicts(
  b: Biller,
  messages: readonly Message<unknown>[],
  now: number,
): Promise<void> {
  const decisions = new Map<Message<unknown>, Decision>();
  const wants = new Map<Message<unknown>, SeriesRef[]>();
  const sessions = new Map<Message<unknown>, Session>();
  for (const msg of messages) {
    const parsed = BillerMessage.safeParse(msg.body);
    if (!parsed.success) {
      decisions.set(msg, {
        kind: "park",
        reason: `invalid verdict message: ${describeIssues(parsed.error)}`,
      });
    } else if (parsed.data.kind === "usage") {
      wants.set(msg, parsed.data.series);
    } else if (!parsed.data.billable) {
      decisions.set(msg, { kind: "ack" });
    } else {
      sessions.set(msg, { session_id: parsed.data.session_id, user_id: parsed.data.user_id });
    }
  }
  try {
    if (sessions.size > 0) await resolveSessions(b, sessions, wants, decisions, now);
    if (wants.size > 0) await postWanted(b, wants, decisions, now);
  } catch (err) {
    b.log.error("verdict batch failed; retrying", { ...errorFields(err), messages: messages.length });
  }
  for (const msg of messages) {
    if (!decisions.has(msg)) decisions.set(msg, { kind: "retry", reason: "not completed" });
  }
  await settle(b, messages, decisions, now);
}

interface Session {
  session_id: string;
  user_id: string;
}

/** Version 1 messages: the series their sessions were recorded in (read on each user's shard). */
async function resolveSessions(
  b: Biller,
  sessions: Map<Message<unknown>, Session>,
  wants: Map<Message<unknown>, SeriesRef[]>,
  decisions: Map<Message<unknown>, Decision>,
  now: number,
): Promise<void> {
  for (const group of groupByShard(b.shards, [...sessions], ([, s]) => s.user_id)) {
    try {
      await resolveOnShard(onShard(b, group.db), group.items, wants, decisions, now);
    } catch (err) {
      // left undecided: retried
      b.log.error("reading verdicts' sessions failed; retrying them", {
        ...errorFields(err),
        shard: group.index,
        messages: group.items.length,
      });
    }
  }
}

async function resolveOnShard(
  b: Biller,
  sessions: readonly (readonly [Message<unknown>, Session])[],
  wants: Map<Message<unknown>, SeriesRef[]>,
  decisions: Map<Message<unknown>, Decision>,
  now: number,
): Promise<void> {
  const rows = await seriesOfSessions(b.db, [...new Set(sessions.map(([, s]) => s.session_id))]);
  const byId = new Map(rows.map((r) => [r.session_id, r]));
  const pending: { user_id: string; from_ms: number }[] = [];
  const found: [Message<unknown>, Decision | SeriesRef[]][] = [];
  for (const [msg, { session_id: id }] of sessions) {
    const row = byId.get(id);
    if (!row || row.verdict_at === null) {
      found.push([msg, { kind: "retry", reason: `session ${id} has no verdict recorded yet` }]);
    } else if (row.plan === null || row.period_start === null) {
      pending.push({ user_id: row.user_id, from_ms: row.billed_at ?? row.verdict_at });
      found.push([msg, { kind: "ack" }]);
    } else if (row.plan === "free" || row.billable !== 1) {
      found.push([msg, { kind: "ack" }]);
    } else {
      found.push([msg, [{ user_id: row.user_id, plan: row.plan, period_start: row.period_start }]]);
    }
  }
  if (pending.length > 0) await requestReattributions(b.db, pending, now).run();
  // decided only once the shard's part is done: a failure above leaves these messages to a retry
  for (const [msg, outcome] of found) {
    if (Array.isArray(outcome)) wants.set(msg, outcome);
    else decisions.set(msg, outcome);
  }
}

async function postWanted(
  b: Biller,
  wants: Map<Message<unknown>, SeriesRef[]>,
  decisions: Map<Message<unknown>, Decision>,
  now: number,
): Promise<void> {
  const series = new Map<string, SeriesRef>();
  for (const refs of wants.values()) for (const ref of refs) series.set(refKey(ref), ref);
  // each series on its user's shard; a series whose shard failed has no outcome: its messages are retried
  const outcomes = new Map<string, PostOutcome>();
  for (const group of groupByShard(b.shards, [...series.values()], (ref) => ref.user_id)) {
    try {
      const posted = await postTotals(onShard(b, group.db), group.items, {
        now,
        minIntervalMs: b.config.postIntervalMs,
      });
      for (const [key, outcome] of posted) outcomes.set(key, outcome);
    } catch (err) {
      b.log.error("posting series failed; retrying their messages", {
        ...errorFields(err),
        shard: group.index,
        series: group.items.length,
      });
    }
  }
  b.log.info("series posted", { series: series.size, messages: wants.size });
  for (const [msg, refs] of wants) {
    const worst = refs
      .map((r) => decisionFor(outcomes.get(refKey(r))))
      .reduce(worse, { kind: "ack" } as Decision);
    decisions.set(msg, worst);
  }
}

const RANK = { ack: 0, park: 1, retry: 2 } as const;
function worse(a: Decision, b: Decision): Decision {
  return RANK[b.kind] > RANK[a.kind] ? b : a;
}

/** What a posting outcome means for the messages whose usage is in that period. */
export function decisionFor(outcome: PostOutcome | undefined): Decision {
  switch (outcome?.kind) {
    case "posted":
    case "up_to_date":
    case "deferred":
      return { kind: "ack" };
    case "rejected":
      // one dead letter per streak of rejections: a later one finds it parked already (by this
      // consumer or by the sweep), and the sweep keeps the series' posts going with backoff
      return outcome.again === true
        ? { kind: "ack" }
        : { kind: "park", reason: `Stripe rejected the meter post: ${outcome.error}` };
    case "frozen":
      return { kind: "ack" };
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
        b.shards.home,
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
