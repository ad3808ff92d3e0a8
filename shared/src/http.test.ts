import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { afterEach, describe, expect, it, vi } from "vitest";
import { z } from "zod";
import { ApiError, parseInput } from "./errors";
import { errorHandling, type RequestVariables, requestContext } from "./http";

type TestEnv = { Variables: RequestVariables };

class LibraryError extends Error {}

function app(opts: Partial<Parameters<typeof errorHandling>[0]> = {}) {
  const a = new Hono<TestEnv>();
  const errors = errorHandling<TestEnv>({ worker: "test", ...opts });
  a.use("*", requestContext("test"));
  a.get("/conflict", () => {
    throw new ApiError(409, "already_done", "done already", undefined, { "retry-after": "5" });
  });
  a.get("/hono", () => {
    throw new HTTPException(400, { message: "Malformed JSON in request body" });
  });
  a.get("/library", () => {
    throw new LibraryError("the provider is down");
  });
  a.get("/bug", () => {
    throw new Error("secret detail");
  });
  a.get("/query", (c) => c.json(parseInput(z.object({ n: z.string().regex(/^\d+$/) }), c.req.query())));
  a.get("/event", (c) =>
    c.json(parseInput(z.object({ id: z.string() }), c.req.query(), "invalid_event", "not an event")),
  );
  a.notFound(errors.notFound);
  a.onError(errors.onError);
  return a;
}

function logLines(spy: { mock: { calls: unknown[][] } }): Record<string, unknown>[] {
  return spy.mock.calls.map((call) => JSON.parse(String(call[0])));
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("the shared error handler", () => {
  it("answers a contract error in the envelope with its own headers", async () => {
    const res = await app().request("/conflict");
    expect(res.status).toBe(409);
    expect(res.headers.get("retry-after")).toBe("5");
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await res.json()).toEqual({ error: { code: "already_done", message: "done already" } });
  });

  it("turns a zod failure at a route's boundary into a 400 under the route's code, with details", async () => {
    const res = await app().request("/query?n=x");
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: {
        code: "invalid_request",
        message: "the request is not valid",
        details: [{ path: "n", message: expect.any(String) }],
      },
    });
    const event = await app().request("/event");
    expect(await event.json()).toMatchObject({ error: { code: "invalid_event", message: "not an event" } });
  });

  it("answers Hono's own 4xx refusals as invalid_request", async () => {
    const res = await app().request("/hono");
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: { code: "invalid_request", message: "Malformed JSON in request body" },
    });
  });

  it("answers anything unexpected with a bare 500, logged with its stack under the worker's message", async () => {
    const spy = vi.spyOn(console, "error").mockImplementation(() => {});
    const res = await app({ failureMessage: "webhook failed" }).request("/bug", {
      headers: { "cf-ray": "ray-1" },
    });
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(JSON.parse(text)).toEqual({ error: { code: "internal_error", message: "internal error" } });
    expect(text).not.toContain("secret detail");
    expect(logLines(spy)).toEqual([
      expect.objectContaining({
        level: "error",
        worker: "test",
        msg: "webhook failed",
        request_id: "ray-1",
        error: "secret detail",
        stack: expect.stringContaining("secret detail"),
      }),
    ]);
  });

  it("lets a worker map a library's error to a contract error", async () => {
    const mapped = app({
      mapError: (err) =>
        err instanceof LibraryError ? new ApiError(502, "provider_error", "provider unreachable") : undefined,
    });
    const res = await mapped.request("/library");
    expect(res.status).toBe(502);
    expect(await res.json()).toEqual({ error: { code: "provider_error", message: "provider unreachable" } });
  });

  it("names the missing route in a 404 and logs contract errors only when asked to", async () => {
    const info = vi.spyOn(console, "log").mockImplementation(() => {});
    const quiet = await app().request("/nowhere");
    expect(quiet.status).toBe(404);
    expect(await quiet.json()).toEqual({
      error: { code: "not_found", message: "no route for GET /nowhere" },
    });
    expect(info).not.toHaveBeenCalled();

    await app({ logContractErrors: true }).request("/nowhere");
    expect(logLines(info)).toEqual([
      expect.objectContaining({ level: "info", msg: "request rejected", code: "not_found", status: 404 }),
    ]);
  });
});

describe("the request context", () => {
  it("echoes the ray id as X-Request-Id, or a fresh UUID without one, on answers and errors alike", async () => {
    vi.spyOn(console, "error").mockImplementation(() => {});
    const a = app();
    expect(
      (await a.request("/conflict", { headers: { "cf-ray": "ray-2" } })).headers.get("x-request-id"),
    ).toBe("ray-2");
    expect((await a.request("/bug")).headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect((await a.request("/nowhere")).headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });
});
