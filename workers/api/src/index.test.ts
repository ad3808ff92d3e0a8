import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "./index";

describe("dead-letter queue consumer (placeholder until the dead-letter drain lands)", () => {
  it("retries every message and acks none, so nothing is lost", async () => {
    const batch = createMessageBatch("aigate-verdicts-dlq", [
      { id: "m1", timestamp: new Date(), attempts: 1, body: { v: 1 } },
      { id: "m2", timestamp: new Date(), attempts: 3, body: "poison" },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(batch);
    const result = await getQueueResult(batch, ctx);
    expect(result.explicitAcks).toEqual([]);
    expect(result.retryBatch).toMatchObject({ retry: true });
  });
});
