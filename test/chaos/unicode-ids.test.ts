/**
 * Regression test for a bug the chaos suite found: ids holding a lone UTF-16 surrogate.
 *
 * Ids are JSON strings, and JSON can carry a lone UTF-16 surrogate ("\ud800"). D1 stores text as
 * UTF-8, where such an id does not come back as it went in: the classifier's upsert never saw its
 * own row, the session was never judged, and a lone surrogate in a user id made the session's
 * own later events look like another user's. Ingest now refuses such ids and texts with 400
 * `invalid_event` (shared/src/events.ts, `Identifier`); the contract also allows billing them to
 * their user, so either outcome passes.
 */
import { DEV_INGEST_KEY } from "@aigate/test-support";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { isRecord, StackClient, sleep } from "./clients";

const client = new StackClient(inject("stackUrl"), inject("stripeUrl"), inject("chaosControlUrl"));
const run = Date.now().toString(36);

/** Raw JSON, so the lone surrogate is sent escaped exactly as a gateway could send it. */
function sessionJson(sessionId: string, userId: string): string {
  const t = (ms: number) => new Date(Date.now() + ms).toISOString();
  const ev = (suffix: string, type: string, ms: number, extra: string) =>
    `{"specversion":"1.0","id":"${sessionId}-${suffix}","source":"gw-repro","type":"aigate.session.${type}",` +
    `"subject":"${sessionId}","time":"${t(ms)}","data":{"user_id":"${userId}","project_id":"p"${extra}}}`;
  return `[${ev("c", "created", 0, "")},${ev("k", "connected", 100, ',"connect_latency_ms":100')},${ev("e", "ended", 9500, ',"audio_ms":9000')}]`;
}

async function listedFor(userId: string): Promise<string[]> {
  const res = await client.asUser(userId, "/api/billing/sessions?limit=100");
  const sessions = isRecord(res.body) && Array.isArray(res.body.sessions) ? res.body.sessions : [];
  return sessions.map((s) => (isRecord(s) ? String(s.session_id) : ""));
}

describe("ids holding a lone UTF-16 surrogate", () => {
  beforeAll(() => client.control("/enabled", { enabled: false }));
  afterAll(() => client.control("/enabled", { enabled: true }));

  for (const [what, sessionId, userId, decodedSession, decodedUser] of [
    [
      "in the session id",
      `repro-${run}-\\ud800`,
      `repro-user-${run}`,
      `repro-${run}-\ud800`,
      `repro-user-${run}`,
    ],
    [
      "in the user id",
      `repro-${run}-plain`,
      `repro-user-${run}-\\udc00`,
      `repro-${run}-plain`,
      `repro-user-${run}-\udc00`,
    ],
  ] as const) {
    it(`are refused with invalid_event, or billed to their user, when ${what}`, async () => {
      const res = await fetch(`${client.url}/v1/events`, {
        method: "POST",
        headers: { authorization: `Bearer ${DEV_INGEST_KEY}`, "content-type": "application/json" },
        body: sessionJson(sessionId, userId),
      });
      const body: unknown = await res.json();
      if (res.status === 400) {
        expect(isRecord(body) && isRecord(body.error) ? body.error.code : null).toBe("invalid_event");
        return;
      }
      expect(res.status).toBe(202);
      // settle window (20 s) + judging + billing; then the user must see the session, once
      let listed: string[] = [];
      for (let i = 0; i < 30 && !listed.includes(decodedSession); i++) {
        await sleep(2000);
        listed = await listedFor(decodedUser);
      }
      expect(listed).toEqual([decodedSession]);
    });
  }
});
