/**
 * The seeded workload: users on every plan, sessions with random outcomes, their CloudEvents, how
 * many times each event is delivered, and the facts and verdict every session must end with.
 * Pure: the same seed gives the same workload (event times are relative to a start time).
 *
 * Expected facts and verdicts are computed here from the contract (README.md: rule version 1;
 * docs/architecture.md: how facts merge), independently of the product's code: flags are ORed,
 * latency is the minimum, audio the maximum, times are minima/maxima, and rule version 1 picks
 * the first failing reason in the documented order.
 */
import { shardBucket } from "@aigate/shared/shardKey";
import { mulberry32, type Rng } from "./random";

export type PlanName = "free" | "payg" | "pro";
export type Outcome =
  | "success"
  | "turn_failed"
  | "upstream_error"
  | "not_connected"
  | "slow_connect"
  | "too_short";
export const OUTCOMES: readonly Outcome[] = [
  "success",
  "turn_failed",
  "upstream_error",
  "not_connected",
  "slow_connect",
  "too_short",
];
export const FREE_QUOTA = 100;
export const FREE_CONCURRENCY = 5;

export interface ChaosUser {
  id: string;
  plan: PlanName;
  /** regular: random sessions; heavy: pushed to the free quota; burst: pushed to the concurrency limit. */
  role: "regular" | "heavy" | "burst";
}

export interface WireEvent {
  specversion: "1.0";
  id: string;
  source: string;
  type: string;
  subject: string;
  time: string;
  data: Record<string, string | number>;
}

export interface ExpectedFacts {
  user_id: string;
  project_id: string;
  source: string;
  created_at: number;
  first_event_at: number;
  last_event_at: number;
  connected: number;
  connect_latency_ms: number | null;
  turn_failed: number;
  upstream_error: number;
  upstream_status: number | null;
  upstream_code: string | null;
  audio_ms: number;
  ended_at: number;
  end_reason: string | null;
  billable: number;
  reason: Outcome;
  rule_version: number;
}

export interface SessionPlan {
  id: string;
  userId: string;
  outcome: Outcome;
  /** The owner's events, each once. */
  events: WireEvent[];
  /** How many times each event (same index) is delivered: 1 to 3. */
  copies: number[];
  expected: ExpectedFacts;
  /** Sent in requests of its own; the chaos classifier refuses it until it is fixed. */
  poison: boolean;
}

/** An event naming another user for an existing session: must be parked, never merged. */
export interface Hijack {
  sessionId: string;
  event: WireEvent;
}

export interface Workload {
  seed: number;
  start: number;
  users: ChaosUser[];
  sessions: SessionPlan[];
  hijacks: Hijack[];
}

const GATEWAYS = ["gw-eu-1", "gw-us-1", "gw-ap-1"];
const END_REASONS = ["hangup", "timeout", "client_left"];
const UPSTREAM = [
  { status: 500, code: "server_error" },
  { status: 429, code: "rate_limited" },
  { status: 503, code: null },
  { status: null, code: "session_expired" },
] as const;

/** Rule version 1 (README.md), written out again so the suite does not trust the product's copy. */
export function expectedReason(f: {
  connected: number;
  connect_latency_ms: number | null;
  turn_failed: number;
  upstream_error: number;
  audio_ms: number;
}): Outcome {
  if (f.turn_failed) return "turn_failed";
  if (f.upstream_error) return "upstream_error";
  if (!f.connected) return "not_connected";
  if (f.connect_latency_ms === null || f.connect_latency_ms > 2000) return "slow_connect";
  if (f.audio_ms < 5000) return "too_short";
  return "success";
}

/** Merges a session's own events into the facts the contract promises. */
export function expectedFacts(events: readonly WireEvent[]): ExpectedFacts {
  const first = events[0];
  if (!first) throw new Error("a session needs events");
  const times = events.map((e) => Date.parse(e.time));
  const of = (type: string) => events.filter((e) => e.type === `aigate.session.${type}`);
  const num = (e: WireEvent, k: string): number | null => {
    const v = e.data[k];
    return typeof v === "number" ? v : null;
  };
  const str = (e: WireEvent, k: string): string | null => {
    const v = e.data[k];
    return typeof v === "string" ? v : null;
  };
  const latencies = of("connected")
    .map((e) => num(e, "connect_latency_ms"))
    .filter((n) => n !== null);
  const audio = [...of("heartbeat"), ...of("ended")].map((e) => num(e, "audio_ms") ?? 0);
  const upstream = of("upstream_error")[0];
  const ended = of("ended")
    .map((e) => ({ at: Date.parse(e.time), reason: str(e, "reason") }))
    .sort((a, b) => a.at - b.at)[0];
  const created = of("created").map((e) => Date.parse(e.time));
  if (!ended || created.length === 0) throw new Error("workload sessions have created and ended events");
  const facts = {
    user_id: String(first.data.user_id),
    project_id: String(first.data.project_id),
    source: first.source,
    created_at: Math.min(...created),
    first_event_at: Math.min(...times),
    last_event_at: Math.max(...times),
    connected: latencies.length > 0 ? 1 : 0,
    connect_latency_ms: latencies.length > 0 ? Math.min(...latencies) : null,
    turn_failed: of("turn_failed").length > 0 ? 1 : 0,
    upstream_error: upstream ? 1 : 0,
    upstream_status: upstream ? num(upstream, "status") : null,
    upstream_code: upstream ? str(upstream, "code") : null,
    audio_ms: Math.max(0, ...audio),
    ended_at: ended.at,
    end_reason: ended.reason,
  };
  const reason = expectedReason(facts);
  return { ...facts, billable: reason === "success" ? 1 : 0, reason, rule_version: 1 };
}

/** Builds one session of `outcome`: the events a gateway sends, in time order. */
export function makeSession(
  rng: Rng,
  id: string,
  userId: string,
  outcome: Outcome,
  start: number,
  opts: { poison?: boolean; projectId?: string } = {},
): SessionPlan {
  const source = rng.pick(GATEWAYS);
  const project = `proj-${userId.slice(-4)}-${rng.int(1, 2)}`;
  const data = { user_id: userId, project_id: opts.projectId ?? project };
  const events: WireEvent[] = [];
  const add = (suffix: string, type: string, at: number, extra: Record<string, string | number> = {}) => {
    events.push({
      specversion: "1.0",
      id: `${id}-${suffix}`,
      source,
      type: `aigate.session.${type}`,
      subject: id,
      time: new Date(start + at).toISOString(),
      data: { ...data, ...extra },
    });
  };
  add("c", "created", 0);

  const connects =
    outcome === "success" || outcome === "too_short" || outcome === "slow_connect"
      ? true
      : outcome === "not_connected"
        ? false
        : rng.chance(0.7);
  let latency = 0;
  if (connects) {
    latency =
      outcome === "slow_connect"
        ? rng.chance(0.2)
          ? 2001
          : rng.int(2001, 9000)
        : outcome === "success" || outcome === "too_short"
          ? rng.chance(0.15)
            ? 2000
            : rng.int(0, 2000)
          : rng.int(50, 6000);
    add("k1", "connected", latency, { connect_latency_ms: latency });
    if (rng.chance(0.15)) {
      // a second report of the connection, slower: the minimum must win
      const later = latency + rng.int(1, 3000);
      add("k2", "connected", later, { connect_latency_ms: later });
    }
  }
  const turn = outcome === "turn_failed";
  const upstream = outcome === "upstream_error" || (turn && rng.chance(0.3));
  if (turn)
    add("t", "turn_failed", rng.int(10, 3000), rng.chance(0.5) ? { detail: "allocation timeout" } : {});
  if (upstream) {
    const u = rng.pick(UPSTREAM);
    const extra: Record<string, string | number> = {};
    if (u.status !== null) extra.status = u.status;
    if (u.code !== null) extra.code = u.code;
    add("u", "upstream_error", rng.int(10, 3000), extra);
  }

  const audio =
    outcome === "success"
      ? rng.chance(0.15)
        ? 5000
        : rng.int(5000, 180_000)
      : outcome === "too_short"
        ? rng.chance(0.2)
          ? 4999
          : rng.int(0, 4999)
        : rng.int(0, 60_000);
  const beats = rng.int(0, 3);
  const marks = Array.from({ length: beats }, () => rng.int(0, audio)).sort((a, b) => a - b);
  marks.forEach((m, i) => {
    add(`h${i + 1}`, "heartbeat", latency + 1000 + Math.floor((m * 9) / 10) + i, { audio_ms: m });
  });
  const ended: Record<string, string | number> = { audio_ms: audio };
  if (rng.chance(0.7)) ended.reason = rng.pick(END_REASONS);
  add("e", "ended", latency + audio + rng.int(100, 2000), ended);

  const copies = events.map(() =>
    rng.weighted([
      [1, 50],
      [2, 35],
      [3, 15],
    ] as const),
  );
  const expected = expectedFacts(events);
  if (expected.reason !== outcome)
    throw new Error(`session ${id} built for ${outcome} judges ${expected.reason}`);
  return { id, userId, outcome, events, copies, expected, poison: opts.poison === true };
}

export function randomOutcome(rng: Rng): Outcome {
  return rng.weighted([
    ["success", 50],
    ["turn_failed", 10],
    ["upstream_error", 10],
    ["not_connected", 10],
    ["slow_connect", 10],
    ["too_short", 10],
  ] as const);
}

export function makeUsers(rng: Rng): ChaosUser[] {
  const regular = rng.int(20, 38);
  const users: ChaosUser[] = [];
  const plans: PlanName[] = ["free", "payg", "pro"];
  for (let i = 0; i < regular; i++) {
    const plan = i < plans.length * 2 ? (plans[i % 3] ?? "free") : rng.pick(plans);
    users.push({ id: `chaos-u${String(i).padStart(2, "0")}-${plan}`, plan, role: "regular" });
  }
  users.push({ id: "chaos-heavy-free", plan: "free", role: "heavy" });
  users.push({ id: "chaos-burst-free", plan: "free", role: "burst" });
  return users;
}

/** Billable sessions the heavy free user gets from the random workload, before its admission waves. */
export const HEAVY_PRELOAD_SUCCESS = 96;
export const HEAVY_PRELOAD_FAILED = 4;

/**
 * The workload of a seed: `sessions` random sessions over the regular users, the heavy user's
 * preload, one poison session (a pay-as-you-go user's), and hijack events for some sessions. A
 * hijack's thief is a user whose rows live on the victim's D1 shard (of `shards`): that is where
 * the session's owner is checked (docs/scale.md "Sharding"; on another shard the thief's events
 * are a session of the thief's own).
 */
export function makeWorkload(seed: number, sessions: number, start: number, shards = 1): Workload {
  const rng = mulberry32(seed);
  const users = makeUsers(rng);
  const regular = users.filter((u) => u.role === "regular");
  const heavy = users.find((u) => u.role === "heavy");
  const payg = regular.find((u) => u.plan === "payg");
  if (!heavy || !payg) throw new Error("workload users incomplete");
  const out: SessionPlan[] = [];
  const at = () => start + rng.int(0, 30_000);
  for (let i = 0; i < sessions; i++) {
    const user = rng.pick(regular);
    out.push(makeSession(rng, `s-${seed}-${i}`, user.id, randomOutcome(rng), at()));
  }
  for (let i = 0; i < HEAVY_PRELOAD_SUCCESS + HEAVY_PRELOAD_FAILED; i++) {
    const outcome: Outcome = i < HEAVY_PRELOAD_SUCCESS ? "success" : rng.pick(OUTCOMES.slice(1));
    out.push(makeSession(rng, `h-${seed}-${i}`, heavy.id, outcome, at()));
  }
  out.push(makeSession(rng, `p-${seed}-poison`, payg.id, "success", at(), { poison: true }));

  const hijacks: Hijack[] = [];
  for (const s of out) {
    if (s.poison || !rng.chance(0.03)) continue;
    const shard = shardBucket(s.userId) % shards;
    const thieves = users.filter((u) => u.id !== s.userId && shardBucket(u.id) % shards === shard);
    if (thieves.length === 0) continue;
    const thief = rng.pick(thieves);
    hijacks.push({
      sessionId: s.id,
      event: {
        specversion: "1.0",
        id: `${s.id}-x`,
        source: s.events[0]?.source ?? "gw-eu-1",
        type: "aigate.session.heartbeat",
        subject: s.id,
        time: new Date(s.expected.created_at + 1500).toISOString(),
        data: { user_id: thief.id, project_id: "proj-thief", audio_ms: 3_600_000 },
      },
    });
  }
  return { seed, start, users, sessions: out, hijacks };
}

/**
 * Telemetry that arrives after a session's verdict: a copy of one of its events, and a new event
 * that would flip the verdict if it were merged (a TURN failure for a billable session; a fast
 * connection and long audio for an unbillable one). A verdict is final: neither may change the
 * facts or the bill; both are counted in `late_events`.
 */
export function lateEvents(rng: Rng, s: SessionPlan): WireEvent[] {
  const copy = rng.pick(s.events);
  const time = new Date(Math.max(...s.events.map((e) => Date.parse(e.time))) + 500).toISOString();
  const make = (suffix: string, type: string, data: Record<string, number> = {}): WireEvent => ({
    specversion: "1.0",
    id: `${s.id}-late-${suffix}`,
    source: copy.source,
    type: `aigate.session.${type}`,
    subject: s.id,
    time,
    data: { user_id: s.userId, project_id: s.expected.project_id, ...data },
  });
  const flip = s.expected.billable
    ? [make("t", "turn_failed")]
    : [make("k", "connected", { connect_latency_ms: 100 }), make("h", "heartbeat", { audio_ms: 600_000 })];
  return [copy, ...flip];
}

export interface EventRequest {
  events: WireEvent[];
  contentType: "application/cloudevents-batch+json" | "application/json";
}

/**
 * The requests that deliver some sessions' events, in rounds: first one copy of every event,
 * shuffled across sessions and requests; then the extra copies, shuffled again.
 */
export function deliveryRounds(rng: Rng, sessions: readonly SessionPlan[]): EventRequest[][] {
  const first: WireEvent[] = [];
  const extra: WireEvent[] = [];
  for (const s of sessions) {
    s.events.forEach((e, i) => {
      first.push(e);
      for (let c = 1; c < (s.copies[i] ?? 1); c++) extra.push(e);
    });
  }
  return [chunk(rng, rng.shuffle(first)), chunk(rng, rng.shuffle(extra))];
}

function chunk(rng: Rng, events: WireEvent[]): EventRequest[] {
  const out: EventRequest[] = [];
  for (let i = 0; i < events.length; ) {
    const n = rng.int(30, 70);
    out.push({
      events: events.slice(i, i + n),
      contentType: rng.chance(0.5) ? "application/cloudevents-batch+json" : "application/json",
    });
    i += n;
  }
  return out;
}

/** Deliveries beyond the first copy of each event. */
export function duplicateCount(sessions: readonly SessionPlan[]): number {
  return sessions.reduce((n, s) => n + s.copies.reduce((a, c) => a + c - 1, 0), 0);
}
