-- A user's judged sessions by billing time, without an index entry per session (docs/scale.md
-- "Rows and messages per session"): idx_sessions_user_billed cost a row written with every
-- verdict. Instead each judge run writes, in its verdict batch, one row per user and UTC hour of
-- the billing time it judged, listing those sessions' ids. A reader of a user's sessions by time
-- walks these rows in (user, hour) order and reads each listed session by its key; the hour is
-- the billing time's, so walking the hours in order and sorting within each hour gives the
-- sessions in billing-time order. A session is listed once, by the batch that recorded its
-- verdict; the archive deletes a list row once none of its sessions is left in `sessions`.
CREATE TABLE session_lists (
  user_id TEXT NOT NULL,
  hour INTEGER NOT NULL,               -- floor(billed_at / 3,600,000) of every listed session
  id TEXT NOT NULL,                    -- unique per writer (random)
  session_ids TEXT NOT NULL,           -- JSON array of session ids, at most 1,000
  PRIMARY KEY (user_id, hour, id)
) WITHOUT ROWID;

-- The sessions judged before this migration, 1,000 to a row.
INSERT INTO session_lists (user_id, hour, id, session_ids)
SELECT user_id, hour, 'migration-0017-' || grp, json_group_array(session_id)
FROM (
  SELECT user_id, billed_at / 3600000 AS hour, session_id,
    (row_number() OVER (PARTITION BY user_id, billed_at / 3600000 ORDER BY session_id) - 1) / 1000 AS grp
  FROM sessions WHERE billed_at IS NOT NULL
)
GROUP BY user_id, hour, grp;

-- Verdicts recorded by a writer that does not list them itself: the workers running before this
-- migration, between it and their own update. The classifier's verdict batches list their
-- sessions and mark their verdict token `listed:`, so this fires for no verdict of theirs.
CREATE TRIGGER session_lists_unlisted_verdict AFTER UPDATE OF verdict_at ON sessions
WHEN OLD.verdict_at IS NULL AND NEW.verdict_at IS NOT NULL AND NEW.billed_at IS NOT NULL
  AND coalesce(NEW.verdict_token, '') NOT LIKE 'listed:%'
BEGIN
  INSERT INTO session_lists (user_id, hour, id, session_ids)
  VALUES (NEW.user_id, NEW.billed_at / 3600000, 'verdict-' || NEW.session_id, json_array(NEW.session_id))
  ON CONFLICT DO NOTHING;
END;

-- Replaced by the lists (it cost a row written per verdict). Until the workers reading the lists
-- run, the ones before them read a user's sessions by time without it: slower, never wrong.
DROP INDEX idx_sessions_user_billed;
