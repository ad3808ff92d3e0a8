/**
 * A user's judged sessions by billing time (`session_lists`; docs/architecture.md "Finding a
 * user's sessions"). With each verdict batch the classifier lists the sessions it judged, one row
 * per user and UTC hour of their billing time, instead of an index entry per session (a row
 * written per verdict). Readers walk a user's rows in hour order and read each listed session by
 * its key: every listed session's billing time falls in its row's hour, so ordering by the hour
 * first and then by billing time within it is billing-time order, and SQLite sorts one hour at a
 * time (it stops at a LIMIT without reading later hours).
 */

/** The length of a list row's hour, in ms (SQL: `billed_at / LIST_HOUR_MS` of an integer time is its hour). */
export const LIST_HOUR_MS = 3_600_000;

/** Session ids per list row (a JSON array well under D1's 2 MB per value), and per statement. */
export const MAX_LISTED_PER_ROW = 1000;

/**
 * How a verdict batch that lists its sessions marks their verdict token. Migration 0017's trigger
 * lists any verdict recorded without it (by the workers that ran before the lists existed).
 */
export const LISTED_VERDICT_TOKEN_PREFIX = "listed:";

/** A new verdict token of a batch that lists its sessions. */
export function listedVerdictToken(): string {
  return `${LISTED_VERDICT_TOKEN_PREFIX}${crypto.randomUUID()}`;
}

/** The UTC hour (hours since the epoch) of a billing time in epoch ms. */
export function billingHour(ms: number): number {
  return Math.floor(ms / LIST_HOUR_MS);
}

/**
 * The join of a user's list rows, their session ids and the sessions they name, as aliases `l`
 * (the list row), `j` (its id) and `s` (the session), each session only in the row of its own
 * billing hour (a session id used again after its first session was archived is a new session,
 * of another hour, which an older row does not name). The caller constrains `l.user_id` and a
 * range of `l.hour` (billingHour of the billing-time bounds, bound as integers), keeps its own
 * conditions on `s`, and orders by `l.hour` before `s.billed_at` to be read one hour at a time.
 */
export const LISTED_SESSIONS = `session_lists l
       JOIN json_each(l.session_ids) j
       JOIN sessions s ON s.session_id = j.value AND s.user_id = l.user_id
         AND s.billed_at >= l.hour * ${LIST_HOUR_MS} AND s.billed_at < (l.hour + 1) * ${LIST_HOUR_MS}`;

/** A judged session, as listed. */
export interface ListedSession {
  user_id: string;
  session_id: string;
  billed_at: number;
}

/**
 * Lists judged sessions: one row per user and billing hour (MAX_LISTED_PER_ROW ids at most), each
 * under a new random id, in statements of at most MAX_LISTED_PER_ROW ids each. In the batch that
 * records their verdicts, so a session is listed exactly once, by the batch that judged it.
 */
export function listSessions(db: D1Database, sessions: readonly ListedSession[]): D1PreparedStatement[] {
  const groups = new Map<string, { user_id: string; hour: number; ids: string[] }>();
  for (const s of sessions) {
    const hour = billingHour(s.billed_at);
    const key = `${hour}|${s.user_id}`;
    const group = groups.get(key) ?? { user_id: s.user_id, hour, ids: [] };
    group.ids.push(s.session_id);
    groups.set(key, group);
  }
  const rows: { user_id: string; hour: number; id: string; session_ids: string[] }[] = [];
  for (const g of groups.values()) {
    const ids = [...g.ids].sort();
    for (let i = 0; i < ids.length; i += MAX_LISTED_PER_ROW) {
      rows.push({
        user_id: g.user_id,
        hour: g.hour,
        id: crypto.randomUUID(),
        session_ids: ids.slice(i, i + MAX_LISTED_PER_ROW),
      });
    }
  }
  const statements: D1PreparedStatement[] = [];
  let part: typeof rows = [];
  let ids = 0;
  const flush = () => {
    if (part.length === 0) return;
    statements.push(
      db
        .prepare(
          `INSERT INTO session_lists (user_id, hour, id, session_ids)
           SELECT value->>'$.user_id', value->>'$.hour', value->>'$.id', value->'$.session_ids' FROM json_each(?1)`,
        )
        .bind(JSON.stringify(part)),
    );
    part = [];
    ids = 0;
  };
  for (const row of rows) {
    if (ids + row.session_ids.length > MAX_LISTED_PER_ROW) flush();
    part.push(row);
    ids += row.session_ids.length;
  }
  flush();
  return statements;
}

/**
 * Deletes a user's list rows of billing hours [fromHour, toHour] that name no session left in
 * `sessions` (the archive, after deleting a user-day's sessions). A row naming a session still
 * in D1 stays, so that session is still found.
 */
export function deleteEmptiedLists(
  db: D1Database,
  userId: string,
  fromHour: number,
  toHour: number,
): D1PreparedStatement {
  return db
    .prepare(
      `DELETE FROM session_lists
       WHERE user_id = ?1 AND hour BETWEEN ?2 AND ?3
         AND NOT EXISTS (SELECT 1 FROM json_each(session_lists.session_ids) j
                         JOIN sessions s ON s.session_id = j.value AND s.user_id = session_lists.user_id
                           AND s.billed_at >= session_lists.hour * ${LIST_HOUR_MS}
                           AND s.billed_at < (session_lists.hour + 1) * ${LIST_HOUR_MS})`,
    )
    .bind(userId, fromHour, toHour);
}
