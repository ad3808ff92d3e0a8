import { EventsMessage } from "@aigate/shared";
import { describe, expect, it } from "vitest";
import { eventKey } from "./dedupe";
import { mismatchDeadLetters, planEvents, type TaggedEvent } from "./telemetry";
import { ev, T0 } from "./test/support";

const tag = async (event: TaggedEvent["event"], messageId = "m1") => ({
  event,
  receivedAt: T0 + 1000,
  messageId,
  attempts: 1,
  requestId: "req-9",
  key: await eventKey(event),
});

const facts = (plan: ReturnType<typeof planEvents>) =>
  [...plan.sessions.values()].flatMap((s) => (s.facts ? [s.facts] : []));

describe("planEvents", () => {
  it("merges all events of a new session into one facts record", async () => {
    const plan = planEvents(
      [
        await tag(ev("created", { session: "a", time: T0 })),
        await tag(ev("heartbeat", { session: "a", time: T0 + 1, audio: 7 })),
      ],
      new Map(),
      60_000,
    );
    expect(facts(plan)).toHaveLength(1);
    expect(facts(plan)[0]).toMatchObject({ sessionId: "a", userId: "user-1", createdAt: T0, audioMs: 7 });
    expect(plan.sessions.get("a")).toMatchObject({ merged: 2, conflicting: [] });
    expect(plan.sessions.get("a")?.events).toHaveLength(2);
    expect(plan.sessions.get("a")?.digest).toHaveLength(2 * 16);
    expect(plan.late.size).toBe(0);
    expect(plan.mismatched).toEqual([]);
  });

  it("counts events for a judged session as late and merges none of them", async () => {
    const plan = planEvents(
      [
        await tag(ev("heartbeat", { session: "a", time: T0, audio: 99_999 })),
        await tag(ev("ended", { session: "a", time: T0 })),
      ],
      new Map([["a", { user_id: "user-1", verdict_at: T0, event_digest: null }]]),
      60_000,
    );
    expect(plan.sessions.size).toBe(0);
    expect(plan.late.get("a")).toBe(2);
  });

  it("sets apart events whose user is not the stored owner, before anything else", async () => {
    const intruder = await tag(ev("heartbeat", { session: "a", user: "mallory", time: T0, audio: 50_000 }));
    const own = await tag(ev("heartbeat", { session: "a", time: T0, audio: 10 }));
    const plan = planEvents(
      [intruder, own],
      new Map([["a", { user_id: "user-1", verdict_at: null, event_digest: null }]]),
      60_000,
    );
    expect(plan.mismatched).toEqual([intruder]);
    expect(facts(plan).map((f) => [f.userId, f.audioMs])).toEqual([["user-1", 10]]);

    const judged = planEvents(
      [intruder],
      new Map([["a", { user_id: "user-1", verdict_at: T0, event_digest: null }]]),
      60_000,
    );
    expect(judged.mismatched).toEqual([intruder]);
    expect(judged.late.size).toBe(0);
  });

  it("gives a new session to its creator and sets apart the other user's events", async () => {
    const created = await tag(ev("created", { session: "a", user: "alice", time: T0 + 10 }));
    const other = await tag(ev("heartbeat", { session: "a", user: "bob", time: T0 }));
    for (const order of [
      [created, other],
      [other, created],
    ]) {
      const plan = planEvents(order, new Map(), 60_000);
      expect(facts(plan).map((f) => f.userId)).toEqual(["alice"]);
      expect(plan.mismatched).toEqual([other]);
    }
  });

  it("merges nothing of a copy that conflicts with the stored digest, and keeps the digest as it was", async () => {
    const first = await tag(ev("heartbeat", { session: "a", id: "hb1", time: T0, audio: 3000 }));
    const stored = planEvents([first], new Map(), 60_000).sessions.get("a")?.digest ?? null;
    const copy = await tag(ev("heartbeat", { session: "a", id: "hb1", time: T0, audio: 60_000 }), "m2");
    const other = await tag(ev("heartbeat", { session: "a", id: "hb2", time: T0 + 1, audio: 4000 }), "m2");
    const state = new Map([["a", { user_id: "user-1", verdict_at: null, event_digest: stored }]]);

    const alone = planEvents([copy], state, 60_000).sessions.get("a");
    expect(alone).toMatchObject({ facts: null, merged: 0, conflicting: [copy], digest: stored });

    const mixed = planEvents([copy, other, first], state, 60_000).sessions.get("a");
    expect(mixed).toMatchObject({ merged: 2, conflicting: [copy], events: [copy, other, first] });
    expect(mixed?.facts?.audioMs).toBe(4000);
    expect(mixed?.digest.startsWith(stored ?? "?")).toBe(true);
    expect(mixed?.digest).toHaveLength(2 * 16);
  });
});

describe("mismatchDeadLetters", () => {
  it("parks one replayable EventsMessage per message and session, under a deterministic id", async () => {
    const a1 = await tag(ev("heartbeat", { session: "a", user: "mallory", time: T0 }), "m1");
    const a2 = await tag(ev("ended", { session: "a", user: "mallory", time: T0 + 1 }), "m1");
    const b = await tag(ev("heartbeat", { session: "b", user: "mallory", time: T0 }), "m2");
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
