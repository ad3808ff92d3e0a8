import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { readConfig } from "./config";

const withVars = (vars: Partial<Env>): Env => ({ ...env, ...vars });

describe("readConfig", () => {
  it("follows the vars from one request to the next, also when they change back", () => {
    const a = withVars({ LEASE_TTL_SECONDS: "60", PAST_DUE_GRACE_DAYS: "3", SUCCESS_LOG_SAMPLE_RATE: "0.5" });
    const b = withVars({ LEASE_TTL_SECONDS: "90", PAST_DUE_GRACE_DAYS: "3", SUCCESS_LOG_SAMPLE_RATE: "0.5" });
    const c = withVars({ LEASE_TTL_SECONDS: "90", PAST_DUE_GRACE_DAYS: "3", SUCCESS_LOG_SAMPLE_RATE: "2" });
    const expected = {
      a: { leaseTtlMs: 60_000, pastDueGraceDays: 3, successLogSampleRate: 0.5 },
      b: { leaseTtlMs: 90_000, pastDueGraceDays: 3, successLogSampleRate: 0.5 },
      c: { leaseTtlMs: 90_000, pastDueGraceDays: 3, successLogSampleRate: 1 },
    };
    for (const [name, vars] of [
      ["a", a],
      ["a", a],
      ["b", b],
      ["c", c],
      ["a", a],
    ] as const) {
      expect(readConfig(vars)).toEqual(expected[name]);
    }
  });

  it("refuses invalid settings on every request, not only the first", () => {
    const bad = withVars({ LEASE_TTL_SECONDS: "soon" });
    expect(() => readConfig(bad)).toThrow(/invalid worker settings/);
    expect(() => readConfig(bad)).toThrow(/invalid worker settings/);
    expect(readConfig(withVars({ LEASE_TTL_SECONDS: "30" })).leaseTtlMs).toBe(30_000);
    expect(() => readConfig(bad)).toThrow(/invalid worker settings/);
  });
});
