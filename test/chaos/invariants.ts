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
}

export interface UsageRow {
  id: string;
  user_id: string;
  session_id: string;
  status: string;
  plan: string;
  reason: string;
}

export interface PeriodRow {
  user_id: string;
  plan: string;
  period_start: number;
  stripe_customer_id: string | null;
  billable_sessions: number;
  posted_total: number;
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
  usage: UsageRow[];
  periods: PeriodRow[];
  deadLetters: DeadLetterRow[];
  /** user id -> Stripe customer id */
  customers: Map<string, string>;
}

export const SNAPSHOT_QUERIES = [
  {
    sql: `SELECT session_id, user_id, project_id, source, created_at, first_event_at, last_event_at,
                 connected, connect_latency_ms, turn_failed, upstream_error, upstream_status, upstream_code,
                 audio_ms, ended_at, end_reason, admitted_at, open, verdict_at, billable, reason, rule_version,
                 late_events
          FROM sessions`,
  },
  { sql: "SELECT id, user_id, session_id, status, plan, reason FROM session_usage" },
  {
    sql: `SELECT user_id, plan, period_start, stripe_customer_id, billable_sessions, posted_total
          FROM usage_periods`,
  },
  { sql: "SELECT id, queue, body, error, replay_count FROM dead_letters" },
  { sql: "SELECT user_id, stripe_customer_id FROM stripe_customers" },
];

export function toSnapshot(results: Row[][]): Snapshot {
  const [sessions = [], usage = [], periods = [], dead = [], customers = []] = results;
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
        },
      ]),
    ),
    usage: usage.map((r) => ({
      id: str(r, "id"),
      user_id: str(r, "user_id"),
      session_id: str(r, "session_id"),
      status: str(r, "status"),
      plan: str(r, "plan"),
      reason: str(r, "reason"),
    })),
    periods: periods.map((r) => ({
      user_id: str(r, "user_id"),
      plan: str(r, "plan"),
      period_start: num(r, "period_start"),
      stripe_customer_id: strOrNull(r, "stripe_customer_id"),
      billable_sessions: num(r, "billable_sessions"),
      posted_total: num(r, "posted_total"),
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

/** What Stripe (the emulator) holds for one customer on the sessions meter. */
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

export interface Observations {
  meter: Map<string, MeterView>;
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

/** Every session's facts, verdict and single usage row; no stray rows. */
export function checkSessions(exp: Expectations, snap: Snapshot): string[] {
  const out: string[] = [];
  const planOf = new Map(exp.users.map((u) => [u.id, u.plan]));
  const usageBySession = new Map<string, UsageRow[]>();
  for (const u of snap.usage) {
    const list = usageBySession.get(u.session_id) ?? [];
    list.push(u);
    usageBySession.set(u.session_id, list);
  }
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
    const usage = usageBySession.get(s.id) ?? [];
    if (usage.length !== 1) {
      out.push(`session ${s.id}: ${usage.length} session_usage rows, expected 1`);
      continue;
    }
    const [u] = usage;
    if (!u) continue;
    const status = s.expected.billable ? "success" : "failed";
    if (u.id !== s.id || u.user_id !== s.userId || u.status !== status || u.reason !== s.expected.reason) {
      out.push(
        `session ${s.id}: usage row ${JSON.stringify(u)} expected user ${s.userId}, status ${status}, reason ${s.expected.reason}`,
      );
    }
    if (u.plan !== planOf.get(s.userId)) {
      out.push(`session ${s.id}: billed under plan ${u.plan}, user is on ${planOf.get(s.userId)}`);
    }
  }
  const refused = new Set(exp.refused);
  for (const id of snap.sessions.keys()) {
    if (refused.has(id)) out.push(`session ${id}: refused at admission, yet a sessions row exists`);
    else if (!expectedIds.has(id)) out.push(`session ${id}: a sessions row nobody sent`);
  }
  for (const [id, rows] of usageBySession) {
    if (!expectedIds.has(id))
      out.push(`session ${id}: ${rows.length} session_usage row(s) for no workload session`);
  }
  return out;
}

/** Per user and period: D1 rows == usage_periods == Stripe meter == billing API == the workload. */
export function checkTotals(exp: Expectations, snap: Snapshot, obs: Observations): string[] {
  const out: string[] = [];
  const paidCustomers = new Set<string>();
  for (const user of exp.users) {
    const mine = exp.sessions.filter((s) => s.userId === user.id);
    const billable = mine.filter((s) => s.expected.billable === 1).length;
    const failed = mine.length - billable;
    const rows = snap.usage.filter((u) => u.user_id === user.id && u.status === "success").length;
    if (rows !== billable)
      out.push(`${user.id}: ${rows} billable session_usage rows, workload has ${billable}`);

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
      const meter = obs.meter.get(customer);
      if (!meter) out.push(`${user.id}: no meter reading for ${customer}`);
      else {
        if (meter.value !== billable)
          out.push(`${user.id}: Stripe meter total ${meter.value}, workload has ${billable}`);
        if (meter.maxPosted > billable)
          out.push(`${user.id}: a meter post of ${meter.maxPosted} > ${billable}`);
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
  for (const [customer, meter] of obs.meter) {
    if (!paidCustomers.has(customer) && meter.value !== 0) {
      out.push(`Stripe meter has ${meter.value} for ${customer}, who is no paid workload user`);
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
  const usage = new Set(snap.usage.map((u) => u.session_id));
  const missing = exp.sessions.filter((s) => !snap.sessions.has(s.id)).length;
  if (missing > 0) out.push(`${missing} sessions not recorded`);
  const unjudged = [...snap.sessions.values()].filter((r) => r.verdict_at === null).length;
  if (unjudged > 0) out.push(`${unjudged} sessions without a verdict`);
  const unrecorded = [...snap.sessions.values()].filter(
    (r) => r.verdict_at !== null && !usage.has(r.session_id),
  );
  if (unrecorded.length > 0) out.push(`${unrecorded.length} verdicts not in session_usage`);
  const open = [...snap.sessions.values()].filter((r) => r.verdict_at !== null && r.open === 1).length;
  if (open > 0) out.push(`${open} judged sessions still open`);
  const unposted = snap.periods.filter(
    (p) => p.stripe_customer_id !== null && p.posted_total !== p.billable_sessions,
  );
  if (unposted.length > 0) out.push(`${unposted.length} paid periods not confirmed by Stripe`);
  return out;
}
