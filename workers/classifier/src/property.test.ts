/**
 * The claim "any order, any duplicates, any split: same result" on the real handler and real D1:
 * random sessions delivered once in order, and again duplicated, shuffled and split over messages
 * and batches (with settle reminders arriving early in between), must give the same facts,
 * verdicts and daily rollups. And "the first payload of an event id wins": conflicting copies
 * received after their original change nothing but the count of conflicting events.
 */

import { env } from "cloudflare:test";
import type { TelemetryEvent, VerdictMessage } from "@aigate/shared";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { sweepDueSessions } from "./cron";
import { conflictScenarioArb, type Delivery, MIDNIGHT, scenarioArb } from "./test/arbitraries";
import {
  deadLetters,
  deliver,
  eventsMessage,
  harness,
  judgesOf,
  type RollupRow,
  rollups,
  verdictsOf,
} from "./test/support";

const START = MIDNIGHT + 3 * 3_600_000; // receipts come after every event time
const STALE_MS = 15 * 60_000;

const CONTENT_COLUMNS = `session_id, user_id, project_id, source, created_at, first_event_at, last_event_at,
  connected, connect_latency_ms, turn_failed, upstream_error, upstream_status, upstream_code, audio_ms,
  ended_at, end_reason, late_events, conflicting_events, open, billable, reason, rule_version`;

interface Outcome {
  facts: Record<string, unknown>[];
  verdicts: Map<string, Omit<VerdictMessage, "judged_at">>;
  rollups: RollupRow[];
}

async function clear() {
  await env.DB.batch([
    env.DB.prepare("DELETE FROM sessions"),
    env.DB.prepare("DELETE FROM daily_rollups"),
    env.DB.prepare("DELETE FROM dead_letters"),
  ]);
}

/**
 * Delivers batches through the real handler (message k of batch i received at START + i s + k ms),
 * reminders as they come, then lets time pass and the cron run.
 */
async function run(delivery: Delivery): Promise<Outcome> {
  await clear();
  const h = harness();
  let now = START;
  for (const [i, batch] of delivery.entries()) {
    now = START + i * 1000;
    const r = await deliver(
      h,
      batch.map((events, k) => ({ body: eventsMessage(events, now + k) })),
      now + 100,
    );
    expect(r.retried).toEqual([]);
    // Reminders arrive before their settle window ends: they must be re-delayed, never judge early.
    const reminders = judgesOf(h.telemetry.drain());
    if (reminders.length > 0) {
      await deliver(
        h,
        reminders.map((m) => ({ body: m.body })),
        now + 200,
      );
    }
    expect(h.verdicts.sent).toEqual([]);
  }
  const end = now + STALE_MS + 61_000;
  const reminders = judgesOf(h.telemetry.drain());
  if (reminders.length > 0)
    await deliver(
      h,
      reminders.map((m) => ({ body: m.body })),
      end,
    );
  await sweepDueSessions(h.env, end);
  const swept = judgesOf(h.telemetry.drain());
  if (swept.length > 0)
    await deliver(
      h,
      swept.map((m) => ({ body: m.body })),
      end,
    );
  expect(h.telemetry.sent).toEqual([]);

  const verdicts = new Map<string, Omit<VerdictMessage, "judged_at">>();
  for (const { judged_at: _, ...v } of verdictsOf(h.verdicts)) {
    const seen = verdicts.get(v.session_id);
    if (seen) expect(v).toEqual(seen); // a re-send repeats the stored verdict
    verdicts.set(v.session_id, v);
  }
  const { results: facts } = await env.DB.prepare(
    `SELECT ${CONTENT_COLUMNS} FROM sessions ORDER BY session_id`,
  ).all<Record<string, unknown>>();
  expect(await deadLetters()).toEqual([]);
  return { facts, verdicts, rollups: await rollups() };
}

const ordered = (sessions: TelemetryEvent[][]): Delivery => [[sessions.flat()]];

describe("any order, duplicates and splits give the verdicts and rollups of one ordered copy (D1, fast-check)", () => {
  beforeEach(() => {
    vi.spyOn(console, "log").mockImplementation(() => {});
    vi.spyOn(console, "warn").mockImplementation(() => {});
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("holds for 100 random scenarios through the real handler", async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb(5), async ({ sessions, scrambled }) => {
        const a = await run(ordered(sessions));
        const b = await run(scrambled);
        expect(a.verdicts.size).toBe(sessions.length);
        expect(b.facts).toEqual(a.facts);
        expect(b.verdicts).toEqual(a.verdicts);
        expect(b.rollups).toEqual(a.rollups);
        expect(a.rollups.reduce((n, r) => n + r.sessions, 0)).toBe(sessions.length);
      }),
      { numRuns: 100 },
    );
  });

  it("keeps the first payload of every event id when conflicting copies arrive later (100 random scenarios)", async () => {
    const withoutCount = (rows: Record<string, unknown>[]) =>
      rows.map(({ conflicting_events: _, ...rest }) => rest);
    await fc.assert(
      fc.asyncProperty(conflictScenarioArb(4), async ({ sessions, delivery, conflicting }) => {
        const a = await run(ordered(sessions));
        const b = await run(delivery);
        expect(withoutCount(b.facts)).toEqual(withoutCount(a.facts));
        expect(b.facts.reduce((n, r) => n + Number(r.conflicting_events), 0)).toBe(conflicting);
        expect(b.verdicts).toEqual(a.verdicts);
        expect(b.rollups).toEqual(a.rollups);
      }),
      { numRuns: 100 },
    );
  });
});
