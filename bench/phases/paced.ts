/**
 * Lag and cost under a steady load: `sessions_per_customer_per_minute` sessions per paying
 * customer for `paced_seconds`. Lag from `ended` to the verdict and from the verdict to the Stripe
 * meter; cost per session from the workers' own counts in their log lines and the Stripe calls
 * the emulator saw; D1 busy time per session (the `d1_duration_ms` of every invocation of the
 * window) and the bytes per session of each table and index in the local D1 file (dbstat), the
 * two measured inputs of docs/scale.md. Leaves the window's log lines for later phases
 * (`artifacts.paced`).
 */
import { type Cost, cost } from "../lib/cost";
import { meterEventCalls, pacedSessionsPerUser } from "../lib/customers";
import { feedPaced, seconds } from "../lib/feed";
import {
  acceptedRequests,
  d1BusyPerSession,
  type InvocationLoad,
  isDone,
  loadByInvocation,
  logLines,
  logSize,
  queueMessagesBeyondIngest,
  queueMessagesPerEvent,
  sum,
} from "../lib/logs";
import type { Phase } from "../lib/phase";
import { fmt } from "../lib/report";
import { percentile } from "../lib/stats";
import { type D1Storage, d1Storage, isOfSessions } from "../lib/storage";
import { EVENTS_PER_SESSION, workload } from "../workload";

export interface PacedResult {
  /** Invocations, D1 rows and D1 time per kind of invocation (`<worker> <done line>`). */
  d1_by_worker: Record<string, InvocationLoad>;
  /**
   * Milliseconds D1 spent per session of the window, in all and per worker. One D1 runs one
   * statement at a time: 1000 / total is the sessions per second one database can carry.
   */
  d1_busy_ms_per_session: { total: number; by_worker: Record<string, number> };
  /** The local D1 file after the window: bytes per session of each table and index. */
  storage: D1Storage;
  sessions: number;
  billed: number;
  feed_seconds: number;
  seconds_after_feed_to_meter_total: number;
  ended_to_verdict_ms: { p50: number | null; p99: number | null };
  verdict_to_stripe_ms: { p50: number | null; p99: number | null; samples: number };
  /**
   * Queue messages sent in the window: ingest's, counted where they arrive (the classifier's
   * `batch done` lines on aigate-telemetry, whose only other producer is an operator's replay;
   * ingest logs 1 % of its requests, so its own `queue_messages` are a sample, kept as
   * `ingest_sampled`) and, per worker, the others' (`queue_messages_sent` of their done lines);
   * and, as a check, every message the consumers' batches received (retries included).
   */
  queue_messages: {
    ingest: number;
    ingest_sampled: { lines: number; messages: number };
    beyond_ingest_by_worker: Record<string, number>;
    delivered_to_consumers: number;
  };
  cost: Cost;
}

/** The scale-and-cost targets, per session of the paced load. */
const D1_WRITES_TARGET = { op: "<=", bound: 3 } as const;
const D1_READS_TARGET = { op: "<=", bound: 20 } as const;
const QUEUE_OPERATIONS_BEYOND_INGEST_TARGET = { op: "<=", bound: 0.1 } as const;
const USD_PER_MILLION_TARGET = { op: "<=", bound: 4.5 } as const;

interface BilledRow {
  session_id: string;
  user_id: string;
  settle_due_at: number;
  verdict_at: number;
  recorded_at: number;
}

/** A per-session figure of the window split by worker, e.g. "classifier 2.00, biller 1.00". */
function perWorker(r: PacedResult, field: "d1_rows_read" | "d1_rows_written"): string {
  const byWorker: Record<string, number> = {};
  for (const [key, load] of Object.entries(r.d1_by_worker)) {
    const worker = key.split(" ")[0] ?? key;
    byWorker[worker] = (byWorker[worker] ?? 0) + load[field];
  }
  return Object.entries(byWorker)
    .filter(([, n]) => n > 0)
    .map(([w, n]) => `${w} ${fmt(n / r.sessions)}`)
    .join(", ");
}

function usdParts(c: Cost): string {
  const u = c.usd_per_million_sessions;
  return `Workers ${fmt(u.workers)}, Queues ${fmt(u.queues)}, D1 ${fmt(u.d1)}`;
}

export const paced: Phase<"paced", PacedResult> = {
  key: "paced",
  uses: ["stack", "customers"],
  async run(ctx) {
    const stack = await ctx.use("stack");
    const customers = await ctx.use("customers");
    const { emu, meterOf } = customers;
    const { paced_seconds, sessions_per_customer_per_minute, settle_seconds } = ctx.settings;
    await emu.resetCalls();
    const from = logSize(stack.logFile);
    const sessions = workload(
      customers.users,
      pacedSessionsPerUser(ctx.settings),
      "paced",
      Date.now() + 1000,
    );
    // billable sessions each customer had on the meter before this phase
    const before = new Map(customers.billed);
    customers.expect(sessions);
    ctx.log(
      `paced: ${sessions.length} sessions over ${paced_seconds} s (${sessions_per_customer_per_minute}/customer/min)`,
    );
    const fed = await feedPaced(stack.url, sessions, paced_seconds);
    const meteredAt = await customers.untilOnMeter("paced on the meter");
    const lines = logLines(stack.logFile, from);
    const calls = await meterEventCalls(emu);
    const rows = await stack.query<BilledRow>(
      // a session's usage is recorded with its verdict (in the same transaction)
      `SELECT session_id, user_id, settle_due_at, verdict_at, verdict_at AS recorded_at FROM sessions
       WHERE session_id LIKE 'paced-%' AND billable = 1`,
    );
    const endedToVerdict = rows.map((r) => r.verdict_at - (r.settle_due_at - settle_seconds * 1000));
    // On the meter once a counted meter event of its customer, received after the session was
    // recorded, carries a total at least the session's rank among the customer's sessions.
    const verdictToStripe: number[] = [];
    const byUser = new Map<string, BilledRow[]>();
    for (const r of rows) byUser.set(r.user_id, [...(byUser.get(r.user_id) ?? []), r]);
    for (const [user, list] of byUser) {
      const events = (await emu.meterEvents(meterOf.get(user) ?? "", customers.customerOf.get(user))).filter(
        (e) => e.counted,
      );
      list.sort((a, b) => a.recorded_at - b.recorded_at);
      const offset = before.get(user) ?? 0;
      list.forEach((r, i) => {
        const posted = events.find((e) => e.value >= offset + i + 1 && e.received_at_ms >= r.recorded_at);
        if (posted) verdictToStripe.push(posted.received_at_ms - r.verdict_at);
      });
    }
    const billed = sessions.filter((s) => s.billable).length;
    const accepted = acceptedRequests(lines);
    ctx.artifacts.paced = { sessions: sessions.length, billed, lines, stateDir: stack.stateDir };
    const load = loadByInvocation(lines);
    const ingestMessages = sum(
      lines,
      "messages",
      (l) => l.msg === "batch done" && l.worker === "classifier" && l.queue === "aigate-telemetry",
    );
    const beyondIngest = queueMessagesBeyondIngest(lines);
    const beyondIngestTotal = Object.values(beyondIngest).reduce((a, b) => a + b, 0);
    return {
      d1_by_worker: load,
      d1_busy_ms_per_session: d1BusyPerSession(load, sessions.length),
      storage: d1Storage(stack.stateDir),
      sessions: sessions.length,
      billed,
      feed_seconds: seconds(fed.started, fed.finished),
      seconds_after_feed_to_meter_total: seconds(fed.finished, meteredAt),
      ended_to_verdict_ms: { p50: percentile(endedToVerdict, 50), p99: percentile(endedToVerdict, 99) },
      verdict_to_stripe_ms: {
        p50: percentile(verdictToStripe, 50),
        p99: percentile(verdictToStripe, 99),
        samples: verdictToStripe.length,
      },
      queue_messages: {
        ingest: ingestMessages,
        ingest_sampled: { lines: accepted.length, messages: sum(accepted, "queue_messages") },
        beyond_ingest_by_worker: beyondIngest,
        delivered_to_consumers: sum(lines, "messages", (l) => l.msg === "batch done"),
      },
      cost: cost({
        sessions: sessions.length,
        billed_sessions: billed,
        events: sessions.length * EVENTS_PER_SESSION,
        // every message sent, as each worker counted it at its queue bindings
        queue_messages: ingestMessages + beyondIngestTotal,
        queue_messages_beyond_ingest: beyondIngestTotal,
        queue_messages_per_event: queueMessagesPerEvent(accepted),
        d1_rows_read: sum(lines, "d1_rows_read", isDone),
        d1_rows_written: sum(lines, "d1_rows_written", isDone),
        stripe_calls: calls.length,
        worker_invocations: sum(lines, "*", isDone),
      }),
    };
  },
  rows(r, all, settings) {
    const naive = all.naive?.cost;
    return [
      {
        label: "paced: ended -> verdict p50 / p99 ms",
        value: `${fmt(r.ended_to_verdict_ms.p50)} / ${fmt(r.ended_to_verdict_ms.p99)}`,
        against: `settle ${settings.settle_seconds * 1000}`,
      },
      {
        label: "paced: verdict -> Stripe p50 / p99 ms",
        value: `${fmt(r.verdict_to_stripe_ms.p50)} / ${fmt(r.verdict_to_stripe_ms.p99)}`,
        against: `post interval ${settings.stripe_post_interval_seconds * 1000}`,
      },
      {
        label: "D1 rows written per session",
        value: fmt(r.cost.d1_rows_written_per_session),
        against: `naive ${fmt(naive?.d1_rows_written_per_session)}; ${perWorker(r, "d1_rows_written")}`,
        target: { ...D1_WRITES_TARGET, value: r.cost.d1_rows_written_per_session },
      },
      {
        label: "D1 rows read per session",
        value: fmt(r.cost.d1_rows_read_per_session),
        against: `naive ${fmt(naive?.d1_rows_read_per_session)}; ${perWorker(r, "d1_rows_read")}`,
        target: { ...D1_READS_TARGET, value: r.cost.d1_rows_read_per_session },
      },
      {
        label: "queue messages per session (all workers)",
        value: fmt(r.cost.queue_messages_per_session, 3),
        against: `${[
          `ingest ${fmt(r.queue_messages.ingest / r.sessions, 3)} (as received; its ${r.queue_messages.ingest_sampled.lines} sampled lines say ${fmt(r.queue_messages.ingest_sampled.messages / r.sessions, 3)})`,
          ...Object.entries(r.queue_messages.beyond_ingest_by_worker).map(
            ([w, n]) => `${w} ${fmt(n / r.sessions, 3)}`,
          ),
        ].join(", ")}; received by consumers ${fmt(r.queue_messages.delivered_to_consumers / r.sessions, 3)}`,
      },
      {
        label: "queue operations per session beyond ingest",
        value: fmt(r.cost.queue_operations_per_session_beyond_ingest, 3),
        against: `naive ${fmt(naive?.queue_operations_per_session_beyond_ingest, 3)}; 3 per message`,
        target: {
          ...QUEUE_OPERATIONS_BEYOND_INGEST_TARGET,
          value: r.cost.queue_operations_per_session_beyond_ingest,
        },
      },
      {
        label: "D1 busy ms per session (all workers)",
        value: fmt(r.d1_busy_ms_per_session.total),
        against: Object.entries(r.d1_busy_ms_per_session.by_worker)
          .map(([w, ms]) => `${w} ${fmt(ms)}`)
          .join(", "),
      },
      {
        label: "one D1's ceiling, sessions/s (1000 / busy ms)",
        value: fmt(r.d1_busy_ms_per_session.total > 0 ? 1000 / r.d1_busy_ms_per_session.total : null),
      },
      {
        label: "D1 bytes per session: sessions, its indexes and lists",
        value: fmt(r.storage.sessions_bytes_per_session),
        against: `${r.storage.objects
          .filter((o) => isOfSessions(o.table))
          .map((o) => `${o.name} ${fmt(o.bytes_per_session)}`)
          .join(", ")} (${r.storage.sessions} sessions in the file)`,
      },
      { label: "D1 bytes per session: whole file", value: fmt(r.storage.total_bytes_per_session) },
      {
        label: "Stripe calls per 1000 billed sessions",
        value: fmt(r.cost.stripe_calls_per_1000_billed),
        against: `naive ${fmt(naive?.stripe_calls_per_1000_billed)}`,
      },
      {
        label: "USD per 1M sessions (Workers+Queues+D1)",
        value: fmt(r.cost.usd_per_million_sessions.total),
        against: `naive ${fmt(naive?.usd_per_million_sessions.total)}; ${usdParts(r.cost)}`,
        target: { ...USD_PER_MILLION_TARGET, value: r.cost.usd_per_million_sessions.total },
      },
    ];
  },
};
