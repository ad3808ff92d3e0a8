-- The classifier's agenda of sessions to judge (docs/architecture.md "Judging"): instead of an
-- index entry per session (idx_sessions_pending, a row written per session) and a delayed queue
-- message per batch, each telemetry batch lists the sessions it touched in one row, keyed by
-- when they are due: the time their settle window ends, or when they turn stale. The minute
-- cron reads the rows that are due in key order, judges their sessions, and deletes the rows in
-- the same transaction as it lists again the sessions that were not due yet.

CREATE TABLE session_due (
  due_at INTEGER NOT NULL,             -- epoch ms: judge the listed sessions from then on
  id TEXT NOT NULL,                    -- unique per writer (random)
  session_ids TEXT NOT NULL,           -- JSON array of session ids
  PRIMARY KEY (due_at, id)
) WITHOUT ROWID;

-- The sessions waiting for a verdict when this migration runs, 500 to a row, due at once: the
-- first cron run judges those that are due and lists the others again at their own time.
INSERT INTO session_due (due_at, id, session_ids)
SELECT 0, 'migration-0014-' || grp, json_group_array(session_id)
FROM (
  SELECT session_id, (row_number() OVER (ORDER BY session_id) - 1) / 500 AS grp
  FROM sessions WHERE verdict_at IS NULL
)
GROUP BY grp;

-- Replaced by the agenda (it cost a row written per session).
DROP INDEX idx_sessions_pending;
