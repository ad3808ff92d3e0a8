/**
 * The invariant checks must be able to fail: from a perfect end state built from a workload, each
 * planted money error is reported, and the perfect state reports nothing.
 */
import { describe, expect, it } from "vitest";
import {
  checkAll,
  type Expectations,
  expectedCostCents,
  type Observations,
  type SessionRow,
  type Snapshot,
} from "./invariants";
import { makeWorkload } from "./workload";

const START = Date.UTC(2026, 10, 20, 12, 0, 0);

function perfect(): { exp: Expectations; snap: Snapshot; obs: Observations } {
  const w = makeWorkload(7, 40, START);
  const exp: Expectations = {
    users: w.users,
    sessions: w.sessions,
    hijacks: w.hijacks,
    refused: ["b-refused-1"],
    late: new Map(w.sessions.slice(0, 3).map((s) => [s.id, 2])),
    waves: [
      {
        label: "wave",
        userId: "chaos-burst-free",
        requested: 8,
        allowed: 5,
        expectedAllowed: 5,
        limit: 5,
        reasons: ["concurrency_limit_reached", "concurrency_limit_reached", "concurrency_limit_reached"],
        expectedReason: "concurrency_limit_reached",
      },
    ],
  };
  const customers = new Map(
    w.users.filter((u) => u.plan !== "free").map((u, i) => [u.id, `cus_${i}`] as [string, string]),
  );
  const planOf = (userId: string) => w.users.find((u) => u.id === userId)?.plan ?? "free";
  const ranks = new Map<string, number>();
  const sessions = new Map<string, SessionRow>(
    w.sessions.map((s) => {
      const seq = s.expected.billable ? (ranks.get(s.userId) ?? 0) + 1 : null;
      if (seq !== null) ranks.set(s.userId, seq);
      return [
        s.id,
        {
          ...s.expected,
          session_id: s.id,
          admitted_at: null,
          open: 0,
          verdict_at: START + 60_000,
          late_events: w.sessions.indexOf(s) < 3 ? 2 : 0,
          billed_at: s.expected.created_at,
          plan: planOf(s.userId),
          period_start: START,
          seq,
        },
      ];
    }),
  );
  const billable = (userId: string) =>
    w.sessions.filter((s) => s.userId === userId && s.expected.billable === 1).length;
  const periods = w.users
    .filter((u) => w.sessions.some((s) => s.userId === u.id))
    .map((u) => ({
      user_id: u.id,
      plan: u.plan,
      period_start: START,
      period_end: START + 30 * 86_400_000,
      stripe_customer_id: customers.get(u.id) ?? null,
      meter_event_name: u.plan === "free" ? null : `aigate_${u.plan}_sessions`,
      billable_sessions: billable(u.id),
      posted_total: u.plan === "free" ? 0 : billable(u.id),
      seq_top: billable(u.id),
      adjusted: 0,
      frozen_at: null,
      stripe_billed: null,
    }));
  const deadLetters = [
    ...w.hijacks.map((h, i) => ({
      id: `aigate-telemetry:m${i}:user_mismatch:${h.sessionId}`,
      queue: "aigate-telemetry",
      body: JSON.stringify({ events: [h.event] }),
      error: `user_mismatch: session ${h.sessionId} belongs to another user`,
      replay_count: 0,
    })),
    ...w.sessions
      .filter((s) => s.poison)
      .map((s) => ({
        id: "aigate-telemetry:poison",
        queue: "aigate-telemetry",
        body: JSON.stringify({ events: s.events.map((e) => ({ session_id: e.subject })) }),
        error: "parked after 9 attempts",
        replay_count: 1,
      })),
  ];
  const snap: Snapshot = { sessions, periods, adjustments: [], deadLetters, customers };
  const obs: Observations = {
    meter: new Map(
      w.users
        .filter((u) => u.plan !== "free")
        .map((u) => {
          const own = { value: billable(u.id), maxPosted: billable(u.id) };
          const none = { value: 0, maxPosted: 0 };
          return [
            customers.get(u.id) ?? "",
            u.plan === "pro" ? { payg: none, pro: own } : { payg: own, pro: none },
          ];
        }),
    ),
    usageApi: new Map(
      w.users.map((u) => [
        u.id,
        {
          plan: u.plan,
          sessions_this_month: billable(u.id),
          failed_sessions: w.sessions.filter((s) => s.userId === u.id).length - billable(u.id),
          quota: u.plan === "free" ? 100 : u.plan === "pro" ? 400 : null,
          estimated_cost_cents: expectedCostCents(u.plan, billable(u.id)),
          active_sessions: 0,
        },
      ]),
    ),
    sessionsApi: new Map(
      w.users.map((u) => [
        u.id,
        { ids: w.sessions.filter((s) => s.userId === u.id).map((s) => s.id), billable: billable(u.id) },
      ]),
    ),
  };
  return { exp, snap, obs };
}

function paidUserWithSessions(exp: Expectations) {
  const user = exp.users.find(
    (u) => u.plan !== "free" && exp.sessions.some((s) => s.userId === u.id && s.expected.billable === 1),
  );
  if (!user) throw new Error("fixture has no paid user with billable sessions");
  return user;
}

describe("money invariants", () => {
  it("find nothing wrong in an exact end state", () => {
    const { exp, snap, obs } = perfect();
    expect(exp.hijacks.length + exp.sessions.length).toBeGreaterThan(100);
    expect(checkAll(exp, snap, obs)).toEqual([]);
  });

  it("report a session whose facts differ from its events (an event lost or merged twice)", () => {
    const { exp, snap, obs } = perfect();
    const [id, row] = [...snap.sessions][0] ?? [];
    if (!id || !row) throw new Error("empty fixture");
    snap.sessions.set(id, { ...row, audio_ms: row.audio_ms + 1 });
    expect(checkAll(exp, snap, obs)).toEqual([expect.stringContaining(`session ${id}`)]);
  });

  it("report late events that were neither merged nor counted as late (lost)", () => {
    const { exp, snap, obs } = perfect();
    const [id] = [...exp.late.keys()];
    const row = id ? snap.sessions.get(id) : undefined;
    if (!id || !row) throw new Error("no late session");
    snap.sessions.set(id, { ...row, late_events: 1 });
    expect(checkAll(exp, snap, obs)).toEqual([expect.stringContaining("late_events=1, 2 events were sent")]);
  });

  it("report a session billed under another plan, in a series that does not exist", () => {
    const { exp, snap, obs } = perfect();
    const row = [...snap.sessions.values()].find((r) => r.billable === 1 && r.plan === "payg");
    if (!row) throw new Error("no billable payg row");
    row.plan = "pro";
    const found = checkAll(exp, snap, obs);
    expect(found).toContainEqual(`session ${row.session_id}: billed under plan pro, user is on payg`);
    expect(found).toContainEqual(expect.stringContaining(`session ${row.session_id}: its series`));
  });

  it("report a session counted twice in its series, and one judged without a series", () => {
    const { exp, snap, obs } = perfect();
    const [first, second, third] = [...snap.sessions.values()].filter(
      (r) => r.billable === 1 && r.user_id === paidUserWithSessions(exp).id,
    );
    if (!first || !second || !third) throw new Error("fixture too small");
    second.seq = first.seq;
    third.plan = null;
    const found = checkAll(exp, snap, obs);
    expect(found).toContainEqual(expect.stringMatching(/^series .*: a rank given twice$/));
    expect(found).toContainEqual(
      expect.stringContaining(`session ${third.session_id}: judged without a series`),
    );
    expect(found).toContainEqual(expect.stringContaining(`${third.user_id}: `));
  });

  it("report an adjustment nobody owed, and a series frozen inside its period", () => {
    const { exp, snap, obs } = perfect();
    const series = snap.periods.find((p) => p.stripe_customer_id !== null && p.billable_sessions > 0);
    if (!series) throw new Error("no paid series");
    series.frozen_at = START;
    snap.adjustments.push({
      id: "adj-1",
      user_id: series.user_id,
      plan: series.plan,
      period_start: series.period_start,
      sessions: 1,
      amount_cents: 10,
      state: "created",
    });
    const found = checkAll(exp, snap, obs);
    expect(found).toContainEqual(
      expect.stringContaining("adjustment adj-1: 1 sessions billed by invoice item"),
    );
    expect(found).toContainEqual(expect.stringContaining("frozen or adjusted inside its period"));
  });

  it("report a Stripe meter total one off, and an over-posted total", () => {
    const { exp, snap, obs } = perfect();
    const user = paidUserWithSessions(exp);
    const customer = snap.customers.get(user.id) ?? "";
    const meters = obs.meter.get(customer);
    if (!meters || (user.plan !== "payg" && user.plan !== "pro")) throw new Error("no meter");
    const own = meters[user.plan];
    const other = user.plan === "payg" ? "pro" : "payg";
    obs.meter.set(customer, {
      ...meters,
      [user.plan]: { value: own.value - 1, maxPosted: own.value + 1 },
      [other]: { value: 1, maxPosted: 1 },
    });
    const found = checkAll(exp, snap, obs);
    expect(found).toContainEqual(expect.stringContaining(`${user.id}: Stripe ${user.plan} meter total`));
    expect(found).toContainEqual(expect.stringContaining(`${user.id}: a ${user.plan} meter post of`));
    // usage on the other plan's meter would be billed by that plan's price
    expect(found).toContainEqual(`${user.id}: Stripe ${other} meter total 1, workload has 0`);
  });

  it("report a usage API answer that disagrees with D1", () => {
    const { exp, snap, obs } = perfect();
    const user = paidUserWithSessions(exp);
    const api = obs.usageApi.get(user.id);
    if (!api) throw new Error("no usage answer");
    obs.usageApi.set(user.id, { ...api, sessions_this_month: api.sessions_this_month + 1 });
    expect(checkAll(exp, snap, obs)).toEqual([
      expect.stringContaining(`${user.id}: GET /api/billing/usage sessions_this_month`),
    ]);
  });

  it("report an unconfirmed paid total and free usage sent toward Stripe", () => {
    const { exp, snap, obs } = perfect();
    const paidPeriod = snap.periods.find((p) => p.stripe_customer_id !== null);
    const freePeriod = snap.periods.find((p) => p.plan === "free");
    if (!paidPeriod || !freePeriod) throw new Error("fixture lacks periods");
    paidPeriod.posted_total -= 1;
    freePeriod.stripe_customer_id = "cus_free";
    const found = checkAll(exp, snap, obs);
    expect(found).toContainEqual(expect.stringContaining(`${paidPeriod.user_id}: posted_total`));
    expect(found).toContainEqual(`${freePeriod.user_id}: free usage was sent toward Stripe`);
  });

  it("report a hijack event merged instead of parked, and any unexplained dead letter", () => {
    const { exp, snap, obs } = perfect();
    const letter = snap.deadLetters.find((d) => d.error.startsWith("user_mismatch"));
    if (!letter) throw new Error("fixture has no hijack");
    snap.deadLetters.splice(snap.deadLetters.indexOf(letter), 1);
    snap.deadLetters.push({
      id: "v:1",
      queue: "aigate-verdicts",
      body: "{}",
      error: "Stripe rejected",
      replay_count: 0,
    });
    const found = checkAll(exp, snap, obs);
    expect(found).toContainEqual(expect.stringContaining("is not parked as user_mismatch"));
    expect(found).toContainEqual(expect.stringContaining("unexpected dead letter v:1"));
  });

  it("report a poison message that was never replayed", () => {
    const { exp, snap, obs } = perfect();
    const poison = snap.deadLetters.find((d) => d.id === "aigate-telemetry:poison");
    if (!poison) throw new Error("fixture has no poison");
    poison.replay_count = 0;
    expect(checkAll(exp, snap, obs)).toEqual([expect.stringContaining("was never replayed")]);
  });

  it("report an admission beyond the free limits, and a refused session that exists anyway", () => {
    const { exp, snap, obs } = perfect();
    const [wave] = exp.waves;
    if (!wave) throw new Error("no wave");
    wave.allowed = 6;
    const any = [...snap.sessions.values()][0];
    if (!any) throw new Error("empty fixture");
    snap.sessions.set("b-refused-1", { ...any, session_id: "b-refused-1" });
    const found = checkAll(exp, snap, obs);
    expect(found).toContainEqual(expect.stringContaining("the limits allow 5 (free tier breached)"));
    expect(found).toContainEqual("session b-refused-1: refused at admission, yet a sessions row exists");
  });
});
