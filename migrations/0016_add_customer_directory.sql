-- The customer directory (docs/scale.md "Sharding"): which user a Stripe customer belongs to.
-- It lives in the home database (shard 0, the `DB` binding) with the other global tables, so a
-- webhook that names only a customer finds the user, and so the user's shard. A user's own
-- `stripe_customers` row stays on that user's shard. Written when a customer is recorded; filled
-- here from the customers already recorded (with one shard, every customer is in this database).

CREATE TABLE customer_directory (
  stripe_customer_id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO customer_directory (stripe_customer_id, user_id, created_at)
SELECT stripe_customer_id, user_id, created_at FROM stripe_customers;
