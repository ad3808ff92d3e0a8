import { describe, expect, it } from "vitest";
import { isWellFormedText, parseEventBatch } from "./events";

const now = Date.parse("2026-11-25T12:00:00Z");
const event = (over: Record<string, unknown> = {}, data: Record<string, unknown> = {}) => ({
  specversion: "1.0",
  id: "e1",
  source: "gw-1",
  type: "aigate.session.ended",
  subject: "s1",
  time: "2026-11-25T11:59:00Z",
  data: { user_id: "u1", project_id: "p1", audio_ms: 6000, ...data },
  ...over,
});

describe("parseEventBatch", () => {
  it("accepts well-formed events, surrogate pairs (emoji) included", () => {
    const parsed = parseEventBatch([event({ subject: "s-\u{1F600}" }, { reason: "bye \u{1F44B}" })], now);
    expect(parsed).toMatchObject({
      ok: true,
      events: [{ session_id: "s-\u{1F600}", reason: "bye \u{1F44B}" }],
    });
  });

  it("refuses ids and texts holding a lone UTF-16 surrogate, which D1 could not store as sent", () => {
    const parsed = parseEventBatch(
      [event({ subject: "s-\ud800" }), event({}, { user_id: "u-\udc00" }), event({}, { reason: "\udbff!" })],
      now,
    );
    expect(parsed.ok).toBe(false);
    if (parsed.ok) return;
    expect(parsed.issues.map((i) => [i.index, i.path])).toEqual([
      [0, "subject"],
      [1, "data.user_id"],
      [2, "data.reason"],
    ]);
    expect(parsed.issues[0]?.message).toMatch(/well-formed Unicode/);
  });

  it("tells lone surrogates from pairs", () => {
    expect(isWellFormedText("a\u{10FFFF}b")).toBe(true);
    expect(isWellFormedText("\ud83d")).toBe(false);
    expect(isWellFormedText("\ude00x")).toBe(false);
    expect(isWellFormedText("\ude00\ud83d")).toBe(false);
  });
});
