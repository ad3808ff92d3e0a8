-- Custom pricing (additive; see docs/billing.md "Custom pricing"): an operator's per-customer
-- per-session price, one row per version. A version is the customer's own Stripe price; the same
-- request again reuses its version (and price) instead of creating another.
CREATE TABLE custom_pricing (
  user_id TEXT NOT NULL,
  version INTEGER NOT NULL CHECK (version >= 1),
  plan TEXT NOT NULL CHECK (plan IN ('payg', 'pro')),        -- the plan whose per-session price it replaces
  tiers_mode TEXT NOT NULL CHECK (tiers_mode IN ('graduated', 'volume')),
  tiers TEXT NOT NULL,                                         -- JSON [{"up_to","unit_amount_cents"}], canonical
  stripe_price_id TEXT,                                        -- set once the price exists in Stripe
  applies TEXT NOT NULL CHECK (applies IN ('period_end', 'now')),  -- as last requested
  -- 'requested' (the Stripe side may be half done: a retry completes it), 'applied'
  state TEXT NOT NULL CHECK (state IN ('requested', 'applied')),
  effective_at INTEGER,                                        -- when the subscription bills it (ms)
  requested_at INTEGER NOT NULL,
  applied_at INTEGER,
  PRIMARY KEY (user_id, version)
) WITHOUT ROWID;
