-- Biller: posting state per usage period (additive).
-- post_failures / post_error / next_post_at: the sweep backs off a customer whose meter posts
-- keep failing, and operators can see why a period's total is not confirmed by Stripe.
-- reconciled_at: reconciliation checks the least recently checked periods first.
ALTER TABLE usage_periods ADD COLUMN post_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_periods ADD COLUMN post_error TEXT;
ALTER TABLE usage_periods ADD COLUMN next_post_at INTEGER;
ALTER TABLE usage_periods ADD COLUMN reconciled_at INTEGER;

-- Paid periods not closed yet, for the biller's period-close sweep.
CREATE INDEX idx_usage_periods_open_paid ON usage_periods (period_end)
  WHERE stripe_customer_id IS NOT NULL AND closed_at IS NULL;
