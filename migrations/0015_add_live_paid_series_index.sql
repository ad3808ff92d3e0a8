-- The biller's sweep finds the paid series it may have to post through the series that are live
-- (paid, not frozen), a few per paying customer, instead of an index on "total not confirmed":
-- that index's condition reads `billable_sessions` and `posted_total`, so every verdict run and
-- every post rewrote the series' entry in it (a row written each time). The entry here is written
-- once, with the series, and leaves when the series is frozen.
CREATE INDEX idx_usage_periods_paid_live ON usage_periods (period_start)
  WHERE stripe_customer_id IS NOT NULL AND frozen_at IS NULL;
DROP INDEX idx_usage_periods_unposted;
