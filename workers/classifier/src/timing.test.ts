import { describe, expect, it } from "vitest";
import { judgeState, retryDelaySeconds } from "./timing";

const NOW = 1_000_000_000;
const STALE = 15 * 60_000;

describe("judgeState", () => {
  it("says judged once a verdict exists, whatever the clocks", () => {
    expect(judgeState({ verdict_at: 1, settle_due_at: NOW - 1, last_seen_at: 0 }, NOW, STALE)).toBe("judged");
  });

  it("is due when the settle window has ended, at the exact millisecond", () => {
    expect(judgeState({ verdict_at: null, settle_due_at: NOW, last_seen_at: NOW }, NOW, STALE)).toBe("due");
    expect(judgeState({ verdict_at: null, settle_due_at: NOW + 1, last_seen_at: NOW }, NOW, STALE)).toBe(
      "settling",
    );
  });

  it("is due once the session has been silent for the stale period, not a millisecond before", () => {
    expect(judgeState({ verdict_at: null, settle_due_at: null, last_seen_at: NOW - STALE }, NOW, STALE)).toBe(
      "due",
    );
    expect(
      judgeState({ verdict_at: null, settle_due_at: null, last_seen_at: NOW - STALE + 1 }, NOW, STALE),
    ).toBe("live");
  });

  it("judges a stale session even if its settle window is oddly long", () => {
    expect(
      judgeState(
        { verdict_at: null, settle_due_at: NOW + 10 * STALE, last_seen_at: NOW - STALE },
        NOW,
        STALE,
      ),
    ).toBe("due");
  });
});

describe("retryDelaySeconds", () => {
  it("doubles from 5 s per attempt and caps at 10 minutes", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8].map(retryDelaySeconds)).toEqual([5, 10, 20, 40, 80, 160, 320, 600]);
    expect(retryDelaySeconds(1000)).toBe(600);
    expect(retryDelaySeconds(0)).toBe(5);
  });
});
