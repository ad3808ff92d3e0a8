/**
 * The classifier with four D1 shards: telemetry lands on each user's shard, the cron judges every
 * shard's agenda and adds the outcomes up, and parked messages go to the home database.
 */
import { env } from "cloudflare:test";
import { shardsOf, type TelemetryEvent } from "@aigate/shared";
import { shardedEnv, userOnShard } from "@aigate/test-support/shards";
import { describe, expect, it } from "vitest";
import { sweepDueSessions } from "./cron";
import {
  deliver,
  ev,
  eventsMessage,
  type Harness,
  harness,
  judgeMessage,
  MAY,
  MeteredD1,
  paidAccount,
  T0,
  typicalSession,
  usageOf,
} from "./test/support";

const SETTLE_MS = 60_000; // TEST_VARS.VERDICT_SETTLE_SECONDS
const STALE_MS = 15 * 60_000; // TEST_VARS.STALE_SESSION_MINUTES
const RECEIVED = T0 + 40_000;
const AFTER_SETTLE = RECEIVED + SETTLE_MS + 1;
/** paidAccount's default billing period. */
const PERIOD_START = Date.UTC(2026, 4, 3);

/** The four shards in order: DB (home) is shard 0. */
const SHARDS = () => [env.DB, env.DB_1, env.DB_2, env.DB_3];

/** A harness whose env has four migrated shards; `wrap` replaces a shard binding (to inject faults). */
async function shardedHarness(wrap: Partial<Pick<Env, "DB">> & Record<string, D1Database> = {}) {
  const h = harness();
  const e = await shardedEnv({ ...h.env, ...wrap });
  return { ...h, env: e } satisfies Harness;
}

/** For each shard, the rows of `sql` there. */
async function perShard<T = Record<string, unknown>>(sql: string): Promise<T[][]> {
  const out: T[][] = [];
  for (const db of SHARDS()) out.push((await db.prepare(sql).all<T>()).results);
  return out;
}

/** For each shard, the session ids listed on its agenda, sorted. */
async function agendaByShard(): Promise<string[][]> {
  const rows = await perShard<{ session_ids: string }>("SELECT session_ids FROM session_due");
  return rows.map((list) => list.flatMap((r) => JSON.parse(r.session_ids) as string[]).sort());
}

const USERS = [0, 1, 2, 3].map((i) => userOnShard("tel_user_", i));

function userOf(i: number): string {
  const user = USERS[i];
  if (user === undefined) throw new Error(`no user for shard ${i}`);
  return user;
}

/** Interleaves lists: the first of each, then the second of each, ... */
function interleave<T>(lists: T[][]): T[] {
  const out: T[] = [];
  for (let k = 0; lists.some((l) => k < l.length); k++) {
    for (const l of lists) {
      const x = l[k];
      if (x !== undefined) out.push(x);
    }
  }
  return out;
}

describe("recording telemetry with four D1 shards", () => {
  it("lands each session's facts and agenda rows on its user's shard only", async () => {
    const h = await shardedHarness();
    const ended = interleave([0, 1, 2, 3].map((i) => typicalSession(`ended_${i}`, T0, userOf(i))));
    const live = [0, 1, 2, 3].map((i) => ev("created", { session: `live_${i}`, user: userOf(i), time: T0 }));
    const r = await deliver(
      h,
      [
        { id: "m1", body: eventsMessage([...ended.slice(0, 12), ...live.slice(0, 2)], RECEIVED) },
        { id: "m2", body: eventsMessage([...live.slice(2), ...ended.slice(12)], RECEIVED, "req-2") },
      ],
      RECEIVED,
    );
    expect(r).toMatchObject({ acked: ["m1", "m2"], retried: [] });

    const sessions = await perShard<{ session_id: string; user_id: string; audio_ms: number }>(
      "SELECT session_id, user_id, audio_ms FROM sessions ORDER BY session_id",
    );
    expect(sessions).toEqual(
      [0, 1, 2, 3].map((i) => [
        { session_id: `ended_${i}`, user_id: userOf(i), audio_ms: 33_000 },
        { session_id: `live_${i}`, user_id: userOf(i), audio_ms: 0 },
      ]),
    );
    const agenda = await perShard<{ due_at: number; session_ids: string }>(
      "SELECT due_at, session_ids FROM session_due ORDER BY due_at",
    );
    expect(agenda).toEqual(
      [0, 1, 2, 3].map((i) => [
        { due_at: RECEIVED + SETTLE_MS, session_ids: `["ended_${i}"]` },
        { due_at: RECEIVED + STALE_MS, session_ids: `["live_${i}"]` },
      ]),
    );
    expect(await perShard("SELECT id FROM dead_letters")).toEqual([[], [], [], []]);
  });

  it("parks events naming another user of the session's shard in the home database", async () => {
    const h = await shardedHarness();
    const owner = userOnShard("owner_", 2);
    const other = userOnShard("intruder_", 2);
    await deliver(
      h,
      [{ id: "m1", body: eventsMessage(typicalSession("s_owned", T0, owner), RECEIVED) }],
      RECEIVED,
    );
    const r = await deliver(
      h,
      [
        {
          id: "m2",
          body: eventsMessage([ev("heartbeat", { session: "s_owned", user: other, time: T0 + 1 })], RECEIVED),
        },
      ],
      RECEIVED,
    );
    expect(r).toMatchObject({ acked: ["m2"], retried: [] });
    const letters = await perShard<{ id: string; error: string }>("SELECT id, error FROM dead_letters");
    expect(letters).toEqual([
      [
        {
          id: "aigate-telemetry:m2:user_mismatch:s_owned",
          error: "user_mismatch: session s_owned belongs to another user",
        },
      ],
      [],
      [],
      [],
    ]);
    expect(await perShard("SELECT session_id, user_id FROM sessions")).toEqual([
      [],
      [],
      [{ session_id: "s_owned", user_id: owner }],
      [],
    ]);
  });

  it("retries only the messages with events on a shard that failed, and the retry completes them", async () => {
    const failing = new MeteredD1(env.DB_2);
    failing.failBeforeBatch = 1;
    const h = await shardedHarness({ DB_2: failing.db });
    // m2 holds events of shards 1 and 2; the same body comes again when it is retried
    const m2 = eventsMessage(
      [...typicalSession("s_1b", T0, userOf(1)), ...typicalSession("s_2", T0, userOf(2))],
      RECEIVED,
    );
    const first = await deliver(
      h,
      [
        { id: "m1", body: eventsMessage(typicalSession("s_1", T0, userOf(1)), RECEIVED) },
        { id: "m2", body: m2 },
        { id: "m3", body: eventsMessage(typicalSession("s_3", T0, userOf(3)), RECEIVED) },
      ],
      RECEIVED,
    );
    expect(first).toMatchObject({ acked: ["m1", "m3"], retried: ["m2"] });
    const recorded = await env.DB_1.prepare("SELECT * FROM sessions WHERE session_id = 's_1b'").first();
    expect(recorded).toMatchObject({ user_id: userOf(1), audio_ms: 33_000 });
    expect(await perShard("SELECT session_id FROM sessions ORDER BY session_id")).toEqual([
      [],
      [{ session_id: "s_1" }, { session_id: "s_1b" }],
      [],
      [{ session_id: "s_3" }],
    ]);

    const again = await deliver(h, [{ id: "m2", attempts: 2, body: m2 }], RECEIVED + 1000);
    expect(again).toMatchObject({ acked: ["m2"], retried: [] });
    expect(await perShard("SELECT session_id, user_id, audio_ms FROM sessions ORDER BY session_id")).toEqual([
      [],
      [
        { session_id: "s_1", user_id: userOf(1), audio_ms: 33_000 },
        { session_id: "s_1b", user_id: userOf(1), audio_ms: 33_000 },
      ],
      [{ session_id: "s_2", user_id: userOf(2), audio_ms: 33_000 }],
      [{ session_id: "s_3", user_id: userOf(3), audio_ms: 33_000 }],
    ]);
    // the second copy of s_1b's events changed nothing on its shard
    expect(await env.DB_1.prepare("SELECT * FROM sessions WHERE session_id = 's_1b'").first()).toEqual(
      recorded,
    );
  });
});

describe("parking with four D1 shards", () => {
  it("parks a poison message in the home database", async () => {
    const h = await shardedHarness();
    const r = await deliver(h, [{ id: "p1", body: { v: 9, kind: "events" } }], RECEIVED);
    expect(r).toMatchObject({ acked: ["p1"], retried: [] });
    const letters = await perShard<{ id: string; message_id: string }>(
      "SELECT id, message_id FROM dead_letters",
    );
    expect(letters.map((l) => l.length)).toEqual([1, 0, 0, 0]);
    expect(letters[0]?.[0]?.message_id).toBe("p1");
  });
});

/** Telemetry for `count` ended sessions of `user`, named `<prefix>_<k>`. */
function endedSessions(prefix: string, user: string, count: number): TelemetryEvent[] {
  return Array.from({ length: count }, (_, k) => typicalSession(`${prefix}_${k}`, T0 + k, user)).flat();
}

describe("the cron with four D1 shards", () => {
  it("judges the due sessions of every shard, with series and rollups on the user's shard", async () => {
    const h = await shardedHarness();
    const paid1 = userOnShard("paid_", 1);
    const paid3 = userOnShard("paid_", 3);
    await paidAccount(paid1, { db: env.DB_1 });
    await paidAccount(paid3, { db: env.DB_3 });
    // shard i: i + 1 sessions of its free user; shards 1 and 3 one more each, of a paid user
    const events = [
      ...[0, 1, 2, 3].flatMap((i) => endedSessions(`free${i}`, userOf(i), i + 1)),
      ...endedSessions("paid1", paid1, 1),
      ...endedSessions("paid3", paid3, 1),
    ];
    await deliver(h, [{ body: eventsMessage(events, RECEIVED) }], RECEIVED);
    const agendaRows = (await perShard("SELECT id FROM session_due")).reduce((n, rows) => n + rows.length, 0);
    expect(agendaRows).toBeGreaterThanOrEqual(4);

    const outcome = await sweepDueSessions(h.env, AFTER_SETTLE);
    expect(outcome).toMatchObject({ rows: agendaRows, judged: 1 + 2 + 3 + 4 + 2, relisted: 0, more: false });
    expect(outcome.passes).toBeGreaterThanOrEqual(4);
    expect(await agendaByShard()).toEqual([[], [], [], []]);
    expect(await perShard("SELECT count(*) AS n FROM sessions WHERE verdict_at IS NULL")).toEqual(
      [0, 1, 2, 3].map(() => [{ n: 0 }]),
    );

    const series = await perShard(
      "SELECT user_id, plan, period_start, billable_sessions FROM usage_periods ORDER BY plan, user_id",
    );
    expect(series).toEqual([
      [{ user_id: userOf(0), plan: "free", period_start: MAY.start, billable_sessions: 1 }],
      [
        { user_id: userOf(1), plan: "free", period_start: MAY.start, billable_sessions: 2 },
        { user_id: paid1, plan: "payg", period_start: PERIOD_START, billable_sessions: 1 },
      ],
      [{ user_id: userOf(2), plan: "free", period_start: MAY.start, billable_sessions: 3 }],
      [
        { user_id: userOf(3), plan: "free", period_start: MAY.start, billable_sessions: 4 },
        { user_id: paid3, plan: "payg", period_start: PERIOD_START, billable_sessions: 1 },
      ],
    ]);
    const rollups = await perShard("SELECT user_id, reason, sessions FROM daily_rollups ORDER BY user_id");
    expect(rollups).toEqual([
      [{ user_id: userOf(0), reason: "success", sessions: 1 }],
      [
        { user_id: paid1, reason: "success", sessions: 1 },
        { user_id: userOf(1), reason: "success", sessions: 2 },
      ].sort((a, b) => (a.user_id < b.user_id ? -1 : 1)),
      [{ user_id: userOf(2), reason: "success", sessions: 3 }],
      [
        { user_id: paid3, reason: "success", sessions: 1 },
        { user_id: userOf(3), reason: "success", sessions: 4 },
      ].sort((a, b) => (a.user_id < b.user_id ? -1 : 1)),
    ]);

    // the biller hears of both paid series, each usage message naming users of one shard
    const shards = shardsOf(h.env);
    const messages = usageOf(h.verdicts);
    expect(messages.flatMap((m) => m.series.map((s) => s.user_id)).sort()).toEqual([paid1, paid3].sort());
    for (const m of messages) {
      expect(new Set(m.series.map((s) => shards.indexOf(s.user_id))).size).toBe(1);
    }
  });

  it("gives every shard a pass when the run's budget is spent", async () => {
    const h = await shardedHarness();
    // two agenda rows per shard (two receipts, two due times)
    for (const at of [RECEIVED, RECEIVED + 1000]) {
      const events = [0, 1, 2, 3].flatMap((i) => endedSessions(`s${i}_${at}`, userOf(i), 1));
      await deliver(h, [{ body: eventsMessage(events, at) }], at);
    }
    const first = await sweepDueSessions(h.env, AFTER_SETTLE + 1000, { sessionsPerPass: 1, budgetMs: 0 });
    expect(first).toMatchObject({ rows: 4, judged: 4, passes: 4, more: true });
    expect((await agendaByShard()).map((ids) => ids.length)).toEqual([1, 1, 1, 1]);
    const second = await sweepDueSessions(h.env, AFTER_SETTLE + 1000, { sessionsPerPass: 1, budgetMs: 0 });
    expect(second).toMatchObject({ rows: 4, judged: 4, passes: 4 });
    expect(await agendaByShard()).toEqual([[], [], [], []]);
  });

  it("judges the other shards when one fails, and fails the run; the next run judges the rest", async () => {
    const failing = new MeteredD1(env.DB_1);
    const h = await shardedHarness({ DB_1: failing.db });
    const events = [0, 1, 2, 3].flatMap((i) => endedSessions(`s${i}`, userOf(i), 1));
    await deliver(h, [{ body: eventsMessage(events, RECEIVED) }], RECEIVED);
    failing.failBeforeBatch = 1; // the verdict batch of shard 1
    await expect(sweepDueSessions(h.env, AFTER_SETTLE)).rejects.toThrow(/injected D1 failure/);
    const unjudged = await perShard<{ session_id: string }>(
      "SELECT session_id FROM sessions WHERE verdict_at IS NULL",
    );
    expect(unjudged).toEqual([[], [{ session_id: "s1_0" }], [], []]);
    expect(await agendaByShard()).toEqual([[], ["s1_0"], [], []]);

    expect(await sweepDueSessions(h.env, AFTER_SETTLE)).toMatchObject({ rows: 1, judged: 1, more: false });
    expect(await agendaByShard()).toEqual([[], [], [], []]);
  });
});

describe("judge messages with four D1 shards", () => {
  it("judge the named sessions on whichever shard holds them", async () => {
    const h = await shardedHarness();
    const events = [1, 2].map((i) => ev("created", { session: `quiet_${i}`, user: userOf(i), time: T0 }));
    await deliver(h, [{ body: eventsMessage(events, RECEIVED) }], RECEIVED);
    const r = await deliver(
      h,
      [{ id: "j1", body: judgeMessage(["quiet_1", "quiet_2", "nowhere"], RECEIVED + STALE_MS) }],
      RECEIVED + STALE_MS,
    );
    expect(r).toMatchObject({ acked: ["j1"], retried: [] });
    expect(await perShard("SELECT session_id, verdict_at, reason FROM sessions")).toEqual([
      [],
      [{ session_id: "quiet_1", verdict_at: RECEIVED + STALE_MS, reason: "not_connected" }],
      [{ session_id: "quiet_2", verdict_at: RECEIVED + STALE_MS, reason: "not_connected" }],
      [],
    ]);
  });
});
