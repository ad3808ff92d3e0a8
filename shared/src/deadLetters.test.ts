import { describe, expect, it } from "vitest";
import { deadLetterOf } from "./deadLetters";

function message(body: unknown, attempts = 3): Message<unknown> {
  return {
    id: "m1",
    timestamp: new Date(0),
    body,
    attempts,
    ack: () => {},
    retry: () => {},
  };
}

describe("deadLetterOf", () => {
  it("keys the letter by queue and message id and keeps the body as JSON text", () => {
    expect(deadLetterOf(message({ v: 1, kind: "judge" }), { queue: "q", error: "bad", now: 42 })).toEqual({
      id: "q:m1",
      queue: "q",
      message_id: "m1",
      body: '{"v":1,"kind":"judge"}',
      error: "bad",
      attempts: 3,
      failed_at: 42,
    });
  });

  it("takes the attempts it is given over the message's own count", () => {
    expect(deadLetterOf(message(null, 1), { queue: "q", error: "e", now: 0, attempts: 9 })).toMatchObject({
      attempts: 9,
      body: "null",
    });
  });

  it("stores a body that is not JSON as a JSON string of its text", () => {
    expect(deadLetterOf(message(10n), { queue: "q", error: "e", now: 0 }).body).toBe('"10"');
    expect(deadLetterOf(message(undefined), { queue: "q", error: "e", now: 0 }).body).toBe("null");
  });
});
