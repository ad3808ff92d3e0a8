import { env } from "cloudflare:test";
import { reattributeIfChanged, upsertPlanHistory } from "@aigate/shared/stripeSync/queries";
import { describe, expect, it } from "vitest";
import { readConfig } from "./config";
import { judgeSessions } from "./judging";
import {
  agenda,
  deadLetters,
  deliver,
  dense,
  ev,
  eventsMessage,
  harness,
  judgeMessage,
  MAY,
  paidAccount,
  RecordingQueue,
  ranksBySeries,
  reattributions,
  rollups,
  seriesRows,
  sessionRow,
  storeSessions,
  T0,
  TEST_VARS,
  typicalSession,
  usageOf,
} from "./test/support";

const SETTLE_MS = 60_000; // TEST_VARS.VERDICT_SETTLE_SECONDS
const RECEIVED = T0 + 40_000;
const STALE = 15 * 60_000; // TEST_VARS.STALE_SESSION_MINUTES
const AFTER_SETTLE = RECEIVED + SETTLE_MS + 1;
/** The paid accounts' billing period containing T0 (paidAccount's default). */
const PERIOD = { start: Date.UTC(2026, 4, 3), end: Date.UTC(2026, 5, 3) };
const payg = (user: string, start = PERIOD.start) => ({
  user_id: user,
  plan: "payg" as const,
  period_start: start,
});

describe("recording telemetry", () => {
  it("acks an events message once its facts are stored", async () => {
    const h = harness();
    const r = await deliver(
      h,
      [{ id: "m1", body: eventsMessage(typicalSession("s1", T0), RECEIVED) }],
      RECEIVED,
    );
    expect(r).toMatchObject({ acked: ["m1"], retried: [] });
    expect(await sessionRow("s1")).toMatchObject({
      user_id: "user-1",
      project_id: "proj-1",
      created_at: T0,
      connected: 1,
      connect_latency_ms: 400,
      audio_ms: 33_000,
      ended_at: T0 + 35_000,
      end_reason: "hangup",
      first_seen_at: RECEIVED,
      last_seen_at: RECEIVED,
      settle_due_at: RECEIVED + SETTLE_MS,
      verdict_at: null,
    });
  });

  it("coalesces a batch of many events into one read and one upsert per kind of facts", async () => {
    const h = harness();
    const sessions = Array.from({ length: 20 }, (_, i) => typicalSession(`s${i}`, T0 + i));
    const messages = Array.from({ length: 4 }, (_, k) => ({
      body: eventsMessage(sessions.slice(k * 5, k * 5 + 5).flat(), RECEIVED),
    }));
    await deliver(h, messages, RECEIVED);
    // one read of the owners, one upsert for 120 events of 20 sessions, one agenda row
    expect(h.d1.statements).toBe(3);
    const { results } = await env.DB.prepare("SELECT count(*) AS n FROM sessions").all<{ n: number }>();
    expect(results[0]?.n).toBe(20);

    // known and new sessions, with and without `created`, in one upsert (and one agenda row for the new)
    const before = h.d1.statements;
    const heartbeats = sessions.map((_, i) =>
      ev("heartbeat", { session: `s${i}`, time: T0 + 50_000, audio: 40_000 }),
    );
    const fresh = Array.from({ length: 5 }, (_, i) => ev("created", { session: `n${i}`, time: T0 }));
    await deliver(h, [{ body: eventsMessage([...heartbeats, ...fresh], RECEIVED + 1) }], RECEIVED + 1);
    expect(h.d1.statements - before).toBe(3);
    expect((await agenda()).map((r) => r.ids.length)).toEqual([20, 5]);
    expect((await sessionRow("s7"))?.audio_ms).toBe(40_000);
    expect((await sessionRow("n4"))?.created_at).toBe(T0);
  });

  it("lists a batch's sessions on the agenda in its transaction: ended ones at their settle time, others when stale", async () => {
    const h = harness();
    await deliver(
      h,
      [
        { body: eventsMessage([...typicalSession("a", T0), ...typicalSession("b", T0)], RECEIVED) },
        { body: eventsMessage([ev("heartbeat", { session: "c", time: T0, audio: 1 })], RECEIVED) },
      ],
      RECEIVED + 500,
    );
    expect(h.telemetry.sent).toEqual([]); // no queue message
    expect(await agenda()).toEqual([
      { due_at: RECEIVED + SETTLE_MS, ids: ["a", "b"] },
      { due_at: RECEIVED + STALE, ids: ["c"] },
    ]);
    // a known session is listed again only when `ended` comes
    await deliver(
      h,
      [{ body: eventsMessage([ev("heartbeat", { session: "c", time: T0 + 1, audio: 2 })], RECEIVED + 1000) }],
      RECEIVED + 1000,
    );
    expect(await agenda()).toHaveLength(2);
    await deliver(
      h,
      [{ body: eventsMessage([ev("ended", { session: "c", time: T0 + 2, audio: 2 })], RECEIVED + 2000) }],
      RECEIVED + 2000,
    );
    expect(await agenda()).toEqual([
      { due_at: RECEIVED + SETTLE_MS, ids: ["a", "b"] },
      { due_at: RECEIVED + 2000 + SETTLE_MS, ids: ["c"] },
      { due_at: RECEIVED + STALE, ids: ["c"] },
    ]);
  });

  it("does not push the settle deadline later when `ended` is delivered again", async () => {
    const h = harness();
    const ended = ev("ended", { session: "s1", time: T0, audio: 9000 });
    await deliver(h, [{ body: eventsMessage([ended], RECEIVED) }], RECEIVED);
    await deliver(h, [{ body: eventsMessage([ended], RECEIVED + 30_000) }], RECEIVED + 30_000);
    expect((await sessionRow("s1"))?.settle_due_at).toBe(RECEIVED + SETTLE_MS);
    // the first listing keeps the original deadline (the second, later one finds it judged)
    expect((await agenda()).map((r) => r.due_at)).toEqual([
      RECEIVED + SETTLE_MS,
      RECEIVED + 30_000 + SETTLE_MS,
    ]);
  });

  it("parks a message that fails the schema at once, acks it, and parks it only once when redelivered", async () => {
    const h = harness();
    const bad = { v: 1, kind: "events", request_id: "r", received_at: RECEIVED, events: [{ id: 1 }] };
    const good = { id: "ok", body: eventsMessage(typicalSession("s1", T0), RECEIVED) };
    const r = await deliver(h, [{ id: "bad-1", body: bad }, good], RECEIVED);
    expect(r).toMatchObject({ acked: ["bad-1", "ok"], retried: [] });
    await deliver(h, [{ id: "bad-1", body: bad, attempts: 2 }], RECEIVED);
    const letters = await deadLetters();
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({
      id: "aigate-telemetry:bad-1",
      queue: "aigate-telemetry",
      attempts: 1,
    });
    expect(letters[0]?.error).toMatch(/^schema_error: events\.0\./);
    expect(JSON.parse(letters[0]?.body ?? "null")).toEqual(bad);
    expect(await sessionRow("s1")).not.toBeNull();
  });

  it("retries every events message with backoff when D1 fails, and stores the facts on redelivery", async () => {
    const h = harness();
    h.d1.failBeforeBatch = 1;
    const body = eventsMessage(typicalSession("s1", T0), RECEIVED);
    const r = await deliver(
      h,
      [
        { id: "m1", body, attempts: 1 },
        { id: "m2", body: eventsMessage(typicalSession("s2", T0), RECEIVED), attempts: 3 },
      ],
      RECEIVED,
    );
    expect(r.acked).toEqual([]);
    expect(r.retryDelays).toEqual([
      { id: "m1", delaySeconds: 5 },
      { id: "m2", delaySeconds: 20 },
    ]);
    expect(await sessionRow("s1")).toBeNull();
    const again = await deliver(h, [{ id: "m1", body, attempts: 2 }], RECEIVED);
    expect(again.acked).toEqual(["m1"]);
    expect((await sessionRow("s1"))?.audio_ms).toBe(33_000);
  });

  it("retries when the batch committed but the worker crashed, and the redelivery changes nothing but the agenda", async () => {
    const h = harness();
    h.d1.failAfterBatch = 1;
    const body = eventsMessage(typicalSession("s1", T0), RECEIVED);
    expect((await deliver(h, [{ id: "m1", body }], RECEIVED)).retried).toEqual(["m1"]);
    const before = await sessionRow("s1");
    expect(await agenda()).toEqual([{ due_at: RECEIVED + SETTLE_MS, ids: ["s1"] }]);
    expect((await deliver(h, [{ id: "m1", body, attempts: 2 }], RECEIVED + 5000)).acked).toEqual(["m1"]);
    expect(await sessionRow("s1")).toEqual(before); // the merge is idempotent
    // listed twice at the same time: judged once (cron.test.ts)
    expect((await agenda()).map((r) => r.due_at)).toEqual([RECEIVED + SETTLE_MS, RECEIVED + SETTLE_MS]);
  });

  it("parks events whose user disagrees with the session's owner and merges the rest of the message", async () => {
    const h = harness();
    await deliver(
      h,
      [{ body: eventsMessage([ev("created", { session: "s1", time: T0 })], RECEIVED) }],
      RECEIVED,
    );
    const intruder = ev("heartbeat", { session: "s1", user: "mallory", time: T0 + 5, audio: 60_000 });
    const own = ev("heartbeat", { session: "s1", time: T0 + 6, audio: 6000 });
    const other = ev("created", { session: "s2", time: T0 });
    const r = await deliver(
      h,
      [{ id: "m2", body: eventsMessage([intruder, own, other], RECEIVED + 1, "req-2") }],
      RECEIVED + 1,
    );
    expect(r.acked).toEqual(["m2"]);
    expect(await sessionRow("s1")).toMatchObject({ user_id: "user-1", audio_ms: 6000 });
    expect(await sessionRow("s2")).not.toBeNull();
    const letters = await deadLetters();
    expect(letters.map((l) => [l.id, l.error])).toEqual([
      ["aigate-telemetry:m2:user_mismatch:s1", "user_mismatch: session s1 belongs to another user"],
    ]);
    expect(JSON.parse(letters[0]?.body ?? "null")).toEqual(eventsMessage([intruder], RECEIVED + 1, "req-2"));
  });

  it("parks events of another user that raced in after the owner read (guarded upsert)", async () => {
    const h = harness();
    // Between the classifier's read (no row yet) and its upsert, another batch creates s1 for alice.
    h.d1.beforeNextBatch = async () => {
      await env.DB.prepare(
        "INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at) VALUES ('s1', 'alice', 'p', 1, 1)",
      ).run();
    };
    const r = await deliver(
      h,
      [
        {
          id: "m1",
          body: eventsMessage(
            [ev("heartbeat", { session: "s1", user: "bob", time: T0, audio: 9 })],
            RECEIVED,
          ),
        },
      ],
      RECEIVED,
    );
    expect(r.acked).toEqual(["m1"]);
    expect(await sessionRow("s1")).toMatchObject({ user_id: "alice", audio_ms: 0 });
    expect((await deadLetters()).map((l) => l.id)).toEqual(["aigate-telemetry:m1:user_mismatch:s1:1"]);
  });
});

describe("judging", () => {
  async function recordTypical(h: ReturnType<typeof harness>, session = "s1") {
    await deliver(h, [{ body: eventsMessage(typicalSession(session, T0), RECEIVED) }], RECEIVED);
    // judged through a JudgeMessage (what an operator's replay sends; the cron judges the same way)
    return [{ body: judgeMessage([session], RECEIVED + SETTLE_MS) }];
  }

  it("judges a settled session: verdict, billing time and series in its row, the series' count, the rollup, one usage message", async () => {
    const h = harness();
    const account = await paidAccount("user-1");
    const [reminder] = await recordTypical(h);
    const r = await deliver(h, [{ id: "j1", body: reminder?.body }], AFTER_SETTLE);
    expect(r.acked).toEqual(["j1"]);
    expect(usageOf(h.verdicts)).toEqual([
      { v: 2, kind: "usage", series: [payg("user-1")], judged: 1, judged_at: AFTER_SETTLE },
    ]);
    expect(await sessionRow("s1")).toMatchObject({
      verdict_at: AFTER_SETTLE,
      billable: 1,
      reason: "success",
      rule_version: 1,
      billed_at: T0,
      plan: "payg",
      period_start: PERIOD.start,
      seq: 1,
      open: 0,
      event_digest: null,
    });
    expect(await seriesRows()).toEqual([
      {
        user_id: "user-1",
        plan: "payg",
        period_start: PERIOD.start,
        period_end: PERIOD.end,
        stripe_customer_id: account.customerId,
        stripe_subscription_id: account.subscriptionId,
        stripe_price_id: account.priceId,
        meter_event_name: "aigate_payg_sessions",
        billable_sessions: 1,
        seq_top: 1,
        posted_total: 0,
      },
    ]);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "success", sessions: 1, audio_ms: 33_000 },
    ]);
  });

  it("counts a free user's session in its calendar-month series and tells the biller nothing", async () => {
    const h = harness();
    const [reminder] = await recordTypical(h);
    const r = await deliver(h, [{ id: "j1", body: reminder?.body }], AFTER_SETTLE);
    expect(r.acked).toEqual(["j1"]);
    expect(h.verdicts.sent).toEqual([]);
    expect(await sessionRow("s1")).toMatchObject({
      billable: 1,
      plan: "free",
      period_start: MAY.start,
      seq: 1,
      billed_at: T0,
    });
    expect(await seriesRows()).toMatchObject([
      {
        user_id: "user-1",
        plan: "free",
        period_start: MAY.start,
        period_end: MAY.end,
        stripe_customer_id: null,
        meter_event_name: null,
        billable_sessions: 1,
        seq_top: 1,
      },
    ]);
    expect(await reattributions()).toEqual([]);
  });

  it("sends one message per run naming each paid series that grew, and only those", async () => {
    const h = harness();
    const previous = { start: Date.UTC(2026, 3, 3), end: PERIOD.start };
    await paidAccount("u-payg", { periods: [previous, PERIOD] });
    await paidAccount("u-pro", { plan: "pro" });
    await paidAccount("u-idle");
    const now = T0 + 3_600_000;
    await storeSessions([
      { id: "payg-1", user: "u-payg", firstSeen: T0 },
      { id: "payg-2", user: "u-payg", firstSeen: T0 + 1 },
      // billed in the previous period (received then, judged only now)
      { id: "payg-old", user: "u-payg", firstSeen: previous.end - 60_000 },
      { id: "pro-1", user: "u-pro", firstSeen: T0 },
      { id: "pro-bad", user: "u-pro", firstSeen: T0, success: false },
      { id: "idle-bad", user: "u-idle", firstSeen: T0, success: false },
      { id: "free-1", user: "u-free", firstSeen: T0 },
    ]);
    const outcome = await judgeSessions(
      h.env.DB,
      { verdicts: h.verdicts },
      ["payg-1", "payg-2", "payg-old", "pro-1", "pro-bad", "idle-bad", "free-1"],
      now,
      readConfig(TEST_VARS),
    );
    expect(outcome).toMatchObject({ judged: 7, resent: 0, unattributed: 0, skipped: 0 });
    const messages = usageOf(h.verdicts);
    expect(messages).toHaveLength(1);
    expect(messages[0]).toMatchObject({ v: 2, kind: "usage", judged: 7, judged_at: now });
    const key = (r: { user_id: string; plan: string; period_start: number }) =>
      `${r.user_id}|${r.plan}|${r.period_start}`;
    expect(messages[0]?.series.map(key).sort()).toEqual(
      [
        key(payg("u-payg")),
        key(payg("u-payg", previous.start)),
        key({ user_id: "u-pro", plan: "pro", period_start: PERIOD.start }),
      ].sort(),
    );
    expect(
      (await seriesRows()).map((r) => [key(r), r.meter_event_name, r.billable_sessions, r.seq_top]),
    ).toEqual([
      [key({ user_id: "u-free", plan: "free", period_start: MAY.start }), null, 1, 1],
      [key(payg("u-idle")), "aigate_payg_sessions", 0, 0],
      [key(payg("u-payg", previous.start)), "aigate_payg_sessions", 1, 1],
      [key(payg("u-payg")), "aigate_payg_sessions", 2, 2],
      [key({ user_id: "u-pro", plan: "pro", period_start: PERIOD.start }), "aigate_pro_sessions", 1, 1],
    ]);
    expect(await sessionRow("payg-old")).toMatchObject({ period_start: previous.start, seq: 1 });
    // an unbillable session has its series but no rank
    expect(await sessionRow("pro-bad")).toMatchObject({ billable: 0, plan: "pro", seq: null });
  });

  it("bills a session at its reported creation, bounded by its first receipt and admission minus 5 minutes", async () => {
    const h = harness();
    // the current period began 10 minutes before T0; the previous one ended then
    const boundary = T0 - 10 * 60_000;
    const periods = [
      { start: Date.UTC(2026, 3, 14, 12), end: boundary },
      { start: boundary, end: Date.UTC(2026, 5, 14, 12) },
    ];
    await paidAccount("user-1", { periods });
    const minutes = (n: number) => n * 60_000;
    await storeSessions([
      // backdated by a day: billed 5 minutes before its first receipt, still in the current period
      { id: "backdated", created: T0 - 86_400_000, firstSeen: T0 },
      // created within the skew before its receipt: billed when created, in the previous period
      { id: "skewed", created: boundary - 1000, firstSeen: boundary + minutes(3) },
      // reported after its first receipt (clock ahead): billed at the receipt
      { id: "ahead", created: T0 + minutes(30), firstSeen: T0 },
      // admitted well before its first telemetry: the admission bounds it
      { id: "admitted", created: T0 - minutes(60), firstSeen: T0, admitted: T0 - minutes(20) },
      // admission only, never any telemetry: billed at its admission
      { id: "ghost", created: null, firstSeen: T0, admitted: T0, success: false },
    ]);
    await judgeSessions(
      h.env.DB,
      { verdicts: h.verdicts },
      ["backdated", "skewed", "ahead", "admitted", "ghost"],
      T0 + STALE,
      readConfig(TEST_VARS),
    );
    const billed = async (id: string) => {
      const row = await sessionRow(id);
      return [row?.billed_at, row?.period_start];
    };
    expect(await billed("backdated")).toEqual([T0 - minutes(5), boundary]);
    expect(await billed("skewed")).toEqual([boundary - 1000, periods[0]?.start]);
    expect(await billed("ahead")).toEqual([T0, boundary]);
    expect(await billed("admitted")).toEqual([T0 - minutes(25), periods[0]?.start]);
    expect(await billed("ghost")).toEqual([T0, boundary]);
  });

  it("rolls a session up on the UTC day of its billing time", async () => {
    const h = harness();
    const midnight = Date.UTC(2026, 4, 15);
    await storeSessions([
      // created 30 s before midnight, received 10 s after: the day it was created
      { id: "before", created: midnight - 30_000, firstSeen: midnight + 10_000 },
      // reported 2 hours before its receipt just after midnight: billed 5 minutes before, the day before
      { id: "backdated", created: midnight - 7_200_000, firstSeen: midnight + 60_000 },
      // reported created after midnight though received before it: billed at the receipt
      { id: "ahead", created: midnight + 60_000, firstSeen: midnight - 1000 },
      { id: "after", created: midnight + 360_000, firstSeen: midnight + 400_000 },
    ]);
    await judgeSessions(
      h.env.DB,
      { verdicts: h.verdicts },
      ["before", "backdated", "ahead", "after"],
      midnight + STALE,
      readConfig(TEST_VARS),
    );
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "success", sessions: 3, audio_ms: 27_000 },
      { user_id: "user-1", day: "2026-05-15", reason: "success", sessions: 1, audio_ms: 9000 },
    ]);
  });

  it("records an unattributable paid session without a series, asks for re-attribution, and sends nothing", async () => {
    const h = harness();
    // Checkout completed: the plan history names a subscription whose webhook has not arrived yet
    await paidAccount("user-1", { effectiveFrom: T0 - 3_600_000, subscription: false });
    await storeSessions([
      { id: "early", firstSeen: T0 },
      { id: "late", firstSeen: T0 + 5000 },
      { id: "bad", firstSeen: T0 + 6000, success: false },
    ]);
    const now = T0 + STALE;
    const outcome = await judgeSessions(
      h.env.DB,
      { verdicts: h.verdicts },
      ["late", "early", "bad"],
      now,
      readConfig(TEST_VARS),
    );
    expect(outcome).toMatchObject({ judged: 3, unattributed: 3 });
    for (const [id, billable, at] of [
      ["early", 1, T0],
      ["late", 1, T0 + 5000],
      ["bad", 0, T0 + 6000],
    ] as const) {
      expect(await sessionRow(id)).toMatchObject({
        verdict_at: now,
        billable,
        billed_at: at,
        plan: null,
        period_start: null,
        seq: null,
      });
    }
    expect(await seriesRows()).toEqual([]);
    expect(await reattributions()).toEqual([{ user_id: "user-1", from_ms: T0, requested_at: now }]);
    expect(h.verdicts.sent).toEqual([]);
    // the rollups count them at once; a later request keeps the earliest time
    expect((await rollups()).map((r) => [r.reason, r.sessions])).toEqual([
      ["not_connected", 1],
      ["success", 2],
    ]);
    await storeSessions([
      { id: "earlier", firstSeen: T0 - 60_000 },
      { id: "later", firstSeen: T0 + 60_000 },
    ]);
    await judgeSessions(h.env.DB, { verdicts: h.verdicts }, ["later"], now + 1, readConfig(TEST_VARS));
    expect(await reattributions()).toEqual([{ user_id: "user-1", from_ms: T0, requested_at: now + 1 }]);
    await judgeSessions(h.env.DB, { verdicts: h.verdicts }, ["earlier"], now + 2, readConfig(TEST_VARS));
    expect(await reattributions()).toEqual([
      { user_id: "user-1", from_ms: T0 - 60_000, requested_at: now + 2 },
    ]);
  });

  it("asks for re-attribution when a plan change commits between reading the accounts and recording the verdicts", async () => {
    const h = harness();
    const payg = await paidAccount("user-1", { effectiveFrom: T0 - 3_600_000 });
    await storeSessions([{ id: "raced", firstSeen: T0 }]);
    const now = T0 + STALE;
    // after the accounts were read: the webhooks record an upgrade from T0 - 1 min (asking for a
    // re-attribution), and the biller's re-attribution runs and finishes before the verdict exists
    h.d1.beforeNextBatch = async () => {
      await env.DB.batch([
        upsertPlanHistory(
          env.DB,
          "user-1",
          {
            effective_from: T0 - 60_000,
            plan: "pro",
            stripe_subscription_id: payg.subscriptionId,
            stripe_price_id: "price_pro_metered",
            meter_event_name: "aigate_pro_sessions",
          },
          now,
        ),
        ...reattributeIfChanged(env.DB, "user-1", T0 - 60_000, now),
      ]);
      expect(await reattributions()).toEqual([
        { user_id: "user-1", from_ms: T0 - 60_000, requested_at: now },
      ]);
      await env.DB.prepare("DELETE FROM reattributions").run();
    };
    await judgeSessions(h.env.DB, { verdicts: h.verdicts }, ["raced"], now, readConfig(TEST_VARS));
    // judged by the accounts as read (payg), and the move to pro asked for in the same batch
    expect(await sessionRow("raced")).toMatchObject({ plan: "payg", billed_at: T0 });
    expect(await reattributions()).toEqual([{ user_id: "user-1", from_ms: T0, requested_at: now }]);

    // without a change in between, judging asks for nothing
    await env.DB.prepare("DELETE FROM reattributions").run();
    await storeSessions([{ id: "calm", firstSeen: T0 + 1000 }]);
    await judgeSessions(h.env.DB, { verdicts: h.verdicts }, ["calm"], now + 1, readConfig(TEST_VARS));
    expect(await sessionRow("calm")).toMatchObject({ plan: "pro" });
    expect(await reattributions()).toEqual([]);
  });

  it("puts a session back on the agenda when a JudgeMessage comes before its settle window is over", async () => {
    const h = harness();
    await recordTypical(h);
    await env.DB.exec("DELETE FROM session_due");
    const early = RECEIVED + 20_000;
    const r = await deliver(h, [{ id: "j1", body: judgeMessage(["s1"], early) }], early);
    expect(r.acked).toEqual(["j1"]);
    expect(h.verdicts.sent).toEqual([]);
    expect(h.telemetry.sent).toEqual([]);
    expect(await agenda()).toEqual([{ due_at: RECEIVED + SETTLE_MS, ids: ["s1"] }]);
    expect((await sessionRow("s1"))?.verdict_at).toBeNull();
    expect(await seriesRows()).toEqual([]);
  });

  it("ignores JudgeMessages for unknown sessions and keeps live sessions without `ended` on the agenda", async () => {
    const h = harness();
    await deliver(
      h,
      [{ body: eventsMessage([ev("heartbeat", { session: "live", time: T0 })], RECEIVED) }],
      RECEIVED,
    );
    const r = await deliver(
      h,
      [{ id: "j1", body: judgeMessage(["nope", "live"], RECEIVED) }],
      RECEIVED + 1000,
    );
    expect(r.acked).toEqual(["j1"]);
    expect(h.verdicts.sent).toEqual([]);
    expect(h.telemetry.sent).toEqual([]);
    expect((await sessionRow("live"))?.verdict_at).toBeNull();
    expect(await agenda()).toEqual([
      { due_at: RECEIVED + STALE, ids: ["live"] },
      { due_at: RECEIVED + STALE, ids: ["live"] },
    ]);
  });

  it("never flips a verdict: later telemetry is counted as late and sends nothing", async () => {
    const h = harness();
    await paidAccount("user-1");
    const s = "s1";
    await deliver(
      h,
      [
        {
          body: eventsMessage(
            [ev("created", { session: s, time: T0 }), ev("ended", { session: s, time: T0 })],
            RECEIVED,
          ),
        },
      ],
      RECEIVED,
    );
    await deliver(h, [{ body: judgeMessage([s], RECEIVED + SETTLE_MS) }], AFTER_SETTLE);
    expect(await sessionRow(s)).toMatchObject({ reason: "not_connected", plan: "payg", seq: null });
    // an unbillable verdict grows no series: nothing for the biller
    expect(h.verdicts.sent).toEqual([]);
    h.telemetry.drain();
    const late = [
      ev("connected", { session: s, time: T0 + 1, latency: 100 }),
      ev("heartbeat", { session: s, time: T0 + 2, audio: 90_000 }),
      ev("ended", { session: s, time: T0 + 3, audio: 90_000 }),
    ];
    const r = await deliver(
      h,
      [{ id: "late", body: eventsMessage(late, AFTER_SETTLE + 5) }],
      AFTER_SETTLE + 5,
    );
    expect(r.acked).toEqual(["late"]);
    expect(await sessionRow(s)).toMatchObject({
      connected: 0,
      audio_ms: 0,
      late_events: 3,
      reason: "not_connected",
      billable: 0,
      verdict_at: AFTER_SETTLE,
      seq: null,
    });
    // a reminder for it changes nothing either
    await deliver(h, [{ body: judgeMessage([s], AFTER_SETTLE + 5) }], AFTER_SETTLE + 10);
    expect(h.telemetry.sent).toEqual([]);
    expect(h.verdicts.sent).toEqual([]);
    expect((await seriesRows()).map((r) => [r.plan, r.billable_sessions, r.seq_top])).toEqual([
      ["payg", 0, 0],
    ]);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "not_connected", sessions: 1, audio_ms: 0 },
    ]);
  });

  it("retries with backoff when D1 fails before the verdict batch, and judges once on redelivery", async () => {
    const h = harness();
    await paidAccount("user-1");
    const [reminder] = await recordTypical(h);
    h.d1.failBeforeBatch = 1;
    const first = await deliver(h, [{ id: "j1", body: reminder?.body }], AFTER_SETTLE);
    expect(first.retryDelays).toEqual([{ id: "j1", delaySeconds: 5 }]);
    expect((await sessionRow("s1"))?.verdict_at).toBeNull();
    expect(await seriesRows()).toEqual([]);
    expect(h.verdicts.sent).toEqual([]);

    const again = await deliver(h, [{ id: "j1", body: reminder?.body, attempts: 2 }], AFTER_SETTLE + 5000);
    expect(again.acked).toEqual(["j1"]);
    expect(usageOf(h.verdicts)).toEqual([
      { v: 2, kind: "usage", series: [payg("user-1")], judged: 1, judged_at: AFTER_SETTLE + 5000 },
    ]);
    expect((await seriesRows()).map((r) => [r.billable_sessions, r.seq_top])).toEqual([[1, 1]]);
  });

  it("counts the series and the rollup once when the verdict batch committed but the worker crashed; the series waits for the sweep", async () => {
    const h = harness();
    await paidAccount("user-1");
    const [reminder] = await recordTypical(h);
    h.d1.failAfterBatch = 1;
    const first = await deliver(h, [{ id: "j1", body: reminder?.body }], AFTER_SETTLE);
    expect(first.retried).toEqual(["j1"]);
    expect(h.verdicts.sent).toEqual([]);
    expect((await sessionRow("s1"))?.verdict_at).toBe(AFTER_SETTLE); // committed
    const token = (await sessionRow("s1"))?.verdict_token;

    const again = await deliver(h, [{ id: "j1", body: reminder?.body, attempts: 2 }], AFTER_SETTLE + 5000);
    expect(again.acked).toEqual(["j1"]);
    // Nothing is judged again, so nothing grew: no message. The series row is the outbox: its
    // total is not posted yet, which is what the biller's minute sweep posts.
    expect(h.verdicts.sent).toEqual([]);
    expect(await sessionRow("s1")).toMatchObject({ verdict_at: AFTER_SETTLE, verdict_token: token, seq: 1 });
    expect((await seriesRows()).map((r) => [r.billable_sessions, r.seq_top, r.posted_total])).toEqual([
      [1, 1, 0],
    ]);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "success", sessions: 1, audio_ms: 33_000 },
    ]);
  });

  it("retries when the usage message cannot be sent, without judging twice on redelivery", async () => {
    const h = harness();
    await paidAccount("user-1");
    const [reminder] = await recordTypical(h);
    h.verdicts.failNext = 1;
    const first = await deliver(h, [{ id: "j1", body: reminder?.body }], AFTER_SETTLE);
    expect(first.retryDelays).toEqual([{ id: "j1", delaySeconds: 5 }]);
    const token = (await sessionRow("s1"))?.verdict_token;
    expect(token).toEqual(expect.any(String));
    const again = await deliver(h, [{ id: "j1", body: reminder?.body, attempts: 2 }], AFTER_SETTLE + 9000);
    expect(again.acked).toEqual(["j1"]);
    expect(h.verdicts.sent).toEqual([]); // the sweep posts the series (its total is in D1)
    expect((await sessionRow("s1"))?.verdict_token).toBe(token);
    expect((await seriesRows()).map((r) => [r.billable_sessions, r.seq_top, r.posted_total])).toEqual([
      [1, 1, 0],
    ]);
    expect((await rollups())[0]?.sessions).toBe(1);
  });

  it("judges on the facts as they are when telemetry lands between the read and the verdict update", async () => {
    const h = harness();
    await paidAccount("user-1");
    await deliver(
      h,
      [
        {
          body: eventsMessage(
            [
              ev("created", { session: "s1", time: T0 }),
              ev("connected", { session: "s1", time: T0 + 1, latency: 10 }),
              ev("ended", { session: "s1", time: T0 + 9, audio: 1000 }),
            ],
            RECEIVED,
          ),
        },
      ],
      RECEIVED,
    );
    // The verdict read sees 1000 ms of audio (too_short); a heartbeat with 8000 ms lands before the update.
    h.d1.beforeNextBatch = async () => {
      await env.DB.prepare("UPDATE sessions SET audio_ms = 8000 WHERE session_id = 's1'").run();
    };
    await deliver(h, [{ body: judgeMessage(["s1"], RECEIVED + SETTLE_MS) }], AFTER_SETTLE);
    expect(await sessionRow("s1")).toMatchObject({ reason: "success", billable: 1, audio_ms: 8000, seq: 1 });
    expect(usageOf(h.verdicts)).toEqual([
      { v: 2, kind: "usage", series: [payg("user-1")], judged: 1, judged_at: AFTER_SETTLE },
    ]);
    expect((await seriesRows()).map((r) => [r.billable_sessions, r.seq_top])).toEqual([[1, 1]]);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "success", sessions: 1, audio_ms: 8000 },
    ]);
  });

  it("counts a session once when another run judges it between the read and the batch", async () => {
    const h = harness();
    await paidAccount("user-1");
    await recordTypical(h, "s1");
    await recordTypical(h, "s2");
    const rival = new RecordingQueue();
    h.d1.beforeNextBatch = async () => {
      await judgeSessions(env.DB, { verdicts: rival }, ["s1"], AFTER_SETTLE, readConfig(TEST_VARS));
    };
    const r = await deliver(
      h,
      [{ id: "j1", body: judgeMessage(["s1", "s2"], RECEIVED + SETTLE_MS) }],
      AFTER_SETTLE + 1,
    );
    expect(r.acked).toEqual(["j1"]);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "success", sessions: 2, audio_ms: 66_000 },
    ]);
    // each run reports what it judged, once: s1 the rival's, s2 this run's
    expect(usageOf(rival)).toEqual([
      { v: 2, kind: "usage", series: [payg("user-1")], judged: 1, judged_at: AFTER_SETTLE },
    ]);
    expect(usageOf(h.verdicts)).toEqual([
      { v: 2, kind: "usage", series: [payg("user-1")], judged: 1, judged_at: AFTER_SETTLE + 1 },
    ]);
    expect(await sessionRow("s1")).toMatchObject({ verdict_at: AFTER_SETTLE, seq: 1 });
    expect(await sessionRow("s2")).toMatchObject({ verdict_at: AFTER_SETTLE + 1, seq: 2 });
    expect((await seriesRows()).map((r) => [r.billable_sessions, r.seq_top])).toEqual([[2, 2]]);
  });

  it("gives each session one verdict and one dense rank when two runs judge the same sessions concurrently", async () => {
    await paidAccount("user-1");
    const ids = Array.from({ length: 30 }, (_, i) => `s${String(i).padStart(2, "0")}`);
    await storeSessions(ids.map((id, i) => ({ id, firstSeen: T0 + i, success: i % 3 !== 0 })));
    const queues = [new RecordingQueue(), new RecordingQueue(), new RecordingQueue()];
    const outcomes = await Promise.all(
      queues.map((q, k) =>
        judgeSessions(
          env.DB,
          { verdicts: q },
          k === 1 ? [...ids].reverse() : ids,
          T0 + STALE + k,
          readConfig(TEST_VARS),
        ),
      ),
    );
    expect(outcomes.reduce((n, o) => n + o.judged, 0)).toBe(30);
    expect(outcomes.reduce((n, o) => n + o.judged + o.resent, 0)).toBe(90);
    const messages = queues.flatMap((q) => usageOf(q));
    // one message per run that judged a billable session, each naming the one series
    expect(messages.length).toBe(outcomes.filter((o) => o.judged > 0).length);
    for (const m of messages) expect(m.series).toEqual([payg("user-1")]);
    expect(messages.reduce((n, m) => n + m.judged, 0)).toBe(30);
    expect([...(await ranksBySeries()).values()]).toEqual([dense(20)]);
    expect((await seriesRows()).map((r) => [r.billable_sessions, r.seq_top])).toEqual([[20, 20]]);
    expect((await rollups()).map((r) => [r.reason, r.sessions])).toEqual([
      ["not_connected", 10],
      ["success", 20],
    ]);
  });

  it("ends the admission lease (`open`) with every verdict: a billable session counts through its series from then on", async () => {
    const h = harness();
    await paidAccount("user-1");
    for (const id of ["good", "bad"]) {
      await env.DB.prepare(
        `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, admitted_at, admitted_plan, open)
         VALUES (?1, 'user-1', 'proj-1', ?2, ?2, ?2, 'payg', 1)`,
      )
        .bind(id, T0)
        .run();
    }
    const bad = [ev("created", { session: "bad", time: T0 }), ev("ended", { session: "bad", time: T0 + 1 })];
    await deliver(h, [{ body: eventsMessage([...typicalSession("good", T0), ...bad], RECEIVED) }], RECEIVED);
    expect((await sessionRow("good"))?.open).toBe(1);
    await deliver(h, [{ body: judgeMessage(["good", "bad"], RECEIVED + SETTLE_MS) }], AFTER_SETTLE);
    expect(await sessionRow("good")).toMatchObject({ billable: 1, open: 0, plan: "payg", seq: 1 });
    expect(await sessionRow("bad")).toMatchObject({
      billable: 0,
      reason: "not_connected",
      open: 0,
      seq: null,
    });
    expect((await seriesRows()).map((r) => r.billable_sessions)).toEqual([1]);
  });

  it("adds many verdicts of the same user, day and reason to one rollup row, ranking them 1..n in recording order", async () => {
    const h = harness();
    await paidAccount("user-1");
    const ids = Array.from({ length: 10 }, (_, i) => `s${i}`);
    await deliver(
      h,
      [
        {
          body: eventsMessage(
            ids.flatMap((id) => typicalSession(id, T0)),
            RECEIVED,
          ),
        },
      ],
      RECEIVED,
    );
    await deliver(h, [{ body: judgeMessage(ids.slice(6), RECEIVED + SETTLE_MS) }], AFTER_SETTLE);
    await deliver(h, [{ body: judgeMessage(ids, RECEIVED + SETTLE_MS) }], AFTER_SETTLE + 1);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "success", sessions: 10, audio_ms: 330_000 },
    ]);
    // one message per run; the second run reports only the 6 it judged (nothing is re-sent)
    expect(usageOf(h.verdicts)).toEqual([
      { v: 2, kind: "usage", series: [payg("user-1")], judged: 4, judged_at: AFTER_SETTLE },
      { v: 2, kind: "usage", series: [payg("user-1")], judged: 6, judged_at: AFTER_SETTLE + 1 },
    ]);
    const seqs = await Promise.all(ids.map(async (id) => (await sessionRow(id))?.seq));
    expect(seqs).toEqual([5, 6, 7, 8, 9, 10, 1, 2, 3, 4]);
    expect((await seriesRows()).map((r) => [r.billable_sessions, r.seq_top])).toEqual([[10, 10]]);
  });

  it("ranks a run larger than one verdict statement densely across its statements", async () => {
    const h = harness();
    await paidAccount("user-1");
    const ids = Array.from({ length: 2500 }, (_, i) => `s${String(i).padStart(4, "0")}`);
    await storeSessions(ids.map((id, i) => ({ id, firstSeen: T0 + i, success: i % 5 !== 4 })));
    const outcome = await judgeSessions(
      h.env.DB,
      { verdicts: h.verdicts },
      ids,
      T0 + STALE + 10_000,
      readConfig(TEST_VARS),
    );
    expect(outcome.judged).toBe(2500);
    expect(usageOf(h.verdicts)).toEqual([
      { v: 2, kind: "usage", series: [payg("user-1")], judged: 2500, judged_at: T0 + STALE + 10_000 },
    ]);
    expect([...(await ranksBySeries()).values()]).toEqual([dense(2000)]);
    expect((await seriesRows()).map((r) => [r.billable_sessions, r.seq_top])).toEqual([[2000, 2000]]);
    expect((await rollups()).map((r) => [r.reason, r.sessions])).toEqual([
      ["not_connected", 500],
      ["success", 2000],
    ]);
  });
});
