import { env } from "cloudflare:test";
import { newKey, revokeKeySql } from "@aigate/scripts/keys";
import { KEY_CACHE_TTL_MS, sha256Hex } from "@aigate/shared";
import { DEV_KEYS } from "@aigate/test-support";
import { beforeEach, describe, expect, it } from "vitest";
import { cloudEvent, errorBody, harness, postJson, seedDevKeys } from "./test/support";

const NOW = Date.UTC(2026, 10, 20, 12, 0, 0);

beforeEach(seedDevKeys);

async function apiKeyRows() {
  return (await env.DB.prepare("SELECT * FROM api_keys ORDER BY id").all<Record<string, unknown>>()).results;
}

describe("keys created by the CLI's SQL", () => {
  it("store only the SHA-256 hash, and the key authenticates", async () => {
    const created = await newKey("ingest", "gateway eu-1", NOW);
    await env.DB.exec(created.sql);
    const row = (await apiKeyRows()).find((r) => r.id === created.id);
    expect(row).toEqual({
      key_hash: await sha256Hex(created.key),
      id: created.id,
      scope: "ingest",
      name: "gateway eu-1",
      created_at: NOW,
      revoked_at: null,
    });
    expect(JSON.stringify(await apiKeyRows())).not.toContain(created.key);

    const res = await harness({ now: () => NOW }).fetch(
      "/v1/events",
      postJson(cloudEvent({ time: NOW }), { key: created.key }),
    );
    expect(res.status).toBe(202);
  });

  it("stop working within 60 s of revocation (cached lookups live 30 s)", async () => {
    expect(KEY_CACHE_TTL_MS).toBeLessThanOrEqual(60_000);
    const created = await newKey("ingest", "soon revoked", NOW);
    await env.DB.exec(created.sql);
    let t = NOW;
    const h = harness({ now: () => t });
    const send = () => h.fetch("/v1/events", postJson(cloudEvent({ time: t }), { key: created.key }));

    expect((await send()).status).toBe(202);
    const revoked = await env.DB.prepare(revokeKeySql(created.id, t)).all();
    expect(revoked.results).toEqual([{ id: created.id }]);
    t += 1_000;
    expect((await send()).status).toBe(202); // still cached in this isolate: documented
    t = NOW + 60_000;
    const res = await send();
    expect(res.status).toBe(401);
    expect((await errorBody(res)).code).toBe("unauthorized");
  });

  it("revoke matches an active key once", async () => {
    expect((await env.DB.prepare(revokeKeySql("key_dev_admin", NOW)).all()).results).toHaveLength(1);
    expect((await env.DB.prepare(revokeKeySql("key_dev_admin", NOW + 1)).all()).results).toHaveLength(0);
    expect((await apiKeyRows()).find((r) => r.id === "key_dev_admin")?.revoked_at).toBe(NOW);
  });
});

describe("dev keys", () => {
  it("seeding is idempotent and yields the documented dev keys with their scopes", async () => {
    await seedDevKeys();
    await seedDevKeys();
    const rows = await apiKeyRows();
    expect(rows.map((r) => [r.id, r.scope])).toEqual([
      ["key_dev_admin", "admin"],
      ["key_dev_ingest", "ingest"],
    ]);
    for (const dev of DEV_KEYS) {
      expect(rows.find((r) => r.id === dev.id)?.key_hash).toBe(await sha256Hex(dev.key));
    }
  });
});
