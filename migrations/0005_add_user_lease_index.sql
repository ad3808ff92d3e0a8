-- Live admission leases per user, for GET /api/billing/usage (`active_sessions`) without scanning
-- every session: admitted, not ended, not judged. Additive; the query repeats these terms so
-- SQLite can use the partial index.
CREATE INDEX idx_sessions_user_leases ON sessions (user_id)
  WHERE admitted_at IS NOT NULL AND ended_at IS NULL AND verdict_at IS NULL;
