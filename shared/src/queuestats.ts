/**
 * Counting what a handler sends to Cloudflare Queues: wraps every queue producer binding of a
 * worker's env so each message sent is counted (`send`: one, `sendBatch`: one per message), once
 * the send has succeeded. Queues bills per message (a write, a read and a delete per 64 KB), so
 * workers log the count with each request, batch or cron run, and the benchmark reads it there.
 */

export interface QueueStats {
  messagesSent: number;
}

export function emptyQueueStats(): QueueStats {
  return { messagesSent: 0 };
}

/**
 * A queue producer binding: `send` and `sendBatch` functions. A service binding is left out
 * (its RPC stub answers every property with a function, `send` included, but it has `fetch`).
 */
export function isQueueBinding(value: unknown): value is Queue<unknown> {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.send === "function" && typeof v.sendBatch === "function" && typeof v.fetch !== "function";
}

/** A Queue that adds every message it sends to `stats`. */
export function countingQueue<B>(
  queue: Queue<B>,
  stats: QueueStats = emptyQueueStats(),
): { queue: Queue<B>; stats: QueueStats } {
  const wrapped = new Proxy(queue, {
    get(target, prop, receiver) {
      if (prop === "send") {
        return async (message: B, options?: QueueSendOptions) => {
          const result = await target.send(message, options);
          stats.messagesSent += 1;
          return result;
        };
      }
      if (prop === "sendBatch") {
        return async (messages: Iterable<MessageSendRequest<B>>, options?: QueueSendBatchOptions) => {
          const list = [...messages];
          const result = await target.sendBatch(list, options);
          stats.messagesSent += list.length;
          return result;
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { queue: wrapped, stats };
}

/** A copy of a worker's env whose queue producer bindings count what they send, and the count. */
export function withQueueStats<E extends object>(env: E): { env: E; stats: QueueStats } {
  const stats = emptyQueueStats();
  // the same own enumerable properties a spread copies
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(env)) {
    out[key] = isQueueBinding(value) ? countingQueue(value, stats).queue : value;
  }
  return { env: out as unknown as E, stats };
}

/** The log field every worker reports per batch or cron run (and per request when it sent any). */
export function queueLogFields(stats: QueueStats): { queue_messages_sent: number } {
  return { queue_messages_sent: stats.messagesSent };
}
