/** Test helpers for the admin area's operations features (imported by tests only). */
import type { DeadLetterRow } from "../adminQueries";
import type { Producers } from "../deadLetters";

export function deadLetter(over: Partial<DeadLetterRow> & { id: string }): DeadLetterRow {
  return {
    queue: "aigate-verdicts",
    message_id: over.id.split(":").at(-1) ?? over.id,
    body: JSON.stringify({ v: 1, kind: "verdict", session_id: over.id }),
    error: "test failure",
    attempts: 3,
    first_failed_at: 1_000,
    last_failed_at: 1_000,
    replayed_at: null,
    replay_count: 0,
    ...over,
  };
}

export async function insertDeadLetterRows(db: D1Database, rows: DeadLetterRow[]): Promise<void> {
  await db
    .prepare(
      `INSERT INTO dead_letters (id, queue, message_id, body, error, attempts, first_failed_at, last_failed_at,
         replayed_at, replay_count)
       SELECT d.value ->> '$.id', d.value ->> '$.queue', d.value ->> '$.message_id', d.value ->> '$.body',
         d.value ->> '$.error', d.value ->> '$.attempts', d.value ->> '$.first_failed_at',
         d.value ->> '$.last_failed_at', d.value ->> '$.replayed_at', d.value ->> '$.replay_count'
       FROM json_each(?1) AS d`,
    )
    .bind(JSON.stringify(rows))
    .run();
}

export async function deadLetterRows(db: D1Database): Promise<DeadLetterRow[]> {
  const { results } = await db.prepare("SELECT * FROM dead_letters ORDER BY id").all<DeadLetterRow>();
  return results;
}

export interface SentBatch {
  queue: string;
  messages: { body: unknown; contentType?: string }[];
}

/**
 * Producers that record what is sent (the local queues of a worker test deliver to no consumer we
 * can observe; the end-to-end test covers the real queues). `failOn` makes a queue throw.
 */
export function recordingProducers(failOn: string | null = null): {
  producers: Producers;
  sent: SentBatch[];
} {
  const sent: SentBatch[] = [];
  const queue = (name: string): Pick<Queue, "sendBatch"> => ({
    async sendBatch(messages: Iterable<MessageSendRequest>) {
      if (name === failOn) throw new Error(`queue ${name} unavailable`);
      sent.push({
        queue: name,
        messages: [...messages].map((m) => ({ body: m.body, contentType: m.contentType })),
      });
      return { metadata: { metrics: { backlogCount: 0, backlogBytes: 0 } } };
    },
  });
  return {
    producers: {
      "aigate-telemetry": queue("aigate-telemetry"),
      "aigate-verdicts": queue("aigate-verdicts"),
      "aigate-alerts": queue("aigate-alerts"),
    },
    sent,
  };
}

/** A D1Database whose batch() fails, as when D1 is unavailable. */
export function failingBatchDb(db: D1Database): D1Database {
  return new Proxy(db, {
    get(target, prop, receiver) {
      if (prop === "batch") return async () => Promise.reject(new Error("D1_ERROR: database unavailable"));
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
