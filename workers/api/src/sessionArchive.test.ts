/**
 * The session archive on the local runtime (D1 and R2), with the real migrations: which user-days
 * leave D1 (old enough and settled) and which wait (and are archived once settled), what the
 * object and its manifest row hold, that a repeat writes and deletes nothing more, and that a run
 * cut off at each step (before the object, before the manifest row, between the archive and the
 * deletes, between two batches of deletes) removes nothing unarchived and is finished by a later
 * run. Sessions are inserted as the classifier leaves them: judged, with their daily rollup.
 */

import {
  createExecutionContext,
  createScheduledController,
  env,
  waitOnExecutionContext,
} from "cloudflare:test";
import { type LogFields, type Logger, listSessions } from "@aigate/shared";
import { describe, expect, it } from "vitest";
import { RETENTION_CRON, readRetentionConfig } from "./config";
import worker from "./index";
import {
  type ArchivedSession,
  archiveKey,
  archiveUserDay,
  gunzip,
  gzip,
  parseNdjson,
  runSessionArchive,
  SESSION_COLUMNS,
  sha256Hex,
  toNdjson,
} from "./sessionArchive";

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 11, 1, 9, 30);
/** A day well past the 45-day window, and one inside it. */
const OLD = Date.UTC(2026, 8, 10);
const YOUNG = NOW - 44 * DAY;
const CONFIG = readRetentionConfig({});

function quietLogger(): Logger & { lines: Array<{ msg: string; fields?: LogFields }> } {
  const lines: Array<{ msg: string; fields?: LogFields }> = [];
  const logger: Logger & { lines: typeof lines } = {
    lines,
    info: (msg, fields) => lines.push({ msg, fields }),
    warn: (msg, fields) => lines.push({ msg, fields }),
    error: (msg, fields) => lines.push({ msg, fields }),
    child: () => logger,
  };
  return logger;
}

interface SeriesSpec {
  user: string;
  plan: "payg" | "pro";
  periodStart: number;
  billable: number;
  frozen?: boolean;
  stripeBilled?: number;
  adjusted?: number;
}

async function insertSeries(s: SeriesSpec) {
  const frozen = s.frozen ?? true;
  await env.DB.prepare(
    `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, seq_top, updated_at,
       frozen_at, stripe_billed, billed_seq, adjusted, stripe_invoice_id, stripe_customer_id)
     VALUES (?1, ?2, ?3, ?3 + 30 * 86400000, ?4, ?4, 0, ?5, ?6, ?6, ?7, ?8, 'cus_x')`,
  )
    .bind(
      s.user,
      s.plan,
      s.periodStart,
      s.billable,
      frozen ? s.periodStart + 31 * DAY : null,
      s.stripeBilled ?? (frozen ? s.billable : null),
      s.adjusted ?? 0,
      frozen ? `in_${s.user}` : null,
    )
    .run();
}

interface SessionSpec {
  id: string;
  user: string;
  billedAt: number;
  plan: "free" | "payg" | "pro";
  periodStart: number;
  seq?: number;
  billable?: boolean;
}

async function insertSessions(rows: SessionSpec[]) {
  const rollup = env.DB.prepare(
    `INSERT INTO daily_rollups (user_id, day, reason, sessions, audio_ms)
     VALUES (?1, strftime('%Y-%m-%d', ?2 / 1000, 'unixepoch'), ?3, 1, 6000)
     ON CONFLICT (user_id, day, reason) DO UPDATE SET sessions = sessions + 1, audio_ms = audio_ms + 6000`,
  );
  const stmt = env.DB.prepare(
    `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, created_at, first_event_at,
       last_event_at, ended_at, audio_ms, open, verdict_at, billable, reason, rule_version, billed_at, plan,
       period_start, seq, event_digest)
     VALUES (?1, ?2, 'proj_1', ?3, ?3 + 42000, ?3, ?3, ?3 + 42000, ?3 + 42000, 6000, 0, ?3 + 60000, ?4, ?5, 3, ?3,
       ?6, ?7, ?8, 'abcdef0123456789')`,
  );
  for (let i = 0; i < rows.length; i += 100) {
    const chunk = rows.slice(i, i + 100);
    const listed = listSessions(
      env.DB,
      chunk.map((r) => ({ user_id: r.user, session_id: r.id, billed_at: r.billedAt })),
    );
    await env.DB.batch([
      ...listed,
      ...chunk.map((r) => {
        const billable = r.billable ?? true;
        return stmt.bind(
          r.id,
          r.user,
          r.billedAt,
          billable ? 1 : 0,
          billable ? "success" : "too_short",
          r.plan,
          r.periodStart,
          billable ? (r.seq ?? null) : null,
        );
      }),
    ]);
    await env.DB.batch(
      rows
        .slice(i, i + 100)
        .map((r) => rollup.bind(r.user, r.billedAt, (r.billable ?? true) ? "success" : "too_short")),
    );
  }
}

/** `n` billable payg sessions of `user` on the day of `day`, one a minute, ranked from `seq0 + 1`. */
function payg(
  user: string,
  day: number,
  n: number,
  periodStart: number,
  seq0 = 0,
  prefix = "s",
): SessionSpec[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}_${user}_${String(seq0 + i).padStart(4, "0")}`,
    user,
    billedAt: day + 3_600_000 + i * 60_000,
    plan: "payg" as const,
    periodStart,
    seq: seq0 + i + 1,
  }));
}

async function sessionIds(user: string): Promise<string[]> {
  const { results } = await env.DB.prepare("SELECT session_id FROM sessions WHERE user_id = ?1 ORDER BY 1")
    .bind(user)
    .all<{ session_id: string }>();
  return results.map((r) => r.session_id);
}

async function allRows(user: string): Promise<ArchivedSession[]> {
  const { results } = await env.DB.prepare(
    `SELECT ${SESSION_COLUMNS.join(", ")} FROM sessions WHERE user_id = ?1 ORDER BY billed_at, session_id`,
  )
    .bind(user)
    .all<ArchivedSession>();
  return results;
}

/** The session ids a user's session lists name (each list row's ids, in row order). */
async function listedIds(user: string): Promise<string[]> {
  const { results } = await env.DB.prepare(
    `SELECT j.value AS id FROM session_lists l, json_each(l.session_ids) j WHERE l.user_id = ?1 ORDER BY 1`,
  )
    .bind(user)
    .all<{ id: string }>();
  return results.map((r) => r.id);
}

async function manifest(user: string, day: string) {
  return env.DB.prepare("SELECT * FROM session_archives WHERE user_id = ?1 AND day = ?2")
    .bind(user, day)
    .first<{
      object_key: string;
      row_count: number;
      byte_size: number;
      sha256: string;
      first_session_id: string;
      last_session_id: string;
    }>();
}

async function waitingList(): Promise<string[][]> {
  const { results } = await env.DB.prepare(
    "SELECT user_id, day FROM session_archive_waiting ORDER BY day, user_id",
  ).all<{
    user_id: string;
    day: string;
  }>();
  return results.map((r) => [r.user_id, r.day]);
}

async function objectBytes(key: string): Promise<Uint8Array | null> {
  const object = await env.ARCHIVE.get(key);
  return object ? new Uint8Array(await object.arrayBuffer()) : null;
}

/** A D1 whose statements matching `sql` fail from their `after`-th run on (a crash at that point). */
function crashingDb(db: D1Database, sql: RegExp, after: number): D1Database {
  let runs = 0;
  return new Proxy(db, {
    get(target, prop) {
      if (prop === "prepare")
        return (text: string) => {
          const stmt = target.prepare(text);
          if (!sql.test(text)) return stmt;
          return new Proxy(stmt, {
            get(s, p) {
              if (p !== "bind") return Reflect.get(s, p);
              return (...values: unknown[]) => ({
                run: async () => {
                  if (runs++ >= after) throw new Error("simulated crash");
                  return s.bind(...values).run();
                },
              });
            },
          });
        };
      const value: unknown = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** An R2 bucket whose writes fail. */
function failingBucket(bucket: R2Bucket): R2Bucket {
  return new Proxy(bucket, {
    get(target, prop) {
      if (prop === "put")
        return async () => {
          throw new Error("simulated R2 outage");
        };
      const value: unknown = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** A settled payg user with `n` sessions on the OLD day, in one frozen series. */
async function settledUser(name: string, n: number) {
  const user = `${name}_${crypto.randomUUID().slice(0, 8)}`;
  const period = Date.UTC(2026, 8, 1);
  await insertSeries({ user, plan: "payg", periodStart: period, billable: n });
  await insertSessions(payg(user, OLD, n, period));
  return user;
}

describe("the archive's format", () => {
  it("gives the same bytes for the same rows in any order, and reads back what it wrote", async () => {
    const rows = payg("u", OLD, 3, OLD, 0).map((r) => ({ ...r }));
    await insertSessions(rows);
    const stored = await allRows("u");
    const a = await gzip(toNdjson(stored));
    const b = await gzip(toNdjson([...stored].reverse()));
    expect(await sha256Hex(a)).toBe(await sha256Hex(b));
    expect(parseNdjson(await gunzip(a))).toEqual(stored);
    // every column of the table, one object per line
    const first = (await gunzip(a)).split("\n")[0] ?? "";
    expect(Object.keys(JSON.parse(first))).toEqual(SESSION_COLUMNS);
    expect(archiveKey("user/1 é", "2026-09-10")).toBe("sessions/v1/2026-09-10/user%2F1%20%C3%A9.ndjson.gz");
  });
});

describe("which sessions leave D1", () => {
  it("archives a settled user-day past the window, then deletes it; the object and its manifest say what it holds", async () => {
    const user = await settledUser("settled", 7);
    const before = await allRows(user);
    const result = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger(), {});
    expect(result).toMatchObject({ archived: 1, written: 1, deleted: 7, waiting: 0, more: false });
    expect(await sessionIds(user)).toEqual([]);

    const m = await manifest(user, "2026-09-10");
    expect(m).toMatchObject({
      object_key: archiveKey(user, "2026-09-10"),
      row_count: 7,
      first_session_id: before[0]?.session_id,
      last_session_id: before[6]?.session_id,
    });
    const bytes = await objectBytes(m?.object_key ?? "");
    expect(bytes).not.toBeNull();
    expect(bytes?.length).toBe(m?.byte_size);
    expect(await sha256Hex(bytes ?? new Uint8Array())).toBe(m?.sha256);
    expect(parseNdjson(await gunzip(bytes ?? new Uint8Array()))).toEqual(before);
  });

  it("keeps a day inside the window, and archives free and unbillable sessions past it", async () => {
    const user = `mixed_${crypto.randomUUID().slice(0, 8)}`;
    const freeMonth = Date.UTC(2026, 8, 1);
    await insertSessions([
      { id: "free_old", user, billedAt: OLD + 1000, plan: "free", periodStart: freeMonth, seq: 1 },
      { id: "failed_old", user, billedAt: OLD + 2000, plan: "payg", periodStart: freeMonth, billable: false },
      { id: "free_young", user, billedAt: YOUNG, plan: "free", periodStart: Date.UTC(2026, 9, 1), seq: 1 },
    ]);
    const result = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    expect(result).toMatchObject({ archived: 1, deleted: 2, waiting: 0 });
    expect(await sessionIds(user)).toEqual(["free_young"]);
  });

  it("only takes whole UTC days past the window: the day the window reaches into stays whole", async () => {
    const user = `edge_${crypto.randomUUID().slice(0, 8)}`;
    const edgeDay = Math.floor((NOW - CONFIG.sessionsMs) / DAY) * DAY;
    await insertSessions([
      { id: "before_edge", user, billedAt: edgeDay - 1, plan: "free", periodStart: edgeDay - DAY, seq: 1 },
      { id: "on_edge", user, billedAt: edgeDay, plan: "free", periodStart: edgeDay - DAY, seq: 2 },
    ]);
    await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    expect(await sessionIds(user)).toEqual(["on_edge"]);
  });

  it("leaves a whole user-day waiting while one of its sessions is in a series not settled", async () => {
    const period = Date.UTC(2026, 8, 1);
    const cases: Array<[string, (user: string) => Promise<void>]> = [
      [
        "not frozen (although Stripe's count matches so far)",
        (user) =>
          insertSeries({
            user,
            plan: "payg",
            periodStart: period,
            billable: 2,
            stripeBilled: 2,
            frozen: false,
          }),
      ],
      [
        "counting more than billed and adjusted",
        (user) => insertSeries({ user, plan: "payg", periodStart: period, billable: 2, stripeBilled: 1 }),
      ],
      [
        "with a pending adjustment",
        async (user) => {
          await insertSeries({
            user,
            plan: "payg",
            periodStart: period,
            billable: 2,
            stripeBilled: 1,
            adjusted: 1,
          });
          await env.DB.prepare(
            `INSERT INTO usage_adjustments (id, user_id, plan, period_start, stripe_customer_id, sessions, from_seq,
               to_seq, amount_cents, currency, state, created_at, updated_at)
             VALUES (?1, ?2, 'payg', ?3, 'cus_x', 1, 1, 2, 10, 'usd', 'pending', 0, 0)`,
          )
            .bind(`adj_${user}`, user, period)
            .run();
        },
      ],
      [
        "with a re-attribution waiting",
        async (user) => {
          await insertSeries({ user, plan: "payg", periodStart: period, billable: 2 });
          await env.DB.prepare(
            "INSERT INTO reattributions (user_id, from_ms, requested_at) VALUES (?1, ?2, ?2)",
          )
            .bind(user, OLD - DAY)
            .run();
        },
      ],
    ];
    for (const [name, setup] of cases) {
      const user = `wait_${crypto.randomUUID().slice(0, 8)}`;
      await setup(user);
      await insertSessions([
        ...payg(user, OLD, 2, period),
        { id: `failed_${user}`, user, billedAt: OLD + 5, plan: "payg", periodStart: period, billable: false },
      ]);
      const result = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
      expect(result, name).toMatchObject({ archived: 0, deleted: 0, waiting: 1, waiting_listed: 1 });
      expect((await sessionIds(user)).length, name).toBe(3);
      expect(await manifest(user, "2026-09-10"), name).toBeNull();
      expect(await waitingList(), name).toEqual([[user, "2026-09-10"]]);
      await env.DB.batch([
        env.DB.prepare("DELETE FROM sessions WHERE user_id = ?1").bind(user),
        env.DB.prepare("DELETE FROM session_archive_waiting"),
        env.DB.prepare("DELETE FROM session_archive_cursor"),
      ]);
    }
  });

  it("works past a waiting user-day, within its limits, and archives it once its series is settled", async () => {
    const period = Date.UTC(2026, 8, 1);
    const waiting = `a_wait_${crypto.randomUUID().slice(0, 8)}`;
    await insertSeries({ user: waiting, plan: "payg", periodStart: period, billable: 3, frozen: false });
    await insertSessions(payg(waiting, OLD - DAY, 3, period));
    const users = [await settledUser("b", 2), await settledUser("c", 2), await settledUser("d", 2)];
    const first = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger(), {
      maxUserDays: 3,
      scanPage: 2,
    });
    expect(first).toMatchObject({ archived: 2, waiting: 1, waiting_listed: 1, more: true });
    expect(await waitingList()).toEqual([[waiting, "2026-09-09"]]);
    const second = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger(), { scanPage: 2 });
    // the waiting user-day looked at again (still waiting), the scan goes on from where it was
    expect(second).toMatchObject({ archived: 1, waiting: 1, waiting_listed: 1, more: false });
    for (const user of users) expect(await sessionIds(user)).toEqual([]);
    expect((await sessionIds(waiting)).length).toBe(3);

    // Stripe invoices the series: the next run archives the waiting user-day and lists it no more
    await env.DB.prepare(
      `UPDATE usage_periods SET frozen_at = ?2, stripe_billed = 3, billed_seq = 3, stripe_invoice_id = 'in_x'
       WHERE user_id = ?1`,
    )
      .bind(waiting, NOW - DAY)
      .run();
    const third = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    expect(third).toMatchObject({ archived: 1, deleted: 3, waiting: 0, waiting_listed: 0 });
    expect(await sessionIds(waiting)).toEqual([]);
    expect(await waitingList()).toEqual([]);
  });
});

describe("the minute scan and the hourly waiting list", () => {
  it("splits the work: a scan-only run leaves the waiting list alone, a waiting-only run does not scan", async () => {
    const period = Date.UTC(2026, 8, 1);
    const waiting = `a_wait_${crypto.randomUUID().slice(0, 8)}`;
    await insertSeries({ user: waiting, plan: "payg", periodStart: period, billable: 3, frozen: false });
    await insertSessions(payg(waiting, OLD - DAY, 3, period));
    // the minute's scan lists it as waiting
    const scan = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger(), {
      maxWaitingChecks: 0,
    });
    expect(scan).toMatchObject({ archived: 0, waiting: 1, waiting_listed: 1, more: false });
    await env.DB.prepare(
      `UPDATE usage_periods SET frozen_at = ?2, stripe_billed = 3, billed_seq = 3, stripe_invoice_id = 'in_x'
       WHERE user_id = ?1`,
    )
      .bind(waiting, NOW - DAY)
      .run();
    const later = await settledUser("later", 2);
    // another minute: new user-days only, the waiting one is not looked at
    const minute = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger(), {
      maxWaitingChecks: 0,
    });
    expect(minute).toMatchObject({ archived: 1, waiting: 0, waiting_listed: 1 });
    expect(await sessionIds(later)).toEqual([]);
    expect((await sessionIds(waiting)).length).toBe(3);
    // the hour: the waiting list only, and the scan does not move
    const before = await env.DB.prepare("SELECT day, user_id FROM session_archive_cursor").first();
    const hour = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger(), { maxUserDays: 0 });
    expect(hour).toMatchObject({ archived: 1, deleted: 3, waiting_listed: 0, more: false });
    expect(await env.DB.prepare("SELECT day, user_id FROM session_archive_cursor").first()).toEqual(before);
    expect(await sessionIds(waiting)).toEqual([]);
  });
});

describe("idempotent and resumable", () => {
  it("writes nothing and deletes nothing more when run again", async () => {
    const user = await settledUser("again", 5);
    await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    const key = archiveKey(user, "2026-09-10");
    const bytes = await objectBytes(key);
    const etag = (await env.ARCHIVE.head(key))?.etag;
    const again = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    expect(again).toMatchObject({ archived: 0, written: 0, deleted: 0 });
    // and a scan from the start (its cursor lost) finds nothing left to do either
    await env.DB.prepare("DELETE FROM session_archive_cursor").run();
    const rescan = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    expect(rescan).toMatchObject({ archived: 0, written: 0, deleted: 0, waiting: 0, failed: 0 });
    expect(await objectBytes(key)).toEqual(bytes);
    expect((await env.ARCHIVE.head(key))?.etag).toBe(etag);
  });

  it("deletes nothing when the object cannot be written, and nothing when the manifest row cannot", async () => {
    const user = await settledUser("nowrite", 4);
    const outage = quietLogger();
    expect(await runSessionArchive(env.DB, failingBucket(env.ARCHIVE), CONFIG, NOW, outage)).toMatchObject({
      archived: 0,
      deleted: 0,
      failed: 1,
    });
    expect(outage.lines).toContainEqual(
      expect.objectContaining({
        msg: "session archive of a user-day failed",
        fields: expect.objectContaining({ user_id: user, day: "2026-09-10", error: "simulated R2 outage" }),
      }),
    );
    expect((await sessionIds(user)).length).toBe(4);
    expect(await manifest(user, "2026-09-10")).toBeNull();

    expect(
      await runSessionArchive(
        crashingDb(env.DB, /INSERT INTO session_archives/, 0),
        env.ARCHIVE,
        CONFIG,
        NOW,
        quietLogger(),
      ),
    ).toMatchObject({ failed: 1, deleted: 0 });
    expect((await sessionIds(user)).length).toBe(4);
    expect(await manifest(user, "2026-09-10")).toBeNull();

    // the next run finishes: the object is written again, the same bytes
    const before = await allRows(user);
    const result = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    expect(result).toMatchObject({ archived: 1, deleted: 4 });
    const m = await manifest(user, "2026-09-10");
    const bytes = (await objectBytes(m?.object_key ?? "")) ?? new Uint8Array();
    expect(parseNdjson(await gunzip(bytes))).toEqual(before);
  });

  it("goes on past a user-day that fails, reports it, and archives it on a later run", async () => {
    const broken = await settledUser("a_broken", 2);
    const healthy = await settledUser("b_healthy", 3);
    // R2 refuses the first user's object only
    const bucket = new Proxy(env.ARCHIVE, {
      get(target, prop) {
        if (prop === "put")
          return async (key: string, ...rest: unknown[]) => {
            if (key === archiveKey(broken, "2026-09-10")) throw new Error("simulated R2 error");
            return Reflect.apply(target.put, target, [key, ...rest]);
          };
        const value: unknown = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const log = quietLogger();
    const result = await runSessionArchive(env.DB, bucket, CONFIG, NOW, log);
    expect(result).toMatchObject({ archived: 1, deleted: 3, failed: 1, waiting_listed: 1 });
    expect(await sessionIds(healthy)).toEqual([]);
    expect((await sessionIds(broken)).length).toBe(2);
    expect(log.lines.at(-1)?.msg).toBe("session archive done");
    expect(log.lines.find((l) => l.msg === "session archive of a user-day failed")?.fields).toMatchObject({
      user_id: broken,
      day: "2026-09-10",
      error: "simulated R2 error",
    });

    const later = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    expect(later).toMatchObject({ archived: 1, deleted: 2, failed: 0, waiting_listed: 0 });
    expect(await sessionIds(broken)).toEqual([]);
  });

  it("refuses to merge into an archived object that no longer matches its manifest", async () => {
    const user = await settledUser("damaged", 2);
    await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    await env.ARCHIVE.put(archiveKey(user, "2026-09-10"), "not what was archived");
    await insertSessions([
      { id: "a_left", user, billedAt: OLD + 1, plan: "free", periodStart: Date.UTC(2026, 8, 1), seq: 1 },
    ]);
    await expect(
      archiveUserDay({ db: env.DB, bucket: env.ARCHIVE, now: NOW }, user, "2026-09-10"),
    ).rejects.toThrow(/has sha256 [0-9a-f]{64}, manifest [0-9a-f]{64}/);
    expect(await sessionIds(user)).toEqual(["a_left"]);
  });

  it("deletes nothing when the object was replaced between the archive and the deletes", async () => {
    const user = await settledUser("replaced", 3);
    // another writer replaces the object while the manifest row is being written
    const racing = new Proxy(env.DB, {
      get(target, prop) {
        if (prop === "prepare")
          return (text: string) => {
            const stmt = target.prepare(text);
            if (!/INSERT INTO session_archives/.test(text)) return stmt;
            return new Proxy(stmt, {
              get(s, p) {
                if (p !== "bind") return Reflect.get(s, p);
                return (...values: unknown[]) => ({
                  run: async () => {
                    const result = await s.bind(...values).run();
                    await env.ARCHIVE.put(archiveKey(user, "2026-09-10"), await gzip("{}\n"), {
                      customMetadata: { sha256: "other" },
                    });
                    return result;
                  },
                });
              },
            });
          };
        const value: unknown = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const log = quietLogger();
    expect(await runSessionArchive(racing, env.ARCHIVE, CONFIG, NOW, log)).toMatchObject({
      failed: 1,
      deleted: 0,
    });
    expect((await sessionIds(user)).length).toBe(3);
    expect(
      String(log.lines.find((l) => l.msg === "session archive of a user-day failed")?.fields?.error),
    ).toContain("changed before its sessions were deleted");
  });

  it("a crash between the archive and the deletes leaves every row; the next run deletes them without rewriting", async () => {
    const user = await settledUser("between", 6);
    const before = await allRows(user);
    expect(
      await runSessionArchive(
        crashingDb(env.DB, /DELETE FROM sessions/, 0),
        env.ARCHIVE,
        CONFIG,
        NOW,
        quietLogger(),
      ),
    ).toMatchObject({ failed: 1, deleted: 0 });
    expect(await allRows(user)).toEqual(before);
    const m = await manifest(user, "2026-09-10");
    expect(m?.row_count).toBe(6);
    const bytes = await objectBytes(m?.object_key ?? "");

    const result = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    expect(result).toMatchObject({ archived: 1, written: 0, deleted: 6 });
    expect(await sessionIds(user)).toEqual([]);
    expect(await objectBytes(m?.object_key ?? "")).toEqual(bytes);
  });

  it("a crash between two batches of deletes leaves whole batches; the next run finishes with the same object", async () => {
    const user = await settledUser("batches", 10);
    const before = await allRows(user);
    await expect(
      archiveUserDay(
        { db: crashingDb(env.DB, /DELETE FROM sessions/, 2), bucket: env.ARCHIVE, now: NOW, deleteBatch: 3 },
        user,
        "2026-09-10",
      ),
    ).rejects.toThrow("simulated crash");
    // two batches of 3 went, in billing-time order; the day's list still names every session
    expect(await allRows(user)).toEqual(before.slice(6));
    expect(await listedIds(user)).toEqual(before.map((r) => r.session_id).sort());
    const key = archiveKey(user, "2026-09-10");
    const bytes = await objectBytes(key);

    const result = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger(), {
      deleteBatch: 3,
    });
    expect(result).toMatchObject({ archived: 1, written: 0, deleted: 4 });
    expect(await sessionIds(user)).toEqual([]);
    expect(await listedIds(user)).toEqual([]);
    expect(await objectBytes(key)).toEqual(bytes);
    expect(parseNdjson(await gunzip(bytes ?? new Uint8Array()))).toEqual(before);
  });

  it("adds a row left in an archived day to its object, keeping the ones already archived", async () => {
    const user = await settledUser("late", 3);
    const archived = await allRows(user);
    await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    // an unbillable session of that day judged after the archive ran
    await insertSessions([
      {
        id: "a_late",
        user,
        billedAt: OLD + 10,
        plan: "payg",
        periodStart: Date.UTC(2026, 8, 1),
        billable: false,
      },
    ]);
    const late = await allRows(user);
    // (the scan has passed that day; a user-day left with rows is looked at again from the waiting list)
    const result = await archiveUserDay({ db: env.DB, bucket: env.ARCHIVE, now: NOW }, user, "2026-09-10");
    expect(result).toMatchObject({ state: "archived", written: true, rows: 4, deleted: 1, remaining: 0 });
    const m = await manifest(user, "2026-09-10");
    expect(m).toMatchObject({ row_count: 4, first_session_id: "a_late" });
    const bytes = (await objectBytes(m?.object_key ?? "")) ?? new Uint8Array();
    expect(parseNdjson(await gunzip(bytes))).toEqual([...late, ...archived]);
  });

  it("keeps a row that changed after it was archived, and archives its new state on the next run", async () => {
    const user = await settledUser("changed", 2);
    const [first] = await allRows(user);
    // a late event lands between the archive and the delete
    const racing = new Proxy(env.DB, {
      get(target, prop) {
        if (prop === "prepare")
          return (text: string) => {
            const stmt = target.prepare(text);
            if (!/DELETE FROM sessions/.test(text)) return stmt;
            return new Proxy(stmt, {
              get(s, p) {
                if (p !== "bind") return Reflect.get(s, p);
                return (...values: unknown[]) => ({
                  run: async () => {
                    await target
                      .prepare("UPDATE sessions SET late_events = late_events + 1 WHERE session_id = ?1")
                      .bind(first?.session_id)
                      .run();
                    return s.bind(...values).run();
                  },
                });
              },
            });
          };
        const value: unknown = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const result = await runSessionArchive(racing, env.ARCHIVE, CONFIG, NOW, quietLogger());
    // the changed row stays, and its user-day is listed to be looked at again
    expect(result).toMatchObject({ archived: 0, deleted: 1, waiting_listed: 1 });
    expect(await sessionIds(user)).toEqual([first?.session_id]);
    expect(await waitingList()).toEqual([[user, "2026-09-10"]]);
    // its list row stays (it names a session still in D1), so the sessions API still finds it
    expect(await listedIds(user)).toContain(first?.session_id);

    const next = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quietLogger());
    expect(next).toMatchObject({ archived: 1, written: 1, deleted: 1, waiting_listed: 0 });
    expect(await sessionIds(user)).toEqual([]);
    const m = await manifest(user, "2026-09-10");
    const rows = parseNdjson(await gunzip((await objectBytes(m?.object_key ?? "")) ?? new Uint8Array()));
    expect(rows.find((r) => r.session_id === first?.session_id)?.late_events).toBe(1);
    expect(rows.length).toBe(2);
    expect(await listedIds(user)).toEqual([]);
  });

  it("a crash after the deletes, before the day's list rows go, is finished by the next run", async () => {
    const user = await settledUser("lists", 4);
    const ids = await sessionIds(user);
    expect(await listedIds(user)).toEqual(ids);
    await expect(
      archiveUserDay(
        { db: crashingDb(env.DB, /DELETE FROM session_lists/, 0), bucket: env.ARCHIVE, now: NOW },
        user,
        "2026-09-10",
      ),
    ).rejects.toThrow("simulated crash");
    expect(await sessionIds(user)).toEqual([]);
    expect(await listedIds(user)).toEqual(ids);

    const again = await archiveUserDay({ db: env.DB, bucket: env.ARCHIVE, now: NOW }, user, "2026-09-10");
    expect(again).toMatchObject({ state: "archived", rows: 0, deleted: 0, remaining: 0 });
    expect(await listedIds(user)).toEqual([]);
  });
});

describe("settings and the cron", () => {
  it("refuses a sessions window shorter than Stripe's horizon plus the invoice grace, saying why", () => {
    expect(readRetentionConfig({ RETENTION_SESSIONS_DAYS: "39" }).sessionsMs).toBe(39 * DAY);
    expect(() => readRetentionConfig({ RETENTION_SESSIONS_DAYS: "38" })).toThrow(
      "invalid worker settings: RETENTION_SESSIONS_DAYS: at least 39 days (Stripe's 35 days of meter events and reconciliation, 3 days of invoice grace and a day of margin), got 38",
    );
  });

  it("takes new user-days with the minute cron and looks again at waiting ones with the hourly cron, on the Worker's own bucket", async () => {
    const user = `cron_${crypto.randomUUID().slice(0, 8)}`;
    const now = Date.now();
    const old = now - 50 * DAY;
    await insertSessions([{ id: "cron_old", user, billedAt: old, plan: "free", periodStart: old, seq: 1 }]);
    // the hourly run does not scan
    const hourly = createExecutionContext();
    await worker.scheduled(
      createScheduledController({ cron: RETENTION_CRON, scheduledTime: now }),
      env,
      hourly,
    );
    await waitOnExecutionContext(hourly);
    expect(await sessionIds(user)).toEqual(["cron_old"]);
    const ctx = createExecutionContext();
    await worker.scheduled(createScheduledController({ cron: "* * * * *", scheduledTime: now }), env, ctx);
    await waitOnExecutionContext(ctx);
    expect(await sessionIds(user)).toEqual([]);
    const day = new Date(old).toISOString().slice(0, 10);
    expect(await env.ARCHIVE.head(archiveKey(user, day))).not.toBeNull();
  });
});
