import { EventsMessage } from "@aigate/shared";
import { describe, expect, it } from "vitest";
import { mismatchDeadLetters, planEvents, type TaggedEvent } from "./telemetry";
import { ev, T0 } from "./test-support";

const tag = (event: TaggedEvent["event"], messageId = "m1"): TaggedEvent => ({
  event,
  receivedAt: T0 + 1000,
  messageId,
  attempts: 1,
  requestId: "req-9",
});

describe("planEvents", () => {
  it("merges all events of a new session into one facts record", () => {
    const plan = planEvents(
      [
        tag(ev("created", { session: "a", time: T0 })),
        tag(ev("heartbeat", { session: "a", time: T0 + 1, audio: 7 })),
      ],
      new Map(),
      60_000,
    );
    expect(plan.merge).toHaveLength(1);
    expect(plan.merge[0]).toMatchObject({ sessionId: "a", userId: "user-1", createdAt: T0, audioMs: 7 });
    expect(plan.mergeEvents.get("a")).toHaveLength(2);
    expect(plan.late.size).toBe(0);
    expect(plan.mismatched).toEqual([]);
  });

  it("counts events for a judged session as late and merges none of them", () => {
    const plan = planEvents(
      [
        tag(ev("heartbeat", { session: "a", time: T0, audio: 99_999 })),
        tag(ev("ended", { session: "a", time: T0 })),
      ],
      new Map([["a", { user_id: "user-1", verdict_at: T0 }]]),
      60_000,
    );
    expect(plan.merge).toEqual([]);
    expect(plan.late.get("a")).toBe(2);
  });

  it("sets apart events whose user is not the stored owner, before anything else", () => {
    const intruder = tag(ev("heartbeat", { session: "a", user: "mallory", time: T0, audio: 50_000 }));
    const own = tag(ev("heartbeat", { session: "a", time: T0, audio: 10 }));
    const plan = planEvents(
      [intruder, own],
      new Map([["a", { user_id: "user-1", verdict_at: null }]]),
      60_000,
    );
    expect(plan.mismatched).toEqual([intruder]);
    expect(plan.merge.map((f) => [f.userId, f.audioMs])).toEqual([["user-1", 10]]);

    const judged = planEvents([intruder], new Map([["a", { user_id: "user-1", verdict_at: T0 }]]), 60_000);
    expect(judged.mismatched).toEqual([intruder]);
    expect(judged.late.size).toBe(0);
  });

  it("gives a new session to its creator and sets apart the other user's events", () => {
    const created = tag(ev("created", { session: "a", user: "alice", time: T0 + 10 }));
    const other = tag(ev("heartbeat", { session: "a", user: "bob", time: T0 }));
    for (const order of [
      [created, other],
      [other, created],
    ]) {
      const plan = planEvents(order, new Map(), 60_000);
      expect(plan.merge.map((f) => f.userId)).toEqual(["alice"]);
      expect(plan.mismatched).toEqual([other]);
    }
  });
});

describe("mismatchDeadLetters", () => {
  it("parks one replayable EventsMessage per message and session, under a deterministic id", () => {
    const a1 = tag(ev("heartbeat", { session: "a", user: "mallory", time: T0 }), "m1");
    const a2 = tag(ev("ended", { session: "a", user: "mallory", time: T0 + 1 }), "m1");
    const b = tag(ev("heartbeat", { session: "b", user: "mallory", time: T0 }), "m2");
    const letters = mismatchDeadLetters([a1, a2, b], 0, T0 + 5);
    expect(letters.map((l) => l.id)).toEqual([
      "aigate-telemetry:m1:user_mismatch:a",
      "aigate-telemetry:m2:user_mismatch:b",
    ]);
    const first = letters[0];
    expect(first).toMatchObject({
      queue: "aigate-telemetry",
      message_id: "m1",
      attempts: 1,
      failed_at: T0 + 5,
    });
    expect(first?.error).toBe("user_mismatch: session a belongs to another user");
    const body = EventsMessage.parse(JSON.parse(first?.body ?? "null"));
    expect(body).toMatchObject({ request_id: "req-9", received_at: T0 + 1000 });
    expect(body.events).toEqual([a1.event, a2.event]);
    expect(mismatchDeadLetters([b], 2, T0)[0]?.id).toBe("aigate-telemetry:m2:user_mismatch:b:2");
  });
});
