/** Stripe-shaped API errors: `{"error":{"type","code","message","param","doc_url"}}`. */

export type StripeErrorType =
  | "api_error"
  | "card_error"
  | "idempotency_error"
  | "invalid_request_error"
  | "rate_limit_error";

export interface StripeErrorBody {
  type: StripeErrorType;
  message: string;
  code?: string;
  param?: string;
  doc_url?: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: StripeErrorType,
    message: string,
    readonly code?: string,
    readonly param?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): { error: StripeErrorBody } {
    const error: StripeErrorBody = { type: this.type, message: this.message };
    if (this.code) {
      error.code = this.code;
      error.doc_url = `https://stripe.com/docs/error-codes/${this.code.replaceAll("_", "-")}`;
    }
    if (this.param) error.param = this.param;
    return { error };
  }
}

export function invalidRequest(message: string, code?: string, param?: string): ApiError {
  return new ApiError(400, "invalid_request_error", message, code, param);
}

export function missingParam(param: string): ApiError {
  return invalidRequest(`Missing required param: ${param}.`, "parameter_missing", param);
}

/** A path id that does not exist (404), e.g. `No such customer: 'cus_x'`. */
export function notFound(kind: string, id: string, param = "id"): ApiError {
  return new ApiError(404, "invalid_request_error", `No such ${kind}: '${id}'`, "resource_missing", param);
}

/** A referenced id inside the parameters that does not exist (400). */
export function missingReference(kind: string, id: string, param: string): ApiError {
  return invalidRequest(`No such ${kind}: '${id}'`, "resource_missing", param);
}

export function authError(message: string): ApiError {
  return new ApiError(401, "invalid_request_error", message);
}

export function idempotencyMismatch(key: string): ApiError {
  return new ApiError(
    400,
    "idempotency_error",
    `Keys for idempotent requests can only be used with the same parameters they were first used with. ` +
      `Try using a key other than '${key}' if you meant to execute a different request.`,
  );
}

export function idempotencyInFlight(): ApiError {
  return new ApiError(
    409,
    "idempotency_error",
    "There is currently another in-progress request using this Stripe API Key and idempotency key. " +
      "Please try again later.",
  );
}

/** The error an injected fault or a rate limit answers with; 429/500/503 ask the SDK to retry. */
export function faultError(status: number): ApiError {
  const retry = { "Stripe-Should-Retry": "true" };
  if (status === 429) {
    return new ApiError(
      429,
      "rate_limit_error",
      "Request rate limit exceeded. You can learn more about rate limits here https://stripe.com/docs/rate-limits.",
      "rate_limit",
      undefined,
      retry,
    );
  }
  const message =
    status === 503
      ? "Stripe is temporarily unavailable (emulator fault injection)."
      : "An unknown error occurred (emulator fault injection).";
  return new ApiError(status, "api_error", message, undefined, undefined, retry);
}

export function errorResponse(err: ApiError, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(err.body(), null, 2), {
    status: err.status,
    headers: { "Content-Type": "application/json", ...err.headers, ...headers },
  });
}

export function jsonResponse(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body, null, 2), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}
