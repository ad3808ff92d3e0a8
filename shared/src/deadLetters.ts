/**
 * Parking messages in `dead_letters` with their reason: consumers park poison messages (or the
 * offending part of one) themselves, and the api worker drains the dead-letter queues into the
 * same table. Ids are deterministic (`<queue>:<message id>[:...]`), so parking the same message
 * again keeps the first row.
 */

export interface DeadLetter {
  id: string;
  /** The queue the body belongs on (replays send it back there). */
  queue: string;
  message_id: string | null;
  /** The message body as JSON text. */
  body: string;
  error: string;
  attempts: number;
  failed_at: number;
}

/** The id of a parked message: `<queue>:<message id>`. */
export function deadLetterId(queue: string, messageId: string): string {
  return `${queue}:${messageId}`;
}

/** The body of a message as JSON text, whatever it was (a replay sends the parsed JSON back). */
export function storableBody(body: unknown): string {
  try {
    return JSON.stringify(body) ?? "null";
  } catch {
    return JSON.stringify(String(body));
  }
}

/** A consumed message as a dead letter of `queue` (the queue its body belongs on). */
export function deadLetterOf(
  message: Message<unknown>,
  parked: { queue: string; error: string; now: number; attempts?: number },
): DeadLetter {
  return {
    id: deadLetterId(parked.queue, message.id),
    queue: parked.queue,
    message_id: message.id,
    body: storableBody(message.body),
    error: parked.error,
    attempts: parked.attempts ?? message.attempts,
    failed_at: parked.now,
  };
}

/** Longest error text kept. */
export const MAX_DEAD_LETTER_ERROR = 2000;

/** Parks letters in one statement (one JSON parameter); already parked ids are left alone. */
export function insertDeadLetters(db: D1Database, letters: readonly DeadLetter[]): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO dead_letters (id, queue, message_id, body, error, attempts, first_failed_at, last_failed_at)
       SELECT d.value ->> '$.id', d.value ->> '$.queue', d.value ->> '$.message_id', d.value ->> '$.body',
         d.value ->> '$.error', d.value ->> '$.attempts', d.value ->> '$.failed_at', d.value ->> '$.failed_at'
       FROM json_each(?1) AS d WHERE true
       ON CONFLICT (id) DO NOTHING`,
    )
    .bind(JSON.stringify(letters.map((l) => ({ ...l, error: l.error.slice(0, MAX_DEAD_LETTER_ERROR) }))));
}
