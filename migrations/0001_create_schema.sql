-- AI Gate Billing: initial schema.
-- Conventions: times are UTC epoch milliseconds; money is integer cents; tables keyed by text
-- are WITHOUT ROWID so a row costs one b-tree write, not two (row + implicit key index).

-- Stripe customers (columns of the pricing strategy's sketch). `plan` is the current plan, kept
-- by the webhooks worker; users without a row here are on the free plan.
CREATE TABLE stripe_customers (
  user_id TEXT PRIMARY KEY,
  stripe_customer_id TEXT UNIQUE NOT NULL,
  email TEXT NOT NULL DEFAULT '',
  plan TEXT NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'payg', 'pro')),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Subscriptions as Stripe last reported them (converged by re-fetching on every webhook).
CREATE TABLE subscriptions (
  stripe_subscription_id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  stripe_customer_id TEXT NOT NULL,
  plan TEXT NOT NULL CHECK (plan IN ('payg', 'pro')),
  status TEXT NOT NULL,
  current_period_start INTEGER,
  current_period_end INTEGER,
  cancel_at_period_end INTEGER NOT NULL DEFAULT 0,
  past_due_since INTEGER,
  started_at INTEGER NOT NULL,
  ended_at INTEGER,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idx_subscriptions_user ON subscriptions (user_id);

-- Plan history: the plan in force from `effective_from` until the next row's `effective_from`.
-- A session is billed under the plan in force at its creation time.
CREATE TABLE plan_history (
  user_id TEXT NOT NULL,
  effective_from INTEGER NOT NULL,
  plan TEXT NOT NULL CHECK (plan IN ('free', 'payg', 'pro')),
  stripe_subscription_id TEXT,
  recorded_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, effective_from)
) WITHOUT ROWID;

-- Every billing period Stripe reported for a subscription, so late sessions find their period.
CREATE TABLE billing_periods (
  stripe_subscription_id TEXT NOT NULL,
  period_start INTEGER NOT NULL,
  period_end INTEGER NOT NULL,
  PRIMARY KEY (stripe_subscription_id, period_start)
) WITHOUT ROWID;

-- Invoices as Stripe reported them (amounts in cents), for MRR, ARPU and session tracing.
CREATE TABLE invoices (
  stripe_invoice_id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  stripe_customer_id TEXT NOT NULL,
  stripe_subscription_id TEXT,
  status TEXT NOT NULL,
  currency TEXT NOT NULL,
  subtotal_cents INTEGER NOT NULL,
  total_cents INTEGER NOT NULL,
  amount_paid_cents INTEGER NOT NULL,
  period_start INTEGER NOT NULL,
  period_end INTEGER NOT NULL,
  usage_period_start INTEGER,
  usage_period_end INTEGER,
  finalized_at INTEGER,
  paid_at INTEGER,
  stripe_created INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idx_invoices_user ON invoices (user_id, period_start);

-- Stripe events already applied (dedupe on event id).
CREATE TABLE processed_stripe_events (
  event_id TEXT PRIMARY KEY,
  type TEXT NOT NULL,
  stripe_created INTEGER NOT NULL,
  processed_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Session facts, admission lease and verdict in one row per session.
-- Facts are merged with commutative, idempotent rules (see workers/classifier/src/facts.ts).
CREATE TABLE sessions (
  session_id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  project_id TEXT NOT NULL,
  source TEXT,
  created_at INTEGER,                  -- time of the `created` event (min over copies)
  first_event_at INTEGER,              -- earliest event time seen
  last_event_at INTEGER,               -- latest event time seen
  connected INTEGER NOT NULL DEFAULT 0,
  connect_latency_ms INTEGER,          -- min over `connected` events
  turn_failed INTEGER NOT NULL DEFAULT 0,
  upstream_error INTEGER NOT NULL DEFAULT 0,
  upstream_status INTEGER,
  upstream_code TEXT,
  audio_ms INTEGER NOT NULL DEFAULT 0, -- max of cumulative audio
  ended_at INTEGER,                    -- time of the earliest `ended` event
  end_reason TEXT,
  first_seen_at INTEGER NOT NULL,      -- when the pipeline first heard of the session
  last_seen_at INTEGER NOT NULL,       -- last telemetry received (lease and staleness clock)
  settle_due_at INTEGER,               -- verdict due (set when `ended` is first received)
  late_events INTEGER NOT NULL DEFAULT 0,
  -- admission lease (ingest): open = counted against the free quota until billed or judged unbillable
  admitted_at INTEGER,
  admitted_plan TEXT,
  open INTEGER NOT NULL DEFAULT 0,
  -- verdict (classifier), final once set
  verdict_at INTEGER,
  billable INTEGER,
  reason TEXT,
  rule_version INTEGER,
  verdict_token TEXT
) WITHOUT ROWID;
-- Sessions awaiting a verdict (settle window or staleness), for the classifier's cron.
CREATE INDEX idx_sessions_pending ON sessions (created_at) WHERE verdict_at IS NULL;
-- Admitted sessions not yet billed or judged unbillable, for admission decisions.
CREATE INDEX idx_sessions_open ON sessions (user_id) WHERE open = 1;

-- Daily rollups for dashboards and metrics, written in the same batch as each verdict.
CREATE TABLE daily_rollups (
  user_id TEXT NOT NULL,
  day TEXT NOT NULL,                   -- YYYY-MM-DD (UTC) of the session's creation
  reason TEXT NOT NULL,
  sessions INTEGER NOT NULL,
  audio_ms INTEGER NOT NULL,
  PRIMARY KEY (user_id, day, reason)
) WITHOUT ROWID;
CREATE INDEX idx_rollups_day ON daily_rollups (day);

-- One row per verdict (columns of the pricing strategy's sketch, plus attribution).
-- `id` is the session id, so a verdict is recorded once whatever the redeliveries.
-- No foreign key to stripe_customers: free users have no Stripe customer.
CREATE TABLE session_usage (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  project_id TEXT NOT NULL,
  session_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('success', 'failed')),
  duration_ms INTEGER,                 -- audio exchanged
  charged INTEGER NOT NULL DEFAULT 0,
  stripe_invoice_id TEXT,
  created_at INTEGER NOT NULL,         -- session creation time
  reason TEXT NOT NULL,
  rule_version INTEGER NOT NULL,
  plan TEXT NOT NULL CHECK (plan IN ('free', 'payg', 'pro')),
  period_start INTEGER NOT NULL,
  period_end INTEGER NOT NULL,
  adjusted_from_period INTEGER,        -- set when a late session moved to the next period
  record_token TEXT NOT NULL,
  recorded_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idx_usage_user_created ON session_usage (user_id, created_at);

-- Billable usage per user, plan and billing period, and what Stripe has confirmed of it.
CREATE TABLE usage_periods (
  user_id TEXT NOT NULL,
  plan TEXT NOT NULL CHECK (plan IN ('free', 'payg', 'pro')),
  period_start INTEGER NOT NULL,
  period_end INTEGER NOT NULL,
  stripe_customer_id TEXT,
  stripe_subscription_id TEXT,
  billable_sessions INTEGER NOT NULL DEFAULT 0,
  posted_total INTEGER NOT NULL DEFAULT 0,   -- highest absolute total Stripe acknowledged
  last_meter_ts INTEGER,                     -- meter event timestamp (s) of that post
  posted_at INTEGER,
  closed_at INTEGER,                         -- no more usage accepted into this period
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, plan, period_start)
) WITHOUT ROWID;
-- Paid periods whose total Stripe has not confirmed yet, for the biller's sweep.
CREATE INDEX idx_usage_periods_unposted ON usage_periods (stripe_customer_id)
  WHERE stripe_customer_id IS NOT NULL AND billable_sessions > posted_total;

-- One Stripe meter call in flight per customer: a lease with an expiry.
CREATE TABLE meter_locks (
  stripe_customer_id TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  locked_until INTEGER NOT NULL
) WITHOUT ROWID;

-- Reconciliation of our totals against Stripe's meter event summaries.
CREATE TABLE reconciliation_runs (
  id TEXT PRIMARY KEY,
  started_at INTEGER NOT NULL,
  finished_at INTEGER,
  periods_checked INTEGER NOT NULL DEFAULT 0,
  mismatches INTEGER NOT NULL DEFAULT 0,
  repaired INTEGER NOT NULL DEFAULT 0,
  report TEXT NOT NULL DEFAULT '[]'    -- JSON list of differences found
) WITHOUT ROWID;

-- API keys, stored only as SHA-256 hashes.
CREATE TABLE api_keys (
  key_hash TEXT PRIMARY KEY,
  id TEXT UNIQUE NOT NULL,
  scope TEXT NOT NULL CHECK (scope IN ('ingest', 'admin')),
  name TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER
) WITHOUT ROWID;

-- Dead letters: messages parked with their reason, replayable by operators.
CREATE TABLE dead_letters (
  id TEXT PRIMARY KEY,
  queue TEXT NOT NULL,
  message_id TEXT,
  body TEXT NOT NULL,
  error TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 1,
  first_failed_at INTEGER NOT NULL,
  last_failed_at INTEGER NOT NULL,
  replayed_at INTEGER,
  replay_count INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX idx_dead_letters_queue ON dead_letters (queue, id);
