/**
 * The operator API over HTTP on the local runtime: admin-key auth, dead letters (list, show,
 * replay, purge) and reconciliation runs.
 */
import { env, SELF } from "cloudflare:test";
import { DEV_ADMIN_KEY, DEV_INGEST_KEY, seedKeys } from "@aigate/test-support";
import { beforeEach, describe, expect, it } from "vitest";
import { deadLetter, deadLetterRows, insertDeadLetterRows } from "./test/admin";

function call(path: string, init: RequestInit = {}, key: string | null = DEV_ADMIN_KEY) {
  const headers = new Headers(init.headers);
  if (key) headers.set("authorization", `Bearer ${key}`);
  if (init.body) headers.set("content-type", "application/json");
  return SELF.fetch(`http://api.test${path}`, { ...init, headers });
}

const post = (path: string, body: unknown) => call(path, { method: "POST", body: JSON.stringify(body) });

async function json<T = Record<string, unknown>>(res: Response, status = 200): Promise<T> {
  expect(res.status, await res.clone().text()).toBe(status);
  return res.json<T>();
}

interface ListBody {
  dead_letters: { id: string; summary: string; replayed_at: string | null; replay_count: number }[];
  next_cursor: string | null;
}

beforeEach(async () => {
  await seedKeys(env.DB);
});

describe("admin auth", () => {
  it("answers 401 without a key, 401 for an unknown key and 403 for an ingest key", async () => {
    for (const path of ["/admin/dead-letters", "/admin/metrics", "/admin/reconciliation"]) {
      const none = await call(path, {}, null);
      expect(none.status).toBe(401);
      expect(await none.json()).toMatchObject({ error: { code: "unauthorized" } });
      expect((await call(path, {}, "aig_wrong")).status).toBe(401);
      const ingest = await call(path, {}, DEV_INGEST_KEY);
      expect(ingest.status).toBe(403);
      expect(await ingest.json()).toMatchObject({ error: { code: "forbidden" } });
    }
    expect((await call("/admin/dead-letters/replay", { method: "POST", body: "{}" }, null)).status).toBe(401);
  });
});

describe("GET /admin/dead-letters", () => {
  beforeEach(async () => {
    await insertDeadLetterRows(env.DB, [
      deadLetter({ id: "aigate-verdicts:a", first_failed_at: 1_000 }),
      deadLetter({ id: "aigate-verdicts:b", first_failed_at: 3_000, replayed_at: 4_000, replay_count: 1 }),
      deadLetter({ id: "aigate-telemetry:c", queue: "aigate-telemetry", first_failed_at: 2_000 }),
      deadLetter({ id: "aigate-verdicts:d", first_failed_at: 3_000 }),
    ]);
  });

  it("lists newest first, across queues, with what each is about", async () => {
    const body = await json<ListBody>(await call("/admin/dead-letters"));
    expect(body.dead_letters.map((d) => d.id)).toEqual([
      "aigate-verdicts:d",
      "aigate-verdicts:b",
      "aigate-telemetry:c",
      "aigate-verdicts:a",
    ]);
    expect(body.next_cursor).toBeNull();
    expect(body.dead_letters[1]).toEqual({
      id: "aigate-verdicts:b",
      queue: "aigate-verdicts",
      message_id: "b",
      error: "test failure",
      attempts: 3,
      first_failed_at: "1970-01-01T00:00:03.000Z",
      last_failed_at: "1970-01-01T00:00:01.000Z",
      replayed_at: "1970-01-01T00:00:04.000Z",
      replay_count: 1,
      summary: "message that does not match its queue's schema",
      body_bytes: JSON.stringify({ v: 1, kind: "verdict", session_id: "aigate-verdicts:b" }).length,
    });
  });

  it("filters by queue and state", async () => {
    const verdicts = await json<ListBody>(
      await call("/admin/dead-letters?queue=aigate-verdicts&state=pending"),
    );
    expect(verdicts.dead_letters.map((d) => d.id)).toEqual(["aigate-verdicts:d", "aigate-verdicts:a"]);
    const replayed = await json<ListBody>(await call("/admin/dead-letters?state=replayed"));
    expect(replayed.dead_letters.map((d) => d.id)).toEqual(["aigate-verdicts:b"]);
    const telemetry = await json<ListBody>(await call("/admin/dead-letters?queue=aigate-telemetry"));
    expect(telemetry.dead_letters.map((d) => d.id)).toEqual(["aigate-telemetry:c"]);
  });

  it("pages with an opaque cursor without repeating or skipping rows", async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const page: ListBody = await json<ListBody>(await call(`/admin/dead-letters?limit=3${q}`));
      seen.push(...page.dead_letters.map((d) => d.id));
      cursor = page.next_cursor;
    } while (cursor);
    expect(seen).toEqual([
      "aigate-verdicts:d",
      "aigate-verdicts:b",
      "aigate-telemetry:c",
      "aigate-verdicts:a",
    ]);
  });

  it("rejects an unknown queue, a bad limit and a forged cursor", async () => {
    expect((await call("/admin/dead-letters?queue=aigate-verdicts-dlq")).status).toBe(400);
    expect((await call("/admin/dead-letters?limit=0")).status).toBe(400);
    expect((await call("/admin/dead-letters?limit=101")).status).toBe(400);
    const forged = await call("/admin/dead-letters?cursor=***");
    expect(forged.status).toBe(400);
    expect(await forged.json()).toMatchObject({ error: { code: "invalid_cursor" } });
  });
});

describe("GET /admin/dead-letters/:id", () => {
  it("shows one dead letter with its body", async () => {
    const body = { v: 1, kind: "judge", session_ids: ["s1", "s2"], due_at: 5 };
    await insertDeadLetterRows(env.DB, [
      deadLetter({ id: "aigate-telemetry:m:1", queue: "aigate-telemetry", body: JSON.stringify(body) }),
    ]);
    const shown = await json(await call(`/admin/dead-letters/${encodeURIComponent("aigate-telemetry:m:1")}`));
    expect(shown).toMatchObject({
      id: "aigate-telemetry:m:1",
      summary: "judge reminder for 2 session(s)",
      body,
    });
    const missing = await call("/admin/dead-letters/nope");
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: { code: "not_found" } });
  });
});

describe("POST /admin/dead-letters/replay", () => {
  beforeEach(async () => {
    await insertDeadLetterRows(env.DB, [
      deadLetter({ id: "aigate-verdicts:a" }),
      deadLetter({ id: "aigate-verdicts:b" }),
      deadLetter({ id: "aigate-telemetry:c", queue: "aigate-telemetry", body: "{}" }),
    ]);
  });

  it("replays the given ids, and a repeat re-sends nothing and says why", async () => {
    const first = await json(
      await post("/admin/dead-letters/replay", { ids: ["aigate-verdicts:a", "nope"] }),
    );
    expect(first).toEqual({
      replayed: 1,
      ids: ["aigate-verdicts:a"],
      skipped: [{ id: "nope", reason: "not_found" }],
      failed: [],
      more: false,
    });
    const again = await json(await post("/admin/dead-letters/replay", { ids: ["aigate-verdicts:a"] }));
    expect(again).toEqual({
      replayed: 0,
      ids: [],
      skipped: [{ id: "aigate-verdicts:a", reason: "already_replayed" }],
      failed: [],
      more: false,
    });
    const forced = await json(
      await post("/admin/dead-letters/replay", { ids: ["aigate-verdicts:a"], force: true }),
    );
    expect(forced).toMatchObject({ replayed: 1, ids: ["aigate-verdicts:a"] });
    const rows = await deadLetterRows(env.DB);
    expect(rows.map((r) => [r.id, r.replay_count, r.replayed_at !== null])).toEqual([
      ["aigate-telemetry:c", 0, false],
      ["aigate-verdicts:a", 2, true],
      ["aigate-verdicts:b", 0, false],
    ]);
  });

  it("replays every pending dead letter of one queue, and nothing on a repeat", async () => {
    const all = await json(await post("/admin/dead-letters/replay", { queue: "aigate-verdicts", all: true }));
    expect(all).toEqual({
      replayed: 2,
      ids: ["aigate-verdicts:a", "aigate-verdicts:b"],
      skipped: [],
      failed: [],
      more: false,
    });
    const again = await json(
      await post("/admin/dead-letters/replay", { queue: "aigate-verdicts", all: true }),
    );
    expect(again).toMatchObject({ replayed: 0, ids: [] });
    expect((await deadLetterRows(env.DB)).find((r) => r.id === "aigate-telemetry:c")?.replayed_at).toBeNull();
  });

  it("rejects bodies that are neither ids nor a whole queue", async () => {
    for (const body of [
      {},
      { ids: [] },
      { queue: "aigate-verdicts" },
      { queue: "aigate-verdicts-dlq", all: true },
      { queue: "aigate-verdicts", all: true, force: true },
      { ids: Array.from({ length: 101 }, (_, i) => `x${i}`) },
    ]) {
      const res = await post("/admin/dead-letters/replay", body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(await res.json()).toMatchObject({ error: { code: "invalid_request" } });
    }
    const notJson = await call("/admin/dead-letters/replay", { method: "POST", body: "{" });
    expect(notJson.status).toBe(400);
  });
});

describe("purging dead letters", () => {
  beforeEach(async () => {
    await insertDeadLetterRows(env.DB, [
      deadLetter({ id: "aigate-verdicts:pending" }),
      deadLetter({ id: "aigate-verdicts:done", replayed_at: 5, replay_count: 1 }),
    ]);
  });

  it("purges replayed dead letters only, unless forced", async () => {
    const res = await json(
      await post("/admin/dead-letters/purge", { ids: ["aigate-verdicts:pending", "aigate-verdicts:done"] }),
    );
    expect(res).toEqual({
      purged: 1,
      ids: ["aigate-verdicts:done"],
      skipped: [{ id: "aigate-verdicts:pending", reason: "not_found_or_not_replayed" }],
    });
    expect((await deadLetterRows(env.DB)).map((r) => r.id)).toEqual(["aigate-verdicts:pending"]);
    const forced = await json(
      await post("/admin/dead-letters/purge", { ids: ["aigate-verdicts:pending"], force: true }),
    );
    expect(forced).toMatchObject({ purged: 1 });
    expect(await deadLetterRows(env.DB)).toEqual([]);
  });

  it("purges a queue's replayed dead letters and keeps its pending ones", async () => {
    const res = await json(await post("/admin/dead-letters/purge", { queue: "aigate-verdicts", all: true }));
    expect(res).toEqual({ purged: 1, ids: ["aigate-verdicts:done"], more: false });
    expect((await deadLetterRows(env.DB)).map((r) => r.id)).toEqual(["aigate-verdicts:pending"]);
  });

  it("DELETE refuses a dead letter never replayed (409) unless force=true", async () => {
    const path = `/admin/dead-letters/${encodeURIComponent("aigate-verdicts:pending")}`;
    const refused = await call(path, { method: "DELETE" });
    expect(refused.status).toBe(409);
    expect(await refused.json()).toMatchObject({ error: { code: "not_replayed" } });
    expect(await json(await call(`${path}?force=true`, { method: "DELETE" }))).toEqual({
      purged: 1,
      ids: ["aigate-verdicts:pending"],
    });
    expect((await call(path, { method: "DELETE" })).status).toBe(404);
  });
});

describe("GET /admin/reconciliation", () => {
  it("shows the latest runs first with their parsed reports", async () => {
    const run = env.DB.prepare(
      `INSERT INTO reconciliation_runs (id, started_at, finished_at, periods_checked, mismatches, repaired, report)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)`,
    );
    const diff = [{ customer: "cus_1", ours: 3, stripe: 2, repaired: true }];
    await env.DB.batch([
      run.bind("r1", 1_000, 2_000, 5, 0, 0, "[]"),
      run.bind("r2", 3_000, null, 0, 0, 0, "[]"),
      run.bind("r3", 2_000, 2_500, 7, 1, 1, JSON.stringify(diff)),
    ]);
    const body = await json<{ runs: { id: string }[] }>(await call("/admin/reconciliation?limit=2"));
    expect(body.runs).toEqual([
      {
        id: "r2",
        started_at: "1970-01-01T00:00:03.000Z",
        finished_at: null,
        periods_checked: 0,
        mismatches: 0,
        repaired: 0,
        report: [],
      },
      {
        id: "r3",
        started_at: "1970-01-01T00:00:02.000Z",
        finished_at: "1970-01-01T00:00:02.500Z",
        periods_checked: 7,
        mismatches: 1,
        repaired: 1,
        report: diff,
      },
    ]);
    expect((await call("/admin/reconciliation?limit=51")).status).toBe(400);
  });
});
