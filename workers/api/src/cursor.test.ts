import { ApiError } from "@aigate/shared";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeCursor, encodeCursor } from "./cursor";

describe("cursor", () => {
  it("round-trips the position, including ids with dots and non-ASCII characters", () => {
    for (const c of [
      { createdAt: 1_780_000_000_123, id: "sess_1" },
      { createdAt: 0, id: "a.b.c" },
      { createdAt: 42, id: "séance-🎙" },
    ]) {
      const raw = encodeCursor(c);
      expect(raw).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(decodeCursor(raw)).toEqual(c);
    }
  });

  it("round-trips any position (property)", () => {
    fc.assert(
      fc.property(
        fc.nat({ max: Number.MAX_SAFE_INTEGER }),
        fc.string({ minLength: 1, maxLength: 200, unit: "grapheme" }),
        (createdAt, id) => {
          expect(decodeCursor(encodeCursor({ createdAt, id }))).toEqual({ createdAt, id });
        },
      ),
    );
  });

  it("rejects cursors it did not make with 400 invalid_cursor", () => {
    for (const raw of [
      "!!",
      "bm90LWEtY3Vyc29y",
      encodeCursor({ createdAt: 1, id: "x" }).slice(0, 2),
      "x".repeat(601),
    ]) {
      const err = (() => {
        try {
          decodeCursor(raw);
          return null;
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(ApiError);
      expect(err).toMatchObject({ status: 400, code: "invalid_cursor" });
    }
  });
});
