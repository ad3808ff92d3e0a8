/**
 * The lifecycle part of the chaos run: the same stack (fault builds, crashes, Stripe faults,
 * webhooks drained and delivered duplicated and reordered), whose workers follow the Stripe
 * emulator's clock, is driven over more than three billing periods. Each customer gets a seeded
 * random life: upgrades and downgrades (now and at the period end) through
 * POST /api/billing/plan, cancellations of both kinds, resumptions, resubscriptions through
 * Checkout, failed renewal payments and their recovery (the emulator's test helpers), and a new
 * price version published through the stripe:setup library while subscribers keep theirs.
 * Sessions are sent before and after every period boundary, some of them completed late: during
 * the renewal's finalization grace (on that invoice) or after it (billed by adjustment).
 *
 * What the harness did is recorded as a timeline (model.ts) and a session log; the money check
 * (lifecycleCheck.ts) derives every invoice's metered lines, fees and adjustments from them
 * alone, and compares with what Stripe (the emulator) invoiced. D1 is read only to wait for the
 * pipeline to go quiet between steps.
 */
import { runStripeSetup } from "@aigate/scripts/stripe-setup";
import { CATALOG as CATALOG_IN_FORCE, parseCatalog } from "@aigate/shared/catalog";
import { catalogPrice, ensureStripeCatalog, type StripeCatalog } from "@aigate/shared/stripeCatalog";
import { DEV_SECRETS } from "@aigate/test-support";
import { SignJWT } from "jose";
import Stripe from "stripe";
import {
  count as countRows,
  deliverWebhooks,
  drainWebhooks,
  isRecord,
  mapLimit,
  type StackClient,
  sleep,
  type WebhookPayload,
  type WebhookStats,
} from "./clients";
import {
  type ClockMove,
  checkLifecycle,
  expectWindows,
  type InvoiceView,
  type ItemView,
  type LcSession,
  type PriceInfo,
} from "./lifecycleCheck";
import {
  buildModel,
  CATALOG,
  type PaidPlan,
  type PlanName,
  type PlanPrices,
  type PriceVersion,
  type TimelineEvent,
} from "./model";
import type { Rng } from "./random";
import type { WireEvent } from "./workload";

const MINUTE = 60_000;
const DAY = 86_400_000;
/** Stripe's default finalization grace (the emulator's, and STRIPE_INVOICE_GRACE_SECONDS's default). */
export const GRACE_MS = 3_600_000;
/** Period ends this close to the first one of a cluster are handled together. */
const CLUSTER_MS = 20 * MINUTE;
/** A session without telemetry for this long is judged as it stands (the classifier's staleness). */
const STALE_MS = 15 * MINUTE;

/** The price version the run publishes: payg $0.12; pro keeps its $29 fee, 20 sessions included, then $0.08. */
export const NEXT_VERSION: PriceVersion = {
  payg: { fee: 0, metered: { kind: "per_unit", unit: 12 } },
  pro: {
    fee: 2900,
    metered: {
      kind: "graduated",
      tiers: [
        { upTo: 20, unit: 0 },
        { upTo: null, unit: 8 },
      ],
    },
  },
};

/** A subscriber of the plain chaos run: its renewals are checked too. */
export interface BaseSubscriber {
  user: string;
  plan: PaidPlan;
  customer: string;
  /** ms, Stripe's period start */
  start: number;
  /** Its billable sessions' billing times (all judged before the lifecycle starts). */
  billedAt: number[];
}

export interface LifecycleReport {
  users: number;
  sessions: number;
  late: { inGrace: number; afterInvoice: number };
  actions: Record<string, number>;
  windows: number;
  invoices: number;
  adjustments: number;
  moves: number;
  mismatches: string[];
  /** For mismatches: the customers' timelines and invoices, line by line. */
  evidence: string[];
  clockDays: number;
}

interface OpenSession {
  id: string;
  user: string;
  events: WireEvent[];
}

export function stripeFor(url: string): Stripe {
  const u = new URL(url);
  return new Stripe("sk_test_emulator", {
    host: u.hostname,
    port: Number(u.port),
    protocol: "http",
    httpClient: Stripe.createFetchHttpClient(),
    maxNetworkRetries: 2,
  });
}

function priceMap(catalog: StripeCatalog, version: number, into: Map<string, PriceInfo>) {
  const set = (id: string, info: PriceInfo) => {
    if (!into.has(id)) into.set(id, info);
  };
  const id = (key: string) => catalogPrice(catalog, key);
  set(id("aigate_payg_session"), { plan: "payg", version, kind: "metered" });
  set(id("aigate_pro_session"), { plan: "pro", version, kind: "metered" });
  set(id("aigate_pro_monthly"), { plan: "pro", version, kind: "fee" });
}

async function retried<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (err) {
      if (attempt >= 6) throw err;
      await sleep(300 * attempt);
    }
  }
}

/** Publishes the next price version as a catalog change would: the stripe:setup library, run with the changed catalog. */
async function publishNextVersion(stripeUrl: string): Promise<StripeCatalog> {
  const tiers = (m: PlanPrices["metered"]) =>
    m.kind === "per_unit"
      ? [{ up_to: null, unit_amount_cents: m.unit }]
      : m.tiers.map((t) => ({ up_to: t.upTo, unit_amount_cents: t.unit }));
  const next = parseCatalog({
    ...CATALOG_IN_FORCE,
    plans: {
      ...CATALOG_IN_FORCE.plans,
      payg: { ...CATALOG_IN_FORCE.plans.payg, tiers: tiers(NEXT_VERSION.payg.metered) },
      pro: { ...CATALOG_IN_FORCE.plans.pro, tiers: tiers(NEXT_VERSION.pro.metered) },
    },
  });
  // Stripe faults stay armed meanwhile (on the meters' list among others): setup is safe to rerun
  return await retried(async () => {
    const { catalog } = await runStripeSetup(
      { STRIPE_API_BASE: stripeUrl, STRIPE_SECRET_KEY: DEV_SECRETS.STRIPE_SECRET_KEY },
      undefined,
      next,
    );
    return catalog;
  });
}

export async function runLifecycle(
  client: StackClient,
  opts: {
    seed: number;
    users: number;
    rng: (name: string) => Rng;
    base: BaseSubscriber[];
    webhookStats: WebhookStats;
    /** Called once the run is over, before Stripe is read for the check (stops the Stripe faults). */
    beforeCheck: () => Promise<void>;
  },
): Promise<LifecycleReport> {
  const { seed, base, webhookStats } = opts;
  const rng = opts.rng("lifecycle");
  const wireRng = opts.rng("lifecycle-wire");
  const stripe = stripeFor(client.stripeUrl);
  const users = Array.from({ length: opts.users }, (_, i) => `lc${seed}-u${String(i).padStart(2, "0")}`);
  const allUsers = [...base.map((b) => b.user), ...users];
  const timeline: TimelineEvent[] = [];
  const moves: ClockMove[] = [];
  const sessions: LcSession[] = [];
  const customers = new Map<string, string>(base.map((b) => [b.customer, b.user]));
  const subscriptionOf = new Map<string, string>();
  const open: OpenSession[] = [];
  const mismatches: string[] = [];
  const allWebhooks: WebhookPayload[] = [];
  const actions: Record<string, number> = {};
  const late = { inGrace: 0, afterInvoice: 0 };
  const failing = new Set<string>();
  const versions: PriceVersion[] = [CATALOG, NEXT_VERSION];
  const prices = new Map<string, PriceInfo>();
  priceMap(await retried(() => ensureStripeCatalog(stripe)), 0, prices);
  let phase = 1;
  let counter = 0;
  const step = () => ++phase;
  const started = Date.now();
  /** CHAOS_VERBOSE=1: one line per step on stderr, as it happens. */
  const trace = (what: string) => {
    if (process.env.CHAOS_VERBOSE === "1")
      process.stderr.write(
        `chaos lifecycle +${Math.round((Date.now() - started) / 1000)}s phase ${phase}: ${what}\n`,
      );
  };
  const count = (what: string) => {
    actions[what] = (actions[what] ?? 0) + 1;
  };

  for (const b of base) {
    timeline.push({ kind: "subscribe", at: b.start, phase: 0, user: b.user, plan: b.plan });
    for (const t of b.billedAt)
      sessions.push({ id: `base-${counter++}`, user: b.user, billedAt: t, billable: true, phase: 0 });
  }

  const clockNow = async () => (await client.emulator.clock()).now * 1000;

  const token = async (user: string) => {
    const t = Math.floor((await clockNow()) / 1000);
    return new SignJWT({})
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(user)
      .setIssuedAt(t)
      .setExpirationTime(t + 3600)
      .sign(new TextEncoder().encode(DEV_SECRETS.USER_TOKEN_SECRET));
  };
  const asUser = async (user: string, path: string, body?: unknown) => {
    const res = await fetch(`${client.url}${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: {
        authorization: `Bearer ${await token(user)}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {}
    return { status: res.status, body: parsed };
  };

  /** Drains the emulator's events and delivers them as Stripe on a bad day would. */
  const pump = async () => {
    const drained = await drainWebhooks(client);
    allWebhooks.push(...drained);
    if (drained.length > 0) await deliverWebhooks(client, wireRng, drained, webhookStats);
  };

  /** Moves the shared clock to `t` (ms); Stripe runs what fell due on the way. */
  const moveTo = async (t: number) => {
    const from = await clockNow();
    const seconds = Math.ceil((t - from) / 1000);
    if (seconds <= 0) return;
    const p = step();
    const moved = await client.emulator.advanceClock(seconds);
    moves.push({ phase: p, from, to: moved.now * 1000 });
    await pump();
  };

  const model = async () => buildModel(allUsers, timeline, await clockNow(), versions);

  // ---- sessions --------------------------------------------------------------------------
  const eventsOf = (id: string, user: string, created: number, billable: boolean): WireEvent[] => {
    const base = { specversion: "1.0" as const, source: "gw-lifecycle", subject: id };
    const data = { user_id: user, project_id: "proj-lc" };
    const at = (ms: number) => new Date(created + ms).toISOString();
    const list: WireEvent[] = [
      { ...base, id: `${id}-c`, type: "aigate.session.created", time: at(0), data },
      {
        ...base,
        id: `${id}-k`,
        type: "aigate.session.connected",
        time: at(300),
        data: { ...data, connect_latency_ms: 300 },
      },
      // enough audio already: a verdict taken before the end (a stale session) is the same
      {
        ...base,
        id: `${id}-h`,
        type: "aigate.session.heartbeat",
        time: at(600),
        data: { ...data, audio_ms: 6000 },
      },
    ];
    if (!billable)
      list.push({ ...base, id: `${id}-t`, type: "aigate.session.turn_failed", time: at(700), data });
    return list;
  };
  const endedEvent = (id: string, user: string, time: number): WireEvent => ({
    specversion: "1.0",
    source: "gw-lifecycle",
    subject: id,
    id: `${id}-e`,
    type: "aigate.session.ended",
    time: new Date(time).toISOString(),
    data: { user_id: user, project_id: "proj-lc", audio_ms: 6000 },
  });
  /** Each event 1 to 3 times, shuffled, 40 a request, 4 requests in flight (gateways retry 5xx). */
  const deliver = async (events: WireEvent[]) => {
    const copies = wireRng.shuffle(events.flatMap((e) => Array.from({ length: wireRng.int(1, 3) }, () => e)));
    const requests: WireEvent[][] = [];
    for (let i = 0; i < copies.length; i += 40) requests.push(copies.slice(i, i + 40));
    await mapLimit(requests, 4, async (events) => {
      const d = await client.sendEvents({ events, contentType: "application/cloudevents-batch+json" });
      if (d.status !== 202) mismatches.push(`POST /v1/events answered ${d.status} (${events.length} events)`);
    });
  };
  /** `n` sessions of a user created now; `openCount` of them left without their end (completed later). */
  const sendSessions = async (plan: Array<{ user: string; n: number; open: number }>) => {
    // created strictly after the last change (so on its side of it), and before their first receipt
    const lastAt = Math.max(0, ...timeline.map((e) => e.at));
    while ((await clockNow()) < lastAt + 3000) await sleep(250);
    const created = (await clockNow()) - 1000;
    const p = step();
    const events: WireEvent[] = [];
    for (const { user, n, open: openCount } of plan) {
      for (let i = 0; i < n; i++) {
        const id = `lc${seed}-s${counter++}`;
        const billable = !rng.chance(0.15);
        const own = eventsOf(id, user, created, billable);
        events.push(...own);
        const record: LcSession = { id, user, billedAt: created, billable, phase: p };
        sessions.push(record);
        if (i < openCount) open.push({ id, user, events: own });
        else events.push(endedEvent(id, user, created + 1000));
      }
    }
    await deliver(events);
  };
  /** Sends the end of some open sessions: their verdicts come after this step. */
  const complete = async (list: OpenSession[], kind: keyof typeof late) => {
    if (list.length === 0) return;
    const p = step();
    const t = (await clockNow()) - 1000;
    for (const s of list) {
      const record = sessions.find((x) => x.id === s.id);
      if (record) record.phase = p;
      open.splice(open.indexOf(s), 1);
    }
    late[kind] += list.length;
    await deliver(list.map((s) => endedEvent(s.id, s.user, t)));
  };

  /** Sessions D1 showed judged (a verdict is final). */
  const seenJudged = new Set<string>();
  /** Waits until every completed session is judged and every paid series is posted or adjusted. */
  const settle = async (what: string, clockCapMs: number) => {
    const openIds = new Set(open.map((s) => s.id));
    // sessions seen judged stay judged: once the clock is past the retention window the archive
    // (docs/operations.md "Retention") may have moved their rows out of D1 to R2
    const due = sessions
      .filter((s) => !s.id.startsWith("base-") && !openIds.has(s.id) && !seenJudged.has(s.id))
      .map((s) => s.id);
    const deadline = Date.now() + 240_000;
    let last = "";
    for (let round = 0; ; round++) {
      const [judgedRows, unposted, unadjusted, pendingAdj, reattr] = await client.sql([
        {
          sql: "SELECT session_id FROM sessions WHERE session_id IN (SELECT value FROM json_each(?1)) AND verdict_at IS NOT NULL AND open = 0",
          params: [JSON.stringify(due.filter((id) => !seenJudged.has(id)))],
        },
        {
          // not posted yet, unless no meter timestamp is left in its window (docs/billing.md
          // "Posting": always before its last whole minute boundary): such a series waits to be
          // frozen, and adjustments bill the rest
          sql: `SELECT count(*) AS n FROM usage_periods WHERE stripe_customer_id IS NOT NULL AND frozen_at IS NULL
                AND billable_sessions <> posted_total
                AND NOT (last_meter_ts IS NOT NULL AND last_meter_ts + 1 >= period_end / 60000 * 60)`,
        },
        {
          sql: `SELECT count(*) AS n FROM usage_periods WHERE stripe_customer_id IS NOT NULL AND frozen_at IS NOT NULL
                AND billable_sessions <> coalesce(stripe_billed, 0) + adjusted`,
        },
        { sql: "SELECT count(*) AS n FROM usage_adjustments WHERE state = 'pending'" },
        { sql: "SELECT count(*) AS n FROM reattributions" },
      ]);
      for (const r of judgedRows ?? []) seenJudged.add(String(r.session_id));
      const judgedNow = due.filter((id) => seenJudged.has(id)).length;
      const n = (rows: typeof unposted) => countRows(rows) ?? -1;
      const state = [
        judgedNow === due.length ? "" : `${judgedNow}/${due.length} judged`,
        n(unposted) === 0 ? "" : `${n(unposted)} series not posted`,
        n(unadjusted) === 0 ? "" : `${n(unadjusted)} frozen series not adjusted`,
        n(pendingAdj) === 0 ? "" : `${n(pendingAdj)} adjustments pending`,
        n(reattr) === 0 ? "" : `${n(reattr)} re-attributions waiting`,
      ].filter((s) => s !== "");
      if (state.length === 0) {
        await pump();
        trace(`settled: ${what} (${round} rounds)`);
        return;
      }
      last = state.join(", ");
      if (Date.now() > deadline) {
        mismatches.push(`never settled (${what}): ${last}`);
        return;
      }
      // time passes faster than it would: settle windows, posting intervals and retries come due
      if (round % 2 === 0) {
        const now = await clockNow();
        if (now + 25_000 <= clockCapMs) await moveTo(now + 25_000);
        else await pump();
      }
      await Promise.all([client.tick("classifier"), client.tick("biller")]);
      await sleep(500);
    }
  };

  // ---- actions ---------------------------------------------------------------------------
  const subscribe = async (user: string, plan: PaidPlan) => {
    let res = await asUser(user, "/api/billing/checkout", { plan });
    for (let i = 0; res.status >= 500 && i < 5; i++) {
      await sleep(300);
      res = await asUser(user, "/api/billing/checkout", { plan });
    }
    const id = isRecord(res.body) ? res.body.id : null;
    if (res.status !== 200 || typeof id !== "string") {
      mismatches.push(
        `${user}: checkout for ${plan} answered ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`,
      );
      return;
    }
    const p = step();
    const done = await client.emulator.completeCheckout(id);
    const item = done.subscription.items.data[0];
    customers.set(done.subscription.customer, user);
    subscriptionOf.set(user, done.subscription.id);
    timeline.push({ kind: "subscribe", at: (item?.current_period_start ?? 0) * 1000, phase: p, user, plan });
    count(`subscribe ${plan}`);
  };

  const change = async (
    user: string,
    body: { plan: PlanName; when?: "now" | "period_end" } | { resume: true },
  ) => {
    const p = step();
    const at = await clockNow();
    const res = await asUser(user, "/api/billing/plan", body);
    const label = "resume" in body ? "resume" : `to ${body.plan} ${body.when ?? "default"}`;
    if (res.status !== 200) {
      mismatches.push(
        `${user}: POST /api/billing/plan ${JSON.stringify(body)} answered ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`,
      );
      return;
    }
    count(label);
    const subId = subscriptionOf.get(user);
    if ("resume" in body) {
      timeline.push({ kind: "resume", at, phase: p, user });
      return;
    }
    const when = body.when ?? "period_end";
    if (when === "period_end") {
      timeline.push({ kind: "change", at, phase: p, user, to: body.plan, when });
      return;
    }
    // the change's time as Stripe recorded it: the new anchor, or the cancellation
    const sub = subId ? await stripe.subscriptions.retrieve(subId) : null;
    const t =
      body.plan === "free"
        ? (sub?.ended_at ?? sub?.canceled_at ?? Math.floor(at / 1000))
        : (sub?.items.data[0]?.current_period_start ?? Math.floor(at / 1000));
    timeline.push({ kind: "change", at: t * 1000, phase: p, user, to: body.plan, when });
  };

  /** One random action for each lifecycle user, given what the model says it has now. */
  const act = async () => {
    const m = await model();
    await mapLimit(wireRng.shuffle([...users]), 3, async (user) => {
      const state = m.final.get(user);
      if (!state || failing.has(user)) return;
      if (state.plan === "free") {
        if (rng.chance(0.6)) await subscribe(user, rng.pick(["payg", "pro"] as const));
        return;
      }
      const other: PaidPlan = state.plan === "payg" ? "pro" : "payg";
      const options: Array<[() => Promise<void>, number]> = [
        [async () => undefined, 3],
        [() => change(user, { plan: other, when: "now" }), 2],
        [() => change(user, { plan: other, when: "period_end" }), 2],
        [() => change(user, { plan: "free", when: "period_end" }), 1.5],
        [() => change(user, { plan: "free", when: "now" }), 1],
      ];
      if (state.pending !== null) options.push([() => change(user, { resume: true }), 3]);
      const total = options.reduce((n, [, w]) => n + w, 0);
      let r = rng.next() * total;
      for (const [run, w] of options) {
        r -= w;
        if (r < 0) {
          await run();
          return;
        }
      }
    });
  };

  const sessionPlan = async (openShare: number) => {
    const m = await model();
    return users.map((user) => {
      const plan = m.final.get(user)?.plan ?? "free";
      const n = plan === "pro" ? rng.int(2, 8) : plan === "payg" ? rng.int(1, 4) : rng.int(0, 2);
      return { user, n, open: Math.min(n, openShare > 0 ? rng.int(0, Math.ceil(n * openShare)) : 0) };
    });
  };

  /** A failed renewal payment for some pro subscribers whose period ends in this cluster. */
  const armFailures = async (ends: Set<string>) => {
    const m = await model();
    for (const user of users) {
      const s = m.final.get(user);
      if (s?.plan !== "pro" || s.pending !== null || !ends.has(user) || !rng.chance(0.3)) continue;
      const customer = [...customers].find(([, u]) => u === user)?.[0];
      if (!customer) continue;
      await client.emulator.failNextPayment(customer);
      failing.add(user);
      count("failed payment");
    }
  };
  const recover = async () => {
    for (const user of [...failing]) {
      const customer = [...customers].find(([, u]) => u === user)?.[0];
      if (!customer) continue;
      const openInvoices = await stripe.invoices.list({ customer, status: "open", limit: 100 });
      for (const inv of openInvoices.data) {
        await client.emulator.payInvoice(inv.id);
        count("recovered payment");
      }
      failing.delete(user);
    }
    await pump();
  };

  // ---- the run ---------------------------------------------------------------------------
  const t0 = await clockNow();
  const horizon = t0 + 92 * DAY;
  const initial = users.slice(0, Math.max(1, users.length - 2));
  await mapLimit(initial, 3, (u) => subscribe(u, rng.pick(["payg", "pro"] as const)));
  await pump();
  await sendSessions(await sessionPlan(0));
  await settle("after the subscriptions", (await clockNow()) + 10 * MINUTE);

  const publishAt = rng.int(0, 2);
  let stop = 0;
  const publish = async () => {
    const p = step();
    const catalog = await publishNextVersion(client.stripeUrl);
    priceMap(catalog, 1, prices);
    timeline.push({ kind: "publish", at: await clockNow(), phase: p });
    count("publish price version");
  };

  // mid-period: actions for everyone 15 days in
  await moveTo(t0 + 15 * DAY + rng.int(0, 12) * 3_600_000);
  if (publishAt === stop++) await publish();
  await act();
  await pump();
  await sendSessions(await sessionPlan(0));
  await settle("mid-period actions", (await clockNow()) + 30 * MINUTE);

  for (;;) {
    const m = await model();
    const now = await clockNow();
    const ends = [...m.final.values()]
      .map((s) => s.window?.end)
      .filter((e): e is number => e !== undefined && e > now);
    if (ends.length === 0) break;
    const first = Math.min(...ends);
    if (first > horizon) break;
    const cluster = ends.filter((e) => e <= first + CLUSTER_MS);
    const last = Math.max(...cluster);
    const endingUsers = new Set(
      [...m.final].filter(([, s]) => s.window !== null && cluster.includes(s.window.end)).map(([u]) => u),
    );

    trace(
      `cluster ${new Date(first).toISOString()} (${cluster.length} period ends, ${Math.round((last - first) / 1000)} s wide)`,
    );
    // before the boundary: sessions, some of them left open (unless the cluster is so wide that
    // they would go stale before the boundary stop: their verdicts would then come at no step of ours)
    const pre = first - 3 * MINUTE;
    await moveTo(pre);
    await armFailures(endingUsers);
    const cross = last + MINUTE;
    // open sessions must not go stale before the cross stop's last step
    const crossCap = pre + STALE_MS - 2 * MINUTE;
    const canWait = cross + 3 * MINUTE < crossCap;
    await sendSessions(await sessionPlan(canWait ? 0.5 : 0));
    const openBefore = [...open];

    // across it: renewals drafted; what was sent before is judged and posted; the plan changes
    // (so new anchors stay in this cluster); some late sessions end inside the grace period (on
    // the period's invoice); sessions after it
    await moveTo(cross);
    await settle("before the actions", canWait ? crossCap : cross + 8 * MINUTE);
    if (publishAt === stop++) await publish();
    await act();
    await pump();
    await complete(
      openBefore.filter(() => rng.chance(0.5)),
      "inGrace",
    );
    await sendSessions(await sessionPlan(0));
    await settle("before the invoices are final", canWait ? crossCap : cross + 8 * MINUTE);

    // after every draft is final: the rest of the late sessions (billed by adjustment)
    await moveTo((await clockNow()) + GRACE_MS + MINUTE);
    await recover();
    await complete([...open], "afterInvoice");
    await sendSessions(await sessionPlan(0));
    // no wait here: the next steps that fix an invoice (actions, finalizations) wait first
  }

  // the last late sessions are adjusted (their one-off invoices are drafts for the grace), then
  // those invoices finalize; late, duplicated, reordered redeliveries change nothing
  await settle("the last late sessions", (await clockNow()) + 3_600_000);
  await moveTo((await clockNow()) + GRACE_MS + MINUTE);
  await recover();
  await settle("the last invoices", (await clockNow()) + 3_600_000);
  await deliverWebhooks(
    client,
    wireRng,
    allWebhooks.filter(() => wireRng.chance(0.3)),
    webhookStats,
  );
  await settle("late webhook redeliveries", (await clockNow()) + 3_600_000);

  // ---- the check ---------------------------------------------------------------------------
  await opts.beforeCheck();
  const end = await clockNow();
  const finalModel = buildModel(allUsers, timeline, end, versions);
  const { windows, problems } = expectWindows(finalModel, sessions, moves, GRACE_MS);
  mismatches.push(...problems);
  const invoices: InvoiceView[] = [];
  const items: ItemView[] = [];
  for (const customer of customers.keys()) {
    for await (const inv of stripe.invoices.list({ customer, limit: 100 })) {
      const lines: InvoiceView["lines"] = [];
      for await (const l of stripe.invoices.listLineItems(inv.id, { limit: 100 })) {
        lines.push({
          id: l.id,
          amount: l.amount,
          quantity: l.quantity,
          price: l.pricing?.price_details?.price
            ? typeof l.pricing.price_details.price === "string"
              ? l.pricing.price_details.price
              : l.pricing.price_details.price.id
            : null,
          periodStart: l.period.start * 1000,
          invoiceItem: l.parent?.invoice_item_details?.invoice_item ?? null,
          description: l.description,
        });
      }
      invoices.push({
        id: inv.id,
        customer,
        status: inv.status ?? "",
        billingReason: inv.billing_reason,
        total: inv.total,
        lines,
      });
    }
    for await (const item of stripe.invoiceItems.list({ customer, limit: 100 })) {
      const md = item.metadata ?? {};
      items.push({
        id: item.id,
        customer,
        amount: item.amount,
        invoice: typeof item.invoice === "string" ? item.invoice : (item.invoice?.id ?? null),
        adjustment:
          md.aigate_adjustment !== undefined
            ? { user: md.user_id ?? "", plan: md.plan ?? "", periodStart: Number(md.period_start) }
            : null,
      });
    }
  }
  const found = checkLifecycle({ model: finalModel, windows, invoices, items, prices, customers });
  mismatches.push(...found.map((m) => `lifecycle: ${m}`));
  // what a replay needs to see: the timeline and the invoices of every customer named above
  const evidence: string[] = [];
  for (const [customer, user] of customers) {
    if (!found.some((m) => m.includes(`user ${user} `) || m.includes(customer))) continue;
    const iso = (t: number) => new Date(t).toISOString().slice(0, 19);
    evidence.push(
      `${user} (${customer}) timeline: ${timeline
        .filter((e) => "user" in e && e.user === user)
        .map(
          (e) =>
            `${iso(e.at)} #${e.phase} ${e.kind}${"plan" in e ? ` ${e.plan}` : ""}${"to" in e ? ` to ${e.to} ${e.when}` : ""}`,
        )
        .join("; ")}`,
    );
    // D1's view, for diagnosis only (the expectations never read it)
    const [series, adjustments, history] = await client.sql([
      {
        sql: `SELECT plan, period_start, period_end, billable_sessions, posted_total, frozen_at, stripe_billed, adjusted,
                stripe_invoice_id FROM usage_periods WHERE user_id = ?1 ORDER BY period_start`,
        params: [user],
      },
      {
        sql: "SELECT plan, period_start, sessions, from_seq, to_seq, amount_cents, stripe_invoice_id FROM usage_adjustments WHERE user_id = ?1",
        params: [user],
      },
      {
        sql: "SELECT effective_from, plan, stripe_price_id FROM plan_history WHERE user_id = ?1 ORDER BY effective_from",
        params: [user],
      },
    ]);
    evidence.push(`  D1 series: ${JSON.stringify(series)}`);
    evidence.push(`  D1 adjustments: ${JSON.stringify(adjustments)}`);
    evidence.push(`  D1 plan history: ${JSON.stringify(history)}`);
    // each session of the user: the harness's view (billing time, the step after which its
    // verdict could come) beside D1's (billing time, verdict time, series and rank)
    const own = sessions.filter((s) => s.user === user && !s.id.startsWith("base-"));
    const rows = await client.sql([
      {
        sql: `SELECT session_id, created_at, first_seen_at, billed_at, verdict_at, billable, plan, period_start, seq
                FROM sessions WHERE session_id IN (SELECT value FROM json_each(?1))`,
        params: [JSON.stringify(own.map((s) => s.id))],
      },
    ]);
    const byId = new Map((rows[0] ?? []).map((r) => [String(r.session_id), r]));
    for (const s of own) {
      const r = byId.get(s.id);
      evidence.push(
        `  session ${s.id} harness: billed ${iso(s.billedAt)} #${s.phase} ${s.billable ? "billable" : "unbillable"}; D1: ${
          r
            ? `created ${iso(Number(r.created_at))} first seen ${iso(Number(r.first_seen_at))} billed ${iso(Number(r.billed_at))} judged ${iso(Number(r.verdict_at))} ${r.plan ?? "free"} ${r.period_start === null ? "" : iso(Number(r.period_start))} seq ${r.seq ?? "-"}`
            : "no row"
        }`,
      );
    }
    for (const inv of invoices.filter((i) => i.customer === customer)) {
      evidence.push(
        `  ${inv.id} ${inv.billingReason} ${inv.status} ${inv.total}c: ${inv.lines
          .map((l) => {
            const p = l.price ? prices.get(l.price) : undefined;
            return `[${p ? `${p.plan} v${p.version} ${p.kind}` : l.invoiceItem ? `item ${l.invoiceItem}` : "?"} from ${iso(l.periodStart)} x${l.quantity} ${l.amount}c]`;
          })
          .join(" ")}`,
      );
    }
  }
  const adjustmentRows = await client.one("SELECT count(*) AS n FROM usage_adjustments");
  return {
    users: allUsers.length,
    sessions: sessions.length,
    late,
    actions,
    windows: [...windows.values()].filter((w) => !w.window.open).length,
    invoices: invoices.length,
    adjustments: countRows(adjustmentRows) ?? 0,
    moves: moves.length,
    mismatches,
    evidence,
    clockDays: Math.round((end - t0) / DAY),
  };
}
