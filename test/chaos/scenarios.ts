/**
 * The chaos suite's scenarios, each against the running stack: paid users subscribing through
 * Checkout with chaotic webhooks, the random workload's delivery, free users pushed into their
 * concurrency and quota limits through admission, the poison message parked, fixed and replayed,
 * events of another user, and Stripe faults injected while all this runs.
 */
import {
  count,
  type Delivery,
  deliverWebhooks,
  drainWebhooks,
  isRecord,
  mapLimit,
  type StackClient,
  sleep,
  str,
  type WebhookPayload,
  type WebhookStats,
} from "./clients";
import { listAllDeadLetters } from "./deadLetters";
import type { AdmissionWave } from "./invariants";
import type { Rng } from "./random";
import {
  type ChaosUser,
  deliveryRounds,
  type EventRequest,
  FREE_CONCURRENCY,
  FREE_QUOTA,
  type Hijack,
  lateEvents,
  makeSession,
  type Outcome,
  randomOutcome,
  type SessionPlan,
} from "./workload";

/** Polls until `probe` returns a non-null value, or throws after `timeoutMs` with the last state. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<{ done: T } | { pending: string }>,
  timeoutMs: number,
  onPoll?: (round: number) => Promise<void>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (let round = 0; ; round++) {
    const r = await probe();
    if ("done" in r) return r.done;
    last = r.pending;
    if (Date.now() > deadline) throw new Error(`${what}: not reached in ${timeoutMs} ms; last: ${last}`);
    if (onPoll) await onPoll(round);
    await sleep(1000);
  }
}

export interface PaidSetup {
  /** Stripe customer and subscription per paid user. */
  subscriptions: Map<string, { customer: string; subscription: string }>;
  /** Every webhook payload delivered, for late redeliveries. */
  webhooks: WebhookPayload[];
}

/** Paid users go through Checkout; the emulator's webhooks are delivered duplicated and reordered. */
export async function subscribePaidUsers(
  client: StackClient,
  rng: Rng,
  users: readonly ChaosUser[],
  stats: WebhookStats,
): Promise<PaidSetup> {
  const subscriptions = new Map<string, { customer: string; subscription: string }>();
  const paid = users.filter((u) => u.plan !== "free");
  await mapLimit(paid, 4, async (u) => {
    let checkout = await client.asUser(u.id, "/api/billing/checkout", {
      method: "POST",
      body: JSON.stringify({ plan: u.plan }),
    });
    for (let i = 0; checkout.status === 502 && i < 5; i++) {
      await sleep(200);
      checkout = await client.asUser(u.id, "/api/billing/checkout", {
        method: "POST",
        body: JSON.stringify({ plan: u.plan }),
      });
    }
    const id = isRecord(checkout.body) ? checkout.body.id : null;
    if (checkout.status !== 200 || typeof id !== "string") {
      throw new Error(`checkout for ${u.id} failed: ${checkout.status} ${JSON.stringify(checkout.body)}`);
    }
    const done = await client.emulator.completeCheckout(id);
    subscriptions.set(u.id, { customer: done.subscription.customer, subscription: done.subscription.id });
  });
  const webhooks = await drainWebhooks(client);
  await deliverWebhooks(client, rng, webhooks, stats);
  await waitFor(
    "paid plans applied from webhooks",
    async () => {
      const wrong: string[] = [];
      for (const u of users) {
        const usage = await client.asUser(u.id, "/api/billing/usage");
        const plan = isRecord(usage.body) ? usage.body.plan : null;
        if (plan !== u.plan) wrong.push(`${u.id}=${String(plan)}`);
      }
      return wrong.length === 0 ? { done: true } : { pending: wrong.join(", ") };
    },
    60_000,
  );
  return { subscriptions, webhooks };
}

export interface SendStats {
  requests: number;
  /** Event deliveries sent, retries of failed requests included. */
  deliveries: number;
  /** Requests that needed a retry (a 5xx or a lost answer first). */
  retried: number;
  /** Requests finally refused (a 4xx or still failing): each one is a mismatch. */
  refused: string[];
}

export function emptySendStats(): SendStats {
  return { requests: 0, deliveries: 0, retried: 0, refused: [] };
}

async function sendRequests(client: StackClient, requests: readonly EventRequest[], stats: SendStats) {
  await mapLimit(requests, 6, async (req) => {
    const d: Delivery = await client.sendEvents(req);
    stats.requests += 1;
    stats.deliveries += req.events.length * d.attempts;
    if (d.failedAttempts > 0) stats.retried += 1;
    if (d.status !== 202)
      stats.refused.push(`POST /v1/events answered ${d.status} (${req.events.length} events)`);
  });
}

/**
 * Sends sessions' events in rounds a few seconds apart (so verdicts, and Stripe posts, come in
 * waves). Per round, every event once, shuffled across requests; then the extra copies, shuffled.
 * Each pass goes out in a few waves, more than the classifier's batch timeout apart, so that a
 * session's events reach the classifier in several queue batches, in any order.
 */
export async function sendSessions(
  client: StackClient,
  rng: Rng,
  sessions: readonly SessionPlan[],
  stats: SendStats,
  opts: { rounds: number; pauseMs: number; wavesPerPass: number; wavePauseMs: number },
): Promise<void> {
  const size = Math.ceil(sessions.length / opts.rounds);
  for (let i = 0; i < sessions.length; i += size) {
    if (i > 0) await sleep(opts.pauseMs);
    for (const pass of deliveryRounds(rng, sessions.slice(i, i + size))) {
      const waveSize = Math.max(1, Math.ceil(pass.length / opts.wavesPerPass));
      for (let w = 0; w < pass.length; w += waveSize) {
        if (w > 0) await sleep(opts.wavePauseMs);
        await sendRequests(client, pass.slice(w, w + waveSize), stats);
      }
    }
  }
}

/** The poison session's events, in requests of their own (one per copy), so nothing else is refused with them. */
export async function sendPoison(client: StackClient, poison: SessionPlan, stats: SendStats): Promise<void> {
  const requests: EventRequest[] = [1, 2].map(() => ({
    events: poison.events,
    contentType: "application/cloudevents-batch+json",
  }));
  await sendRequests(client, requests, stats);
}

/** Sessions (ids) until each has the given condition in D1. */
async function waitSessions(
  client: StackClient,
  what: string,
  ids: readonly string[],
  condition: string,
  timeoutMs = 120_000,
) {
  if (ids.length === 0) return;
  await waitFor(
    what,
    async () => {
      const rows = await client.one(
        `SELECT count(*) AS n FROM sessions WHERE session_id IN (SELECT value FROM json_each(?1)) AND ${condition}`,
        [JSON.stringify(ids)],
      );
      const n = count(rows) ?? 0;
      return n === ids.length ? { done: true } : { pending: `${n}/${ids.length}` };
    },
    timeoutMs,
    async (round) => {
      if (round % 3 === 2) await Promise.all([client.tick("classifier"), client.tick("biller")]);
    },
  );
}

const ended = (client: StackClient, ids: readonly string[]) =>
  waitSessions(client, "leases ended", ids, "ended_at IS NOT NULL");
const billed = (client: StackClient, ids: readonly string[], timeoutMs = 120_000) =>
  waitSessions(
    client,
    "sessions judged and recorded",
    ids,
    "verdict_at IS NOT NULL AND open = 0 AND plan IS NOT NULL",
    timeoutMs,
  );

export interface AdmissionResult {
  sessions: SessionPlan[];
  refused: string[];
  waves: AdmissionWave[];
}

/** A session a gateway asks to start. */
interface Candidate {
  id: string;
  projectId: string;
}

async function admitWave(
  client: StackClient,
  label: string,
  user: ChaosUser,
  candidates: Candidate[],
  expected: { allowed: number; limit: number; reason: string | null },
  result: AdmissionResult,
): Promise<Candidate[]> {
  const answers = await Promise.all(
    candidates.map((s) => client.admit(s.id, user.id, s.projectId).then((a) => ({ s, a }))),
  );
  const admitted: Candidate[] = [];
  const reasons: string[] = [];
  for (const { s, a } of answers) {
    const body = a.body;
    if (a.status !== 200 || !isRecord(body) || typeof body.allowed !== "boolean") {
      reasons.push(`HTTP ${a.status}`);
      result.refused.push(s.id);
      continue;
    }
    if (body.allowed) admitted.push(s);
    else {
      reasons.push(String(body.reason));
      result.refused.push(s.id);
    }
  }
  result.waves.push({
    label,
    userId: user.id,
    requested: candidates.length,
    allowed: admitted.length,
    expectedAllowed: expected.allowed,
    limit: expected.limit,
    reasons,
    expectedReason: expected.reason,
  });
  return admitted;
}

/** A gateway reports whole sessions at once (every copy of every event, shuffled, one request each). */
async function runSessions(
  client: StackClient,
  rng: Rng,
  sessions: readonly SessionPlan[],
  stats: SendStats,
) {
  await sendRequests(
    client,
    sessions.map((s) => ({
      events: rng.shuffle(s.events.flatMap((e, i) => Array.from({ length: s.copies[i] ?? 1 }, () => e))),
      contentType: "application/json" as const,
    })),
    stats,
  );
}

class AdmittedSessions {
  private n = 0;
  constructor(
    private readonly rng: Rng,
    private readonly prefix: string,
    private readonly user: ChaosUser,
    private readonly result: AdmissionResult,
  ) {}

  candidates(count: number): Candidate[] {
    return Array.from({ length: count }, () => ({
      id: `${this.prefix}-${this.n++}`,
      projectId: `proj-adm-${this.rng.int(1, 3)}`,
    }));
  }

  /** The session an admitted candidate turns out to be, recorded as expected. */
  run(candidates: readonly Candidate[], outcome: (i: number) => Outcome): SessionPlan[] {
    const sessions = candidates.map((c, i) =>
      makeSession(this.rng, c.id, this.user.id, outcome(i), Date.now(), { projectId: c.projectId }),
    );
    this.result.sessions.push(...sessions);
    return sessions;
  }
}

/**
 * A free user hammers admission with concurrent calls: 8 at once (5 allowed), then 6 with 3 live
 * leases (2 allowed), then 7 once every lease has ended (5 allowed). Every allowed session runs.
 */
export async function burstScenario(
  client: StackClient,
  rng: Rng,
  user: ChaosUser,
  seed: number,
  stats: SendStats,
): Promise<AdmissionResult> {
  const result: AdmissionResult = { sessions: [], refused: [], waves: [] };
  const pool = new AdmittedSessions(rng, `b-${seed}`, user, result);
  const random = () => randomOutcome(rng);
  const c = FREE_CONCURRENCY;
  const wave = (label: string, count: number, allowed: number) =>
    admitWave(
      client,
      label,
      user,
      pool.candidates(count),
      {
        allowed,
        limit: allowed,
        reason: "concurrency_limit_reached",
      },
      result,
    );

  const first = await wave("burst wave 1 (8 concurrent, no live lease)", 8, c);
  const endNow = pool.run(first.slice(0, 2), random);
  await runSessions(client, rng, endNow, stats);
  await ended(
    client,
    endNow.map((s) => s.id),
  );
  const live = first.length - endNow.length;
  const second = await wave(`burst wave 2 (6 concurrent, ${live} live leases)`, 6, Math.max(0, c - live));
  const rest = pool.run([...first.slice(2), ...second], random);
  await runSessions(client, rng, rest, stats);
  await ended(
    client,
    rest.map((s) => s.id),
  );
  const third = pool.run(await wave("burst wave 3 (7 concurrent, every lease ended)", 7, c), random);
  await runSessions(client, rng, third, stats);
  await ended(
    client,
    third.map((s) => s.id),
  );
  return result;
}

/**
 * A free user with 96 successful sessions already (the preload) takes the last places of its
 * quota through concurrent admissions. Each wave starts once the user's earlier sessions are
 * billed, so the exact number the limits allow is known: wave A 4 of 8 (2 kept running), wave B
 * 0 of 3 (the quota is full with those 2 in flight), then one of them fails (its place comes back),
 * wave C 1 of 4, wave D 0 of 2. The user ends with exactly 100 billable sessions.
 */
export async function heavyScenario(
  client: StackClient,
  rng: Rng,
  user: ChaosUser,
  seed: number,
  preload: readonly SessionPlan[],
  stats: SendStats,
): Promise<AdmissionResult> {
  const result: AdmissionResult = { sessions: [], refused: [], waves: [] };
  const pool = new AdmittedSessions(rng, `q-${seed}`, user, result);
  await billed(
    client,
    preload.map((s) => s.id),
  );
  let billable = preload.filter((s) => s.expected.billable === 1).length;
  const allowed = (requested: number, live: number) =>
    Math.max(0, Math.min(requested, FREE_CONCURRENCY - live, FREE_QUOTA - billable - live));
  const wave = (label: string, count: number, live: number) =>
    admitWave(
      client,
      `${label} (${count} concurrent, ${billable} billable, ${live} in flight)`,
      user,
      pool.candidates(count),
      {
        allowed: allowed(count, live),
        limit: allowed(count, live),
        reason: "monthly_quota_exhausted",
      },
      result,
    );
  const runAndBill = async (sessions: SessionPlan[]) => {
    await runSessions(client, rng, sessions, stats);
    await billed(
      client,
      sessions.map((s) => s.id),
    );
    billable += sessions.filter((s) => s.expected.billable === 1).length;
  };

  const a = await wave("quota wave A", 8, 0);
  const hanging = a.slice(0, 2);
  await runAndBill(pool.run(a.slice(2), () => "success"));
  await wave("quota wave B", 3, hanging.length);
  await runAndBill(pool.run(hanging, (i) => (i === 0 ? "success" : "too_short")));
  await runAndBill(pool.run(await wave("quota wave C", 4, 0), () => "success"));
  await wave("quota wave D", 2, 0);
  return result;
}

/** Events of another user for existing sessions: sent once the sessions exist, so the owner is settled. */
export async function sendHijacks(
  client: StackClient,
  rng: Rng,
  hijacks: readonly Hijack[],
  stats: SendStats,
) {
  const events = rng.shuffle(hijacks.map((h) => h.event));
  const requests: EventRequest[] = [];
  for (let i = 0; i < events.length; i += 20) {
    requests.push({ events: events.slice(i, i + 20), contentType: "application/json" });
  }
  await sendRequests(client, requests, stats);
}

/**
 * Telemetry after the verdict (see lateEvents): for a few sessions already billed, a copy of one
 * of their events and events that would flip their verdict. Returns the events sent per session
 * and how many of them are new events (not copies).
 */
export async function sendLate(
  client: StackClient,
  rng: Rng,
  candidates: readonly SessionPlan[],
  stats: SendStats,
): Promise<{ late: Map<string, number>; newEvents: number }> {
  const chosen = candidates.filter(() => rng.chance(0.05));
  await billed(
    client,
    chosen.map((s) => s.id),
    240_000,
  );
  const late = new Map<string, number>();
  const events = chosen.flatMap((s) => {
    const list = lateEvents(rng, s);
    late.set(s.id, list.length);
    return list;
  });
  const requests: EventRequest[] = [];
  const shuffled = rng.shuffle(events);
  for (let i = 0; i < shuffled.length; i += 25) {
    requests.push({ events: shuffled.slice(i, i + 25), contentType: "application/json" });
  }
  await sendRequests(client, requests, stats);
  return { late, newEvents: events.length - chosen.length };
}

export interface PoisonReport {
  parked: string[];
  replays: number[];
  /** Pages of GET /admin/dead-letters read to find it. */
  pages: number;
}

/**
 * The poison session: refused by the chaos classifier on every delivery, it must exhaust its
 * retries, reach the dead-letter queue and be drained into dead_letters; then it is fixed and
 * replayed through the admin API: once, again (a no-op), and forced (a real second send).
 */
export async function poisonScenario(client: StackClient, poison: SessionPlan): Promise<PoisonReport> {
  const needle = JSON.stringify(poison.id);
  const parked = await waitFor<string[]>(
    "poison messages parked in dead_letters",
    async () => {
      const rows = await client.one("SELECT id, body FROM dead_letters WHERE queue = 'aigate-telemetry'");
      const ids = rows.filter((r) => str(r, "body").includes(needle)).map((r) => str(r, "id"));
      return ids.length >= 2 ? { done: ids } : { pending: `${ids.length} parked` };
    },
    240_000,
  );
  const before = await client.one("SELECT count(*) AS n FROM sessions WHERE session_id = ?1", [poison.id]);
  if ((count(before) ?? 0) !== 0) throw new Error("the poison session was processed before its fix");
  // the operator's view: every page of the list, 10 a page so that even a small run pages (a soak
  // parks hundreds of user_mismatch letters, listed before the poison)
  const { letters, pages } = await listAllDeadLetters((p) => client.admin(p), "aigate-telemetry", 10);
  const listedIds = new Set(letters.map((d) => d.id));
  if (listedIds.size !== letters.length) throw new Error("GET /admin/dead-letters lists a letter twice");
  const inD1 = (await client.one("SELECT id FROM dead_letters WHERE queue = 'aigate-telemetry'")).map((r) =>
    str(r, "id"),
  );
  const unlisted = inD1.filter((id) => !listedIds.has(id));
  if (!parked.every((id) => listedIds.has(id)) || unlisted.length > 0) {
    throw new Error(
      `GET /admin/dead-letters (${pages} pages, ${letters.length} letters) does not list the poison ` +
        `[${parked.filter((id) => !listedIds.has(id)).join(",")}] or ${unlisted.length} parked letters`,
    );
  }
  await client.control("/poison/fix", {});
  const replays: number[] = [];
  for (const body of [{ ids: parked }, { ids: parked }, { ids: parked, force: true }]) {
    const res = await client.admin("/admin/dead-letters/replay", {
      method: "POST",
      body: JSON.stringify(body),
    });
    const replayed = isRecord(res.body) ? res.body.replayed : null;
    if (res.status !== 200 || typeof replayed !== "number") {
      throw new Error(`replay failed: ${res.status} ${JSON.stringify(res.body)}`);
    }
    replays.push(replayed);
  }
  return { parked, replays, pages };
}

export interface FaultInjector {
  stop(): Promise<{ injected: number; consumed: number }>;
}

/**
 * Where Stripe faults are armed, and how many at most at a time. The biller's meter posts are the
 * Stripe calls made while sessions flow (webhook redeliveries are duplicates, answered before any
 * Stripe call); reconciliation reads meter summaries. Up to 3 armed faults on a path can exhaust
 * the SDK's 2 retries, so the biller's own retry and sweep are exercised too.
 */
export const FAULT_PATHS: Record<string, number> = {
  "/v1/billing/meter_events": 3,
  "/v1/billing/meters": 1,
};

/**
 * The lifecycle part adds the adjustments' invoice items (the biller's other Stripe writes). It
 * makes far fewer Stripe calls than the plain run's workload, so one fault at a time per path,
 * re-armed every few seconds: every call may fail, not all of them.
 */
export const LIFECYCLE_FAULT_PATHS: Record<string, number> = {
  "/v1/billing/meter_events": 1,
  "/v1/billing/meters": 1,
  "/v1/invoiceitems": 1,
};
export const LIFECYCLE_FAULT_PAUSE: [number, number] = [2000, 6000];

/**
 * Keeps Stripe faults (429, 500, 503, slow responses) armed in the emulator until stopped,
 * re-arming as Stripe calls consume them; counts the faults that really hit a call.
 */
export function injectStripeFaults(
  client: StackClient,
  rng: Rng,
  paths: Record<string, number> = FAULT_PATHS,
  /** Pause between two armings (ms): longer when few calls are made, or every call would fail. */
  pause: [number, number] = [300, 900],
): FaultInjector {
  let running = true;
  let injected = 0;
  const loop = (async () => {
    while (running) {
      const armed = (await client.emulator.faults()).faults;
      for (const [path, most] of Object.entries(paths)) {
        const onPath = armed.filter((f) => f.path_prefix === path).reduce((n, f) => n + f.remaining, 0);
        if (onPath >= most) continue;
        const status = rng.pick([429, 500, 503, 0] as const);
        const count = rng.int(1, most - onPath);
        const delay = status === 0 ? rng.int(300, 2500) : rng.chance(0.3) ? rng.int(100, 600) : 0;
        await client.emulator.addFault({
          status,
          count,
          path_prefix: path,
          ...(delay > 0 ? { delay_ms: delay } : {}),
        });
        injected += count;
      }
      await sleep(rng.int(pause[0], pause[1]));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      const left = (await client.emulator.faults()).faults.reduce((n, f) => n + f.remaining, 0);
      await client.emulator.clearFaults();
      return { injected, consumed: injected - left };
    },
  };
}

/** Late, duplicated, reordered redeliveries of webhooks already applied: nothing may change. */
export async function redeliverWebhooks(
  client: StackClient,
  rng: Rng,
  webhooks: readonly WebhookPayload[],
  stats: WebhookStats,
): Promise<void> {
  await deliverWebhooks(client, rng, rng.shuffle(webhooks), stats);
}
