import { describe, expect, it } from "vitest";
import { backoff } from "./retry";

describe("backoff", () => {
  it("doubles from the base for each attempt and stops at the cap", () => {
    const b = { base: 5, max: 600, maxDoublings: 30 };
    expect([1, 2, 3, 4, 5, 6, 7, 8, 1000].map((n) => backoff(n, b))).toEqual([
      5, 10, 20, 40, 80, 160, 320, 600, 600,
    ]);
  });

  it("treats attempts below one, and fractions, as the first whole attempt", () => {
    const b = { base: 30, max: 43_200, maxDoublings: 15 };
    expect([0, -3, 1.9, 2.5].map((n) => backoff(n, b))).toEqual([30, 30, 30, 60]);
  });

  it("stops doubling after maxDoublings even below the cap", () => {
    expect(backoff(50, { base: 1, max: Number.MAX_SAFE_INTEGER, maxDoublings: 4 })).toBe(16);
  });
});
