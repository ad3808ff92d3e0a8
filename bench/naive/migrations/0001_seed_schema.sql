-- The naive baseline's schema (BENCHMARKS.md), as the pricing strategy first sketched it.
CREATE TABLE IF NOT EXISTS stripe_customers (
  user_id TEXT PRIMARY KEY,
  stripe_customer_id TEXT UNIQUE NOT NULL,
  email TEXT NOT NULL,
  plan TEXT DEFAULT 'free',
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS session_usage (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  project_id TEXT NOT NULL,
  session_id TEXT NOT NULL,
  status TEXT NOT NULL,
  duration_ms INTEGER,
  charged BOOLEAN DEFAULT 0,
  stripe_invoice_id TEXT,
  created_at INTEGER NOT NULL,
  FOREIGN KEY (user_id) REFERENCES stripe_customers(user_id)
);

CREATE INDEX idx_usage_user_charged ON session_usage(user_id, charged);
CREATE INDEX idx_usage_created ON session_usage(created_at);
