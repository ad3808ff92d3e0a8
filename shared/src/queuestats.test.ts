import { env } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import { instrumentFetch, instrumentQueue, instrumentScheduled } from "./instrument";
import { countingQueue, isQueueBinding, queueLogFields, withQueueStats } from "./queuestats";

/** The shared test config's queue producer (wrangler.test.jsonc). */
const realQueue = (env as unknown as { TEST_QUEUE: Queue<unknown> }).TEST_QUEUE;

/** A queue that records what it was given, and can be told to fail. */
function fakeQueue() {
  const sent: unknown[] = [];
  let failing = false;
  const queue = {
    send: async (body: unknown) => {
      if (failing) throw new Error("queue unavailable");
      sent.push(body);
      return { metadata: { metrics: { backlogCount: 0, backlogBytes: 0 } } };
    },
    sendBatch: async (messages: Iterable<MessageSendRequest<unknown>>) => {
      if (failing) throw new Error("queue unavailable");
      for (const m of messages) sent.push(m.body);
      return { metadata: { metrics: { backlogCount: 0, backlogBytes: 0 } } };
    },
    metrics: async () => ({ backlogCount: sent.length, backlogBytes: 0 }),
  } as unknown as Queue<unknown>;
  return { queue, sent, fail: () => (failing = true) };
}

/** The JSON lines a handler logged with `msg`. */
function logged(spy: { mock: { calls: unknown[][] } }, msg: string): Record<string, unknown>[] {
  return spy.mock.calls
    .map((c) => JSON.parse(String(c[0])) as Record<string, unknown>)
    .filter((l) => l.msg === msg);
}

afterEach(() => vi.restoreAllMocks());

describe("countingQueue", () => {
  it("counts one message per send and one per message of a sendBatch, once sent", async () => {
    const fake = fakeQueue();
    const { queue, stats } = countingQueue(fake.queue);
    await queue.send({ n: 1 });
    await queue.sendBatch([{ body: { n: 2 } }, { body: { n: 3 } }, { body: { n: 4 } }]);
    // an iterable that is not an array is counted and sent whole
    await queue.sendBatch(new Set([{ body: { n: 5 } }, { body: { n: 6 } }]));
    expect(stats.messagesSent).toBe(6);
    expect(fake.sent).toEqual([1, 2, 3, 4, 5, 6].map((n) => ({ n })));
    expect(await queue.metrics()).toEqual({ backlogCount: 6, backlogBytes: 0 });
    expect(queueLogFields(stats)).toEqual({ queue_messages_sent: 6 });

    fake.fail();
    await expect(queue.send({ n: 7 })).rejects.toThrow("queue unavailable");
    await expect(queue.sendBatch([{ body: { n: 8 } }])).rejects.toThrow("queue unavailable");
    expect(stats.messagesSent).toBe(6);
  });

  it("counts what a real queue producer binding sends", async () => {
    const { queue, stats } = countingQueue(realQueue);
    await queue.send({ kind: "one" }, { contentType: "json" });
    await queue.sendBatch([
      { body: { kind: "two" }, contentType: "json" },
      { body: { kind: "three" }, contentType: "json", delaySeconds: 5 },
    ]);
    expect(stats.messagesSent).toBe(3);
  });
});

describe("withQueueStats", () => {
  it("wraps every queue producer of the env into one count, and nothing else", async () => {
    const a = fakeQueue();
    const b = fakeQueue();
    const service = { fetch: async () => new Response(), send: async () => {}, sendBatch: async () => {} };
    const source = { DB: env.DB, A: a.queue, B: b.queue, REAL: realQueue, SERVICE: service, NAME: "x" };
    const { env: counted, stats } = withQueueStats(source);
    expect(counted.DB).toBe(env.DB);
    expect(counted.SERVICE).toBe(service);
    expect(counted.NAME).toBe("x");
    expect(isQueueBinding(counted.A)).toBe(true);
    expect(isQueueBinding(service)).toBe(false);
    await counted.A.send(1);
    await counted.B.sendBatch([{ body: 2 }, { body: 3 }]);
    await counted.REAL.send({ kind: "four" });
    await counted.SERVICE.send();
    expect(stats.messagesSent).toBe(4);
    expect(a.sent).toEqual([1]);
    expect(b.sent).toEqual([2, 3]);
    // the env given is left as it was
    expect(source.A).toBe(a.queue);
  });
});

describe("instrumented handlers log the queue messages they sent", () => {
  const batch = { queue: "aigate-telemetry", messages: [] } as unknown as MessageBatch<unknown>;

  it("batch done and cron done carry queue_messages_sent, zero included", async () => {
    const spy = vi.spyOn(console, "log").mockImplementation(() => {});
    const fake = fakeQueue();
    const handlerEnv = { DB: env.DB, OUT: fake.queue, REAL: realQueue };
    const queue = instrumentQueue("classifier", async (_b, e: typeof handlerEnv) => {
      await e.OUT.sendBatch([{ body: 1 }, { body: 2 }]);
      await e.REAL.send({ kind: "reminder" });
    });
    await queue(batch, handlerEnv);
    const scheduled = instrumentScheduled("api", async () => {});
    await scheduled({ cron: "* * * * *", scheduledTime: 0, noRetry: () => {} }, handlerEnv);
    expect(logged(spy, "batch done").map((l) => l.queue_messages_sent)).toEqual([3]);
    expect(logged(spy, "cron done").map((l) => l.queue_messages_sent)).toEqual([0]);
  });

  it("request done carries queue_messages_sent only when the request sent messages", async () => {
    const spy = vi.spyOn(console, "log").mockImplementation(() => {});
    const fake = fakeQueue();
    const handlerEnv = { DB: env.DB, OUT: fake.queue };
    const fetch = instrumentFetch("api", async (request, e: typeof handlerEnv) => {
      if (new URL(request.url).pathname === "/replay") await e.OUT.send({ replayed: true });
      return new Response(null, { status: 204 });
    });
    const ctx = {} as ExecutionContext;
    await fetch(new Request("https://api.test/replay"), handlerEnv, ctx);
    await fetch(new Request("https://api.test/read"), handlerEnv, ctx);
    const lines = logged(spy, "request done");
    expect(lines.map((l) => [l.path, l.queue_messages_sent])).toEqual([
      ["/replay", 1],
      ["/read", undefined],
    ]);
    expect(fake.sent).toEqual([{ replayed: true }]);
  });
});
