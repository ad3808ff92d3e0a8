/**
 * One structured line per request, queue batch and cron run in every worker, with what it cost
 * in D1 (rows read and written) and in queue messages sent, so operators and the benchmark read
 * costs from the logs.
 */
import { type D1Stats, d1LogFields, withD1Stats } from "./d1stats";
import { createLogger } from "./log";
import { type QueueStats, queueLogFields, withQueueStats } from "./queuestats";

interface WithDb {
  DB: D1Database;
}

/** A copy of the env whose D1 counts rows and whose queue producers count messages. */
function counting<E extends WithDb>(env: E): { env: E; d1: D1Stats; queues: QueueStats } {
  const d1 = withD1Stats(env);
  const queues = withQueueStats(d1.env);
  return { env: queues.env, d1: d1.stats, queues: queues.stats };
}

const requestFields = new WeakMap<Request, Record<string, unknown>>();

/**
 * Adds fields to the one line logged for this request (instead of a line of its own: at
 * thousands of requests a second, log lines are a real cost).
 */
export function annotateRequest(request: Request, fields: Record<string, unknown>): void {
  requestFields.set(request, { ...requestFields.get(request), ...fields });
}

export interface FetchLogOptions<E> {
  /**
   * Share of successful (< 400) requests logged, 0..1 (default 1). Errors and rejections are
   * always logged. Workers with a hot path (ingest) sample: the platform's invocation logs
   * already record every request, and a line per request is a real cost at thousands a second.
   */
  successSampleRate?: (env: E) => number;
}

export function instrumentFetch<E extends WithDb>(
  worker: string,
  fetch: (request: Request, env: E, ctx: ExecutionContext) => Response | Promise<Response>,
  opts: FetchLogOptions<E> = {},
) {
  const log = createLogger(worker);
  return async (request: Request, env: E, ctx: ExecutionContext): Promise<Response> => {
    const started = Date.now();
    const counted = counting(env);
    const response = await fetch(request, counted.env, ctx);
    // read only for successes: a worker whose settings do not parse has already answered 500
    const rate = response.status < 400 ? (opts.successSampleRate?.(env) ?? 1) : 1;
    if (rate < 1 && Math.random() >= rate) return response;
    log.info("request done", {
      sample_rate: rate,
      request_id: response.headers.get("x-request-id"),
      method: request.method,
      path: new URL(request.url).pathname,
      status: response.status,
      duration_ms: Date.now() - started,
      ...requestFields.get(request),
      ...d1LogFields(counted.d1),
      // most requests send nothing; ingest also logs its own `queue_messages`
      ...(counted.queues.messagesSent > 0 ? queueLogFields(counted.queues) : {}),
    });
    return response;
  };
}

export function instrumentQueue<E extends WithDb, M>(
  worker: string,
  queue: (batch: MessageBatch<M>, env: E, ctx?: ExecutionContext) => Promise<unknown>,
) {
  const log = createLogger(worker);
  return async (batch: MessageBatch<M>, env: E, ctx?: ExecutionContext): Promise<void> => {
    const started = Date.now();
    const counted = counting(env);
    await queue(batch, counted.env, ctx);
    log.info("batch done", {
      queue: batch.queue,
      messages: batch.messages.length,
      duration_ms: Date.now() - started,
      ...d1LogFields(counted.d1),
      ...queueLogFields(counted.queues),
    });
  };
}

export function instrumentScheduled<E extends WithDb>(
  worker: string,
  scheduled: (controller: ScheduledController, env: E, ctx?: ExecutionContext) => Promise<unknown>,
) {
  const log = createLogger(worker);
  return async (controller: ScheduledController, env: E, ctx?: ExecutionContext): Promise<void> => {
    const started = Date.now();
    const counted = counting(env);
    await scheduled(controller, counted.env, ctx);
    log.info("cron done", {
      cron: controller.cron,
      duration_ms: Date.now() - started,
      ...d1LogFields(counted.d1),
      ...queueLogFields(counted.queues),
    });
  };
}
