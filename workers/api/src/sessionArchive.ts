/**
 * The session archive (docs/operations.md "Retention"): the api's crons move judged
 * sessions that can no longer change any money out of D1, into R2, so `sessions` stays bounded
 * by traffic over a window instead of growing forever.
 *
 * The unit is a **user-day**: a user's sessions whose billing time falls on one UTC day. A
 * user-day is archived only when the whole day is older than RETENTION_SESSIONS_DAYS and every
 * one of its sessions is settled (`archivable` below: unbillable or free, or in a paid series
 * that is frozen with nothing left to adjust, and no re-attribution of the user waiting). Then,
 * in this order:
 *
 * 1. its rows (every column) are written to R2 as gzipped NDJSON under a key that depends only
 *    on the user and the day (`sessions/v1/<day>/<user>.ndjson.gz`), in billing-time order, merged
 *    with what an earlier run already archived for that user-day (so rows left behind by an
 *    earlier run are added, never overwriting the ones already gone from D1);
 * 2. its manifest row (`session_archives`: key, row count, byte size, sha256, first and last
 *    session id) is upserted;
 * 3. the object is checked to be still the one just written, then its sessions are deleted in
 *    batches, each batch one statement that deletes a row only if it still holds what was
 *    archived (a row that changed meanwhile stays for the next run).
 *
 * The same rows give the same bytes, so a repeated run finds the manifest's sha256 unchanged and
 * the object in place, writes nothing and goes on deleting. A run cut off anywhere leaves either
 * all the user-day's rows (before step 3), or whole batches of them: nothing leaves D1 before
 * its object and manifest row exist, and a later run finishes the work by the same rule.
 *
 * **Finding the user-days** without an index on `sessions` (one would cost a row written per
 * session): `daily_rollups` holds a row for every user-day with a judged session (written with
 * the verdict, keyed by the same UTC day of the billing time), and its day index lists them in
 * (day, user) order. A cursor (`session_archive_cursor`) remembers how far that list was walked;
 * the user-days it passed that could not be archived whole (waiting for their series, failed,
 * or a row changed during the deletes) are listed in `session_archive_waiting` and looked at
 * again by later runs, least recently checked first. The api's minute cron runs the scan (new
 * user-days only) and its hourly cron the waiting list (no scan), so the two never take the same
 * user-day; should two runs of one still overlap, the check before the deletes makes the second
 * fail its user-day rather than delete rows the object no longer holds.
 *
 * On a sharded D1 each shard archives its own users' days (`runSessionArchiveOnShards`): its own
 * cursor, waiting list and manifest rows, and a share of the run's limits (so that one invocation
 * over every shard stays within D1's queries per invocation). The objects' keys name
 * the user, so every shard writes to the one bucket without meeting another's objects.
 */
import {
  addOutcome,
  billingHour,
  deleteEmptiedLists,
  errorFields,
  LISTED_SESSIONS,
  type Logger,
  onEveryShard,
  type Shards,
} from "@aigate/shared";
import { z } from "zod";
import type { RetentionConfig } from "./config";

const DAY_MS = 86_400_000;

/** Rows deleted per statement. */
export const ARCHIVE_DELETE_BATCH = 500;
/**
 * New user-days taken from the scan per run (the minute cron), and waiting ones looked at again
 * (the hourly cron, with the other retention batches, at most 60 statements): four or five D1
 * queries each, so that a run stays well under D1's 1,000 queries per invocation.
 */
export const ARCHIVE_MAX_USER_DAYS = 120;
export const ARCHIVE_MAX_WAITING_CHECKS = 30;
/** User-days read from daily_rollups per statement. */
export const ARCHIVE_SCAN_PAGE = 100;

/** Every column of `sessions`, in the table's order: an archived line holds them all. */
export const ArchivedSession = z.object({
  session_id: z.string(),
  user_id: z.string(),
  project_id: z.string(),
  source: z.string().nullable(),
  created_at: z.number().nullable(),
  first_event_at: z.number().nullable(),
  last_event_at: z.number().nullable(),
  connected: z.number(),
  connect_latency_ms: z.number().nullable(),
  turn_failed: z.number(),
  upstream_error: z.number(),
  upstream_status: z.number().nullable(),
  upstream_code: z.string().nullable(),
  audio_ms: z.number(),
  ended_at: z.number().nullable(),
  end_reason: z.string().nullable(),
  first_seen_at: z.number(),
  last_seen_at: z.number(),
  settle_due_at: z.number().nullable(),
  late_events: z.number(),
  admitted_at: z.number().nullable(),
  admitted_plan: z.string().nullable(),
  open: z.number(),
  verdict_at: z.number().nullable(),
  billable: z.number().nullable(),
  reason: z.string().nullable(),
  rule_version: z.number().nullable(),
  verdict_token: z.string().nullable(),
  event_digest: z.string().nullable(),
  conflicting_events: z.number(),
  billed_at: z.number(),
  plan: z.string().nullable(),
  period_start: z.number().nullable(),
  seq: z.number().nullable(),
});
export type ArchivedSession = z.infer<typeof ArchivedSession>;

export const SESSION_COLUMNS = Object.keys(ArchivedSession.shape) as (keyof ArchivedSession)[];

/** The UTC day (YYYY-MM-DD) of a time. */
export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** The R2 key of a user-day: only the user and the day, so a repeat lands on the same object. */
export function archiveKey(userId: string, day: string): string {
  return `sessions/v1/${day}/${encodeURIComponent(userId)}.ndjson.gz`;
}

/** The archive's order: billing time, then session id (the invoice sessions list's order). */
function byBillingTime(a: ArchivedSession, b: ArchivedSession): number {
  return (
    a.billed_at - b.billed_at || (a.session_id < b.session_id ? -1 : a.session_id > b.session_id ? 1 : 0)
  );
}

/** One line per session, every column in the table's order, in the archive's order. */
export function toNdjson(rows: ArchivedSession[]): string {
  return [...rows]
    .sort(byBillingTime)
    .map((r) => `${JSON.stringify(Object.fromEntries(SESSION_COLUMNS.map((c) => [c, r[c]])))}\n`)
    .join("");
}

async function pipeBytes(bytes: Uint8Array, transform: CompressionStream | DecompressionStream) {
  const stream = new Blob([bytes]).stream().pipeThrough(transform);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export const gzip = (text: string) =>
  pipeBytes(new TextEncoder().encode(text), new CompressionStream("gzip"));
export const gunzip = async (bytes: Uint8Array) =>
  new TextDecoder().decode(await pipeBytes(bytes, new DecompressionStream("gzip")));

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The sessions of an archived object, checked line by line. */
export function parseNdjson(text: string): ArchivedSession[] {
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => ArchivedSession.parse(JSON.parse(line)));
}

/** A manifest row (`session_archives`). */
export interface ArchiveManifest {
  user_id: string;
  day: string;
  object_key: string;
  row_count: number;
  byte_size: number;
  sha256: string;
  first_session_id: string;
  last_session_id: string;
  archived_at: number;
}

export async function manifestOf(db: D1Database, userId: string, day: string) {
  return db
    .prepare("SELECT * FROM session_archives WHERE user_id = ?1 AND day = ?2")
    .bind(userId, day)
    .first<ArchiveManifest>();
}

/**
 * The sessions of an archived user-day, read from R2 and checked by sha256: an object that is
 * missing or corrupt is an error, never an empty day. The object may be newer than its manifest
 * row (a run cut off between writing a merged object and updating the row; the next run updates
 * it): it is then accepted because its bytes match the sha256 it was written with, and a merged
 * object always holds every session of the one it replaced.
 */
export async function readArchivedDay(
  bucket: R2Bucket,
  manifest: ArchiveManifest,
): Promise<ArchivedSession[]> {
  const object = await bucket.get(manifest.object_key);
  if (!object) throw new Error(`session archive object ${manifest.object_key} is missing`);
  const bytes = new Uint8Array(await object.arrayBuffer());
  const sha = await sha256Hex(bytes);
  if (sha !== manifest.sha256 && sha !== object.customMetadata?.sha256)
    throw new Error(
      `session archive object ${manifest.object_key} has sha256 ${sha}, manifest ${manifest.sha256}`,
    );
  return parseNdjson(await gunzip(bytes));
}

/**
 * Whether a judged session can leave D1 (1) or not yet (0): no re-attribution of its user waits
 * for its time, and it is unbillable, or free (free series are never sent to Stripe), or in a paid
 * series that is frozen (Stripe billed it), counts no session beyond what Stripe billed and the
 * adjustments made, and has no adjustment still pending or not yet on a finalized invoice.
 */
const ARCHIVABLE = `CASE
    WHEN s.verdict_at IS NULL THEN 0
    WHEN EXISTS (SELECT 1 FROM reattributions r WHERE r.user_id = s.user_id AND r.from_ms <= s.billed_at) THEN 0
    WHEN s.billable = 0 OR s.plan = 'free' THEN 1
    WHEN p.frozen_at IS NOT NULL AND p.billable_sessions = coalesce(p.stripe_billed, 0) + p.adjusted
      AND NOT EXISTS (SELECT 1 FROM usage_adjustments a
        WHERE a.user_id = p.user_id AND a.plan = p.plan AND a.period_start = p.period_start
          AND (a.state = 'pending' OR a.stripe_invoice_id IS NULL)) THEN 1
    ELSE 0 END`;

type DayRow = ArchivedSession & { archivable: number };

/** Deletes a user-day's session list rows whose sessions are all gone (one naming a session that stayed is kept). */
async function deleteDayLists(db: D1Database, userId: string, day: string): Promise<void> {
  const start = Date.parse(`${day}T00:00:00Z`);
  await deleteEmptiedLists(db, userId, billingHour(start), billingHour(start + DAY_MS - 1)).run();
}

/** A user's judged sessions billed on one UTC day, each with whether it may leave D1. */
async function userDayRows(db: D1Database, userId: string, day: string): Promise<DayRow[]> {
  const start = Date.parse(`${day}T00:00:00Z`);
  const { results } = await db
    .prepare(
      `SELECT ${SESSION_COLUMNS.map((c) => `s.${c}`).join(", ")}, ${ARCHIVABLE} AS archivable
       FROM ${LISTED_SESSIONS}
       LEFT JOIN usage_periods p ON p.user_id = s.user_id AND p.plan = s.plan AND p.period_start = s.period_start
       WHERE l.user_id = ?1 AND l.hour BETWEEN ?4 AND ?5 AND s.billed_at >= ?2 AND s.billed_at < ?3
       ORDER BY s.billed_at, s.session_id`,
    )
    .bind(userId, start, start + DAY_MS, billingHour(start), billingHour(start + DAY_MS - 1))
    .all<DayRow>();
  return results;
}

/**
 * Deletes a batch of archived sessions, each only if it still holds what was archived (a late
 * event, a re-attribution or a verdict guard changing it meanwhile keeps it for the next run).
 */
const DELETE_SQL = `DELETE FROM sessions WHERE session_id IN (
    SELECT s.session_id FROM json_each(?1) j JOIN sessions s ON s.session_id = j.value ->> '$.id'
    WHERE s.user_id = ?2 AND s.last_seen_at IS j.value ->> '$.seen' AND s.late_events IS j.value ->> '$.late'
      AND s.verdict_at IS j.value ->> '$.verdict' AND s.billable IS j.value ->> '$.billable'
      AND s.billed_at IS j.value ->> '$.billed' AND s.plan IS j.value ->> '$.plan'
      AND s.period_start IS j.value ->> '$.period' AND s.seq IS j.value ->> '$.seq')`;

function deleteGuard(r: ArchivedSession) {
  return {
    id: r.session_id,
    seen: r.last_seen_at,
    late: r.late_events,
    verdict: r.verdict_at,
    billable: r.billable,
    billed: r.billed_at,
    plan: r.plan,
    period: r.period_start,
    seq: r.seq,
  };
}

export type UserDayOutcome =
  | { state: "archived"; written: boolean; rows: number; deleted: number; remaining: number }
  | { state: "waiting"; rows: number; waiting: number };

export interface ArchiveDeps {
  db: D1Database;
  bucket: R2Bucket;
  now: number;
  deleteBatch?: number;
}

/**
 * Archives and deletes one user-day (the steps in this module's comment). Nothing is done when
 * any of its sessions is not archivable yet: the day is archived whole or not at all.
 */
export async function archiveUserDay(
  deps: ArchiveDeps,
  userId: string,
  day: string,
): Promise<UserDayOutcome> {
  const { db, bucket, now } = deps;
  const rows = await userDayRows(db, userId, day);
  const waiting = rows.filter((r) => r.archivable !== 1).length;
  if (waiting > 0) return { state: "waiting", rows: rows.length, waiting };
  const live = rows.map(({ archivable: _, ...r }) => ArchivedSession.parse(r));
  if (live.length === 0) {
    // nothing left in D1 (a run cut off after its deletes may have left the day's list rows)
    await deleteDayLists(db, userId, day);
    return { state: "archived", written: false, rows: 0, deleted: 0, remaining: 0 };
  }

  // 1. the object: what is archived already for this user-day, with D1's rows over it
  const key = archiveKey(userId, day);
  const previous = await manifestOf(db, userId, day);
  const merged = new Map<string, ArchivedSession>();
  if (previous) for (const r of await readArchivedDay(bucket, previous)) merged.set(r.session_id, r);
  for (const r of live) merged.set(r.session_id, r);
  const all = [...merged.values()].sort(byBillingTime);
  const bytes = await gzip(toNdjson(all));
  const sha = await sha256Hex(bytes);
  const stored = await bucket.head(key);
  const unchanged =
    previous?.sha256 === sha && stored?.customMetadata?.sha256 === sha && stored.size === bytes.length;
  if (!unchanged) {
    await bucket.put(key, bytes, {
      sha256: sha,
      httpMetadata: { contentType: "application/x-ndjson", contentEncoding: "gzip" },
      customMetadata: { rows: String(all.length), sha256: sha, user_id: userId, day },
    });
  }

  // 2. the manifest row
  const first = all[0];
  const last = all.at(-1);
  if (!first || !last) throw new Error("unreachable: an archived user-day has rows");
  await db
    .prepare(
      `INSERT INTO session_archives (user_id, day, object_key, row_count, byte_size, sha256, first_session_id,
         last_session_id, archived_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
       ON CONFLICT (user_id, day) DO UPDATE SET object_key = excluded.object_key, row_count = excluded.row_count,
         byte_size = excluded.byte_size, sha256 = excluded.sha256, first_session_id = excluded.first_session_id,
         last_session_id = excluded.last_session_id, archived_at = excluded.archived_at
       WHERE session_archives.sha256 <> excluded.sha256`,
    )
    .bind(userId, day, key, all.length, bytes.length, sha, first.session_id, last.session_id, now)
    .run();

  // 3. the rows, in batches, once the object in R2 is still the one just archived (an archive run
  // running at the same time on the same user-day, which the crons never start, could have
  // replaced it)
  const check = await bucket.head(key);
  if (check?.customMetadata?.sha256 !== sha || check.size !== bytes.length)
    throw new Error(`session archive object ${key} changed before its sessions were deleted`);
  const batch = deps.deleteBatch ?? ARCHIVE_DELETE_BATCH;
  let deleted = 0;
  for (let i = 0; i < live.length; i += batch) {
    const guards = live.slice(i, i + batch).map(deleteGuard);
    const { meta } = await db.prepare(DELETE_SQL).bind(JSON.stringify(guards), userId).run();
    deleted += meta.changes;
  }
  await deleteDayLists(db, userId, day);
  return {
    state: "archived",
    written: !unchanged,
    rows: all.length,
    deleted,
    remaining: live.length - deleted,
  };
}

export interface SessionArchiveResult {
  /** User-days archived whole (object and manifest in place, every row deleted) by this run. */
  archived: number;
  /** Objects written (a repeat of an unchanged user-day writes none). */
  written: number;
  /** Session rows deleted from D1. */
  deleted: number;
  /** User-days looked at that hold a session not settled yet (they stay listed as waiting). */
  waiting: number;
  /**
   * User-days whose archive failed in this run (an R2 or D1 error, an archived object that does
   * not match its manifest): each is logged, left whole or in whole batches, listed as waiting
   * and tried again by a later run; the others go on.
   */
  failed: number;
  /** User-days listed as waiting after this run (all of them, not only this run's). */
  waiting_listed: number;
  /** Whether the run stopped at its limits with user-days past the window left to scan. */
  more: boolean;
}

export interface SessionArchiveOptions {
  /** New user-days the scan takes (0: no scan). */
  maxUserDays?: number;
  /** Waiting user-days looked at again (0: none). */
  maxWaitingChecks?: number;
  scanPage?: number;
  deleteBatch?: number;
}

type Tally = Omit<SessionArchiveResult, "waiting_listed" | "more">;

/** Archives one user-day for a run; true when it is done (archived whole, or nothing left in D1). */
async function handle(
  deps: ArchiveDeps,
  userId: string,
  day: string,
  tally: Tally,
  log: Logger,
): Promise<boolean> {
  let outcome: UserDayOutcome;
  try {
    outcome = await archiveUserDay(deps, userId, day);
  } catch (err) {
    tally.failed += 1;
    log.error("session archive of a user-day failed", { user_id: userId, day, ...errorFields(err) });
    return false;
  }
  if (outcome.state === "waiting") {
    tally.waiting += 1;
    return false;
  }
  tally.written += outcome.written ? 1 : 0;
  tally.deleted += outcome.deleted;
  if (outcome.remaining > 0) return false;
  if (outcome.rows > 0) tally.archived += 1;
  return true;
}

/**
 * One archive run at `now`: first some of the waiting user-days again, then the scan onwards from
 * its cursor, over the user-days whose whole UTC day is older than the window. Logs one line with
 * what it did.
 */
export async function runSessionArchive(
  db: D1Database,
  bucket: R2Bucket,
  config: RetentionConfig,
  now: number,
  log: Logger,
  opts: SessionArchiveOptions = {},
): Promise<SessionArchiveResult> {
  const maxUserDays = opts.maxUserDays ?? ARCHIVE_MAX_USER_DAYS;
  const scanPage = opts.scanPage ?? ARCHIVE_SCAN_PAGE;
  const deps: ArchiveDeps = { db, bucket, now, deleteBatch: opts.deleteBatch };
  // only whole days: user-days before the UTC day the window reaches into
  const cutoff = Math.floor((now - config.sessionsMs) / DAY_MS) * DAY_MS;
  const cutoffDay = dayOf(cutoff);
  const tally: Tally = { archived: 0, written: 0, deleted: 0, waiting: 0, failed: 0 };

  // 1. user-days the scan passed while they could not be archived whole
  const { results: waitingDays } = await db
    .prepare(
      `SELECT user_id, day FROM session_archive_waiting WHERE day < ?1
       ORDER BY checked_at, day, user_id LIMIT ?2`,
    )
    .bind(cutoffDay, opts.maxWaitingChecks ?? ARCHIVE_MAX_WAITING_CHECKS)
    .all<{ user_id: string; day: string }>();
  for (const w of waitingDays) {
    const done = await handle(deps, w.user_id, w.day, tally, log);
    const statement = done
      ? db
          .prepare("DELETE FROM session_archive_waiting WHERE user_id = ?1 AND day = ?2")
          .bind(w.user_id, w.day)
      : db
          .prepare("UPDATE session_archive_waiting SET checked_at = ?3 WHERE user_id = ?1 AND day = ?2")
          .bind(w.user_id, w.day, now);
    await statement.run();
  }

  // 2. the scan, onwards from its cursor, in daily_rollups' (day, user) order: one range of the
  // covering index idx_rollups_day (the row value keeps SQLite from sorting the whole range)
  const cursor = (await db
    .prepare("SELECT day, user_id FROM session_archive_cursor WHERE id = 1")
    .first<{ day: string; user_id: string }>()) ?? { day: "", user_id: "" };
  const scan = db.prepare(
    `SELECT day, user_id FROM daily_rollups
     WHERE (day, user_id) > (?2, ?3) AND day < ?1
     GROUP BY day, user_id ORDER BY day, user_id LIMIT ?4`,
  );
  const saveCursor = db.prepare(
    `INSERT INTO session_archive_cursor (id, day, user_id) VALUES (1, ?1, ?2)
     ON CONFLICT (id) DO UPDATE SET day = excluded.day, user_id = excluded.user_id`,
  );
  const listWaiting = db.prepare(
    `INSERT INTO session_archive_waiting (user_id, day, since, checked_at) VALUES (?1, ?2, ?3, ?3)
     ON CONFLICT (user_id, day) DO UPDATE SET checked_at = excluded.checked_at`,
  );
  let taken = 0;
  let more = false;
  scanning: for (; maxUserDays > 0; ) {
    // one more than the run may take, to know whether the scan has more
    const limit = Math.min(scanPage, maxUserDays - taken + 1);
    const { results } = await scan
      .bind(cutoffDay, cursor.day, cursor.user_id, limit)
      .all<{ day: string; user_id: string }>();
    for (const r of results) {
      if (taken >= maxUserDays) {
        more = true;
        break scanning;
      }
      taken += 1;
      // listed before the cursor passes it: a run cut off in between looks at it again
      if (!(await handle(deps, r.user_id, r.day, tally, log)))
        await listWaiting.bind(r.user_id, r.day, now).run();
      cursor.day = r.day;
      cursor.user_id = r.user_id;
    }
    // saved per page: a run cut off within a page looks at its user-days again, which is harmless
    if (results.length > 0) await saveCursor.bind(cursor.day, cursor.user_id).run();
    if (results.length < limit) break;
  }
  if (more) await saveCursor.bind(cursor.day, cursor.user_id).run();

  const listed = await db.prepare("SELECT count(*) AS n FROM session_archive_waiting").first<{ n: number }>();
  const result: SessionArchiveResult = { ...tally, waiting_listed: listed?.n ?? 0, more };
  const fields = {
    ...result,
    cutoff: new Date(cutoff).toISOString(),
    cursor: `${cursor.day} ${cursor.user_id}`,
  };
  if (result.failed > 0) log.warn("session archive done", fields);
  else log.info("session archive done", fields);
  return result;
}

/**
 * A run's limit shared among `n` shards (at least one each; 0 stays 0, "none"): the limits keep a
 * whole invocation, every shard together, under D1's queries per invocation.
 */
export function shareOfLimit(limit: number, n: number): number {
  return limit === 0 ? 0 : Math.max(1, Math.floor(limit / n));
}

/**
 * One archive run on every shard, one after the other, each with its own cursor and waiting list
 * and its share of the run's limits, added up. A shard that fails leaves the others done
 * (onEveryShard).
 */
export async function runSessionArchiveOnShards(
  shards: Shards,
  bucket: R2Bucket,
  config: RetentionConfig,
  now: number,
  log: Logger,
  opts: SessionArchiveOptions = {},
): Promise<SessionArchiveResult> {
  const n = shards.all.length;
  const perShard: SessionArchiveOptions = {
    ...opts,
    maxUserDays: shareOfLimit(opts.maxUserDays ?? ARCHIVE_MAX_USER_DAYS, n),
    maxWaitingChecks: shareOfLimit(opts.maxWaitingChecks ?? ARCHIVE_MAX_WAITING_CHECKS, n),
  };
  const runs = await onEveryShard(shards, log, "session archive", (db, shardLog) =>
    runSessionArchive(db, bucket, config, now, shardLog, perShard),
  );
  const total: SessionArchiveResult = {
    archived: 0,
    written: 0,
    deleted: 0,
    waiting: 0,
    failed: 0,
    waiting_listed: 0,
    more: false,
  };
  for (const r of runs) addOutcome(total, r);
  return total;
}
