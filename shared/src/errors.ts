/**
 * The contract's error envelope: {"error":{"code","message","details"?}}, and the one way a zod
 * error is described (as the envelope's details, or as one line for logs and dead letters).
 */
import type { z } from "zod";

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown[] };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown[],
    /** Headers the answer carries (e.g. `Allow` on a 405, `Retry-After` on a 503). */
    readonly headers?: Record<string, string>,
  ) {
    super(message);
    this.name = "ApiError";
  }

  body(): ErrorBody {
    const error: ErrorBody["error"] = { code: this.code, message: this.message };
    if (this.details !== undefined) error.details = this.details;
    return { error };
  }
}

export const unauthorized = (message = "missing or invalid credentials") =>
  new ApiError(401, "unauthorized", message);
export const forbidden = (message = "credentials lack the required scope") =>
  new ApiError(403, "forbidden", message);
export const notFound = (message = "not found") => new ApiError(404, "not_found", message);
export const badRequest = (code: string, message: string, details?: unknown[]) =>
  new ApiError(400, code, message, details);

export function errorResponse(err: ApiError): Response {
  const h = new Headers(err.headers);
  h.set("content-type", "application/json; charset=utf-8");
  if (err.status === 401) h.set("www-authenticate", 'Bearer realm="aigate"');
  return new Response(JSON.stringify(err.body()), { status: err.status, headers: h });
}

export function internalErrorResponse(): Response {
  return errorResponse(new ApiError(500, "internal_error", "internal error"));
}

export interface IssueDetail {
  /** Dotted path of the offending field ("" for the value itself). */
  path: string;
  message: string;
}

/** A zod error's issues as the envelope's `details`; `prefix` places them inside a larger value. */
export function issueDetails(error: z.ZodError, prefix: readonly PropertyKey[] = []): IssueDetail[] {
  return error.issues.map((i) => ({
    path: [...prefix, ...i.path].map(String).join("."),
    message: i.message,
  }));
}

/** The same issues as one line, for logs and dead-letter reasons: `a.b: message; (body): message`. */
export function describeIssues(error: z.ZodError): string {
  return issueDetails(error)
    .map((d) => `${d.path || "(body)"}: ${d.message}`)
    .join("; ");
}

/**
 * Parses untrusted input at an HTTP boundary. A failure is a 400 in the envelope, under the
 * route's code and message, with the issues as details.
 */
export function parseInput<S extends z.ZodType>(
  schema: S,
  input: unknown,
  code = "invalid_request",
  message = "the request is not valid",
): z.output<S> {
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw badRequest(code, message, issueDetails(parsed.error));
  return parsed.data;
}
