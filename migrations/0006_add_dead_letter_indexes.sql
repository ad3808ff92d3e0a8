-- Operations (api worker): list dead letters newest first, across queues or within one queue,
-- with keyset pagination on (first_failed_at, id). Additive: indexes only.
CREATE INDEX idx_dead_letters_recent ON dead_letters (first_failed_at, id);
CREATE INDEX idx_dead_letters_queue_recent ON dead_letters (queue, first_failed_at, id);
-- Replay of a whole queue walks the rows not replayed yet.
CREATE INDEX idx_dead_letters_pending ON dead_letters (queue, id) WHERE replayed_at IS NULL;
