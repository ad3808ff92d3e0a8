/**
 * The ingest worker's error codes, all in the contract's envelope (ApiError from @aigate/shared).
 * docs/api-gateway.md lists every code a gateway can see.
 */
import { ApiError } from "@aigate/shared";

export const invalidJson = (message: string) => new ApiError(400, "invalid_json", message);
export const invalidRequest = (message: string, details?: unknown[]) =>
  new ApiError(400, "invalid_request", message, details);
export const invalidEvent = (message: string, details: unknown[]) =>
  new ApiError(400, "invalid_event", message, details);
export const payloadTooLarge = (maxBytes: number) =>
  new ApiError(413, "payload_too_large", `request body exceeds ${maxBytes} bytes`);
export const incompleteBody = () =>
  new ApiError(400, "incomplete_body", "the connection ended before the whole request body arrived");
export const invalidContentLength = () =>
  new ApiError(400, "invalid_request", "Content-Length must be a non-negative integer");
export const tooManyEvents = (max: number, got: number) =>
  new ApiError(413, "too_many_events", `at most ${max} events per request, got ${got}`);
export const unsupportedMediaType = (message: string) => new ApiError(415, "unsupported_media_type", message);
export const methodNotAllowed = (allow: string) =>
  new ApiError(405, "method_not_allowed", `use ${allow} on this path`, undefined, { allow });
export const sessionOwnerMismatch = () =>
  new ApiError(409, "session_owner_mismatch", "this session id belongs to another user");
export const queueUnavailable = () =>
  new ApiError(
    503,
    "queue_unavailable",
    "events could not be enqueued; retry the same request later",
    undefined,
    {
      "retry-after": "1",
    },
  );
