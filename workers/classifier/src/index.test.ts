/**
 * Through the real local queue: wrangler.jsonc's consumer and producers and the exported handlers
 * (VERDICT_SETTLE_SECONDS = 1 in vitest.config.ts).
 */
import { createScheduledController, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "./index";
import { ev, eventsMessage, typicalSession } from "./test/support";

async function waitFor<T>(probe: () => Promise<T | null>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const verdictOf = (id: string) =>
  env.DB.prepare(
    "SELECT reason, billable, verdict_at, settle_due_at FROM sessions WHERE session_id = ?1 AND verdict_at IS NOT NULL",
  )
    .bind(id)
    .first<{ reason: string; billable: number; verdict_at: number; settle_due_at: number }>();

describe("through the local queue", () => {
  it("records telemetry sent to aigate-telemetry and its cron judges the session once the settle window has passed", async () => {
    const now = Date.now();
    await env.TELEMETRY.send(eventsMessage(typicalSession("q1", now - 40_000), now));
    await waitFor(
      () => env.DB.prepare("SELECT 1 AS ok FROM sessions WHERE session_id = 'q1'").first<{ ok: number }>(),
      20_000,
    );
    const verdict = await waitFor(async () => {
      await worker.scheduled(createScheduledController(), env);
      return verdictOf("q1");
    }, 20_000);
    expect(verdict).toMatchObject({ reason: "success", billable: 1, settle_due_at: now + 1000 });
    expect(verdict.verdict_at).toBeGreaterThanOrEqual(now + 1000);
  });

  it("has a cron that judges stale sessions", async () => {
    const longAgo = Date.now() - 60 * 60_000;
    await env.TELEMETRY.send(eventsMessage([ev("created", { session: "q2", time: longAgo })], longAgo));
    await waitFor(
      () => env.DB.prepare("SELECT 1 AS ok FROM sessions WHERE session_id = 'q2'").first<{ ok: number }>(),
      20_000,
    );
    await worker.scheduled(createScheduledController(), env);
    expect(await waitFor(() => verdictOf("q2"), 20_000)).toMatchObject({
      reason: "not_connected",
      billable: 0,
    });
  });
});
