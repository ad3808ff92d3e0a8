/**
 * Runs before every test: a fresh database with the real migrations applied.
 * (Storage is isolated per test file only, so tests reset it themselves.)
 */
import { applyD1Migrations, env, reset } from "cloudflare:test";
import { beforeEach } from "vitest";

beforeEach(async () => {
  await reset();
  await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);
});
