// The test env type: the bindings every worker test run has on top of the worker's own (see
// worker-vitest.ts). Only the test programs include it (each workspace's tsconfig.json), never the
// production ones (tsconfig.production.json), so production code cannot use a test-only binding.
declare namespace Cloudflare {
  interface Env {
    /** The database the migrations are applied to before each test (apply-migrations.ts). */
    DB: D1Database;
    /** Shards 1..3, for tests of a sharded deployment (migrated by `migrateShards`). */
    DB_1: D1Database;
    DB_2: D1Database;
    DB_3: D1Database;
    TEST_MIGRATIONS: import("cloudflare:test").D1Migration[];
  }
}
