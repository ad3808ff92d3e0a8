/**
 * The money invariants of the chaos suite, checked at the end of a run against what D1, the Stripe
 * emulator and the billing API say. Pure: every check returns the mismatches it found (an empty
 * list when the money is exact), so the suite can count them and tests can prove each check fires.
 */
import { num, numOrNull, type Row, str, strOrNull } from "./clients";
import type { ChaosUser, ExpectedFacts, Hijack, PlanName, SessionPlan } from "./workload";

export interface SessionRow extends Omit<ExpectedFacts, "billable" | "reason" | "rule_version"> {
  session_id: string;
  admitted_at: number | null;
  open: number;
  verdict_at: number | null;
  billable: number | null;
  reason: string | null;
  rule_version: number | null;
  late_events: number;
  /** The session's series (docs/billing.md "Recording"): written with the verdict. */
  billed_at: number | null;
  plan: string | null;
  period_start: number | null;
  /** Rank in the series, billable sessions only. */
  seq: number | null;
}

/** A usage series (`usage_periods`): one plan's window of one user. */
export interface PeriodRow {
  user_id: string;
  plan: string;
  period_start: number;
  period_end: number;
  stripe_customer_id: string | null;
  meter_event_name: string | null;
  billable_sessions: number;
  posted_total: number;
  seq_top: number;
  adjusted: number;
  frozen_at: number | null;
  stripe_billed: number | null;
}

/** An adjustment (`usage_adjustments`): sessions a frozen series billed by invoice item. */
export interface AdjustmentRow {
  id: string;
  user_id: string;
  plan: string;
  period_start: number;
  sessions: number;
  amount_cents: number;
  state: string;
}

export interface DeadLetterRow {
  id: string;
  queue: string;
  body: string;
  error: string;
  replay_count: number;
}

export interface Snapshot {
  sessions: Map<string, SessionRow>;
  periods: PeriodRow[];
  adjustments: AdjustmentRow[];
  deadLetters: DeadLetterRow[];
  /** user id -> Stripe customer id */
  customers: Map<string, string>;
}

export const SNAPSHOT_QUERIES = [
  {
    sql: `SELECT session_id, user_id, project_id, source, created_at, first_event_at, last_event_at,
                 connected, connect_latency_ms, turn_failed, upstream_error, upstream_status, upstream_code,
                 audio_ms, ended_at, end_reason, admitted_at, open, verdict_at, billable, reason, rule_version,
                 late_events, billed_at, plan, period_start, seq
          FROM sessions`,
  },
  {
    sql: `SELECT user_id, plan, period_start, period_end, stripe_customer_id, meter_event_name,
                 billable_sessions, posted_total, seq_top, adjusted, frozen_at, stripe_billed
          FROM usage_periods`,
  },
  { sql: "SELECT id, user_id, plan, period_start, sessions, amount_cents, state FROM usage_adjustments" },
  { sql: "SELECT id, queue, body, error, replay_count FROM dead_letters" },
  { sql: "SELECT user_id, stripe_customer_id FROM stripe_customers" },
];

export function toSnapshot(results: Row[][]): Snapshot {
  const [sessions = [], periods = [], adjustments = [], dead = [], customers = []] = results;
  return {
    sessions: new Map(
      sessions.map((r) => [
        str(r, "session_id"),
        {
          session_id: str(r, "session_id"),
          user_id: str(r, "user_id"),
          project_id: str(r, "project_id"),
          source: strOrNull(r, "source") ?? "",
          created_at: numOrNull(r, "created_at") ?? -1,
          first_event_at: numOrNull(r, "first_event_at") ?? -1,
          last_event_at: numOrNull(r, "last_event_at") ?? -1,
          connected: num(r, "connected"),
          connect_latency_ms: numOrNull(r, "connect_latency_ms"),
          turn_failed: num(r, "turn_failed"),
          upstream_error: num(r, "upstream_error"),
          upstream_status: numOrNull(r, "upstream_status"),
          upstream_code: strOrNull(r, "upstream_code"),
          audio_ms: num(r, "audio_ms"),
          ended_at: numOrNull(r, "ended_at") ?? -1,
          end_reason: strOrNull(r, "end_reason"),
          admitted_at: numOrNull(r, "admitted_at"),
          open: num(r, "open"),
          verdict_at: numOrNull(r, "verdict_at"),
          billable: numOrNull(r, "billable"),
          reason: strOrNull(r, "reason"),
          rule_version: numOrNull(r, "rule_version"),
          late_events: num(r, "late_events"),
          billed_at: numOrNull(r, "billed_at"),
          plan: strOrNull(r, "plan"),
          period_start: numOrNull(r, "period_start"),
          seq: numOrNull(r, "seq"),
        },
      ]),
    ),
    periods: periods.map((r) => ({
      user_id: str(r, "user_id"),
      plan: str(r, "plan"),
      period_start: num(r, "period_start"),
      period_end: num(r, "period_end"),
      stripe_customer_id: strOrNull(r, "stripe_customer_id"),
      meter_event_name: strOrNull(r, "meter_event_name"),
      billable_sessions: num(r, "billable_sessions"),
      posted_total: num(r, "posted_total"),
      seq_top: num(r, "seq_top"),
      adjusted: num(r, "adjusted"),
      frozen_at: numOrNull(r, "frozen_at"),
      stripe_billed: numOrNull(r, "stripe_billed"),
    })),
    adjustments: adjustments.map((r) => ({
      id: str(r, "id"),
      user_id: str(r, "user_id"),
      plan: str(r, "plan"),
      period_start: num(r, "period_start"),
      sessions: num(r, "sessions"),
      amount_cents: num(r, "amount_cents"),
      state: str(r, "state"),
    })),
    deadLetters: dead.map((r) => ({
      id: str(r, "id"),
      queue: str(r, "queue"),
      body: str(r, "body"),
      error: str(r, "error"),
      replay_count: num(r, "replay_count"),
    })),
    customers: new Map(customers.map((r) => [str(r, "user_id"), str(r, "stripe_customer_id")])),
  };
}

/** What Stripe (the emulator) holds for one customer on one plan's meter. */
export interface MeterView {
  /** The aggregated (`last`) value. */
  value: number;
  /** The largest total ever posted: must never exceed the true count. */
  maxPosted: number;
}

export interface UsageApiView {
  plan: string;
  sessions_this_month: number;
  failed_sessions: number;
  quota: number | null;
  estimated_cost_cents: number;
  active_sessions: number;
}

export interface SessionsApiView {
  ids: string[];
  billable: number;
}

export interface AdmissionWave {
  label: string;
  userId: string;
  requested: number;
  allowed: number;
  expectedAllowed: number;
  /** The most the limits allow at this point: admitting more is a breach, whatever was expected. */
  limit: number;
  reasons: string[];
  expectedReason: string | null;
}

export type PaidPlanName = "payg" | "pro";
export const PAID_PLANS: readonly PaidPlanName[] = ["payg", "pro"];

export interface Observations {
  /** Per Stripe customer, per plan meter (`aigate_payg_sessions`, `aigate_pro_sessions`). */
  meter: Map<string, Record<PaidPlanName, MeterView>>;
  usageApi: Map<string, UsageApiView>;
  sessionsApi: Map<string, SessionsApiView>;
}

export interface Expectations {
  users: ChaosUser[];
  sessions: SessionPlan[];
  hijacks: Hijack[];
  /** Sessions refused at admission: no row may exist for them. */
  refused: string[];
  /** Events sent after a session's verdict, per session: counted as late, never merged. */
  late: Map<string, number>;
  waves: AdmissionWave[];
}

const FACT_FIELDS = [
  "user_id",
  "project_id",
  "source",
  "created_at",
  "first_event_at",
  "last_event_at",
  "connected",
  "connect_latency_ms",
  "turn_failed",
  "upstream_error",
  "upstream_status",
  "upstream_code",
  "audio_ms",
  "ended_at",
  "end_reason",
  "billable",
  "reason",
  "rule_version",
] as const;

/** The catalog's price of `n` billable sessions in one period (README.md: the plans), in cents. */
export function expectedCostCents(plan: PlanName, n: number): number {
  if (plan === "payg") return 10 * n;
  if (plan === "pro") return 2900 + 7 * Math.max(0, n - 400);
  return 0;
}

const seriesId = (user: string, plan: string, start: number) => `${user}/${plan}/${start}`;

/**
 * Every session's facts and verdict, and its attribution: under its owner's plan, in an existing
 * series of that user, ranked when billable (ranks of a series distinct and counted by it); no
 * stray rows. (The plain chaos run has no plan changes: every user stays on their plan.)
 */
export function checkSessions(exp: Expectations, snap: Snapshot): string[] {
  const out: string[] = [];
  const planOf = new Map(exp.users.map((u) => [u.id, u.plan]));
  const series = new Map(snap.periods.map((p) => [seriesId(p.user_id, p.plan, p.period_start), p]));
  const expectedIds = new Set(exp.sessions.map((s) => s.id));
  for (const s of exp.sessions) {
    const row = snap.sessions.get(s.id);
    if (!row) {
      out.push(`session ${s.id}: no sessions row (events neither recorded nor replayed)`);
      continue;
    }
    const diffs = FACT_FIELDS.filter((f) => row[f] !== s.expected[f]).map(
      (f) => `${f}=${JSON.stringify(row[f])} expected ${JSON.stringify(s.expected[f])}`,
    );
    if (row.verdict_at === null) diffs.push("no verdict");
    if (row.open !== 0) diffs.push("still open (counts against the free quota)");
    const late = exp.late.get(s.id) ?? 0;
    if (row.late_events < late)
      diffs.push(`late_events=${row.late_events}, ${late} events were sent after the verdict`);
    if (diffs.length > 0) out.push(`session ${s.id} (${s.outcome}): ${diffs.join(", ")}`);
    if (row.verdict_at === null) continue;
    if (row.plan === null || row.period_start === null) {
      out.push(`session ${s.id}: judged without a series (plan ${row.plan}, period ${row.period_start})`);
      continue;
    }
    if (row.plan !== planOf.get(s.userId)) {
      out.push(`session ${s.id}: billed under plan ${row.plan}, user is on ${planOf.get(s.userId)}`);
    }
    if (!series.has(seriesId(row.user_id, row.plan, row.period_start))) {
      out.push(
        `session ${s.id}: its series ${seriesId(row.user_id, row.plan, row.period_start)} does not exist`,
      );
    }
    if (s.expected.billable === 1 && row.seq === null) out.push(`session ${s.id}: billable without a rank`);
    if (s.expected.billable === 0 && row.seq !== null)
      out.push(`session ${s.id}: not billable, ranked ${row.seq}`);
  }
  const ranks = new Map<string, number[]>();
  for (const row of snap.sessions.values()) {
    if (row.plan === null || row.period_start === null || row.seq === null) continue;
    const key = seriesId(row.user_id, row.plan, row.period_start);
    ranks.set(key, [...(ranks.get(key) ?? []), row.seq]);
  }
  for (const p of snap.periods) {
    const key = seriesId(p.user_id, p.plan, p.period_start);
    const mine = ranks.get(key) ?? [];
    if (new Set(mine).size !== mine.length) out.push(`series ${key}: a rank given twice`);
    if (mine.length !== p.billable_sessions) {
      out.push(
        `series ${key}: billable_sessions ${p.billable_sessions}, ${mine.length} sessions ranked in it`,
      );
    }
    if (mine.some((r) => r < 1 || r > p.seq_top)) out.push(`series ${key}: a rank outside 1..${p.seq_top}`);
  }
  const refused = new Set(exp.refused);
  for (const id of snap.sessions.keys()) {
    if (refused.has(id)) out.push(`session ${id}: refused at admission, yet a sessions row exists`);
    else if (!expectedIds.has(id)) out.push(`session ${id}: a sessions row nobody sent`);
  }
  return out;
}

/** Per user and series: D1 sessions == usage_periods == Stripe's plan meter == billing API == the workload. */
export function checkTotals(exp: Expectations, snap: Snapshot, obs: Observations): string[] {
  const out: string[] = [];
  const paidCustomers = new Set<string>();
  for (const user of exp.users) {
    const mine = exp.sessions.filter((s) => s.userId === user.id);
    const billable = mine.filter((s) => s.expected.billable === 1).length;
    const failed = mine.length - billable;
    const rows = [...snap.sessions.values()].filter(
      (r) => r.user_id === user.id && r.billable === 1 && r.plan !== null,
    ).length;
    if (rows !== billable)
      out.push(`${user.id}: ${rows} billable sessions attributed, workload has ${billable}`);

    const periods = snap.periods.filter((p) => p.user_id === user.id);
    const total = periods.reduce((n, p) => n + p.billable_sessions, 0);
    if (total !== billable)
      out.push(`${user.id}: usage_periods count ${total} billable, workload has ${billable}`);
    if (periods.some((p) => p.plan !== user.plan)) {
      out.push(
        `${user.id}: usage_periods under plans ${periods.map((p) => p.plan).join(",")}, user is ${user.plan}`,
      );
    }
    if (periods.length > 1) out.push(`${user.id}: ${periods.length} usage periods, all sessions are in one`);
    for (const p of periods) {
      if (p.frozen_at !== null || p.adjusted !== 0)
        out.push(`${user.id}: series ${p.plan}/${p.period_start} frozen or adjusted inside its period`);
    }

    const customer = snap.customers.get(user.id) ?? null;
    if (user.plan === "free") {
      if (periods.some((p) => p.stripe_customer_id !== null || p.posted_total !== 0)) {
        out.push(`${user.id}: free usage was sent toward Stripe`);
      }
    } else if (customer === null) {
      out.push(`${user.id}: paid user without a Stripe customer`);
    } else {
      paidCustomers.add(customer);
      for (const p of periods) {
        if (p.stripe_customer_id !== customer)
          out.push(`${user.id}: period posts to ${p.stripe_customer_id}`);
        if (p.posted_total !== p.billable_sessions) {
          out.push(`${user.id}: posted_total ${p.posted_total} != billable_sessions ${p.billable_sessions}`);
        }
      }
      const meters = obs.meter.get(customer);
      if (!meters) out.push(`${user.id}: no meter reading for ${customer}`);
      else {
        for (const plan of PAID_PLANS) {
          const want = plan === user.plan ? billable : 0;
          const meter = meters[plan];
          if (meter.value !== want)
            out.push(`${user.id}: Stripe ${plan} meter total ${meter.value}, workload has ${want}`);
          if (meter.maxPosted > want)
            out.push(`${user.id}: a ${plan} meter post of ${meter.maxPosted} > ${want}`);
        }
      }
    }

    const api = obs.usageApi.get(user.id);
    if (!api) out.push(`${user.id}: no usage API answer`);
    else {
      const expected = {
        plan: user.plan,
        sessions_this_month: billable,
        failed_sessions: failed,
        quota: user.plan === "free" ? 100 : user.plan === "pro" ? 400 : null,
        estimated_cost_cents: expectedCostCents(user.plan, billable),
        active_sessions: 0,
      };
      const diffs = (Object.keys(expected) as Array<keyof UsageApiView>)
        .filter((k) => api[k] !== expected[k])
        .map((k) => `${k}=${JSON.stringify(api[k])} expected ${JSON.stringify(expected[k])}`);
      if (diffs.length > 0) out.push(`${user.id}: GET /api/billing/usage ${diffs.join(", ")}`);
    }

    const listed = obs.sessionsApi.get(user.id);
    if (!listed) out.push(`${user.id}: no sessions API answer`);
    else {
      const want = new Set(mine.map((s) => s.id));
      const got = new Set(listed.ids);
      if (listed.ids.length !== got.size)
        out.push(`${user.id}: GET /api/billing/sessions lists a session twice`);
      const missing = [...want].filter((id) => !got.has(id));
      const extra = [...got].filter((id) => !want.has(id));
      if (missing.length > 0 || extra.length > 0) {
        out.push(`${user.id}: sessions API missing [${missing.join(",")}] extra [${extra.join(",")}]`);
      }
      if (listed.billable !== billable)
        out.push(`${user.id}: sessions API shows ${listed.billable} billable`);
    }
  }
  for (const a of snap.adjustments) {
    out.push(`adjustment ${a.id}: ${a.sessions} sessions billed by invoice item, none was due`);
  }
  for (const [customer, meters] of obs.meter) {
    for (const plan of PAID_PLANS) {
      if (!paidCustomers.has(customer) && meters[plan].value !== 0) {
        out.push(
          `Stripe ${plan} meter has ${meters[plan].value} for ${customer}, who is no paid workload user`,
        );
      }
    }
  }
  return out;
}

/** Parked telemetry: every hijack event is parked as a user mismatch; nothing else is parked but the poison. */
export function checkDeadLetters(exp: Expectations, snap: Snapshot): string[] {
  const out: string[] = [];
  const explained = new Set<string>();
  for (const h of exp.hijacks) {
    const letter = snap.deadLetters.find(
      (d) => d.error.startsWith("user_mismatch") && d.body.includes(JSON.stringify(h.event.id)),
    );
    if (!letter)
      out.push(`hijack event ${h.event.id} (session ${h.sessionId}) is not parked as user_mismatch`);
    else explained.add(letter.id);
  }
  const poison = exp.sessions.filter((s) => s.poison).map((s) => s.id);
  for (const d of snap.deadLetters) {
    if (explained.has(d.id)) continue;
    if (
      d.error.startsWith("user_mismatch") &&
      exp.hijacks.some((h) => d.body.includes(JSON.stringify(h.event.id)))
    ) {
      continue; // a second parking of a hijack event (e.g. its delivery retried after a crash)
    }
    const names = poison.find((id) => d.body.includes(JSON.stringify(id)));
    if (names !== undefined) {
      if (d.replay_count < 1) out.push(`dead letter ${d.id} of poison session ${names} was never replayed`);
      continue;
    }
    out.push(`unexpected dead letter ${d.id} (${d.queue}): ${d.error.slice(0, 200)}`);
  }
  for (const id of poison) {
    if (!snap.deadLetters.some((d) => d.body.includes(JSON.stringify(id)))) {
      out.push(`poison session ${id} was never parked in dead_letters`);
    }
  }
  return out;
}

/** Admission waves: never beyond the limits, and exactly what the limits allowed. */
export function checkAdmissions(exp: Expectations): string[] {
  const out: string[] = [];
  for (const w of exp.waves) {
    if (w.allowed > w.limit) {
      out.push(
        `${w.label}: ${w.allowed} of ${w.requested} admitted, the limits allow ${w.limit} (free tier breached)`,
      );
    } else if (w.allowed !== w.expectedAllowed) {
      out.push(`${w.label}: ${w.allowed} of ${w.requested} admitted, expected ${w.expectedAllowed}`);
    }
    const wrong = w.reasons.filter((r) => r !== w.expectedReason);
    if (wrong.length > 0)
      out.push(`${w.label}: refusal reasons ${wrong.join(",")}, expected ${w.expectedReason}`);
  }
  return out;
}

export function checkAll(exp: Expectations, snap: Snapshot, obs: Observations): string[] {
  return [
    ...checkSessions(exp, snap),
    ...checkTotals(exp, snap, obs),
    ...checkDeadLetters(exp, snap),
    ...checkAdmissions(exp),
  ];
}

/** Reasons the pipeline is not done yet with the expected sessions (empty = quiescent). */
export function pendingWork(exp: Expectations, snap: Snapshot): string[] {
  const out: string[] = [];
  const missing = exp.sessions.filter((s) => !snap.sessions.has(s.id)).length;
  if (missing > 0) out.push(`${missing} sessions not recorded`);
  const unjudged = [...snap.sessions.values()].filter((r) => r.verdict_at === null).length;
  if (unjudged > 0) out.push(`${unjudged} sessions without a verdict`);
  const unattributed = [...snap.sessions.values()].filter((r) => r.verdict_at !== null && r.plan === null);
  if (unattributed.length > 0) out.push(`${unattributed.length} verdicts without a series`);
  const open = [...snap.sessions.values()].filter((r) => r.verdict_at !== null && r.open === 1).length;
  if (open > 0) out.push(`${open} judged sessions still open`);
  const unposted = snap.periods.filter(
    (p) => p.stripe_customer_id !== null && p.frozen_at === null && p.posted_total !== p.billable_sessions,
  );
  if (unposted.length > 0) out.push(`${unposted.length} paid periods not confirmed by Stripe`);
  return out;
}
