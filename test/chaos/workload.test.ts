/**
 * The seeded workload: reproducible from its seed, and its expected facts follow the contract.
 */
import { shardBucket } from "@aigate/shared/shardKey";
import { describe, expect, it } from "vitest";
import { describeMessage } from "./faultEntry";
import { mulberry32 } from "./random";
import {
  deliveryRounds,
  duplicateCount,
  expectedFacts,
  expectedReason,
  makeSession,
  makeWorkload,
  OUTCOMES,
  type WireEvent,
} from "./workload";

const START = Date.UTC(2026, 10, 20, 12, 0, 0);

describe("chaos workload", () => {
  it("is the same for the same seed and differs for another", () => {
    expect(makeWorkload(42, 50, START)).toEqual(makeWorkload(42, 50, START));
    expect(makeWorkload(43, 50, START).sessions.map((s) => s.outcome)).not.toEqual(
      makeWorkload(42, 50, START).sessions.map((s) => s.outcome),
    );
  });

  it("has users on every plan, every outcome, a poison session and duplicated events", () => {
    const w = makeWorkload(20261125, 300, START);
    expect(w.users.length).toBeGreaterThanOrEqual(22);
    expect(new Set(w.users.map((u) => u.plan))).toEqual(new Set(["free", "payg", "pro"]));
    expect(new Set(w.sessions.map((s) => s.outcome))).toEqual(new Set(OUTCOMES));
    expect(w.sessions.filter((s) => s.poison)).toHaveLength(1);
    expect(w.sessions.every((s) => s.copies.every((c) => c >= 1 && c <= 3))).toBe(true);
    expect(duplicateCount(w.sessions)).toBeGreaterThan(w.sessions.length);
    expect(w.hijacks.length).toBeGreaterThan(0);
    expect(
      w.hijacks.every((h) => h.event.data.user_id !== w.sessions.find((s) => s.id === h.sessionId)?.userId),
    ).toBe(true);
  });

  it("picks each hijack's thief on the victim's D1 shard", () => {
    const w = makeWorkload(20261125, 300, START, 4);
    expect(w.hijacks.length).toBeGreaterThan(0);
    for (const h of w.hijacks) {
      const owner = w.sessions.find((s) => s.id === h.sessionId)?.userId ?? "";
      expect(shardBucket(String(h.event.data.user_id)) % 4).toBe(shardBucket(owner) % 4);
    }
  });

  it("builds every session so that rule version 1 judges it as intended", () => {
    const rng = mulberry32(9);
    for (let i = 0; i < 600; i++) {
      const outcome = OUTCOMES[i % OUTCOMES.length] ?? "success";
      expect(makeSession(rng, `s${i}`, "u", outcome, START).expected.reason).toBe(outcome);
    }
  });

  it("merges facts as the contract says: minimum latency, maximum audio, flags only turn on", () => {
    const e = (type: string, ms: number, data: Record<string, string | number> = {}): WireEvent => ({
      specversion: "1.0",
      id: `${type}-${ms}`,
      source: "gw",
      type: `aigate.session.${type}`,
      subject: "s",
      time: new Date(START + ms).toISOString(),
      data: { user_id: "u", project_id: "p", ...data },
    });
    const facts = expectedFacts([
      e("ended", 9000, { audio_ms: 6000 }),
      e("connected", 2500, { connect_latency_ms: 2500 }),
      e("heartbeat", 4000, { audio_ms: 7000 }),
      e("created", 0),
      e("connected", 1800, { connect_latency_ms: 1800 }),
    ]);
    expect(facts).toMatchObject({
      connected: 1,
      connect_latency_ms: 1800,
      audio_ms: 7000,
      created_at: START,
      first_event_at: START,
      last_event_at: START + 9000,
      ended_at: START + 9000,
      billable: 1,
      reason: "success",
    });
  });

  it("names the first failing reason in the documented order", () => {
    const base = { connected: 1, connect_latency_ms: 100, turn_failed: 0, upstream_error: 0, audio_ms: 9000 };
    expect(expectedReason({ ...base, turn_failed: 1, upstream_error: 1, connected: 0 })).toBe("turn_failed");
    expect(expectedReason({ ...base, upstream_error: 1, connected: 0 })).toBe("upstream_error");
    expect(expectedReason({ ...base, connected: 0, connect_latency_ms: null, audio_ms: 0 })).toBe(
      "not_connected",
    );
    expect(expectedReason({ ...base, connect_latency_ms: 2001, audio_ms: 0 })).toBe("slow_connect");
    expect(expectedReason({ ...base, connect_latency_ms: 2000, audio_ms: 4999 })).toBe("too_short");
    expect(expectedReason({ ...base, connect_latency_ms: 2000, audio_ms: 5000 })).toBe("success");
  });

  it("delivers every event once in the first pass and its extra copies in the second, in 30 to 70 per request", () => {
    const w = makeWorkload(5, 80, START);
    const [first = [], extra = []] = deliveryRounds(mulberry32(1), w.sessions);
    const ids = (reqs: typeof first) => reqs.flatMap((r) => r.events.map((e) => e.id));
    const all = w.sessions.flatMap((s) => s.events.map((e) => e.id));
    expect(ids(first).sort()).toEqual([...all].sort());
    expect(ids(extra)).toHaveLength(duplicateCount(w.sessions));
    expect(first.slice(0, -1).every((r) => r.events.length >= 30 && r.events.length <= 70)).toBe(true);
    expect(ids(first)).not.toEqual(all); // shuffled across sessions
  });

  it("keys queue messages by content so a seed replays the same crash decisions", () => {
    const body = { v: 1, kind: "events", events: [{ id: "e1", source: "gw", session_id: "s1" }] };
    expect(describeMessage({ id: "m1", attempts: 1, body })).toEqual({
      id: "m1",
      attempts: 1,
      kind: "events",
      key: "ev:gw/e1:1",
      sessions: ["s1"],
    });
    expect(describeMessage({ id: "m2", attempts: 2, body: { kind: "verdict", session_id: "s1" } }).key).toBe(
      "v:s1",
    );
  });
});
