/**
 * The claim "any order, any duplicates, any split: same result" on the real handler and real D1:
 * random sessions delivered once in order, and again duplicated, shuffled and split over messages
 * and batches (with settle reminders arriving early in between), must give the same facts,
 * verdicts, series and daily rollups, with every billable session ranked once (1..n in its
 * series) and the biller told only about the paid series. And "the first payload of an event id
 * wins": conflicting copies received after their original change nothing but the count of
 * conflicting events.
 * And "a judge run's counts are its verdicts'": with telemetry landing between the judge's read and
 * every verdict batch (which then fails whole and reads again), the series' counts, ranks and
 * rollups equal what the judged sessions say, and every session is judged once.
 */

import { env } from "cloudflare:test";
import type { TelemetryEvent } from "@aigate/shared";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { sweepDueSessions } from "./cron";
import { conflictScenarioArb, type Delivery, MIDNIGHT, scenarioArb } from "./test/arbitraries";
import {
  deadLetters,
  deliver,
  dense,
  eventsMessage,
  harness,
  judgesOf,
  paidAccount,
  type RollupRow,
  ranksBySeries,
  reattributions,
  rollups,
  seriesRows,
  usageOf,
} from "./test/support";

const START = MIDNIGHT + 3 * 3_600_000; // receipts come after every event time
const STALE_MS = 15 * 60_000;

/** The user with a paid plan (payg); u1 and u2 are free. */
const PAID_USER = "u3";
const PAID_PERIOD = { start: MIDNIGHT - 10 * 86_400_000, end: MIDNIGHT + 20 * 86_400_000 };

// Verdicts and series included; not the receipt times, the billing time derived from them (the
// deliveries differ in when they were received) nor the ranks (they follow the recording order).
const CONTENT_COLUMNS = `session_id, user_id, project_id, source, created_at, first_event_at, last_event_at,
  connected, connect_latency_ms, turn_failed, upstream_error, upstream_status, upstream_code, audio_ms,
  ended_at, end_reason, late_events, conflicting_events, open, billable, reason, rule_version, plan, period_start`;

interface Outcome {
  facts: Record<string, unknown>[];
  /** (user, plan, window, billable sessions) */
  series: [string, string, number, number][];
  rollups: RollupRow[];
}

async function clear() {
  await env.DB.batch([
    env.DB.prepare("DELETE FROM sessions"),
    env.DB.prepare("DELETE FROM session_lists"),
    env.DB.prepare("DELETE FROM daily_rollups"),
    env.DB.prepare("DELETE FROM dead_letters"),
    env.DB.prepare("DELETE FROM usage_periods"),
    env.DB.prepare("DELETE FROM reattributions"),
    env.DB.prepare("DELETE FROM stripe_customers"),
    env.DB.prepare("DELETE FROM subscriptions"),
    env.DB.prepare("DELETE FROM plan_history"),
    env.DB.prepare("DELETE FROM billing_periods"),
  ]);
  await paidAccount(PAID_USER, { periods: [PAID_PERIOD] });
}

/**
 * Every series' count and highest rank equal its billable sessions, ranked once each, 1..n, and
 * no billable session is outside a series. Returns the series rows.
 */
async function expectSeriesOf(sessions: readonly Record<string, unknown>[]) {
  const series = await seriesRows();
  const ranks = await ranksBySeries();
  for (const r of series) {
    const billable = sessions.filter(
      (f) => f.user_id === r.user_id && f.period_start === r.period_start && f.billable === 1,
    ).length;
    expect([r.billable_sessions, r.seq_top]).toEqual([billable, billable]);
    expect(ranks.get(`${r.user_id}|${r.plan}|${r.period_start}`) ?? []).toEqual(dense(billable));
  }
  expect(series.reduce((n, r) => n + r.billable_sessions, 0)).toBe(
    sessions.filter((f) => f.billable === 1).length,
  );
  return series;
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

  const { results: facts } = await env.DB.prepare(
    `SELECT ${CONTENT_COLUMNS} FROM sessions ORDER BY session_id`,
  ).all<Record<string, unknown>>();
  expect(await deadLetters()).toEqual([]);
  expect(await reattributions()).toEqual([]);

  // every session judged, in its user's series; every billable one ranked once, 1..n per series
  for (const f of facts) {
    expect(f.reason).not.toBeNull();
    expect(f.plan).toBe(f.user_id === PAID_USER ? "payg" : "free");
  }
  const series = await expectSeriesOf(facts);

  // the biller hears of the paid series only, once per run that grew it
  const paidBillable = facts.filter((f) => f.user_id === PAID_USER && f.billable === 1).length;
  const messages = usageOf(h.verdicts);
  expect(messages.length > 0).toBe(paidBillable > 0);
  for (const m of messages)
    expect(m.series).toEqual([{ user_id: PAID_USER, plan: "payg", period_start: PAID_PERIOD.start }]);
  expect(messages.reduce((n, m) => n + m.judged, 0)).toBeLessThanOrEqual(facts.length);

  return {
    facts,
    series: series.map((r) => [r.user_id, r.plan, r.period_start, r.billable_sessions]),
    rollups: await rollups(),
  };
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
        expect(a.facts).toHaveLength(sessions.length);
        expect(b.facts).toEqual(a.facts);
        expect(b.series).toEqual(a.series);
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
        expect(b.series).toEqual(a.series);
        expect(b.rollups).toEqual(a.rollups);
      }),
      { numRuns: 100 },
    );
  });
});

/**
 * Every judged session as its user's session lists name it (user, billing hour, id), and as the
 * sessions themselves say it should be: equal when each is listed exactly once, in its hour.
 */
async function listedAndJudged() {
  const { results: listed } = await env.DB.prepare(
    `SELECT l.user_id, l.hour, j.value AS session_id FROM session_lists l, json_each(l.session_ids) j
     ORDER BY 3, 1, 2`,
  ).all();
  const { results: judged } = await env.DB.prepare(
    `SELECT user_id, billed_at / 3600000 AS hour, session_id FROM sessions WHERE verdict_at IS NOT NULL
     ORDER BY 3, 1, 2`,
  ).all();
  return { listed, judged };
}

/** The rollups the judged sessions imply: by user, UTC day of the billing time, and reason. */
async function rollupsOfSessions(): Promise<RollupRow[]> {
  const { results } = await env.DB.prepare(
    `SELECT user_id, strftime('%Y-%m-%d', billed_at / 1000, 'unixepoch') AS day, reason, count(*) AS sessions,
       sum(audio_ms) AS audio_ms
     FROM sessions GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
  ).all<RollupRow>();
  return results;
}

describe("a judge run's counts are its verdicts' when telemetry lands under its verdict batches (D1, fast-check)", () => {
  beforeEach(() => {
    vi.spyOn(console, "log").mockImplementation(() => {});
    vi.spyOn(console, "warn").mockImplementation(() => {});
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("holds for 60 random scenarios", async () => {
    let moved = 0;
    await fc.assert(
      fc.asyncProperty(
        scenarioArb(5),
        fc.integer({ min: 0, max: 3 }),
        async ({ sessions, scrambled }, delivered) => {
          await clear();
          const h = harness();
          // the first batches arrive before the judge run; the rest land one by one, each just
          // before one of its writing batches (the verdict batch, which then fails whole if a
          // session it judges moved, or the agenda's update)
          const early = scrambled.slice(0, delivered);
          const held = scrambled.slice(delivered);
          for (const [i, batch] of early.entries()) {
            const at = START + i * 1000;
            await deliver(
              h,
              batch.map((events, k) => ({ body: eventsMessage(events, at + k) })),
              at + 100,
            );
          }
          const judgeAt = START + 10 * 60_000;
          const side = harness();
          const land = async () => {
            const batch = held.shift();
            if (batch === undefined) return;
            await deliver(
              side,
              batch.map((events, k) => ({ body: eventsMessage(events, judgeAt - 1000 + k) })),
              judgeAt - 900,
            );
            h.d1.beforeNextBatch = land;
          };
          h.d1.beforeNextBatch = land;
          moved += (await sweepDueSessions(h.env, judgeAt)).moved;
          h.d1.beforeNextBatch = null;
          while (held.length > 0) await land();
          // later runs judge what is left: relisted, or first seen while the run was judging
          await sweepDueSessions(h.env, judgeAt + STALE_MS + 61_000);
          await sweepDueSessions(h.env, judgeAt + 2 * (STALE_MS + 61_000));

          const { results: judged } = await env.DB.prepare(
            "SELECT session_id, user_id, billable, period_start, verdict_at FROM sessions ORDER BY session_id",
          ).all<{
            session_id: string;
            user_id: string;
            billable: number;
            period_start: number;
            verdict_at: number;
          }>();
          expect(judged).toHaveLength(sessions.length);
          for (const s of judged) expect(s.verdict_at).not.toBeNull();
          expect(await rollups()).toEqual(await rollupsOfSessions());
          const { listed, judged: expected } = await listedAndJudged();
          expect(listed).toEqual(expected);
          await expectSeriesOf(judged);
          expect(await deadLetters()).toEqual([]);
        },
      ),
      { numRuns: 60 },
    );
    // the scenarios did make verdict batches fail whole and read again
    console.info(`[property] verdict batches failed on a moved session: ${moved}`);
    expect(moved).toBeGreaterThan(0);
  });
});
