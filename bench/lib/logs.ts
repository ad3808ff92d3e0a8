/**
 * The workers' structured log lines (one JSON object per line in wrangler's output) and the
 * counts read from them. A sampled line (`sample_rate` < 1) stands for 1 / sample_rate lines.
 */
import { readFileSync } from "node:fs";

export type LogLine = Record<string, unknown>;

/** Structured log lines written after byte `from` of a log file. */
export function logLines(file: string, from = 0): LogLine[] {
  const out: LogLine[] = [];
  for (const raw of readFileSync(file, "utf8").slice(from).split("\n")) {
    const start = raw.indexOf('{"level"');
    if (start < 0) continue;
    try {
      const parsed: unknown = JSON.parse(raw.slice(start));
      if (parsed && typeof parsed === "object") out.push(parsed as LogLine);
    } catch {
      // not a structured line
    }
  }
  return out;
}

/** The size of a log file in bytes: where the next lines will start. */
export function logSize(file: string): number {
  return readFileSync(file).length;
}

function weight(l: LogLine): number {
  return typeof l.sample_rate === "number" && l.sample_rate > 0 ? 1 / l.sample_rate : 1;
}

/** Sums a numeric field (`*`: counts the lines), each line weighted by its sampling. */
export function sum(lines: LogLine[], field: string, where: (l: LogLine) => boolean = () => true): number {
  let total = 0;
  for (const l of lines) {
    const v = field === "*" ? 1 : l[field];
    if (where(l) && typeof v === "number") total += v * weight(l);
  }
  return total;
}

/** The line each worker writes when an invocation (request, queue batch, cron run) is done. */
export const DONE = new Set(["request done", "batch done", "cron done"]);
export const isDone = (l: LogLine) => DONE.has(String(l.msg));

/** Ingest's `request done` lines. */
export const acceptedRequests = (lines: LogLine[]) =>
  lines.filter((l) => l.worker === "ingest" && l.msg === "request done");

/** Queue messages ingest sent per event it accepted, from its `request done` lines. */
export function queueMessagesPerEvent(accepted: LogLine[]): number {
  return sum(accepted, "queue_messages") / Math.max(1, sum(accepted, "events_accepted"));
}

export interface InvocationLoad {
  invocations: number;
  d1_rows_read: number;
  d1_rows_written: number;
  /** Milliseconds D1 spent running the statements (the sum of their `meta.duration`). */
  d1_duration_ms: number;
}

/** Invocations, D1 rows and D1 time per kind of invocation, keyed `<worker> <done line>`. */
export function loadByInvocation(lines: LogLine[]): Record<string, InvocationLoad> {
  const out: Record<string, InvocationLoad> = {};
  for (const l of lines) {
    if (!isDone(l)) continue;
    const key = `${String(l.worker)} ${String(l.msg)}`;
    const w = out[key] ?? { invocations: 0, d1_rows_read: 0, d1_rows_written: 0, d1_duration_ms: 0 };
    const n = weight(l);
    w.invocations += n;
    w.d1_rows_read += Number(l.d1_rows_read ?? 0) * n;
    w.d1_rows_written += Number(l.d1_rows_written ?? 0) * n;
    w.d1_duration_ms += Number(l.d1_duration_ms ?? 0) * n;
    out[key] = w;
  }
  return out;
}

/**
 * D1 busy time per session, per worker: the milliseconds D1 spent on each worker's statements
 * (every invocation in the window, crons included) divided by the sessions of the window.
 */
export function d1BusyPerSession(
  load: Record<string, InvocationLoad>,
  sessions: number,
): { total: number; by_worker: Record<string, number> } {
  const byWorker: Record<string, number> = {};
  for (const [key, w] of Object.entries(load)) {
    const worker = key.split(" ")[0] ?? key;
    byWorker[worker] = (byWorker[worker] ?? 0) + w.d1_duration_ms;
  }
  const per = (ms: number) => (sessions > 0 ? ms / sessions : 0);
  const total = Object.values(byWorker).reduce((a, b) => a + b, 0);
  return {
    total: per(total),
    by_worker: Object.fromEntries(Object.entries(byWorker).map(([k, v]) => [k, per(v)])),
  };
}

/**
 * Queue messages sent by the workers other than ingest (ingest logs its own as `queue_messages`
 * on its request lines), per worker: the `queue_messages_sent` of their done lines. A request
 * line leaves the field out when the request sent nothing; a batch or cron line without it was
 * not counted, which would understate the cost, so it is an error.
 */
export function queueMessagesBeyondIngest(lines: LogLine[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of lines) {
    if (!isDone(l) || l.worker === "ingest") continue;
    const worker = String(l.worker);
    if (typeof l.queue_messages_sent !== "number") {
      if (l.msg === "request done") continue;
      throw new Error(`${worker} "${String(l.msg)}" line without queue_messages_sent: ${JSON.stringify(l)}`);
    }
    out[worker] = (out[worker] ?? 0) + l.queue_messages_sent * weight(l);
  }
  return out;
}
