import { describe, expect, it } from "vitest";
import { FAILURE_REASONS, judge, judgeV1, RULE_VERSION, RULES_V1, type SessionFacts } from "./rules";

const good: SessionFacts = {
  connected: true,
  connectLatencyMs: 800,
  turnFailed: false,
  upstreamError: false,
  audioMs: 60_000,
};

describe("judgeV1", () => {
  it("bills a connected, fast, clean session with enough audio as success under rule version 1", () => {
    expect(judgeV1(good)).toEqual({ billable: true, reason: "success", ruleVersion: 1 });
    expect(RULE_VERSION).toBe(1);
    expect(judge).toBe(judgeV1);
  });

  it("keeps the contract's thresholds", () => {
    expect(RULES_V1).toEqual({ maxConnectLatencyMs: 2000, minAudioMs: 5000 });
  });

  it("bills 5000 ms of audio and refuses 4999 ms as too_short", () => {
    expect(judgeV1({ ...good, audioMs: 5000 })).toMatchObject({ billable: true, reason: "success" });
    expect(judgeV1({ ...good, audioMs: 4999 })).toMatchObject({ billable: false, reason: "too_short" });
    expect(judgeV1({ ...good, audioMs: 0 })).toMatchObject({ billable: false, reason: "too_short" });
  });

  it("bills a 2000 ms connect latency and refuses 2001 ms as slow_connect", () => {
    expect(judgeV1({ ...good, connectLatencyMs: 2000 })).toMatchObject({ billable: true, reason: "success" });
    expect(judgeV1({ ...good, connectLatencyMs: 2001 })).toMatchObject({
      billable: false,
      reason: "slow_connect",
    });
    expect(judgeV1({ ...good, connectLatencyMs: 0 })).toMatchObject({ billable: true, reason: "success" });
  });

  it("treats a connected session without a known latency as slow_connect", () => {
    expect(judgeV1({ ...good, connectLatencyMs: null })).toMatchObject({
      billable: false,
      reason: "slow_connect",
    });
  });

  it("refuses a session that never connected as not_connected, whatever its audio", () => {
    expect(judgeV1({ ...good, connected: false, connectLatencyMs: null })).toMatchObject({
      billable: false,
      reason: "not_connected",
    });
  });

  it("refuses TURN failures and upstream errors even with perfect facts otherwise", () => {
    expect(judgeV1({ ...good, turnFailed: true }).reason).toBe("turn_failed");
    expect(judgeV1({ ...good, upstreamError: true }).reason).toBe("upstream_error");
  });

  // Every combination of the five failure conditions: the reason is the first in contract order.
  const conditions = {
    turn_failed: (f: SessionFacts): SessionFacts => ({ ...f, turnFailed: true }),
    upstream_error: (f: SessionFacts): SessionFacts => ({ ...f, upstreamError: true }),
    not_connected: (f: SessionFacts): SessionFacts => ({ ...f, connected: false }),
    slow_connect: (f: SessionFacts): SessionFacts => ({ ...f, connectLatencyMs: 2001 }),
    too_short: (f: SessionFacts): SessionFacts => ({ ...f, audioMs: 4999 }),
  } as const;
  const order = ["turn_failed", "upstream_error", "not_connected", "slow_connect", "too_short"] as const;

  it("lists the failure reasons in the contract's precedence order", () => {
    expect(FAILURE_REASONS).toEqual([...order]);
  });

  for (let mask = 1; mask < 1 << order.length; mask += 1) {
    const failing = order.filter((_, i) => mask & (1 << i));
    const expected = failing[0];
    it(`reports ${expected} first when ${failing.join(" + ")} fail`, () => {
      const facts = failing.reduce((f, name) => conditions[name](f), good);
      expect(judgeV1(facts)).toEqual({ billable: false, reason: expected, ruleVersion: 1 });
    });
  }
});
