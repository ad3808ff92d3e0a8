/**
 * The classifier's SQL. Bulk statements take one JSON parameter read with `json_each(?1)`, so one
 * statement serves a whole queue batch. Statements that must commit together are returned
 * unexecuted, for the caller's `db.batch()` (a transaction).
 */
import type { PartialFacts } from "./facts";

/** A verdict to record, with the facts it was computed from (the update only applies to them). */
export interface VerdictToRecord {
  session_id: string;
  billable: 0 | 1;
  reason: string;
  rule_version: number;
  connected: 0 | 1;
  connect_latency_ms: number | null;
  turn_failed: 0 | 1;
  upstream_error: 0 | 1;
  audio_ms: number;
  /** Attribution (shared/src/attribution.ts): the billing time and, when known, the series. */
  billed_at: number;
  plan: string | null;
  period_start: number | null;
}

export interface SessionStateRow {
  session_id: string;
  user_id: string;
  verdict_at: number | null;
  /** The event ids merged so far (dedupe.ts); null before the first telemetry and after the verdict. */
  event_digest: string | null;
}

/** A session's merged facts, with its digest after this merge and the conflicting copies of the batch. */
export interface FactsToMerge {
  facts: PartialFacts;
  digest: string;
  conflicting: number;
}

/** Everything judging a session needs (and, once judged, its stored verdict). */
export interface JudgeRow {
  session_id: string;
  user_id: string;
  project_id: string;
  /** coalesce(created_at, first_event_at, admitted_at, first_seen_at): never null. */
  created_at: number;
  /** What the gateway reported (`created`, else the first event), and what we observed. */
  reported_created_at: number | null;
  first_seen_at: number;
  admitted_at: number | null;
  connected: number;
  connect_latency_ms: number | null;
  turn_failed: number;
  upstream_error: number;
  audio_ms: number;
  last_seen_at: number;
  settle_due_at: number | null;
  verdict_at: number | null;
  billable: number | null;
  reason: string | null;
  rule_version: number | null;
}

export interface UpsertedRow {
  session_id: string;
  settle_due_at: number | null;
}

/** The session's creation time as verdicts and rollups use it (admission-only rows included). */
const CREATED_AT = "coalesce(created_at, first_event_at, admitted_at, first_seen_at)";

/** Ids per read: keeps the JSON parameter far below D1's 2 MB per value (ids are <= 200 chars). */
const IDS_PER_READ = 2000;

async function readByIds<Row>(db: D1Database, sql: string, sessionIds: readonly string[]): Promise<Row[]> {
  const rows: Row[] = [];
  for (let i = 0; i < sessionIds.length; i += IDS_PER_READ) {
    const ids = sessionIds.slice(i, i + IDS_PER_READ);
    const { results } = await db.prepare(sql).bind(JSON.stringify(ids)).all<Row>();
    rows.push(...results);
  }
  return rows;
}

export function readSessionStates(db: D1Database, sessionIds: readonly string[]): Promise<SessionStateRow[]> {
  return readByIds<SessionStateRow>(
    db,
    `SELECT session_id, user_id, verdict_at, event_digest FROM sessions
     WHERE session_id IN (SELECT value FROM json_each(?1))`,
    sessionIds,
  );
}

/**
 * Merges partial facts into `sessions`, one row per session, with the rules of facts.ts, writes
 * the session's event digest and adds its conflicting copies. Guarded: a row owned by another
 * user, already judged, or whose stored digest is not a prefix of the digest written (another run
 * merged event ids since the read) is left alone and not RETURNed, which tells the caller which
 * sessions changed under it since it read them. A stored digest that is a prefix passes: the
 * entries appended meanwhile are then the first entries of ours, the same ids with the same
 * payloads, and merging those again changes nothing.
 * No index of `sessions` covers the columns merged here while a session is open, so a merge
 * writes exactly one row.
 */
export function upsertFacts(db: D1Database, merges: FactsToMerge[]): D1PreparedStatement {
  const rows = merges.map(({ facts: f, digest, conflicting }) => ({
    session_id: f.sessionId,
    user_id: f.userId,
    project_id: f.projectId,
    source: f.source,
    created_at: f.createdAt,
    first_event_at: f.firstEventAt,
    last_event_at: f.lastEventAt,
    connected: f.connected ? 1 : 0,
    connect_latency_ms: f.connectLatencyMs,
    turn_failed: f.turnFailed ? 1 : 0,
    upstream_error: f.upstreamError ? 1 : 0,
    upstream_status: f.upstreamStatus,
    upstream_code: f.upstreamCode,
    audio_ms: f.audioMs,
    ended_at: f.endedAt,
    end_reason: f.endReason,
    first_seen_at: f.firstSeenAt,
    last_seen_at: f.lastSeenAt,
    settle_due_at: f.settleDueAt,
    event_digest: digest,
    conflicting_events: conflicting,
  }));
  const upstreamKey = (t: string) =>
    `(${t}.upstream_status IS NOT NULL, coalesce(${t}.upstream_status, 0), ` +
    `${t}.upstream_code IS NOT NULL, coalesce(${t}.upstream_code, ''))`;
  const upstreamWins = `${upstreamKey("excluded")} > ${upstreamKey("sessions")}`;
  const endWins = `excluded.ended_at IS NOT NULL AND (sessions.ended_at IS NULL
      OR excluded.ended_at < sessions.ended_at
      OR (excluded.ended_at = sessions.ended_at
          AND (excluded.end_reason IS NOT NULL, coalesce(excluded.end_reason, ''))
            > (sessions.end_reason IS NOT NULL, coalesce(sessions.end_reason, ''))))`;
  const minOf = (c: string) => `coalesce(min(sessions.${c}, excluded.${c}), sessions.${c}, excluded.${c})`;
  return db
    .prepare(
      `INSERT INTO sessions (session_id, user_id, project_id, source, created_at, first_event_at,
         last_event_at, connected, connect_latency_ms, turn_failed, upstream_error, upstream_status,
         upstream_code, audio_ms, ended_at, end_reason, first_seen_at, last_seen_at, settle_due_at,
         event_digest, conflicting_events)
       SELECT f.value ->> '$.session_id', f.value ->> '$.user_id', f.value ->> '$.project_id',
         f.value ->> '$.source', f.value ->> '$.created_at', f.value ->> '$.first_event_at',
         f.value ->> '$.last_event_at', f.value ->> '$.connected', f.value ->> '$.connect_latency_ms',
         f.value ->> '$.turn_failed', f.value ->> '$.upstream_error', f.value ->> '$.upstream_status',
         f.value ->> '$.upstream_code', f.value ->> '$.audio_ms', f.value ->> '$.ended_at',
         f.value ->> '$.end_reason', f.value ->> '$.first_seen_at', f.value ->> '$.last_seen_at',
         f.value ->> '$.settle_due_at', f.value ->> '$.event_digest', f.value ->> '$.conflicting_events'
       FROM json_each(?1) AS f WHERE true
       ON CONFLICT (session_id) DO UPDATE SET
         source = ${minOf("source")},
         created_at = ${minOf("created_at")},
         first_event_at = ${minOf("first_event_at")},
         last_event_at = coalesce(max(sessions.last_event_at, excluded.last_event_at),
                                  sessions.last_event_at, excluded.last_event_at),
         connected = max(sessions.connected, excluded.connected),
         connect_latency_ms = ${minOf("connect_latency_ms")},
         turn_failed = max(sessions.turn_failed, excluded.turn_failed),
         upstream_error = max(sessions.upstream_error, excluded.upstream_error),
         upstream_status = CASE WHEN ${upstreamWins} THEN excluded.upstream_status ELSE sessions.upstream_status END,
         upstream_code = CASE WHEN ${upstreamWins} THEN excluded.upstream_code ELSE sessions.upstream_code END,
         audio_ms = max(sessions.audio_ms, excluded.audio_ms),
         ended_at = ${minOf("ended_at")},
         end_reason = CASE WHEN ${endWins} THEN excluded.end_reason ELSE sessions.end_reason END,
         first_seen_at = min(sessions.first_seen_at, excluded.first_seen_at),
         last_seen_at = max(sessions.last_seen_at, excluded.last_seen_at),
         settle_due_at = ${minOf("settle_due_at")},
         event_digest = excluded.event_digest,
         conflicting_events = sessions.conflicting_events + excluded.conflicting_events
       WHERE sessions.user_id = excluded.user_id AND sessions.verdict_at IS NULL
         AND substr(excluded.event_digest, 1, length(coalesce(sessions.event_digest, '')))
             = coalesce(sessions.event_digest, '')
       RETURNING session_id, settle_due_at`,
    )
    .bind(JSON.stringify(rows));
}

/** Counts telemetry that arrived after the verdict (it never changes the verdict). */
export function countLateEvents(
  db: D1Database,
  late: { session_id: string; n: number }[],
): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE sessions SET late_events = late_events + (l.value ->> '$.n')
       FROM json_each(?1) AS l
       WHERE sessions.session_id = l.value ->> '$.session_id' AND sessions.verdict_at IS NOT NULL`,
    )
    .bind(JSON.stringify(late));
}

/**
 * Counts conflicting copies of sessions that had nothing else in the batch. No digest guard: an
 * entry, once stored, never changes while the session is open, so a conflict read stays one. A
 * judged session is left alone and not RETURNed (its copies are late now).
 */
export function countConflictingEvents(
  db: D1Database,
  conflicts: { session_id: string; n: number }[],
): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE sessions SET conflicting_events = conflicting_events + (c.value ->> '$.n')
       FROM json_each(?1) AS c
       WHERE sessions.session_id = c.value ->> '$.session_id' AND sessions.verdict_at IS NULL
       RETURNING session_id, NULL AS settle_due_at`,
    )
    .bind(JSON.stringify(conflicts));
}

export function readJudgeRows(db: D1Database, sessionIds: readonly string[]): Promise<JudgeRow[]> {
  return readByIds<JudgeRow>(
    db,
    `SELECT session_id, user_id, project_id, ${CREATED_AT} AS created_at,
       coalesce(created_at, first_event_at) AS reported_created_at, first_seen_at, admitted_at, connected,
       connect_latency_ms, turn_failed, upstream_error, audio_ms, last_seen_at, settle_due_at, verdict_at, billable,
       reason, rule_version
     FROM json_each(?1) AS j JOIN sessions ON sessions.session_id = j.value`,
    sessionIds,
  );
}

/** A session's verdict as recordVerdicts writes it: with its rank among this statement's sessions of its series. */
export interface VerdictWithRank extends VerdictToRecord {
  /** For a billable session with a series: 1..n within the statement, in session id order; else null. */
  rank: number | null;
}

/** The error a verdict batch fails with, on purpose, when a session moved since it was read. */
export const VERDICT_MOVED = /NOT NULL constraint failed: sessions\.first_seen_at/;

/**
 * Records verdicts, final, all or none: every listed session must still be without a verdict and
 * have the verdict inputs it was judged from. One that moved since the read (judged by another
 * run, or telemetry merged meanwhile) makes the statement write NULL into a NOT NULL column, which
 * fails it and rolls the whole batch back (VERDICT_MOVED); the caller reads again and retries. So
 * the caller knows, before the batch, exactly which verdicts it records, and writes the series'
 * counts and the rollups from them without reading the sessions again.
 * With the verdict, in the same row: the session's billing time and series, and for a billable
 * session its rank `seq` in the series (the series' highest rank so far plus its rank in this
 * statement, so ranks grow in the order sessions are recorded; the count and highest rank are
 * added right after, in the same batch). The session no longer claims admission (`open`): its
 * usage now counts through its series. The event digest goes: later telemetry is only counted as
 * late. Each session is read once, by its key, and its series' row once.
 */
export function recordVerdicts(
  db: D1Database,
  verdicts: VerdictWithRank[],
  token: string,
  now: number,
): D1PreparedStatement {
  const unchanged = `sessions.verdict_at IS NULL
           AND sessions.connected = v.connected
           AND sessions.connect_latency_ms IS v.connect_latency_ms
           AND sessions.turn_failed = v.turn_failed
           AND sessions.upstream_error = v.upstream_error
           AND sessions.audio_ms = v.audio_ms`;
  return db
    .prepare(
      `UPDATE sessions SET
         first_seen_at = CASE WHEN ${unchanged} THEN sessions.first_seen_at END,
         verdict_at = ?2,
         billable = v.billable,
         reason = v.reason,
         rule_version = v.rule_version,
         verdict_token = ?3,
         event_digest = NULL,
         open = 0,
         billed_at = v.billed_at,
         plan = v.plan,
         period_start = v.period_start,
         seq = CASE WHEN v.rank IS NOT NULL THEN
           coalesce((SELECT p.seq_top FROM usage_periods p
                     WHERE p.user_id = sessions.user_id AND p.plan = v.plan AND p.period_start = v.period_start), 0)
           + v.rank
         END
       FROM (
         SELECT value->>'$.session_id' AS session_id, value->>'$.billable' AS billable, value->>'$.reason' AS reason,
           value->>'$.rule_version' AS rule_version, value->>'$.billed_at' AS billed_at, value->>'$.plan' AS plan,
           value->>'$.period_start' AS period_start, value->>'$.rank' AS rank, value->>'$.connected' AS connected,
           value->>'$.connect_latency_ms' AS connect_latency_ms, value->>'$.turn_failed' AS turn_failed,
           value->>'$.upstream_error' AS upstream_error, value->>'$.audio_ms' AS audio_ms
         FROM json_each(?1)
       ) AS v
       WHERE sessions.session_id = v.session_id
       RETURNING session_id`,
    )
    .bind(JSON.stringify(verdicts), now, token);
}

/** Billable verdicts added to one series by a verdict statement. */
export interface SeriesCount {
  user_id: string;
  plan: string;
  period_start: number;
  n: number;
}

/**
 * Adds a verdict statement's billable sessions to their series' counts and highest ranks. In the
 * same batch as recordVerdicts, right after it (the next statement's ranks start after these);
 * the batch records all its verdicts or none, so the counts are the verdicts'.
 */
export function addToSeries(db: D1Database, counts: SeriesCount[], now: number): D1PreparedStatement {
  return db
    .prepare(
      `UPDATE usage_periods SET billable_sessions = billable_sessions + c.n, seq_top = seq_top + c.n, updated_at = ?2
       FROM (
         SELECT value->>'$.user_id' AS user_id, value->>'$.plan' AS plan, value->>'$.period_start' AS period_start,
           value->>'$.n' AS n
         FROM json_each(?1)
       ) AS c
       WHERE usage_periods.user_id = c.user_id AND usage_periods.plan = c.plan
         AND usage_periods.period_start = c.period_start`,
    )
    .bind(JSON.stringify(counts), now);
}

/**
 * The guard against attributing by stale accounts: for each user whose attribution epoch is no
 * longer the one read with the accounts, asks for a re-attribution from the earliest billing time
 * judged in this run. In the verdict batch (one transaction with the verdicts): a plan or period
 * change that committed after the accounts were read, and whose own re-attribution may have run
 * before these verdicts existed, is applied to them. Writes nothing in the usual case.
 */
export function reattributeIfAccountsMoved(
  db: D1Database,
  users: { user_id: string; from_ms: number; epoch: number }[],
  now: number,
): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO reattributions (user_id, from_ms, requested_at)
       SELECT j.value->>'$.user_id', min(j.value->>'$.from_ms'), ?2 FROM json_each(?1) j
       WHERE coalesce((SELECT e.epoch FROM attribution_epochs e WHERE e.user_id = j.value->>'$.user_id'), 0)
         != j.value->>'$.epoch'
       GROUP BY 1
       ON CONFLICT (user_id) DO UPDATE SET from_ms = min(reattributions.from_ms, excluded.from_ms),
         requested_at = excluded.requested_at`,
    )
    .bind(JSON.stringify(users), now);
}

/** The verdicts of one user, day (UTC, of the billing time) and reason. */
export interface RollupCount {
  user_id: string;
  day: string;
  reason: string;
  sessions: number;
  audio_ms: number;
}

/**
 * Adds verdicts to the daily rollups. In the same batch as recordVerdicts, which records all its
 * verdicts or none.
 */
export function addToDailyRollups(db: D1Database, counts: RollupCount[]): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO daily_rollups (user_id, day, reason, sessions, audio_ms)
       SELECT value->>'$.user_id', value->>'$.day', value->>'$.reason', value->>'$.sessions', value->>'$.audio_ms'
       FROM json_each(?1) WHERE true
       ON CONFLICT (user_id, day, reason) DO UPDATE SET
         sessions = daily_rollups.sessions + excluded.sessions,
         audio_ms = daily_rollups.audio_ms + excluded.audio_ms`,
    )
    .bind(JSON.stringify(counts));
}

/** A row of the agenda (session_due): sessions to judge from `due_at` on. */
export interface DueRow {
  due_at: number;
  id: string;
  session_ids: string;
}

/** Session ids per agenda row: keeps a row far below D1's 2 MB per value (ids are <= 200 characters). */
export const IDS_PER_DUE_ROW = 500;
/** Sessions due within this span of each other share an agenda row (the row is due at the latest). */
export const DUE_ROW_SPAN_MS = 1000;

/** A session to put on the agenda, due at `due_at`. */
export interface DueEntry {
  session_id: string;
  due_at: number;
}

/**
 * Groups sessions into agenda rows: in order of due time, a row takes sessions due within
 * DUE_ROW_SPAN_MS of its first, at most IDS_PER_DUE_ROW, and is due when the last of them is.
 */
export function dueRows(entries: readonly DueEntry[]): { due_at: number; session_ids: string[] }[] {
  const rows: { due_at: number; session_ids: string[] }[] = [];
  let first = 0;
  for (const e of [...entries].sort((a, b) => a.due_at - b.due_at)) {
    const row = rows.at(-1);
    if (row && e.due_at - first <= DUE_ROW_SPAN_MS && row.session_ids.length < IDS_PER_DUE_ROW) {
      row.session_ids.push(e.session_id);
      row.due_at = e.due_at;
    } else {
      rows.push({ due_at: e.due_at, session_ids: [e.session_id] });
      first = e.due_at;
    }
  }
  return rows;
}

/**
 * Puts sessions on the agenda (no read of `sessions`: the caller knows when each is due). Listing
 * a session twice, or one judged meanwhile, is harmless: the cron finds it judged.
 */
export function listDue(db: D1Database, entries: readonly DueEntry[]): D1PreparedStatement[] {
  const rows = dueRows(entries);
  const statements: D1PreparedStatement[] = [];
  const perStatement = 50;
  for (let i = 0; i < rows.length; i += perStatement) {
    const chunk = rows.slice(i, i + perStatement).map((r) => ({
      due_at: r.due_at,
      id: crypto.randomUUID(),
      session_ids: JSON.stringify(r.session_ids),
    }));
    statements.push(
      db
        .prepare(
          `INSERT INTO session_due (due_at, id, session_ids)
           SELECT value->>'$.due_at', value->>'$.id', value->>'$.session_ids' FROM json_each(?1)`,
        )
        .bind(JSON.stringify(chunk)),
    );
  }
  return statements;
}

/** The agenda rows due at `now`, earliest first (a range of the primary key: reads only them). */
export async function readDueRows(db: D1Database, now: number, limit: number): Promise<DueRow[]> {
  const { results } = await db
    .prepare(
      "SELECT due_at, id, session_ids FROM session_due WHERE due_at <= ?1 ORDER BY due_at, id LIMIT ?2",
    )
    .bind(now, limit)
    .all<DueRow>();
  return results;
}

/** Deletes agenda rows by key. */
export function deleteDueRows(
  db: D1Database,
  rows: readonly Pick<DueRow, "due_at" | "id">[],
): D1PreparedStatement {
  return db
    .prepare(
      `DELETE FROM session_due WHERE (due_at, id) IN
         (SELECT value->>'$.due_at', value->>'$.id' FROM json_each(?1))`,
    )
    .bind(JSON.stringify(rows.map((r) => ({ due_at: r.due_at, id: r.id }))));
}
