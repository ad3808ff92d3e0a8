import { describe, expect, it } from "vitest";
import { readConfig } from "./config";

describe("readConfig", () => {
  it("reads the settle window and stale period from vars, in milliseconds", () => {
    expect(readConfig({ VERDICT_SETTLE_SECONDS: "2", STALE_SESSION_MINUTES: "15" })).toEqual({
      settleMs: 2000,
      staleMs: 900_000,
    });
  });

  it("falls back to the contract defaults of 60 s and 15 min", () => {
    expect(readConfig({})).toEqual({ settleMs: 60_000, staleMs: 900_000 });
  });

  it("rejects a settle window beyond the longest queue delay and a non-integer stale period", () => {
    expect(() => readConfig({ VERDICT_SETTLE_SECONDS: "43201" })).toThrow(/invalid integer setting/);
    expect(() => readConfig({ STALE_SESSION_MINUTES: "1.5" })).toThrow(/invalid integer setting/);
  });
});
