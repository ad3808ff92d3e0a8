/**
 * The plumbing every HTTP worker (ingest, api, webhooks) shares: a request id and logger per
 * request, and the one error handler that renders every failure in the contract's envelope.
 *
 * - A contract error (ApiError) is answered as it is, with its own headers.
 * - A Hono HTTPException below 500 (a malformed request Hono itself refused) is a 400-range
 *   `invalid_request`.
 * - A library error a worker answers deliberately is mapped by that worker (the api worker turns
 *   Stripe's errors into 502 `payment_provider_error`).
 * - Anything else is a 500 `internal_error`, logged with its stack and never leaked.
 */
import type { ErrorHandler, MiddlewareHandler, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import { ApiError, errorResponse, internalErrorResponse, notFound } from "./errors";
import { createLogger, errorFields, type Logger } from "./log";

/** What the request middleware puts on every request's context. */
export interface RequestVariables {
  /** The platform's ray id when there is one, else a fresh UUID; echoed as `X-Request-Id`. */
  requestId: string;
  /** The worker's logger with this request's `request_id`. */
  log: Logger;
}

type WithRequest = { Variables: RequestVariables };

/** Names the request, gives it a logger, and echoes the id on every answer (errors included). */
export function requestContext<E extends WithRequest>(worker: string): MiddlewareHandler<E> {
  const base = createLogger(worker);
  return async (c, next) => {
    const requestId = c.req.header("cf-ray") ?? crypto.randomUUID();
    c.set("requestId", requestId);
    c.set("log", base.child({ request_id: requestId }));
    await next();
    c.header("x-request-id", requestId);
  };
}

export interface ErrorHandling {
  /** The worker's name, for errors raised before the request has its logger. */
  worker: string;
  /** The line an unexpected error is logged under (default `request failed`). */
  failureMessage?: string;
  /** Also log each contract error: 4xx at info as `request rejected`, 5xx at error as `request failed`. */
  logContractErrors?: boolean;
  /** Turns a library's error into a contract error (logging it as it needs), or leaves it alone. */
  mapError?: (err: unknown, log: Logger) => ApiError | undefined;
}

/** The one error handler and the not-found handler, configured for one worker. */
export function errorHandling<E extends WithRequest>(
  opts: ErrorHandling,
): { onError: ErrorHandler<E>; notFound: NotFoundHandler<E> } {
  const fallback = createLogger(opts.worker);

  function render(err: unknown, log: Logger): Response {
    const known =
      err instanceof ApiError
        ? err
        : err instanceof HTTPException && err.status < 500
          ? new ApiError(err.status, "invalid_request", err.message || "bad request")
          : opts.mapError?.(err, log);
    if (!known) {
      log.error(opts.failureMessage ?? "request failed", errorFields(err));
      return internalErrorResponse();
    }
    if (opts.logContractErrors) {
      if (known.status >= 500) log.error("request failed", { code: known.code, status: known.status });
      else log.info("request rejected", { code: known.code, status: known.status });
    }
    return errorResponse(known);
  }

  return {
    onError: (err, c) => render(err, c.get("log") ?? fallback),
    notFound: (c) => render(notFound(`no route for ${c.req.method} ${c.req.path}`), c.get("log") ?? fallback),
  };
}
