import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { devSeedSql, generateKey, insertKeySql, revokeKeySql, sqlString } from "./keys";

const NOW = Date.UTC(2026, 10, 20, 12, 0, 0);

describe("key material", () => {
  it("generates aig_ keys of 32 base32 characters that never repeat", () => {
    const keys = Array.from({ length: 200 }, generateKey);
    for (const key of keys) expect(key).toMatch(/^aig_[a-z2-7]{32}$/);
    expect(new Set(keys).size).toBe(keys.length);
  });

  it("quotes SQL strings and refuses names and ids outside their patterns", () => {
    expect(sqlString("it's")).toBe("'it''s'");
    const row = {
      keyHash: "a".repeat(64),
      id: "key_abc",
      scope: "ingest" as const,
      name: "gw 1",
      createdAt: NOW,
    };
    expect(insertKeySql(row)).toContain("'gw 1'");
    expect(() => insertKeySql({ ...row, name: "x'); DROP TABLE api_keys; --" })).toThrow(/name/);
    expect(() => insertKeySql({ ...row, keyHash: "not-hex" })).toThrow(/hash/);
    expect(() => revokeKeySql("key_1' OR '1'='1", NOW)).toThrow(/invalid key id/);
  });
});

describe("dev keys", () => {
  it("scripts/dev-seed.sql is exactly what `tsx scripts/keys.ts dev-seed-sql` prints", async () => {
    const devSeedFile = readFileSync(new URL("../dev-seed.sql", import.meta.url), "utf8");
    expect(devSeedFile).toBe(await devSeedSql());
  });
});
