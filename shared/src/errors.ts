/**
 * The contract's error envelope: {"error":{"code","message","details"?}}.
 */

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown[] };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown[],
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

export function errorResponse(err: ApiError, headers?: HeadersInit): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/json; charset=utf-8");
  if (err.status === 401) h.set("www-authenticate", 'Bearer realm="aigate"');
  return new Response(JSON.stringify(err.body()), { status: err.status, headers: h });
}

export function internalErrorResponse(): Response {
  return errorResponse(new ApiError(500, "internal_error", "internal error"));
}
