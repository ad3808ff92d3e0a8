import { env, SELF } from "cloudflare:test";
import { calendarMonth } from "@aigate/shared";
import { DEV_ADMIN_KEY } from "@aigate/test-support";
import fc from "fast-check";
import { beforeEach, describe, expect, it } from "vitest";
import { AdmitResponse, explainAdmission, withinLimits } from "./admission";
import { dbSnapshot, errorBody, harness, postJson, seedDevKeys } from "./test/support";

const NOW = Date.UTC(2026, 10, 20, 12, 0, 0);
const MONTH = calendarMonth(NOW);
const SEC = 1000;
const DAY = 24 * 60 * 60 * SEC;
const TTL = 120 * SEC;

beforeEach(seedDevKeys);

function admitBody(session: string, user = "user_1", project = "proj_1") {
  return { session_id: session, user_id: user, project_id: project };
}

async function admitAt(t: number, body: unknown): Promise<AdmitResponse> {
  const res = await harness({ now: () => t }).fetch("/v1/sessions/admit", postJson(body));
  expect(res.status).toBe(200);
  return AdmitResponse.parse(await res.json());
}

async function agendaRows() {
  const { results } = await env.DB.prepare(
    "SELECT due_at, session_ids FROM session_due ORDER BY due_at, id",
  ).all();
  return results;
}

async function sessionRow(id: string) {
  return env.DB.prepare(
    "SELECT user_id, project_id, admitted_at, admitted_plan, open FROM sessions WHERE session_id = ?1",
  )
    .bind(id)
    .first<{
      user_id: string;
      project_id: string;
      admitted_at: number | null;
      admitted_plan: string | null;
      open: number;
    }>();
}

async function openSessions(user: string): Promise<number> {
  const row = await env.DB.prepare("SELECT count(*) AS n FROM sessions WHERE user_id = ?1 AND open = 1")
    .bind(user)
    .first<{ n: number }>();
  return row?.n ?? -1;
}

/** A session row as the classifier would leave it. */
async function insertSession(s: {
  id: string;
  user?: string;
  admittedAt?: number | null;
  lastSeenAt?: number;
  open?: 0 | 1;
  endedAt?: number | null;
  verdictAt?: number | null;
}) {
  await env.DB.prepare(
    `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, admitted_at, open, ended_at, verdict_at)
     VALUES (?1, ?2, 'proj_1', ?3, ?3, ?4, ?5, ?6, ?7)`,
  )
    .bind(
      s.id,
      s.user ?? "user_1",
      s.lastSeenAt ?? s.admittedAt ?? NOW,
      s.admittedAt === undefined ? NOW : s.admittedAt,
      s.open ?? 1,
      s.endedAt ?? null,
      s.verdictAt ?? null,
    )
    .run();
}

async function setFreeUsage(user: string, billable: number, periodStart = MONTH.start) {
  await env.DB.prepare(
    `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, updated_at)
     VALUES (?1, 'free', ?2, ?3, ?4, ?2)`,
  )
    .bind(user, periodStart, calendarMonth(periodStart).end, billable)
    .run();
}

async function subscribe(user: string, plan: "payg" | "pro", pastDueSince: number | null = null) {
  const start = NOW - 10 * DAY;
  await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO stripe_customers (user_id, stripe_customer_id, plan, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)`,
    ).bind(user, `cus_${user}`, plan, start),
    env.DB.prepare(
      `INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, plan, status, current_period_start,
         current_period_end, past_due_since, started_at, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?6, ?6)`,
    ).bind(
      `sub_${user}`,
      user,
      `cus_${user}`,
      plan,
      pastDueSince === null ? "active" : "past_due",
      start,
      start + 30 * DAY,
      pastDueSince,
    ),
  ]);
}

describe("POST /v1/sessions/admit on the free plan", () => {
  it("admits a new session and records its lease", async () => {
    expect(await admitAt(NOW, admitBody("sess_a"))).toEqual({
      allowed: true,
      reason: null,
      plan: "free",
      used: 1,
      quota: 100,
      active_sessions: 1,
      concurrent_limit: 5,
    });
    expect(await sessionRow("sess_a")).toEqual({
      user_id: "user_1",
      project_id: "proj_1",
      admitted_at: NOW,
      admitted_plan: "free",
      open: 1,
    });
    // on the classifier's agenda, due at once (it judges the session if no telemetry ever comes)
    expect(await agendaRows()).toEqual([{ due_at: NOW, session_ids: '["sess_a"]' }]);
  });

  it("admits exactly 5 of 20 concurrent admits for one free user", async () => {
    const responses = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        SELF.fetch("http://ingest.test/v1/sessions/admit", postJson(admitBody(`sess_${i}`))).then(
          async (res) => {
            expect(res.status).toBe(200);
            return AdmitResponse.parse(await res.json());
          },
        ),
      ),
    );
    const allowed = responses.filter((r) => r.allowed);
    expect(allowed).toHaveLength(5);
    expect(responses.filter((r) => !r.allowed).every((r) => r.reason === "concurrency_limit_reached")).toBe(
      true,
    );
    expect(responses.every((r) => r.active_sessions <= 5)).toBe(true);
    expect(await openSessions("user_1")).toBe(5);
    const rows = await env.DB.prepare("SELECT count(*) AS n FROM sessions").first<{ n: number }>();
    expect(rows?.n).toBe(5); // refused sessions leave no row behind
    expect(await agendaRows()).toHaveLength(5); // nor an agenda row
  });

  it("is idempotent per session: repeated and concurrent admits of one session admit it once", async () => {
    const h = harness({ now: () => NOW });
    const same = await Promise.all(
      Array.from({ length: 10 }, () => h.fetch("/v1/sessions/admit", postJson(admitBody("sess_same")))),
    );
    const bodies = await Promise.all(same.map(async (r) => AdmitResponse.parse(await r.json())));
    expect(bodies.every((b) => b.allowed && b.active_sessions === 1 && b.used === 1)).toBe(true);
    expect(await openSessions("user_1")).toBe(1);

    for (const id of ["b", "c", "d", "e"])
      expect((await admitAt(NOW, admitBody(`sess_${id}`))).allowed).toBe(true);
    expect(await admitAt(NOW, admitBody("sess_f"))).toMatchObject({
      allowed: false,
      reason: "concurrency_limit_reached",
    });
    // a retry of an admitted session stays allowed at the limit, and takes nothing more
    expect(await admitAt(NOW + 5 * SEC, admitBody("sess_same"))).toMatchObject({
      allowed: true,
      active_sessions: 5,
    });
    expect((await sessionRow("sess_same"))?.admitted_at).toBe(NOW);
    expect(await openSessions("user_1")).toBe(5);
  });

  it("lets a lease lapse LEASE_TTL_SECONDS after the session's last telemetry", async () => {
    for (let i = 0; i < 5; i++) expect((await admitAt(NOW, admitBody(`sess_${i}`))).allowed).toBe(true);
    // telemetry for sess_0 a minute later keeps its lease alive
    await env.DB.prepare("UPDATE sessions SET last_seen_at = ?1 WHERE session_id = 'sess_0'")
      .bind(NOW + 60 * SEC)
      .run();

    expect(await admitAt(NOW + TTL - SEC, admitBody("sess_new"))).toMatchObject({
      allowed: false,
      reason: "concurrency_limit_reached",
      active_sessions: 5,
    });
    expect(await admitAt(NOW + TTL + 30 * SEC, admitBody("sess_new"))).toMatchObject({
      allowed: true,
      reason: null,
      active_sessions: 2, // sess_0 (seen at +60 s) and sess_new
      used: 6, // lapsed sessions are still in flight until judged: they count against the quota
    });
  });

  it("renews the lapsed lease of a retried session only when the limits allow it", async () => {
    await admitAt(NOW, admitBody("sess_a"));
    const later = NOW + TTL + SEC;
    expect(await admitAt(later, admitBody("sess_a"))).toMatchObject({
      allowed: true,
      active_sessions: 1,
      used: 1,
    });
    expect((await sessionRow("sess_a"))?.admitted_at).toBe(later);

    const muchLater = later + TTL + 2 * SEC; // sess_a lapsed again, and five others are live
    for (let i = 0; i < 5; i++) await insertSession({ id: `sess_${i}`, admittedAt: muchLater - SEC });
    const before = await dbSnapshot();
    expect(await admitAt(muchLater, admitBody("sess_a"))).toMatchObject({
      allowed: false,
      reason: "concurrency_limit_reached",
      used: 6, // sess_a still counts in flight until judged
      active_sessions: 5,
    });
    expect(await dbSnapshot()).toBe(before);
  });

  it("releases the lease when the session's ended event is recorded", async () => {
    for (let i = 0; i < 5; i++) await admitAt(NOW, admitBody(`sess_${i}`));
    expect((await admitAt(NOW + SEC, admitBody("sess_5"))).allowed).toBe(false);
    await env.DB.prepare("UPDATE sessions SET ended_at = ?1 WHERE session_id = 'sess_3'")
      .bind(NOW + SEC)
      .run();
    expect(await admitAt(NOW + 2 * SEC, admitBody("sess_5"))).toMatchObject({
      allowed: true,
      active_sessions: 5,
    });
  });

  it("releases the lease when the session is judged unbillable", async () => {
    for (let i = 0; i < 5; i++) await admitAt(NOW, admitBody(`sess_${i}`));
    await env.DB.prepare(
      "UPDATE sessions SET verdict_at = ?1, open = 0, billable = 0 WHERE session_id = 'sess_1'",
    )
      .bind(NOW + SEC)
      .run();
    expect(await admitAt(NOW + 2 * SEC, admitBody("sess_5"))).toMatchObject({ allowed: true, used: 5 });
  });

  it("refuses with monthly_quota_exhausted at 99 billable sessions plus one open session", async () => {
    await setFreeUsage("user_1", 99);
    await insertSession({ id: "sess_open", admittedAt: NOW - 10 * 60 * SEC }); // lapsed lease, not judged yet
    const before = await dbSnapshot();
    expect(await admitAt(NOW, admitBody("sess_next"))).toEqual({
      allowed: false,
      reason: "monthly_quota_exhausted",
      plan: "free",
      used: 100,
      quota: 100,
      active_sessions: 0,
      concurrent_limit: 5,
    });
    expect(await dbSnapshot()).toBe(before);
  });

  it("admits the 100th session of the month (98 billable plus one open)", async () => {
    await setFreeUsage("user_1", 98);
    await insertSession({ id: "sess_open" });
    expect(await admitAt(NOW, admitBody("sess_next"))).toMatchObject({
      allowed: true,
      used: 100,
      active_sessions: 2,
    });
    expect(await admitAt(NOW, admitBody("sess_after"))).toMatchObject({
      allowed: false,
      reason: "monthly_quota_exhausted",
    });
  });

  it("counts only this calendar month's usage", async () => {
    const lastMonth = calendarMonth(MONTH.start - 1).start;
    await setFreeUsage("user_1", 100, lastMonth);
    await insertSession({ id: "sess_old", admittedAt: lastMonth + DAY, lastSeenAt: lastMonth + DAY });
    expect(await admitAt(NOW, admitBody("sess_new"))).toMatchObject({ allowed: true, used: 1 });
  });

  it("does not count other users' sessions", async () => {
    for (let i = 0; i < 5; i++) await insertSession({ id: `other_${i}`, user: "user_2" });
    await setFreeUsage("user_2", 100);
    expect(await admitAt(NOW, admitBody("sess_mine"))).toMatchObject({
      allowed: true,
      used: 1,
      active_sessions: 1,
    });
  });

  it("takes the lease of a session first seen through telemetry", async () => {
    await insertSession({ id: "sess_t", admittedAt: null, open: 0, lastSeenAt: NOW - 5 * SEC });
    expect(await admitAt(NOW, admitBody("sess_t"))).toMatchObject({
      allowed: true,
      active_sessions: 1,
      used: 1,
    });
    expect(await sessionRow("sess_t")).toMatchObject({ admitted_at: NOW, open: 1, admitted_plan: "free" });
  });

  it("never reopens a session that already has a verdict", async () => {
    await insertSession({
      id: "sess_done",
      admittedAt: NOW - DAY,
      open: 0,
      endedAt: NOW - DAY,
      verdictAt: NOW - DAY,
    });
    expect(await admitAt(NOW, admitBody("sess_done"))).toMatchObject({
      allowed: true,
      active_sessions: 0,
      used: 0,
    });
    expect(await sessionRow("sess_done")).toMatchObject({ admitted_at: NOW - DAY, open: 0 });
  });

  it("refuses a session id owned by another user with 409 and leaves it unchanged", async () => {
    await admitAt(NOW, admitBody("sess_x", "user_1"));
    const before = await dbSnapshot();
    const res = await harness({ now: () => NOW }).fetch(
      "/v1/sessions/admit",
      postJson(admitBody("sess_x", "user_2")),
    );
    expect(res.status).toBe(409);
    expect((await errorBody(res)).code).toBe("session_owner_mismatch");
    expect(await dbSnapshot()).toBe(before);
  });
});

describe("POST /v1/sessions/admit on paid plans", () => {
  it("admits every session of a paid user and still reports active leases", async () => {
    await subscribe("user_p", "payg");
    const h = harness({ now: () => NOW });
    const bodies = await Promise.all(
      Array.from({ length: 8 }, async (_, i) =>
        AdmitResponse.parse(
          await (await h.fetch("/v1/sessions/admit", postJson(admitBody(`paid_${i}`, "user_p")))).json(),
        ),
      ),
    );
    expect(bodies.every((b) => b.allowed && b.reason === null && b.plan === "payg")).toBe(true);
    expect(bodies.every((b) => b.quota === null && b.concurrent_limit === null)).toBe(true);
    expect(Math.max(...bodies.map((b) => b.active_sessions))).toBe(8);
    expect(await openSessions("user_p")).toBe(8);
    expect((await sessionRow("paid_0"))?.admitted_plan).toBe("payg");
  });

  it("reports pro's included sessions as the quota and counts usage in the subscription period", async () => {
    await subscribe("user_pro", "pro");
    await env.DB.prepare(
      `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, updated_at)
       VALUES ('user_pro', 'pro', ?1, ?2, 412, ?1)`,
    )
      .bind(NOW - 10 * DAY, NOW + 20 * DAY)
      .run();
    expect(await admitAt(NOW, admitBody("pro_1", "user_pro"))).toEqual({
      allowed: true,
      reason: null,
      plan: "pro",
      used: 413,
      quota: 400,
      active_sessions: 1,
      concurrent_limit: null,
    });
  });

  it("keeps paid limits while a failed payment is within the grace period", async () => {
    await subscribe("user_p", "payg", NOW - 6 * DAY);
    for (let i = 0; i < 7; i++)
      expect((await admitAt(NOW, admitBody(`p_${i}`, "user_p"))).allowed).toBe(true);
  });

  it("applies free limits once a failed payment is past the grace period", async () => {
    await subscribe("user_p", "payg", NOW - 8 * DAY);
    const results = [];
    for (let i = 0; i < 6; i++) results.push(await admitAt(NOW, admitBody(`p_${i}`, "user_p")));
    expect(results.map((r) => r.allowed)).toEqual([true, true, true, true, true, false]);
    expect(results[5]).toMatchObject({
      plan: "payg",
      reason: "concurrency_limit_reached",
      concurrent_limit: 5,
      quota: 100,
    });
  });
});

async function setCap(user: string, capCents: number | null) {
  await env.DB.prepare(
    `INSERT INTO spend_limits (user_id, monthly_cap_cents, updated_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (user_id) DO UPDATE SET monthly_cap_cents = excluded.monthly_cap_cents`,
  )
    .bind(user, capCents, NOW)
    .run();
}

async function setPaidUsage(user: string, plan: "payg" | "pro", billable: number) {
  await env.DB.prepare(
    `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?3)`,
  )
    .bind(user, plan, NOW - 10 * DAY, NOW + 20 * DAY, billable)
    .run();
}

describe("POST /v1/sessions/admit under a spend cap", () => {
  it("refuses a payg session with spend_cap_reached once billable plus in-flight sessions reach the cap", async () => {
    await subscribe("user_p", "payg");
    await setCap("user_p", 500); // $5.00 = 50 sessions at 10 c
    await setPaidUsage("user_p", "payg", 48);
    await insertSession({ id: "open_1", user: "user_p" }); // admitted, not judged: counts
    expect(await admitAt(NOW, admitBody("s_50", "user_p"))).toMatchObject({ allowed: true, used: 50 });
    const before = await dbSnapshot();
    expect(await admitAt(NOW, admitBody("s_51", "user_p"))).toEqual({
      allowed: false,
      reason: "spend_cap_reached",
      plan: "payg",
      used: 50,
      quota: null,
      active_sessions: 2,
      concurrent_limit: null,
    });
    expect(await dbSnapshot()).toBe(before);
    // a retry of an admitted session is still answered as admitted
    expect(await admitAt(NOW, admitBody("s_50", "user_p"))).toMatchObject({ allowed: true, used: 50 });
  });

  it("rounds the cap down to whole sessions: 55 c allows 5 payg sessions, not 6", async () => {
    await subscribe("user_p", "payg");
    await setCap("user_p", 55);
    const results = [];
    for (let i = 0; i < 6; i++) results.push(await admitAt(NOW, admitBody(`c_${i}`, "user_p")));
    expect(results.map((r) => r.allowed)).toEqual([true, true, true, true, true, false]);
    expect(results[5]?.reason).toBe("spend_cap_reached");
  });

  it("caps pro's overage only: the 400 included sessions cost nothing, a cap of 70 c allows 10 more", async () => {
    await subscribe("user_pro", "pro");
    await setCap("user_pro", 70);
    await setPaidUsage("user_pro", "pro", 409);
    expect(await admitAt(NOW, admitBody("pro_410", "user_pro"))).toMatchObject({ allowed: true, used: 410 });
    expect(await admitAt(NOW, admitBody("pro_411", "user_pro"))).toMatchObject({
      allowed: false,
      reason: "spend_cap_reached",
      used: 410,
      quota: 400,
    });
  });

  it("with a cap of 0 admits pro's included sessions and no payg session", async () => {
    await subscribe("user_pro", "pro");
    await subscribe("user_p", "payg");
    await setCap("user_pro", 0);
    await setCap("user_p", 0);
    await setPaidUsage("user_pro", "pro", 399);
    expect((await admitAt(NOW, admitBody("pro_400", "user_pro"))).allowed).toBe(true);
    expect((await admitAt(NOW, admitBody("pro_401", "user_pro"))).reason).toBe("spend_cap_reached");
    expect((await admitAt(NOW, admitBody("payg_1", "user_p"))).reason).toBe("spend_cap_reached");
  });

  it("admits without limit when the cap is null", async () => {
    await subscribe("user_p", "payg");
    await setCap("user_p", null);
    await setPaidUsage("user_p", "payg", 1_000_000);
    expect(await admitAt(NOW, admitBody("s_x", "user_p"))).toMatchObject({ allowed: true, reason: null });
  });

  it("lets a raised cap admit again", async () => {
    await subscribe("user_p", "payg");
    await setCap("user_p", 100);
    await setPaidUsage("user_p", "payg", 10);
    expect((await admitAt(NOW, admitBody("s_a", "user_p"))).reason).toBe("spend_cap_reached");
    await setCap("user_p", 110);
    expect((await admitAt(NOW, admitBody("s_a", "user_p"))).allowed).toBe(true);
  });

  it("does not apply to free limits (free usage costs nothing), nor to another user's cap", async () => {
    await setCap("user_1", 0);
    await setCap("user_p", 0);
    await subscribe("user_q", "payg");
    expect((await admitAt(NOW, admitBody("free_1", "user_1"))).allowed).toBe(true);
    expect((await admitAt(NOW, admitBody("q_1", "user_q"))).allowed).toBe(true);
  });

  it("admits exactly up to the cap under concurrent calls at the boundary", async () => {
    await subscribe("user_p", "payg");
    await setCap("user_p", 300); // 30 sessions
    await setPaidUsage("user_p", "payg", 25);
    const h = harness({ now: () => NOW });
    const bodies = await Promise.all(
      Array.from({ length: 12 }, async (_, i) =>
        AdmitResponse.parse(
          await (await h.fetch("/v1/sessions/admit", postJson(admitBody(`race_${i}`, "user_p")))).json(),
        ),
      ),
    );
    expect(bodies.filter((b) => b.allowed)).toHaveLength(5);
    expect(bodies.filter((b) => !b.allowed).every((b) => b.reason === "spend_cap_reached")).toBe(true);
    expect(await openSessions("user_p")).toBe(5);
  });

  it("names the quota first, then the spend cap, then the concurrency limit", () => {
    const counts = { owner_id: null, self_in_flight: 0, live_others: 5, in_flight_others: 5, billable: 95 };
    const all = { monthlyQuota: 100, concurrentLimit: 5, spendCapPlan: "payg" as const };
    expect(withinLimits({ ...counts, cap_cents: 1000 }, all)).toBe("monthly_quota_exhausted");
    expect(withinLimits({ ...counts, cap_cents: 1000 }, { ...all, monthlyQuota: null })).toBe(
      "spend_cap_reached",
    );
    expect(withinLimits({ ...counts, cap_cents: 1010 }, { ...all, monthlyQuota: null })).toBe(
      "concurrency_limit_reached",
    );
    expect(
      withinLimits({ ...counts, cap_cents: null }, { ...all, monthlyQuota: null, concurrentLimit: null }),
    ).toBeNull();
  });
});

interface BadAdmit {
  name: string;
  init: RequestInit;
  status: number;
  code: string;
}

const badAdmits: BadAdmit[] = [
  { name: "malformed JSON", init: postJson('{"session_id":'), status: 400, code: "invalid_json" },
  {
    name: "a missing field",
    init: postJson({ session_id: "s", user_id: "u" }),
    status: 400,
    code: "invalid_request",
  },
  {
    name: "a mistyped field",
    init: postJson({ session_id: 42, user_id: "u", project_id: "p" }),
    status: 400,
    code: "invalid_request",
  },
  { name: "an empty id", init: postJson(admitBody(" ", "u")), status: 400, code: "invalid_request" },
  {
    name: "a session id with a lone UTF-16 surrogate",
    init: postJson('{"session_id":"s-\\ud800","user_id":"u","project_id":"p"}'),
    status: 400,
    code: "invalid_request",
  },
  { name: "an array", init: postJson([admitBody("s")]), status: 400, code: "invalid_request" },
  {
    name: "a body over 16 KiB",
    init: postJson({ ...admitBody("s"), pad: "x".repeat(17 * 1024) }),
    status: 413,
    code: "payload_too_large",
  },
  {
    name: "a non-JSON content type",
    init: postJson(admitBody("s"), { contentType: "text/plain" }),
    status: 415,
    code: "unsupported_media_type",
  },
  { name: "no key", init: postJson(admitBody("s"), { key: null }), status: 401, code: "unauthorized" },
  {
    name: "an unknown key",
    init: postJson(admitBody("s"), { key: "aig_wrong" }),
    status: 401,
    code: "unauthorized",
  },
  {
    name: "an admin key",
    init: postJson(admitBody("s"), { key: DEV_ADMIN_KEY }),
    status: 403,
    code: "forbidden",
  },
];

describe("POST /v1/sessions/admit rejects bad input and changes nothing", () => {
  it.each(badAdmits)("rejects $name with $status $code", async (c) => {
    const before = await dbSnapshot();
    const res = await harness({ now: () => NOW }).fetch("/v1/sessions/admit", c.init);
    expect(res.status).toBe(c.status);
    expect((await errorBody(res)).code).toBe(c.code);
    expect(await dbSnapshot()).toBe(before);
  });

  it("says which fields are wrong", async () => {
    const res = await harness({ now: () => NOW }).fetch(
      "/v1/sessions/admit",
      postJson({ session_id: "s", user_id: 7 }),
    );
    const error = await errorBody(res);
    expect(error.details).toEqual([
      { path: "user_id", message: expect.any(String) },
      { path: "project_id", message: expect.any(String) },
    ]);
  });
});

describe("POST /v1/sessions/admit on an unexpected failure", () => {
  it("answers 500 internal_error in the envelope without leaking the cause, and admits nothing", async () => {
    const before = await dbSnapshot();
    const h = harness({ now: () => NOW, vars: { LEASE_TTL_SECONDS: "not-a-number" } });
    const res = await h.fetch("/v1/sessions/admit", postJson(admitBody("sess_a")));
    expect(res.status).toBe(500);
    expect(await errorBody(res)).toEqual({ code: "internal_error", message: "internal error" });
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(await dbSnapshot()).toBe(before);
  });
});

describe("the admission decision", () => {
  it("matches the rule on random states of a free user's sessions (property, real SQL)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          live: fc.integer({ min: 0, max: 6 }),
          lapsed: fc.integer({ min: 0, max: 3 }),
          ended: fc.integer({ min: 0, max: 3 }),
          judged: fc.integer({ min: 0, max: 3 }),
          otherUser: fc.integer({ min: 0, max: 6 }),
          billable: fc.integer({ min: 85, max: 101 }),
        }),
        async (s) => {
          await env.DB.batch([
            env.DB.prepare("DELETE FROM sessions"),
            env.DB.prepare("DELETE FROM usage_periods"),
          ]);
          await setFreeUsage("user_1", s.billable);
          const rows: Parameters<typeof insertSession>[0][] = [];
          for (let i = 0; i < s.live; i++)
            rows.push({ id: `live_${i}`, lastSeenAt: NOW - 10 * SEC, admittedAt: NOW - DAY });
          for (let i = 0; i < s.lapsed; i++) rows.push({ id: `lapsed_${i}`, admittedAt: NOW - TTL - SEC });
          for (let i = 0; i < s.ended; i++)
            rows.push({ id: `ended_${i}`, admittedAt: NOW - 60 * SEC, endedAt: NOW });
          for (let i = 0; i < s.judged; i++) rows.push({ id: `judged_${i}`, open: 0, verdictAt: NOW });
          for (let i = 0; i < s.otherUser; i++) rows.push({ id: `other_${i}`, user: "user_2" });
          for (const row of rows) await insertSession(row);

          const inFlight = s.live + s.lapsed + s.ended;
          const expected = s.billable + inFlight < 100 && s.live < 5;
          const res = await admitAt(NOW, admitBody("candidate"));
          expect(res.allowed).toBe(expected);
          expect(res.active_sessions).toBe(s.live + (expected ? 1 : 0));
          expect(res.used).toBe(s.billable + inFlight + (expected ? 1 : 0));
          expect(await openSessions("user_1")).toBe(inFlight + (expected ? 1 : 0));
        },
      ),
      { numRuns: 40 },
    );
  });

  it("names the quota before the concurrency limit when both are reached", () => {
    const limits = { monthlyQuota: 100, concurrentLimit: 5, spendCapPlan: null };
    expect(
      withinLimits(
        {
          owner_id: null,
          self_in_flight: 0,
          live_others: 5,
          in_flight_others: 5,
          billable: 95,
          cap_cents: null,
        },
        limits,
      ),
    ).toBe("monthly_quota_exhausted");
    expect(
      withinLimits(
        {
          owner_id: null,
          self_in_flight: 0,
          live_others: 5,
          in_flight_others: 5,
          billable: 94,
          cap_cents: null,
        },
        limits,
      ),
    ).toBe("concurrency_limit_reached");
    expect(
      withinLimits(
        {
          owner_id: null,
          self_in_flight: 0,
          live_others: 4,
          in_flight_others: 5,
          billable: 94,
          cap_cents: null,
        },
        limits,
      ),
    ).toBeNull();
    expect(
      withinLimits(
        {
          owner_id: null,
          self_in_flight: 0,
          live_others: 99,
          in_flight_others: 999,
          billable: 999,
          cap_cents: null,
        },
        {
          monthlyQuota: null,
          concurrentLimit: null,
          spendCapPlan: null,
        },
      ),
    ).toBeNull();
  });

  it("treats a refusal without a reached limit as a bug, not a silent answer", () => {
    expect(() =>
      explainAdmission(
        {
          owner_id: null,
          self_in_flight: 0,
          live_others: 0,
          in_flight_others: 0,
          billable: 0,
          cap_cents: null,
        },
        null,
        { monthlyQuota: 100, concurrentLimit: 5, spendCapPlan: null },
        { periodStart: MONTH.start, leaseCutoff: NOW - TTL },
      ),
    ).toThrow(/within limits/);
  });
});
