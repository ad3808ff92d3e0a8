/**
 * Seeds users through the real pipeline: telemetry posted as a gateway would, judged by the
 * classifier, recorded by the biller; then waits until the billing API shows it.
 */
import { expect } from "vitest";
import { asUser, eventually, postEvents, type SessionScript, sessionEvents } from "../e2e/helpers";

interface Usage {
  plan: string;
  sessions_this_month: number;
  failed_sessions: number;
}

export async function usageOf(userId: string): Promise<Usage> {
  const res = await asUser(userId, "/api/billing/usage");
  expect(res.status).toBe(200);
  return (await res.json()) as Usage;
}

/** Posts the sessions' events in batches of at most 500 events (the ingest limit). */
export async function postSessions(sessions: SessionScript[]): Promise<void> {
  const events = sessions.flatMap((s) => sessionEvents(s));
  for (let i = 0; i < events.length; i += 500) {
    const res = await postEvents(events.slice(i, i + 500));
    expect(res.status, await res.clone().text()).toBe(202);
  }
}

/** `successful` sessions that worked and `turnFailed` whose TURN relay failed, all judged. */
export async function seedUser(
  userId: string,
  opts: { successful: number; turnFailed?: number },
): Promise<Usage> {
  // A minute ago, but never in the previous month (the page counts this month's sessions).
  const now = new Date();
  const start = Math.max(now.getTime() - 60_000, Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const sessions: SessionScript[] = [];
  for (let i = 0; i < opts.successful; i += 1) {
    sessions.push({ sessionId: `${userId}-ok-${i}`, userId, start });
  }
  for (let i = 0; i < (opts.turnFailed ?? 0); i += 1) {
    sessions.push({ sessionId: `${userId}-turn-${i}`, userId, start: start + 1000, turnFailed: true });
  }
  await postSessions(sessions);
  return eventually(
    () => usageOf(userId),
    (u) => u.sessions_this_month === opts.successful && u.failed_sessions === (opts.turnFailed ?? 0),
    90_000,
    500,
  );
}
