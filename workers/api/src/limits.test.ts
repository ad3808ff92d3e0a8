/**
 * Spend limits over HTTP on the local runtime with the real migrations: GET/PUT /limits,
 * PUT/DELETE /alert-endpoint, bad input in the contract's envelope, and users kept apart.
 */
import { createExecutionContext, env, SELF, waitOnExecutionContext } from "cloudflare:test";
import { calendarMonth, recordSpendCrossings } from "@aigate/shared";
import { userToken } from "@aigate/test-support";
import { describe, expect, it } from "vitest";
import { createApp } from "./app";

const DAY = 86_400_000;
let seq = 0;
const newUser = (name: string) => `${name}_${Date.now().toString(36)}_${++seq}`;

async function call(user: string, path: string, init: RequestInit = {}) {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${await userToken(user)}`);
  if (init.body) headers.set("content-type", "application/json");
  return SELF.fetch(`http://api.test${path}`, { ...init, headers });
}

const put = (user: string, path: string, body: unknown) =>
  call(user, path, { method: "PUT", body: typeof body === "string" ? body : JSON.stringify(body) });

async function json(res: Response, status = 200) {
  expect(res.status, await res.clone().text()).toBe(status);
  return res.json<Record<string, unknown>>();
}

/** A payg subscriber with `billable` sessions in the current period (as the webhooks and classifier leave it). */
async function payg(user: string, billable: number) {
  const now = Date.now();
  const period = { start: now - 5 * DAY, end: now + 25 * DAY };
  const sub = `sub_${user}`;
  await env.DB.batch([
    env.DB.prepare(
      "INSERT INTO stripe_customers (user_id, stripe_customer_id, email, plan, created_at, updated_at) VALUES (?1, ?2, '', 'payg', 0, 0)",
    ).bind(user, `cus_${user}`),
    env.DB.prepare(
      `INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, plan, status, current_period_start,
         current_period_end, started_at, updated_at) VALUES (?1, ?2, ?3, 'payg', 'active', ?4, ?5, ?4, 0)`,
    ).bind(sub, user, `cus_${user}`, period.start, period.end),
    env.DB.prepare(
      "INSERT INTO billing_periods (stripe_subscription_id, period_start, period_end) VALUES (?1, ?2, ?3)",
    ).bind(sub, period.start, period.end),
    env.DB.prepare(
      "INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at) VALUES (?1, ?2, 'payg', ?3, 0)",
    ).bind(user, period.start, sub),
    env.DB.prepare(
      `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, updated_at)
       VALUES (?1, 'payg', ?2, ?3, ?4, 0)`,
    ).bind(user, period.start, period.end, billable),
  ]);
  return period;
}

describe("GET /api/billing/limits", () => {
  it("answers no cap and the default thresholds for a user who never set limits", async () => {
    const user = newUser("fresh");
    const body = await json(await call(user, "/api/billing/limits"));
    const month = calendarMonth(Date.now());
    expect(body).toEqual({
      monthly_cap_cents: null,
      alert_thresholds: [50, 80, 100],
      alert_endpoint: null,
      currency: "usd",
      plan: "free",
      period_start: new Date(month.start).toISOString(),
      period_end: new Date(month.end).toISOString(),
      sessions_this_period: 0,
      usage_cents: 0,
      cap_sessions: null,
      alerts: [],
    });
  });

  it("is 401 without a valid token", async () => {
    const res = await SELF.fetch("http://api.test/api/billing/limits");
    expect(res.status).toBe(401);
    expect((await res.json<{ error: { code: string } }>()).error.code).toBe("unauthorized");
  });
});

describe("PUT /api/billing/limits", () => {
  it("sets a cap and thresholds, and GET shows them with the period's usage against the cap", async () => {
    const user = newUser("capped");
    const period = await payg(user, 37);
    const set = await json(
      await put(user, "/api/billing/limits", { monthly_cap_cents: 5000, alert_thresholds: [25, 90] }),
    );
    expect(set).toMatchObject({
      monthly_cap_cents: 5000,
      alert_thresholds: [25, 90],
      plan: "payg",
      period_start: new Date(period.start).toISOString(),
      sessions_this_period: 37,
      usage_cents: 370,
      cap_sessions: 500,
    });
    expect(await json(await call(user, "/api/billing/limits"))).toEqual(set);
  });

  it("defaults the thresholds, removes the cap with null, and keeps each user's limits apart", async () => {
    const user = newUser("a");
    const other = newUser("b");
    await json(await put(user, "/api/billing/limits", { monthly_cap_cents: 1200 }));
    await json(await put(other, "/api/billing/limits", { monthly_cap_cents: 99, alert_thresholds: [100] }));
    expect(await json(await call(user, "/api/billing/limits"))).toMatchObject({
      monthly_cap_cents: 1200,
      alert_thresholds: [50, 80, 100],
    });
    await json(await put(user, "/api/billing/limits", { monthly_cap_cents: null, alert_thresholds: [] }));
    expect(await json(await call(user, "/api/billing/limits"))).toMatchObject({
      monthly_cap_cents: null,
      alert_thresholds: [],
      cap_sessions: null,
    });
    expect(await json(await call(other, "/api/billing/limits"))).toMatchObject({
      monthly_cap_cents: 99,
      alert_thresholds: [100],
    });
  });

  it.each([
    ["a negative cap", { monthly_cap_cents: -100 }, "monthly_cap_cents"],
    ["a fractional cap", { monthly_cap_cents: 12.5 }, "monthly_cap_cents"],
    ["a cap as a string", { monthly_cap_cents: "5000" }, "monthly_cap_cents"],
    ["a missing cap", { alert_thresholds: [50] }, "monthly_cap_cents"],
    ["a threshold of 0", { monthly_cap_cents: 100, alert_thresholds: [0, 50] }, "alert_thresholds.0"],
    ["a threshold over 100", { monthly_cap_cents: 100, alert_thresholds: [50, 150] }, "alert_thresholds.1"],
    ["unsorted thresholds", { monthly_cap_cents: 100, alert_thresholds: [80, 50] }, "alert_thresholds"],
    [
      "duplicated thresholds",
      { monthly_cap_cents: 100, alert_thresholds: [50, 50, 100] },
      "alert_thresholds",
    ],
    ["an unknown field", { monthly_cap_cents: 100, alert_email: "a@b.c" }, ""],
    ["not JSON", "{monthly_cap_cents: 1", ""],
  ])("refuses %s with 400 invalid_request and changes nothing", async (_, body, path) => {
    const user = newUser("bad");
    await json(await put(user, "/api/billing/limits", { monthly_cap_cents: 700, alert_thresholds: [60] }));
    const res = await put(user, "/api/billing/limits", body);
    const error = (await json(res, 400)).error as {
      code: string;
      message: string;
      details?: { path: string }[];
    };
    expect(error.code).toBe("invalid_request");
    expect(error.message).toEqual(expect.any(String));
    if (path) expect(error.details?.map((d) => d.path)).toContain(path);
    expect(await json(await call(user, "/api/billing/limits"))).toMatchObject({
      monthly_cap_cents: 700,
      alert_thresholds: [60],
    });
  });
});

describe("PUT /api/billing/alert-endpoint", () => {
  it("registers an https endpoint, returns its secret once, and GET shows the URL only", async () => {
    const user = newUser("hook");
    const reg = await json(
      await put(user, "/api/billing/alert-endpoint", { url: "https://example.com/hooks/aigate" }),
    );
    expect(reg).toEqual({
      url: "https://example.com/hooks/aigate",
      secret: expect.stringMatching(/^aigwhsec_[0-9a-f]{64}$/),
      registered_at: expect.any(String),
    });
    const limits = await json(await call(user, "/api/billing/limits"));
    expect(limits.alert_endpoint).toEqual({
      url: "https://example.com/hooks/aigate",
      registered_at: reg.registered_at,
    });
    expect(JSON.stringify(limits)).not.toContain(String(reg.secret));
    // registering again replaces the secret
    const again = await json(
      await put(user, "/api/billing/alert-endpoint", { url: "https://example.com/v2" }),
    );
    expect(again.secret).not.toBe(reg.secret);
    // the cap is kept by endpoint changes, and the endpoint by limit changes
    await json(await put(user, "/api/billing/limits", { monthly_cap_cents: 300 }));
    expect((await json(await call(user, "/api/billing/limits"))).alert_endpoint).toMatchObject({
      url: "https://example.com/v2",
    });
    expect(await json(await call(user, "/api/billing/alert-endpoint", { method: "DELETE" }))).toEqual({
      removed: true,
    });
    expect(await json(await call(user, "/api/billing/limits"))).toMatchObject({
      alert_endpoint: null,
      monthly_cap_cents: 300,
    });
  });

  it.each([
    ["plain http", "http://example.com/hook"],
    ["http on localhost outside dev", "http://localhost:9999/hook"],
    ["http on 127.0.0.1 outside dev", "http://127.0.0.1:9999/hook"],
    ["another scheme", "ftp://example.com/hook"],
    ["not a URL", "example.com/hook"],
    ["credentials in the URL", "https://user:pw@example.com/hook"],
  ])("refuses %s with 400 invalid_request", async (_, url) => {
    const user = newUser("badhook");
    const error = (await json(await put(user, "/api/billing/alert-endpoint", { url }), 400)).error as {
      code: string;
      details: { path: string }[];
    };
    expect(error.code).toBe("invalid_request");
    expect(error.details.map((d) => d.path)).toEqual(["url"]);
    expect((await json(await call(user, "/api/billing/limits"))).alert_endpoint).toBeNull();
  });

  it("refuses unknown fields", async () => {
    const user = newUser("badhook");
    const res = await put(user, "/api/billing/alert-endpoint", {
      url: "https://example.com/h",
      secret: "mine",
    });
    expect(((await json(res, 400)).error as { code: string }).code).toBe("invalid_request");
  });

  it("allows http on localhost and 127.0.0.1 only when local http is allowed (dev), never elsewhere", async () => {
    const app = createApp();
    const devEnv = { ...env, ALERT_ENDPOINT_ALLOW_LOCAL_HTTP: "true" };
    const user = newUser("dev");
    const attempt = async (url: string) => {
      const ctx = createExecutionContext();
      const res = await app.fetch(
        new Request("http://api.test/api/billing/alert-endpoint", {
          method: "PUT",
          headers: { authorization: `Bearer ${await userToken(user)}`, "content-type": "application/json" },
          body: JSON.stringify({ url }),
        }),
        devEnv,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      return res.status;
    };
    expect(await attempt("http://localhost:4000/hook")).toBe(200);
    expect(await attempt("http://127.0.0.1:4000/hook")).toBe(200);
    expect(await attempt("http://example.com/hook")).toBe(400);
    expect(await attempt("http://10.0.0.1/hook")).toBe(400);
  });
});

describe("threshold crossings", () => {
  it("are recorded once per series and threshold, however often the series is looked at, and GET lists them", async () => {
    const user = newUser("crossing");
    const period = await payg(user, 0);
    await json(
      await put(user, "/api/billing/limits", { monthly_cap_cents: 1000, alert_thresholds: [50, 80, 100] }),
    );
    const series = [{ user_id: user, plan: "payg", period_start: period.start }];
    const grow = async (n: number, at: number) => {
      await env.DB.batch([
        env.DB.prepare(
          "UPDATE usage_periods SET billable_sessions = ?3 WHERE user_id = ?1 AND period_start = ?2",
        ).bind(user, period.start, n),
        recordSpendCrossings(env.DB, series, at),
      ]);
    };
    await grow(49, 1000); // 490 c: below 50 %
    expect((await json(await call(user, "/api/billing/limits"))).alerts).toEqual([]);
    await grow(50, 2000); // 500 c: 50 %
    await grow(50, 3000); // a retried batch: nothing new
    await grow(85, 4000); // 850 c: 80 %
    await env.DB.batch([
      recordSpendCrossings(env.DB, series, 5000),
      recordSpendCrossings(env.DB, series, 6000),
    ]);
    const body = await json(await call(user, "/api/billing/limits"));
    expect(body.alerts).toEqual([
      {
        threshold: 50,
        crossed_at: new Date(2000).toISOString(),
        usage_cents: 500,
        cap_cents: 1000,
        sessions: 50,
        delivery: "none",
        delivered_at: null,
      },
      {
        threshold: 80,
        crossed_at: new Date(4000).toISOString(),
        usage_cents: 850,
        cap_cents: 1000,
        sessions: 85,
        delivery: "none",
        delivered_at: null,
      },
    ]);
    // a lowered cap: the 100 % threshold is crossed by the next growth, once
    await json(await put(user, "/api/billing/limits", { monthly_cap_cents: 800 }));
    await grow(86, 7000);
    await grow(87, 8000);
    const after = (await json(await call(user, "/api/billing/limits"))).alerts as {
      threshold: number;
      crossed_at: string;
    }[];
    expect(after.map((a) => [a.threshold, a.crossed_at])).toEqual([
      [50, new Date(2000).toISOString()],
      [80, new Date(4000).toISOString()],
      [100, new Date(7000).toISOString()],
    ]);
  });

  it("are pending delivery when an endpoint is registered, and never raised without a cap, at a cap of 0, or on free", async () => {
    const user = newUser("pending");
    const period = await payg(user, 30);
    await json(await put(user, "/api/billing/alert-endpoint", { url: "https://example.com/h" }));
    const series = [{ user_id: user, plan: "payg", period_start: period.start }];
    await env.DB.batch([recordSpendCrossings(env.DB, series, 1)]); // no cap
    await json(await put(user, "/api/billing/limits", { monthly_cap_cents: 0 }));
    await env.DB.batch([recordSpendCrossings(env.DB, series, 2)]);
    expect((await json(await call(user, "/api/billing/limits"))).alerts).toEqual([]);
    await json(await put(user, "/api/billing/limits", { monthly_cap_cents: 500, alert_thresholds: [50] }));
    await env.DB.batch([recordSpendCrossings(env.DB, series, 3)]);
    expect((await json(await call(user, "/api/billing/limits"))).alerts).toMatchObject([
      { threshold: 50, usage_cents: 300, delivery: "pending" },
    ]);
    const free = newUser("free");
    const month = calendarMonth(Date.now());
    await env.DB.prepare(
      `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, updated_at)
       VALUES (?1, 'free', ?2, ?3, 100, 0)`,
    )
      .bind(free, month.start, month.end)
      .run();
    await json(await put(free, "/api/billing/limits", { monthly_cap_cents: 1 }));
    await env.DB.batch([
      recordSpendCrossings(env.DB, [{ user_id: free, plan: "free", period_start: month.start }], 4),
    ]);
    expect((await json(await call(free, "/api/billing/limits"))).alerts).toEqual([]);
  });
});
