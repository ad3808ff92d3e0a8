/**
 * The dead-letter queue consumer (the api worker's queue handler), as a unit: messages that
 * exhausted their retries on aigate-telemetry or aigate-verdicts are parked in dead_letters under
 * their original queue, idempotently, and acked only once parked.
 */
import { createExecutionContext, createMessageBatch, env, getQueueResult } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "./index";
import { deadLetterRows, failingBatchDb } from "./test/admin";

const verdict = {
  v: 1,
  kind: "verdict",
  session_id: "s1",
  user_id: "u1",
  project_id: "p1",
  created_at: 1,
  billable: true,
  reason: "success",
  rule_version: 1,
  audio_ms: 6000,
  judged_at: 2,
};

function dlqBatch(queue: string, messages: { id: string; body: unknown; attempts?: number }[]) {
  return createMessageBatch(
    queue,
    messages.map((m) => ({ id: m.id, timestamp: new Date(1_000), attempts: m.attempts ?? 1, body: m.body })),
  );
}

async function consume(batch: MessageBatch<unknown>, e: Env = env) {
  const ctx = createExecutionContext();
  await worker.queue(batch, e);
  return getQueueResult(batch, ctx);
}

describe("dead-letter queue consumer", () => {
  it("parks each message of aigate-verdicts-dlq under its original queue and acks it", async () => {
    const before = Date.now();
    const result = await consume(
      dlqBatch("aigate-verdicts-dlq", [
        { id: "m1", body: verdict },
        { id: "m2", body: "not a verdict" },
      ]),
    );
    expect(result.explicitAcks.sort()).toEqual(["m1", "m2"]);
    expect(result.retryMessages).toEqual([]);
    const rows = await deadLetterRows(env.DB);
    expect(rows).toMatchObject([
      {
        id: "aigate-verdicts:m1",
        queue: "aigate-verdicts",
        message_id: "m1",
        error: "retries exhausted: 11 deliveries on aigate-verdicts failed",
        attempts: 11,
        replayed_at: null,
        replay_count: 0,
      },
      { id: "aigate-verdicts:m2", queue: "aigate-verdicts", message_id: "m2" },
    ]);
    expect(JSON.parse(rows[0]?.body ?? "")).toEqual(verdict);
    expect(JSON.parse(rows[1]?.body ?? "")).toBe("not a verdict");
    expect(rows[0]?.first_failed_at).toBeGreaterThanOrEqual(before);
    expect(rows[0]?.last_failed_at).toBe(rows[0]?.first_failed_at);
  });

  it("parks aigate-telemetry-dlq messages under aigate-telemetry", async () => {
    const events = { v: 1, kind: "judge", session_ids: ["s9"], due_at: 5 };
    const result = await consume(dlqBatch("aigate-telemetry-dlq", [{ id: "t1", body: events }]));
    expect(result.explicitAcks).toEqual(["t1"]);
    expect(await deadLetterRows(env.DB)).toMatchObject([
      { id: "aigate-telemetry:t1", queue: "aigate-telemetry", attempts: 9, body: JSON.stringify(events) },
    ]);
  });

  it("parks a redelivered batch only once, keeping the first row", async () => {
    await consume(dlqBatch("aigate-verdicts-dlq", [{ id: "m1", body: verdict }]));
    const first = await deadLetterRows(env.DB);
    await env.DB.prepare("UPDATE dead_letters SET replayed_at = 5, replay_count = 1").run();
    const again = await consume(dlqBatch("aigate-verdicts-dlq", [{ id: "m1", body: verdict, attempts: 2 }]));
    expect(again.explicitAcks).toEqual(["m1"]);
    const rows = await deadLetterRows(env.DB);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toEqual({ ...first[0], replayed_at: 5, replay_count: 1 });
  });

  it("keeps the row a consumer parked itself, with its reason, when the same message reaches the DLQ", async () => {
    await env.DB.prepare(
      `INSERT INTO dead_letters (id, queue, message_id, body, error, attempts, first_failed_at, last_failed_at)
       VALUES ('aigate-verdicts:m7', 'aigate-verdicts', 'm7', '{}', 'Stripe rejected the meter post', 2, 10, 10)`,
    ).run();
    await consume(dlqBatch("aigate-verdicts-dlq", [{ id: "m7", body: verdict }]));
    expect(await deadLetterRows(env.DB)).toMatchObject([
      { id: "aigate-verdicts:m7", error: "Stripe rejected the meter post", attempts: 2, body: "{}" },
    ]);
  });

  it("parks a large batch in several statements (100 messages of 30 kB)", async () => {
    const pad = "x".repeat(30_000);
    const messages = Array.from({ length: 100 }, (_, i) => ({ id: `big${i}`, body: { ...verdict, pad } }));
    const result = await consume(dlqBatch("aigate-verdicts-dlq", messages));
    expect(result.explicitAcks).toHaveLength(100);
    const { n } = (await env.DB.prepare("SELECT count(*) AS n FROM dead_letters").first<{ n: number }>()) ?? {
      n: 0,
    };
    expect(n).toBe(100);
  });

  it("acks nothing and retries every message when D1 fails", async () => {
    const batch = dlqBatch("aigate-verdicts-dlq", [
      { id: "m1", body: verdict, attempts: 1 },
      { id: "m2", body: verdict, attempts: 4 },
    ]);
    const result = await consume(batch, { ...env, DB: failingBatchDb(env.DB) });
    expect(result.explicitAcks).toEqual([]);
    expect(result.ackAll).toBe(false);
    expect(result.retryMessages.map((m: { msgId: string }) => m.msgId).sort()).toEqual(["m1", "m2"]);
    expect(await deadLetterRows(env.DB)).toEqual([]);
  });
});
