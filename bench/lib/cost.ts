/**
 * Cost per session of a pipeline under the paced load, and what it implies per 1M sessions at
 * Cloudflare's list prices (CPU time and the plan's included amounts left out).
 */
import { PRICES } from "./settings";

/** Queues bills a message as 3 operations: its write, its read and its delete (up to 64 KB). */
export const QUEUE_OPERATIONS_PER_MESSAGE = 3;

export interface Cost {
  sessions: number;
  billed_sessions: number;
  events: number;
  /** Every queue message sent in the window (ingest's and the other workers'), per session. */
  queue_messages_per_session: number;
  queue_messages_per_event: number | null;
  /** Queue operations per session of the messages sent by workers other than ingest. */
  queue_operations_per_session_beyond_ingest: number;
  d1_rows_read_per_session: number;
  d1_rows_written_per_session: number;
  stripe_calls: number;
  stripe_calls_per_1000_billed: number;
  worker_invocations_per_session: number;
  usd_per_million_sessions: { workers: number; queues: number; d1: number; total: number };
}

/** What was counted over a run of `sessions` sessions. */
export interface Counted {
  sessions: number;
  billed_sessions: number;
  events: number;
  /** Every queue message sent: ingest's and the other workers'. */
  queue_messages: number;
  /** Of which sent by workers other than ingest (verdicts, settle reminders, usage, replays, alerts). */
  queue_messages_beyond_ingest: number;
  queue_messages_per_event: number | null;
  d1_rows_read: number;
  d1_rows_written: number;
  stripe_calls: number;
  worker_invocations: number;
}

export function cost(c: Counted): Cost {
  const perSession = (n: number) => n / c.sessions;
  const d1RowsRead = perSession(c.d1_rows_read);
  const d1RowsWritten = perSession(c.d1_rows_written);
  const invocations = perSession(c.worker_invocations);
  const workers = invocations * PRICES.workersRequestPerMillion;
  const queues =
    perSession(QUEUE_OPERATIONS_PER_MESSAGE * c.queue_messages) * PRICES.queuesOperationPerMillion;
  const d1 = d1RowsRead * PRICES.d1RowsReadPerMillion + d1RowsWritten * PRICES.d1RowsWrittenPerMillion;
  return {
    sessions: c.sessions,
    billed_sessions: c.billed_sessions,
    events: c.events,
    queue_messages_per_session: perSession(c.queue_messages),
    queue_messages_per_event: c.queue_messages_per_event,
    queue_operations_per_session_beyond_ingest: perSession(
      QUEUE_OPERATIONS_PER_MESSAGE * c.queue_messages_beyond_ingest,
    ),
    d1_rows_read_per_session: d1RowsRead,
    d1_rows_written_per_session: d1RowsWritten,
    stripe_calls: c.stripe_calls,
    stripe_calls_per_1000_billed: (c.stripe_calls / c.billed_sessions) * 1000,
    worker_invocations_per_session: invocations,
    usd_per_million_sessions: { workers, queues, d1, total: workers + queues + d1 },
  };
}
