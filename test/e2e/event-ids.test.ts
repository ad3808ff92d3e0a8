/**
 * Dedupe on (`source`, `id`) across requests, through the whole stack: a heartbeat resent under
 * its id with far more audio must not turn a short session into a billable one.
 */
import { describe, expect, it } from "vitest";
import { asUser, eventually, postEvents } from "./helpers";

interface SessionItem {
  session_id: string;
  billable: boolean;
  reason: string;
  audio_ms: number;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("event ids", () => {
  it("keeps the first payload of an id: hb1 3000 ms, hb1 60000 ms, ended 3000 ms is too_short", async () => {
    const userId = `event-ids-${crypto.randomUUID()}`;
    const sessionId = `s-${crypto.randomUUID()}`;
    const start = Date.now() - 60_000;
    const at = (ms: number) => new Date(start + ms).toISOString();
    const base = { specversion: "1.0", source: "gw-e2e", subject: sessionId };
    const data = { user_id: userId, project_id: "proj-1" };
    const heartbeat = (audio_ms: number) => ({
      ...base,
      id: "hb1",
      type: "aigate.session.heartbeat",
      time: at(10_000),
      data: { ...data, audio_ms },
    });

    const requests = [
      [
        { ...base, id: "c0", type: "aigate.session.created", time: at(0), data },
        {
          ...base,
          id: "c1",
          type: "aigate.session.connected",
          time: at(300),
          data: { ...data, connect_latency_ms: 300 },
        },
        heartbeat(3000),
      ],
      [heartbeat(60_000)],
      [
        {
          ...base,
          id: "e1",
          type: "aigate.session.ended",
          time: at(20_000),
          data: { ...data, audio_ms: 3000 },
        },
      ],
    ];
    for (const events of requests) {
      const res = await postEvents(events);
      expect(res.status, await res.clone().text()).toBe(202);
      // past the classifier's batch timeout, so each request is recorded in a batch of its own
      await pause(1500);
    }

    const { sessions } = await eventually(
      async () =>
        (await (await asUser(userId, "/api/billing/sessions")).json()) as { sessions: SessionItem[] },
      (r) => r.sessions.length > 0,
    );
    expect(sessions).toEqual([
      expect.objectContaining({
        session_id: sessionId,
        billable: false,
        reason: "too_short",
        audio_ms: 3000,
      }),
    ]);
  });
});
