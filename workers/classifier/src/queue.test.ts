import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { readConfig } from "./config";
import { judgeSessions } from "./judging";
import {
  deadLetters,
  deliver,
  ev,
  eventsMessage,
  harness,
  judgeMessage,
  judgesOf,
  RecordingQueue,
  rollups,
  sessionRow,
  T0,
  TEST_VARS,
  typicalSession,
  verdictsOf,
} from "./test/support";

const SETTLE_MS = 60_000; // TEST_VARS.VERDICT_SETTLE_SECONDS
const RECEIVED = T0 + 40_000;
const AFTER_SETTLE = RECEIVED + SETTLE_MS + 1;

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
    // one read of the owners, one upsert for 120 events of 20 sessions
    expect(h.d1.statements).toBe(2);
    const { results } = await env.DB.prepare("SELECT count(*) AS n FROM sessions").all<{ n: number }>();
    expect(results[0]?.n).toBe(20);

    // Facts without a `created` event take the upsert variant that leaves created_at alone: 2 statements.
    const before = h.d1.statements;
    const heartbeats = sessions.map((_, i) =>
      ev("heartbeat", { session: `s${i}`, time: T0 + 50_000, audio: 40_000 }),
    );
    const fresh = Array.from({ length: 5 }, (_, i) => ev("created", { session: `n${i}`, time: T0 }));
    await deliver(h, [{ body: eventsMessage([...heartbeats, ...fresh], RECEIVED + 1) }], RECEIVED + 1);
    expect(h.d1.statements - before).toBe(3);
    expect((await sessionRow("s7"))?.audio_ms).toBe(40_000);
    expect((await sessionRow("n4"))?.created_at).toBe(T0);
  });

  it("sends one delayed judge reminder per batch for the sessions that ended in it", async () => {
    const h = harness();
    await deliver(
      h,
      [
        { body: eventsMessage([...typicalSession("a", T0), ...typicalSession("b", T0)], RECEIVED) },
        { body: eventsMessage([ev("heartbeat", { session: "c", time: T0, audio: 1 })], RECEIVED) },
      ],
      RECEIVED + 500,
    );
    const sent = judgesOf(h.telemetry.sent);
    expect(sent).toEqual([
      {
        body: { v: 1, kind: "judge", session_ids: ["a", "b"], due_at: RECEIVED + SETTLE_MS },
        delaySeconds: 60, // 59.5 s rounded up: never early
      },
    ]);
  });

  it("does not push the settle deadline later when `ended` is delivered again", async () => {
    const h = harness();
    const ended = ev("ended", { session: "s1", time: T0, audio: 9000 });
    await deliver(h, [{ body: eventsMessage([ended], RECEIVED) }], RECEIVED);
    await deliver(h, [{ body: eventsMessage([ended], RECEIVED + 30_000) }], RECEIVED + 30_000);
    expect((await sessionRow("s1"))?.settle_due_at).toBe(RECEIVED + SETTLE_MS);
    // the second reminder points at the original deadline
    expect(judgesOf(h.telemetry.sent).map((j) => [j.body.due_at, j.delaySeconds])).toEqual([
      [RECEIVED + SETTLE_MS, 60],
      [RECEIVED + SETTLE_MS, 30],
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

  it("retries when the reminder cannot be sent after the facts committed, and the redelivery sends it", async () => {
    const h = harness();
    h.telemetry.failNext = 1;
    const body = eventsMessage(typicalSession("s1", T0), RECEIVED);
    expect((await deliver(h, [{ id: "m1", body }], RECEIVED)).retried).toEqual(["m1"]);
    expect(h.telemetry.sent).toEqual([]);
    const before = await sessionRow("s1");
    expect((await deliver(h, [{ id: "m1", body, attempts: 2 }], RECEIVED)).acked).toEqual(["m1"]);
    expect(judgesOf(h.telemetry.sent).map((j) => j.body.session_ids)).toEqual([["s1"]]);
    const after = await sessionRow("s1");
    expect(after).toEqual(before); // the merge is idempotent
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
    return judgesOf(h.telemetry.drain());
  }

  it("judges a settled session, records the verdict and its rollup, and sends it to the biller", async () => {
    const h = harness();
    const [reminder] = await recordTypical(h);
    const r = await deliver(h, [{ id: "j1", body: reminder?.body }], AFTER_SETTLE);
    expect(r.acked).toEqual(["j1"]);
    expect(verdictsOf(h.verdicts)).toEqual([
      {
        v: 1,
        kind: "verdict",
        session_id: "s1",
        user_id: "user-1",
        project_id: "proj-1",
        created_at: T0,
        billable: true,
        reason: "success",
        rule_version: 1,
        audio_ms: 33_000,
        judged_at: AFTER_SETTLE,
      },
    ]);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "success", sessions: 1, audio_ms: 33_000 },
    ]);
    expect(await sessionRow("s1")).toMatchObject({
      verdict_at: AFTER_SETTLE,
      billable: 1,
      reason: "success",
    });
  });

  it("re-delays a reminder that arrives before the settle window is over, without judging", async () => {
    const h = harness();
    await recordTypical(h);
    const early = RECEIVED + 20_000;
    const r = await deliver(h, [{ id: "j1", body: judgeMessage(["s1"], early) }], early);
    expect(r.acked).toEqual(["j1"]);
    expect(h.verdicts.sent).toEqual([]);
    expect(judgesOf(h.telemetry.sent)).toEqual([
      { body: judgeMessage(["s1"], RECEIVED + SETTLE_MS), delaySeconds: 40 },
    ]);
    expect((await sessionRow("s1"))?.verdict_at).toBeNull();
  });

  it("ignores reminders for unknown sessions and for live sessions without `ended`", async () => {
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
  });

  it("never flips a verdict: later telemetry is counted as late and sends nothing", async () => {
    const h = harness();
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
    expect(verdictsOf(h.verdicts).map((v) => v.reason)).toEqual(["not_connected"]);
    h.verdicts.drain();
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
    });
    expect(h.telemetry.sent).toEqual([]);
    expect(h.verdicts.sent).toEqual([]);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "not_connected", sessions: 1, audio_ms: 0 },
    ]);
  });

  it("counts the rollup once when the verdict batch committed but the worker crashed, and sends on redelivery", async () => {
    const h = harness();
    const [reminder] = await recordTypical(h);
    h.d1.failAfterBatch = 1;
    const first = await deliver(h, [{ id: "j1", body: reminder?.body }], AFTER_SETTLE);
    expect(first.retried).toEqual(["j1"]);
    expect(h.verdicts.sent).toEqual([]);
    expect((await sessionRow("s1"))?.verdict_at).toBe(AFTER_SETTLE); // committed

    const again = await deliver(h, [{ id: "j1", body: reminder?.body, attempts: 2 }], AFTER_SETTLE + 5000);
    expect(again.acked).toEqual(["j1"]);
    expect(verdictsOf(h.verdicts)).toMatchObject([
      { session_id: "s1", reason: "success", judged_at: AFTER_SETTLE },
    ]);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "success", sessions: 1, audio_ms: 33_000 },
    ]);
  });

  it("re-sends the stored verdict when sending to the biller failed, without judging twice", async () => {
    const h = harness();
    const [reminder] = await recordTypical(h);
    h.verdicts.failNext = 1;
    const first = await deliver(h, [{ id: "j1", body: reminder?.body }], AFTER_SETTLE);
    expect(first.retryDelays).toEqual([{ id: "j1", delaySeconds: 5 }]);
    const token = (await sessionRow("s1"))?.verdict_token;
    await deliver(h, [{ id: "j1", body: reminder?.body, attempts: 2 }], AFTER_SETTLE + 9000);
    expect(verdictsOf(h.verdicts)).toMatchObject([{ session_id: "s1", judged_at: AFTER_SETTLE }]);
    expect((await sessionRow("s1"))?.verdict_token).toBe(token);
    expect((await rollups())[0]?.sessions).toBe(1);
  });

  it("judges on the facts as they are when telemetry lands between the read and the verdict update", async () => {
    const h = harness();
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
    expect(verdictsOf(h.verdicts)).toMatchObject([{ reason: "success", billable: true, audio_ms: 8000 }]);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "success", sessions: 1, audio_ms: 8000 },
    ]);
  });

  it("counts a session once in the rollups when another run judges it between the read and the batch", async () => {
    const h = harness();
    await recordTypical(h, "s1");
    await recordTypical(h, "s2");
    const rival = new RecordingQueue();
    h.d1.beforeNextBatch = async () => {
      await judgeSessions(
        env.DB,
        { verdicts: rival, telemetry: rival },
        ["s1"],
        AFTER_SETTLE,
        readConfig(TEST_VARS),
      );
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
    // s1 keeps the rival's verdict, which this run re-sends as stored
    expect(
      verdictsOf(h.verdicts)
        .map((v) => [v.session_id, v.judged_at])
        .sort(),
    ).toEqual([
      ["s1", AFTER_SETTLE],
      ["s2", AFTER_SETTLE + 1],
    ]);
  });

  it("clears `open` with an unbillable verdict and leaves it to the biller for a billable one", async () => {
    const h = harness();
    for (const id of ["good", "bad"]) {
      await env.DB.prepare(
        `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, admitted_at, admitted_plan, open)
         VALUES (?1, 'user-1', 'proj-1', ?2, ?2, ?2, 'free', 1)`,
      )
        .bind(id, T0)
        .run();
    }
    const bad = [ev("created", { session: "bad", time: T0 }), ev("ended", { session: "bad", time: T0 + 1 })];
    await deliver(h, [{ body: eventsMessage([...typicalSession("good", T0), ...bad], RECEIVED) }], RECEIVED);
    await deliver(h, [{ body: judgeMessage(["good", "bad"], RECEIVED + SETTLE_MS) }], AFTER_SETTLE);
    expect(await sessionRow("good")).toMatchObject({ billable: 1, open: 1 });
    expect(await sessionRow("bad")).toMatchObject({ billable: 0, reason: "not_connected", open: 0 });
  });

  it("adds many verdicts of the same user, day and reason to one rollup row", async () => {
    const h = harness();
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
    await deliver(h, [{ body: judgeMessage(ids.slice(0, 4), RECEIVED + SETTLE_MS) }], AFTER_SETTLE);
    await deliver(h, [{ body: judgeMessage(ids, RECEIVED + SETTLE_MS) }], AFTER_SETTLE + 1);
    expect(await rollups()).toEqual([
      { user_id: "user-1", day: "2026-05-14", reason: "success", sessions: 10, audio_ms: 330_000 },
    ]);
    // the second reminder re-sends the 4 verdicts already taken (the biller dedupes on session id)
    expect(verdictsOf(h.verdicts)).toHaveLength(14);
    expect(new Set(verdictsOf(h.verdicts).map((v) => v.session_id)).size).toBe(10);
  });
});
