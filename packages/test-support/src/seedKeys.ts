import { devSeedSql } from "@aigate/scripts/keys";
import { clearKeyCache } from "@aigate/shared";

/**
 * Stores the dev API keys (DEV_KEYS) with the statements of scripts/dev-seed.sql, as hashes only
 * like `npm run keys`, and forgets cached key lookups. Idempotent.
 */
export async function seedKeys(db: D1Database): Promise<void> {
  clearKeyCache();
  const statements = (await devSeedSql()).split("\n").filter((line) => line.startsWith("INSERT"));
  await db.batch(statements.map((sql) => db.prepare(sql)));
}
