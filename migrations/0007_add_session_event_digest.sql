-- Classifier: dedupe on (source, id) across requests without a row per event (additive).
-- event_digest: one 16-character entry per distinct event id merged into the session (hashes of
-- (source, id) and of the event's payload), only appended while the session is open and cleared
-- with the verdict. conflicting_events: copies of a known event id with another payload, counted
-- and never merged.
ALTER TABLE sessions ADD COLUMN event_digest TEXT;
ALTER TABLE sessions ADD COLUMN conflicting_events INTEGER NOT NULL DEFAULT 0;
