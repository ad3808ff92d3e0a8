-- Session archive (api worker, hourly retention; docs/operations.md "Retention"): judged sessions
-- that can no longer change money are archived to R2, one gzipped NDJSON object per user and UTC
-- day of their billing time, and then deleted from `sessions`. Additive: three tables, one index,
-- nothing on `sessions` (an index there would cost a row written per session).

-- The manifest: one row per archived user-day, written after its object and before any of its
-- sessions is deleted. The billing API finds archived sessions through it.
CREATE TABLE session_archives (
  user_id TEXT NOT NULL,
  day TEXT NOT NULL,                   -- YYYY-MM-DD (UTC) of the sessions' billing time
  object_key TEXT NOT NULL,            -- the R2 object holding them
  row_count INTEGER NOT NULL,
  byte_size INTEGER NOT NULL,          -- of the gzipped object
  sha256 TEXT NOT NULL,                -- hex, of the gzipped object
  first_session_id TEXT NOT NULL,      -- in the object's order (billing time, then id)
  last_session_id TEXT NOT NULL,
  archived_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, day)
) WITHOUT ROWID;

-- How far the archive's scan of user-days has got, in the order of daily_rollups' day index
-- (day, then user): every user-day before it was archived, or is listed as waiting. One row.
CREATE TABLE session_archive_cursor (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  day TEXT NOT NULL,
  user_id TEXT NOT NULL
);

-- User-days the scan passed while one of their sessions was not settled yet, or whose archive
-- failed or left a changed row behind: each run looks at some again, least recently checked first,
-- until they are archived whole.
CREATE TABLE session_archive_waiting (
  user_id TEXT NOT NULL,
  day TEXT NOT NULL,
  since INTEGER NOT NULL,              -- when the scan first found it waiting
  checked_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, day)
) WITHOUT ROWID;
CREATE INDEX idx_session_archive_waiting_checked ON session_archive_waiting (checked_at);
