-- Retention (api worker, hourly; see docs/operations.md "Retention"): each window's scan walks an
-- index in time order and deletes in small batches. Additive: indexes only.
-- Stripe events deduplicated, by when we applied them.
CREATE INDEX idx_processed_stripe_events_processed ON processed_stripe_events (processed_at);
-- Dead letters already replayed, by when (pending ones, replayed_at IS NULL, are never deleted).
CREATE INDEX idx_dead_letters_replayed ON dead_letters (replayed_at) WHERE replayed_at IS NOT NULL;
-- Reconciliation runs by start (also serves GET /admin/reconciliation, newest first).
CREATE INDEX idx_reconciliation_runs_started ON reconciliation_runs (started_at, id);
