-- Usage series (additive; see docs/billing.md "The usage model").
-- A series is (user, plan, window): the usage one `last` meter series bills. Every session is
-- attributed to its series with its verdict, in the same row, so usage has no second copy.

-- sessions: written with the verdict. billed_at = the creation time bounded by what we observed;
-- plan/period_start = its series; seq = 1..n within the series for billable sessions, in the order
-- they were recorded (a series' invoice bills a prefix of it, adjustments the ranges after it).
ALTER TABLE sessions ADD COLUMN billed_at INTEGER;
ALTER TABLE sessions ADD COLUMN plan TEXT;
ALTER TABLE sessions ADD COLUMN period_start INTEGER;
ALTER TABLE sessions ADD COLUMN seq INTEGER;
-- A user's judged sessions by billing time: the sessions API, invoice session lists, re-attribution.
CREATE INDEX idx_sessions_user_billed ON sessions (user_id, billed_at) WHERE billed_at IS NOT NULL;

-- Sessions recorded before this migration keep their attribution (session_usage stays as history).
UPDATE sessions SET billed_at = u.created_at, plan = u.plan, period_start = u.period_start
FROM session_usage u WHERE u.id = sessions.session_id;
UPDATE sessions SET seq = r.seq
FROM (
  SELECT id, row_number() OVER (PARTITION BY user_id, plan, period_start ORDER BY recorded_at, id) AS seq
  FROM session_usage WHERE status = 'success'
) AS r
WHERE r.id = sessions.session_id;

-- plan_history: the metered price and its meter for paid intervals (price versions, custom prices).
ALTER TABLE plan_history ADD COLUMN stripe_price_id TEXT;
ALTER TABLE plan_history ADD COLUMN meter_event_name TEXT;

-- subscriptions: what Stripe has scheduled (a plan change at the period end, a cancellation).
ALTER TABLE subscriptions ADD COLUMN billing_mode TEXT;
ALTER TABLE subscriptions ADD COLUMN cancel_at INTEGER;
ALTER TABLE subscriptions ADD COLUMN schedule_id TEXT;
-- When Stripe last said that this ended subscription had no draft invoice left (its final
-- invoice, if any, is finalized): from then on what D1 holds of its invoices is complete.
ALTER TABLE subscriptions ADD COLUMN drafts_settled_at INTEGER;
ALTER TABLE subscriptions ADD COLUMN pending_plan TEXT;
ALTER TABLE subscriptions ADD COLUMN pending_effective_at INTEGER;

-- usage_periods is the series table: the window's end follows Stripe; the meter and price it bills;
-- seq_top, the highest rank given (ranks of sessions moved out by re-attribution are not reused);
-- frozen once Stripe billed it (stripe_billed sessions, on stripe_invoice_id, ranks up to
-- billed_seq); adjusted, the sessions (negative: credited) billed by adjustments since.
ALTER TABLE usage_periods ADD COLUMN seq_top INTEGER NOT NULL DEFAULT 0;
UPDATE usage_periods SET seq_top = billable_sessions;
ALTER TABLE usage_periods ADD COLUMN billed_seq INTEGER;
ALTER TABLE usage_periods ADD COLUMN adjusted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_periods ADD COLUMN meter_event_name TEXT;
ALTER TABLE usage_periods ADD COLUMN stripe_price_id TEXT;
ALTER TABLE usage_periods ADD COLUMN frozen_at INTEGER;
ALTER TABLE usage_periods ADD COLUMN stripe_billed INTEGER;
ALTER TABLE usage_periods ADD COLUMN stripe_invoice_id TEXT;
DROP INDEX idx_usage_periods_unposted;
DROP INDEX idx_usage_periods_open_paid;
-- Paid series whose total Stripe has not confirmed (it may also have gone down), for the sweep.
CREATE INDEX idx_usage_periods_unposted ON usage_periods (stripe_customer_id)
  WHERE stripe_customer_id IS NOT NULL AND frozen_at IS NULL AND billable_sessions <> posted_total;
-- Frozen paid series whose sessions differ from what Stripe billed plus adjustments so far.
CREATE INDEX idx_usage_periods_adjust ON usage_periods (stripe_customer_id)
  WHERE stripe_customer_id IS NOT NULL AND frozen_at IS NOT NULL
    AND billable_sessions <> coalesce(stripe_billed, 0) + adjusted;
-- Paid series not frozen yet, per subscription, for freezing when Stripe invoices them.
CREATE INDEX idx_usage_periods_live ON usage_periods (stripe_subscription_id, period_end)
  WHERE stripe_subscription_id IS NOT NULL AND frozen_at IS NULL;

-- Sessions billed by us rather than by the meter: a frozen series counted more (or fewer) sessions
-- than Stripe billed; the difference is an invoice item priced with the series' price.
CREATE TABLE usage_adjustments (
  id TEXT PRIMARY KEY,                 -- <user>|<plan>|<period_start>|<sessions covered before>|<after>
  user_id TEXT NOT NULL,
  plan TEXT NOT NULL,
  period_start INTEGER NOT NULL,
  stripe_customer_id TEXT NOT NULL,
  sessions INTEGER NOT NULL,           -- how many sessions it bills (negative: a credit)
  from_seq INTEGER NOT NULL,           -- the series' sessions ranked (from_seq, to_seq]
  to_seq INTEGER NOT NULL,
  amount_cents INTEGER NOT NULL,
  currency TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'created')),
  stripe_invoice_item_id TEXT,
  stripe_invoice_id TEXT,              -- the invoice that carries it, once finalized
  attempts INTEGER NOT NULL DEFAULT 0,
  error TEXT,
  next_attempt_at INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idx_usage_adjustments_series ON usage_adjustments (user_id, plan, period_start);
CREATE INDEX idx_usage_adjustments_pending ON usage_adjustments (next_attempt_at) WHERE state = 'pending';

-- The lines of finalized invoices (what Stripe billed), for freezing series and invoice detail.
CREATE TABLE invoice_lines (
  stripe_invoice_id TEXT NOT NULL,
  line_id TEXT NOT NULL,
  stripe_subscription_id TEXT,
  stripe_price_id TEXT,
  plan TEXT,
  metered INTEGER NOT NULL,
  stripe_invoice_item_id TEXT,
  period_start INTEGER NOT NULL,
  period_end INTEGER NOT NULL,
  quantity INTEGER NOT NULL,
  amount_cents INTEGER NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (stripe_invoice_id, line_id)
) WITHOUT ROWID;
CREATE INDEX idx_invoice_lines_subscription ON invoice_lines (stripe_subscription_id, period_start);
ALTER TABLE invoices ADD COLUMN billing_reason TEXT;
-- What the customer sees of an invoice: its number and Stripe's hosted page and PDF.
ALTER TABLE invoices ADD COLUMN number TEXT;
ALTER TABLE invoices ADD COLUMN hosted_invoice_url TEXT;
ALTER TABLE invoices ADD COLUMN invoice_pdf TEXT;

-- Users whose plan history or billing periods changed for times already judged: the biller moves
-- the affected sessions to their series (from_ms on).
CREATE TABLE reattributions (
  user_id TEXT PRIMARY KEY,
  from_ms INTEGER NOT NULL,
  requested_at INTEGER NOT NULL
) WITHOUT ROWID;
-- How often a user's plan history or billing periods changed in a way that asked for a
-- re-attribution. The classifier reads it with the accounts it attributes by and, in its verdict
-- batch, asks for a re-attribution itself if it moved meanwhile: a change that lands between its
-- read and its write (and whose own re-attribution ran before the verdicts existed) is never lost.
CREATE TABLE attribution_epochs (
  user_id TEXT PRIMARY KEY,
  epoch INTEGER NOT NULL
) WITHOUT ROWID;
