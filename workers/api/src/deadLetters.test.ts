/**
 * Dead-letter replay and its pure decisions. Replay runs against the real D1; the queues it sends
 * to are recording producers (the end-to-end suite replays onto the real local queues).
 */
import { env } from "cloudflare:test";
import { createLogger } from "@aigate/shared";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  describeBody,
  drainRetryDelaySeconds,
  MAX_REPLAY_PER_REQUEST,
  ORIGINAL_MAX_ATTEMPTS,
  originalQueue,
  planReplay,
  replayDeadLetters,
} from "./deadLetters";
import { deadLetter, deadLetterRows, insertDeadLetterRows, recordingProducers } from "./test/admin";

const log = createLogger("api-test");
const verdictBody = (session: string) => ({
  v: 1,
  kind: "verdict",
  session_id: session,
  user_id: "u1",
  project_id: "p1",
  created_at: 1,
  billable: true,
  reason: "success",
  rule_version: 1,
  audio_ms: 6000,
  judged_at: 2,
});

describe("pure decisions", () => {
  it("names the original queue of a dead-letter queue", () => {
    expect(originalQueue("aigate-verdicts-dlq")).toBe("aigate-verdicts");
    expect(originalQueue("aigate-telemetry-dlq")).toBe("aigate-telemetry");
    expect(originalQueue("something-else")).toBe("something-else");
  });

  it("backs off a failed drain from 30 s, doubling, capped at 12 h", () => {
    expect([1, 2, 3, 4].map(drainRetryDelaySeconds)).toEqual([30, 60, 120, 240]);
    expect(drainRetryDelaySeconds(20)).toBe(43_200);
    expect(drainRetryDelaySeconds(0)).toBe(30);
  });

  it("plans to send known, not yet replayed dead letters and says why the others are skipped", () => {
    const rows = [
      deadLetter({ id: "a" }),
      deadLetter({ id: "b", replayed_at: 5, replay_count: 1 }),
      deadLetter({ id: "c", queue: "aigate-unknown" }),
      deadLetter({ id: "d", body: "{not json" }),
    ];
    const plan = planReplay(["a", "b", "c", "d", "e", "a"], rows, false);
    expect(plan.send.map((s) => [s.row.id, s.queue])).toEqual([["a", "aigate-verdicts"]]);
    expect(plan.skipped).toEqual([
      { id: "b", reason: "already_replayed" },
      { id: "c", reason: "unknown_queue" },
      { id: "d", reason: "invalid_body" },
      { id: "e", reason: "not_found" },
    ]);
    expect(planReplay(["b"], rows, true).send.map((s) => s.row.id)).toEqual(["b"]);
  });

  it("describes what a dead letter is about", () => {
    expect(describeBody("aigate-verdicts", JSON.stringify(verdictBody("s1")))).toBe(
      "verdict for session s1 of user u1: billable",
    );
    const usage = {
      v: 2,
      kind: "usage",
      series: [{ user_id: "u1", plan: "payg", period_start: Date.UTC(2026, 10, 3) }],
      judged: 4,
      judged_at: 1,
    };
    expect(describeBody("aigate-verdicts", JSON.stringify(usage))).toBe(
      "usage of 1 series (user u1 payg from 2026-11-03T00:00:00.000Z) after 4 session(s) judged",
    );
    const events = {
      v: 1,
      kind: "events",
      request_id: "r",
      received_at: 1,
      events: [
        {
          id: "e1",
          source: "gw",
          type: "aigate.session.created",
          session_id: "s2",
          user_id: "u",
          project_id: "p",
          time: 1,
        },
      ],
    };
    expect(describeBody("aigate-telemetry", JSON.stringify(events))).toBe("1 event(s) of session(s) s2");
    expect(
      describeBody(
        "aigate-telemetry",
        JSON.stringify({ v: 1, kind: "judge", session_ids: ["x"], due_at: 1 }),
      ),
    ).toBe("judge reminder for 1 session(s)");
    expect(describeBody("aigate-verdicts", '"poison"')).toBe(
      "message that does not match its queue's schema",
    );
    expect(describeBody("aigate-verdicts", "{")).toBe("body is not JSON");
  });
});

describe("replay", () => {
  it("sends the stored body back to the original queue as JSON and marks it replayed", async () => {
    await insertDeadLetterRows(env.DB, [
      deadLetter({ id: "aigate-verdicts:m1", body: JSON.stringify(verdictBody("s1")) }),
      deadLetter({
        id: "aigate-telemetry:t1",
        queue: "aigate-telemetry",
        body: JSON.stringify({ v: 1, kind: "judge", session_ids: ["s1"], due_at: 1 }),
      }),
    ]);
    const { producers, sent } = recordingProducers();
    const result = await replayDeadLetters(
      env.DB,
      producers,
      { kind: "ids", ids: ["aigate-verdicts:m1", "aigate-telemetry:t1"], force: false },
      42_000,
      log,
    );
    expect(result).toEqual({
      replayed: 2,
      ids: ["aigate-telemetry:t1", "aigate-verdicts:m1"],
      skipped: [],
      failed: [],
      more: false,
    });
    expect(sent).toEqual([
      {
        queue: "aigate-telemetry",
        messages: [{ body: { v: 1, kind: "judge", session_ids: ["s1"], due_at: 1 }, contentType: "json" }],
      },
      { queue: "aigate-verdicts", messages: [{ body: verdictBody("s1"), contentType: "json" }] },
    ]);
    expect((await deadLetterRows(env.DB)).map((r) => [r.id, r.replayed_at, r.replay_count])).toEqual([
      ["aigate-telemetry:t1", 42_000, 1],
      ["aigate-verdicts:m1", 42_000, 1],
    ]);
  });

  it("re-sends nothing when the same replay is repeated, unless forced", async () => {
    await insertDeadLetterRows(env.DB, [deadLetter({ id: "aigate-verdicts:m1" })]);
    const { producers, sent } = recordingProducers();
    const request = { kind: "ids" as const, ids: ["aigate-verdicts:m1"], force: false };
    await replayDeadLetters(env.DB, producers, request, 1, log);
    const again = await replayDeadLetters(env.DB, producers, request, 2, log);
    expect(again).toMatchObject({
      replayed: 0,
      ids: [],
      skipped: [{ id: "aigate-verdicts:m1", reason: "already_replayed" }],
    });
    expect(sent).toHaveLength(1);
    const forced = await replayDeadLetters(env.DB, producers, { ...request, force: true }, 3, log);
    expect(forced).toMatchObject({ replayed: 1, ids: ["aigate-verdicts:m1"] });
    expect(sent).toHaveLength(2);
    expect(await deadLetterRows(env.DB)).toMatchObject([{ replayed_at: 3, replay_count: 2 }]);
  });

  it("leaves a dead letter unreplayed and reports it when its queue refuses the send", async () => {
    await insertDeadLetterRows(env.DB, [
      deadLetter({ id: "aigate-verdicts:m1" }),
      deadLetter({ id: "aigate-telemetry:t1", queue: "aigate-telemetry", body: "{}" }),
    ]);
    const { producers, sent } = recordingProducers("aigate-verdicts");
    const result = await replayDeadLetters(
      env.DB,
      producers,
      { kind: "ids", ids: ["aigate-verdicts:m1", "aigate-telemetry:t1"], force: false },
      7,
      log,
    );
    expect(result.replayed).toBe(1);
    expect(result.ids).toEqual(["aigate-telemetry:t1"]);
    expect(result.failed).toEqual([
      { id: "aigate-verdicts:m1", error: "send failed: Error: queue aigate-verdicts unavailable" },
    ]);
    expect(sent.map((s) => s.queue)).toEqual(["aigate-telemetry"]);
    expect((await deadLetterRows(env.DB)).map((r) => [r.id, r.replayed_at])).toEqual([
      ["aigate-telemetry:t1", 7],
      ["aigate-verdicts:m1", null],
    ]);
  });

  it("sends large bodies in queue batches under 256 kB and 100 messages", async () => {
    const pad = "y".repeat(100_000);
    const rows = Array.from({ length: 5 }, (_, i) =>
      deadLetter({ id: `aigate-verdicts:big${i}`, body: JSON.stringify({ ...verdictBody(`s${i}`), pad }) }),
    );
    await insertDeadLetterRows(env.DB, rows);
    const { producers, sent } = recordingProducers();
    const result = await replayDeadLetters(
      env.DB,
      producers,
      { kind: "queue", queue: "aigate-verdicts" },
      1,
      log,
    );
    expect(result.replayed).toBe(5);
    expect(sent.map((s) => s.messages.length)).toEqual([2, 2, 1]);
    for (const batch of sent) {
      const bytes = batch.messages.reduce((n, m) => n + JSON.stringify(m.body).length, 0);
      expect(bytes).toBeLessThan(256_000);
    }
  });

  it("replays a whole queue's pending dead letters only, and says when more remain", async () => {
    const pending = Array.from({ length: MAX_REPLAY_PER_REQUEST + 20 }, (_, i) =>
      deadLetter({ id: `aigate-verdicts:p${String(i).padStart(4, "0")}` }),
    );
    await insertDeadLetterRows(env.DB, [
      ...pending,
      deadLetter({ id: "aigate-verdicts:done", replayed_at: 5, replay_count: 1 }),
      deadLetter({ id: "aigate-telemetry:other", queue: "aigate-telemetry" }),
    ]);
    const { producers, sent } = recordingProducers();
    const first = await replayDeadLetters(
      env.DB,
      producers,
      { kind: "queue", queue: "aigate-verdicts" },
      9,
      log,
    );
    expect(first.replayed).toBe(MAX_REPLAY_PER_REQUEST);
    expect(first.more).toBe(true);
    const second = await replayDeadLetters(
      env.DB,
      producers,
      { kind: "queue", queue: "aigate-verdicts" },
      9,
      log,
    );
    expect(second.replayed).toBe(20);
    expect(second.more).toBe(false);
    const third = await replayDeadLetters(
      env.DB,
      producers,
      { kind: "queue", queue: "aigate-verdicts" },
      9,
      log,
    );
    expect(third).toEqual({ replayed: 0, ids: [], skipped: [], failed: [], more: false });
    const sentIds = new Set(sent.flatMap((s) => s.messages.map((m) => JSON.stringify(m.body))));
    expect(sent.every((s) => s.queue === "aigate-verdicts")).toBe(true);
    expect(sent.reduce((n, s) => n + s.messages.length, 0)).toBe(MAX_REPLAY_PER_REQUEST + 20);
    expect(sentIds.size).toBe(MAX_REPLAY_PER_REQUEST + 20);
    const rows = await deadLetterRows(env.DB);
    expect(rows.find((r) => r.id === "aigate-verdicts:done")?.replay_count).toBe(1);
    expect(rows.find((r) => r.id === "aigate-telemetry:other")?.replayed_at).toBeNull();
  });
});

describe("configuration", () => {
  it("knows each consumer's deliveries before the dead-letter queue (max_retries + 1 in its wrangler.jsonc)", () => {
    const retries = z
      .record(z.string(), z.number())
      .parse(JSON.parse(String(Reflect.get(env, "TEST_CONSUMER_MAX_RETRIES"))));
    expect(Object.keys(retries).sort()).toEqual(["aigate-telemetry", "aigate-verdicts"]);
    for (const [queue, n] of Object.entries(retries)) expect(ORIGINAL_MAX_ATTEMPTS[queue], queue).toBe(n + 1);
  });
});
