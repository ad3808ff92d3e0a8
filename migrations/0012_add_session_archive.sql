-- Session archive (api worker, hourly retention; docs/operations.md "Retention"): judged sessions
-- that can no longer change money are archived to R2, one gzipped NDJSON object per user and UTC
-- day of their billing time, and then deleted from `sessions`. Additive: one table, one index.

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

-- Judged sessions by billing time, oldest first: the archive's scan for what is past its window.
CREATE INDEX idx_sessions_billed ON sessions (billed_at) WHERE billed_at IS NOT NULL;
