import { env } from "cloudflare:test";
import { newKey } from "@aigate/scripts/keys";
import { calendarMonth } from "@aigate/shared";
import { shardedEnv, userOnShard } from "@aigate/test-support/shards";
import { beforeEach, describe, expect, it } from "vitest";
import { AdmitResponse } from "./admission";
import { cloudEvent, errorBody, harness, postJson, seedDevKeys } from "./test/support";

const NOW = Date.UTC(2026, 10, 20, 12, 0, 0);
const MONTH = calendarMonth(NOW);

beforeEach(seedDevKeys);

/** The four shards in order (DB is shard 0, the home database). */
const SHARDS = () => [env.DB, env.DB_1, env.DB_2, env.DB_3];

async function sharded() {
  const e = await shardedEnv({ ...env });
  return harness({ now: () => NOW, vars: { D1_SHARDS: e.D1_SHARDS } });
}

/** For each shard, the rows of `sql` there. */
async function perShard(sql: string, ...binds: unknown[]): Promise<unknown[][]> {
  const out: unknown[][] = [];
  for (const db of SHARDS()) {
    const { results } = await db
      .prepare(sql)
      .bind(...binds)
      .all();
    out.push(results);
  }
  return out;
}

async function setFreeUsage(db: D1Database, user: string, billable: number) {
  await db
    .prepare(
      `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, updated_at)
       VALUES (?1, 'free', ?2, ?3, ?4, ?2)`,
    )
    .bind(user, MONTH.start, MONTH.end, billable)
    .run();
}

describe("admission with four D1 shards", () => {
  it("writes each user's lease and agenda row on that user's shard only", async () => {
    const h = await sharded();
    const a = userOnShard("adm_user_", 1);
    const b = userOnShard("adm_user_", 2);
    for (const [user, session] of [
      [a, "sess_a"],
      [b, "sess_b"],
    ] as const) {
      const res = await h.fetch(
        "/v1/sessions/admit",
        postJson({ session_id: session, user_id: user, project_id: "proj_1" }),
      );
      expect(res.status).toBe(200);
      expect(AdmitResponse.parse(await res.json())).toMatchObject({ allowed: true, used: 1 });
    }
    const sessions = await perShard("SELECT session_id, user_id, open FROM sessions ORDER BY session_id");
    expect(sessions).toEqual([
      [],
      [{ session_id: "sess_a", user_id: a, open: 1 }],
      [{ session_id: "sess_b", user_id: b, open: 1 }],
      [],
    ]);
    const agenda = await perShard("SELECT due_at, session_ids FROM session_due ORDER BY id");
    expect(agenda).toEqual([
      [],
      [{ due_at: NOW, session_ids: '["sess_a"]' }],
      [{ due_at: NOW, session_ids: '["sess_b"]' }],
      [],
    ]);
  });

  it("decides on the user's own shard: its usage counts, another shard's rows do not", async () => {
    const h = await sharded();
    const a = userOnShard("quota_user_", 1);
    const b = userOnShard("quota_user_", 3);
    // a has used the free quota (on a's shard); b's exhausted-looking row sits on the wrong shard
    await setFreeUsage(env.DB_1, a, 100);
    await setFreeUsage(env.DB, b, 100);
    await setFreeUsage(env.DB_2, b, 100);

    const admit = async (user: string, session: string) => {
      const res = await h.fetch(
        "/v1/sessions/admit",
        postJson({ session_id: session, user_id: user, project_id: "proj_1" }),
      );
      expect(res.status).toBe(200);
      return AdmitResponse.parse(await res.json());
    };
    expect(await admit(a, "sess_qa")).toMatchObject({
      allowed: false,
      reason: "monthly_quota_exhausted",
      used: 100,
    });
    expect(await admit(b, "sess_qb")).toMatchObject({ allowed: true, reason: null, used: 1 });
    expect(await perShard("SELECT session_id FROM sessions")).toEqual([
      [],
      [],
      [],
      [{ session_id: "sess_qb" }],
    ]);
  });
});

describe("ingest keys with four D1 shards", () => {
  it("are looked up in the home database", async () => {
    const h = await sharded();
    const home = await newKey("ingest", "gateway on home", NOW);
    await env.DB.exec(home.sql);
    // a key found only in another shard's api_keys is not a key
    const stray = await newKey("ingest", "gateway on shard 1", NOW);
    await env.DB_1.exec(stray.sql);

    const send = (key: string) => h.fetch("/v1/events", postJson(cloudEvent({ time: NOW }), { key }));
    expect((await send(home.key)).status).toBe(202);
    const refused = await send(stray.key);
    expect(refused.status).toBe(401);
    expect((await errorBody(refused)).code).toBe("unauthorized");

    const admitted = await h.fetch(
      "/v1/sessions/admit",
      postJson(
        { session_id: "sess_key", user_id: userOnShard("key_user_", 2), project_id: "proj_1" },
        { key: home.key },
      ),
    );
    expect(admitted.status).toBe(200);
  });
});
