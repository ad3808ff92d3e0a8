-- Spend caps and alerts (additive; see docs/billing.md "Spend caps and alerts").

-- A user's limits: a cap on the usage charges of each billing period (NULL = none) and the
-- percentages of it that raise an alert; the endpoint alerts are delivered to, with the secret
-- that signs them (the secret is shown to the user once, when the endpoint is registered).
CREATE TABLE spend_limits (
  user_id TEXT PRIMARY KEY,
  monthly_cap_cents INTEGER CHECK (monthly_cap_cents IS NULL OR monthly_cap_cents >= 0),
  alert_thresholds TEXT NOT NULL DEFAULT '[50,80,100]',  -- JSON array of integers 1..100, ascending
  alert_url TEXT,
  alert_secret TEXT,
  alert_endpoint_at INTEGER,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- A threshold crossed: once per (user, usage series, threshold), recorded in the transaction that
-- made the series' usage charges reach it. It is also the outbox of the alert's delivery.
CREATE TABLE spend_alerts (
  user_id TEXT NOT NULL,
  plan TEXT NOT NULL,
  period_start INTEGER NOT NULL,
  threshold INTEGER NOT NULL,          -- percent of the cap
  cap_cents INTEGER NOT NULL,          -- the cap when it was crossed
  usage_cents INTEGER NOT NULL,        -- the series' usage charges when it was crossed
  sessions INTEGER NOT NULL,           -- the series' billable sessions then
  crossed_at INTEGER NOT NULL,
  -- delivery: 'none' (no endpoint registered then), 'pending', 'delivered', 'failed' (parked)
  delivery TEXT NOT NULL CHECK (delivery IN ('none', 'pending', 'delivered', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER,
  delivered_at INTEGER,
  error TEXT,
  PRIMARY KEY (user_id, plan, period_start, threshold)
) WITHOUT ROWID;
-- Alerts due for delivery, for the delivery sweep.
CREATE INDEX idx_spend_alerts_due ON spend_alerts (next_attempt_at) WHERE delivery = 'pending';
