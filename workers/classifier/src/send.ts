/**
 * Sending to a queue in as few calls as its limits allow.
 */
import { chunkBySize, jsonBytes, QUEUE_LIMITS } from "@aigate/shared";

/** Per-message overhead counted against the batch size limit, besides the body. */
const MESSAGE_OVERHEAD_BYTES = 100;

export async function sendAll(queue: Queue, bodies: readonly unknown[], delaySeconds = 0): Promise<void> {
  const batches = chunkBySize(
    bodies,
    QUEUE_LIMITS.maxBatchMessages,
    QUEUE_LIMITS.maxBatchBytes,
    (b) => jsonBytes(b) + MESSAGE_OVERHEAD_BYTES,
  );
  for (const batch of batches) {
    await queue.sendBatch(batch.map((body) => ({ body, contentType: "json" as const, delaySeconds })));
  }
}
