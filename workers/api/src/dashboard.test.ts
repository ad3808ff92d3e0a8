/**
 * The dashboard pages as the worker serves them (their behaviour in a browser is covered by
 * test/browser), and GET /api/billing/daily, the chart's data.
 */
import { env, SELF } from "cloudflare:test";
import { utcDay } from "@aigate/shared";
import { seedKeys, userToken } from "@aigate/test-support";
import { raw } from "hono/html";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { dailyEntries, dayRange } from "./dailyUsage";
import { renderPage } from "./pages/layout";

const DAY = 86_400_000;
const get = (path: string, headers: Record<string, string> = {}) =>
  SELF.fetch(`http://api.test${path}`, { headers });

function nonceOf(res: Response): string {
  const csp = res.headers.get("content-security-policy") ?? "";
  const m = /script-src 'nonce-([A-Za-z0-9+/=]+)'/.exec(csp);
  if (!m?.[1]) throw new Error(`no script nonce in CSP: ${csp}`);
  return m[1];
}

describe("dashboard pages", () => {
  for (const [path, title] of [
    ["/", "AI Gate billing"],
    ["/admin", "AI Gate operations"],
  ] as const) {
    it(`serves ${path} as HTML whose only script and style carry the CSP nonce`, async () => {
      const res = await get(path);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      expect(res.headers.get("cache-control")).toBe("no-store");
      const nonce = nonceOf(res);
      expect(res.headers.get("content-security-policy")).toBe(
        `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; ` +
          "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
      );
      const html = await res.text();
      expect(html).toContain(`<title>${title}</title>`);
      expect(html).toContain('<html lang="en">');
      expect(html).toContain('name="viewport" content="width=device-width, initial-scale=1"');
      const scripts = [...html.matchAll(/<script([^>]*)>/g)].map((m) => m[1] ?? "");
      const executable = scripts.filter((attrs) => !attrs.includes('type="application/json"'));
      expect(executable).toEqual([` nonce="${nonce}"`]);
      expect([...html.matchAll(/<style([^>]*)>/g)].map((m) => m[1])).toEqual([` nonce="${nonce}"`]);
      // No external assets, no inline event handlers or style attributes (CSP would block them).
      expect(html).not.toMatch(/\b(src|href)="(https?:)?\/\//);
      expect(html).not.toMatch(/\son[a-z]+="/);
      expect(html).not.toMatch(/\sstyle="/);
      // Every form control has a label.
      for (const m of html.matchAll(/<(input|textarea|select)[^>]*id="([^"]+)"/g)) {
        expect(html, `label for ${m[2]}`).toContain(`for="${m[2]}"`);
      }
    });
  }

  it("uses a fresh nonce for every response", async () => {
    const a = nonceOf(await get("/"));
    const b = nonceOf(await get("/"));
    expect(a).not.toBe(b);
    expect(a.length).toBeGreaterThanOrEqual(22);
  });

  it("has the billing page's landmarks: the banner as a status region, upgrade buttons, usage chart", async () => {
    const html = await (await get("/")).text();
    expect(html).toContain('id="banner" class="banner" role="status" hidden');
    expect(html).toContain('data-plan="payg" hidden>Upgrade to Pay-as-you-go</button>');
    expect(html).toContain('data-plan="pro" hidden>Upgrade to Pro</button>');
    expect(html).toContain('id="portal" class="secondary" hidden>Manage billing</button>');
    expect(html).toContain("<summary>Daily usage as a table</summary>");
    expect(html).toContain('<label for="token-input">User token</label>');
  });

  it("keeps the operator page public while the admin API behind it needs the key", async () => {
    await seedKeys(env.DB);
    expect((await get("/admin")).status).toBe(200);
    const api = await get("/admin/metrics");
    expect(api.status).toBe(401);
    expect(await api.json()).toMatchObject({ error: { code: "unauthorized" } });
  });

  it("logs one structured JSON line per request, with the request id it echoes", async () => {
    const lines: string[] = [];
    const spy = vi.spyOn(console, "log").mockImplementation((line: unknown) => {
      lines.push(String(line));
    });
    try {
      const res = await get("/admin?x=1", { "cf-ray": "ray-123" });
      expect(res.headers.get("x-request-id")).toBe("ray-123");
      const missing = await get("/no/such/page");
      expect(missing.status).toBe(404);
      expect(missing.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    } finally {
      spy.mockRestore();
    }
    const logged = lines.map((l) => JSON.parse(l));
    expect(logged).toContainEqual(
      expect.objectContaining({
        level: "info",
        worker: "api",
        msg: "request done",
        request_id: "ray-123",
        method: "GET",
        path: "/admin",
        status: 200,
        d1_rows_written: 0,
      }),
    );
    expect(logged).toContainEqual(
      expect.objectContaining({ msg: "request done", path: "/no/such/page", status: 404 }),
    );
  });

  it("escapes text put into HTML", async () => {
    const page = String(
      await renderPage({ title: `<a href="x">'&'</a>`, nonce: `"n"`, body: raw("<p></p>"), script: "" }),
    );
    expect(page).toContain("<title>&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;</title>");
    expect(page).toContain('<script nonce="&quot;n&quot;">');
  });
});

describe("GET /api/billing/daily", () => {
  const user = "daily_user";
  const now = Date.now();
  const today = utcDay(now);
  const yesterday = utcDay(now - DAY);

  beforeEach(async () => {
    const rollup = env.DB.prepare(
      "INSERT INTO daily_rollups (user_id, day, reason, sessions, audio_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    );
    await env.DB.batch([
      rollup.bind(user, today, "success", 4, 40_000),
      rollup.bind(user, today, "turn_failed", 1, 0),
      rollup.bind(user, today, "too_short", 2, 3_000),
      rollup.bind(user, yesterday, "success", 3, 30_000),
      rollup.bind(user, utcDay(now - 40 * DAY), "success", 9, 1),
      rollup.bind("someone_else", today, "success", 50, 1),
    ]);
  });

  it("returns the caller's sessions per day, oldest first, days without sessions as zeros", async () => {
    const res = await get("/api/billing/daily?days=3", { authorization: `Bearer ${await userToken(user)}` });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      from: utcDay(now - 2 * DAY),
      to: today,
      days: [
        {
          day: utcDay(now - 2 * DAY),
          sessions: 0,
          billable: 0,
          not_charged: 0,
          not_charged_by_reason: {},
          audio_ms: 0,
        },
        {
          day: yesterday,
          sessions: 3,
          billable: 3,
          not_charged: 0,
          not_charged_by_reason: {},
          audio_ms: 30_000,
        },
        {
          day: today,
          sessions: 7,
          billable: 4,
          not_charged: 3,
          not_charged_by_reason: { too_short: 2, turn_failed: 1 },
          audio_ms: 43_000,
        },
      ],
    });
  });

  it("defaults to 30 days and validates days", async () => {
    const auth = { authorization: `Bearer ${await userToken(user)}` };
    const body = await (await get("/api/billing/daily", auth)).json<{ days: unknown[] }>();
    expect(body.days).toHaveLength(30);
    for (const q of ["0", "91", "x", "-1"]) {
      const res = await get(`/api/billing/daily?days=${q}`, auth);
      expect(res.status, q).toBe(400);
      expect(await res.json()).toMatchObject({ error: { code: "invalid_request" } });
    }
  });

  it("needs a valid user token", async () => {
    expect((await get("/api/billing/daily")).status).toBe(401);
    const forged = await userToken(user, { secret: "not-the-secret" });
    expect((await get("/api/billing/daily", { authorization: `Bearer ${forged}` })).status).toBe(401);
  });

  it("lists every day of the range across a month boundary (pure)", () => {
    const range = dayRange(Date.UTC(2026, 2, 2, 10), 4);
    expect(range).toEqual({
      from: "2026-02-27",
      to: "2026-03-02",
      list: ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"],
    });
    expect(
      dailyEntries(["2026-03-01"], [{ day: "2026-02-28", reason: "success", sessions: 1, audio_ms: 1 }]),
    ).toEqual([
      { day: "2026-03-01", sessions: 0, billable: 0, not_charged: 0, not_charged_by_reason: {}, audio_ms: 0 },
    ]);
  });
});
