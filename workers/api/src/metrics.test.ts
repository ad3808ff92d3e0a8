/**
 * Monthly metrics: the pure definitions, and GET /admin/metrics over a hand-built month whose
 * every number is worked out in the comments (definitions: docs/operations.md).
 */
import { env, SELF } from "cloudflare:test";
import { DEV_ADMIN_KEY, seedKeys } from "@aigate/test-support";
import { beforeEach, describe, expect, it } from "vitest";
import type { MetricsRows } from "./adminQueries";
import { metricsBody, monthWindow, rate } from "./metrics";

const utc = (y: number, m: number, d: number, h = 0, min = 0, s = 0, ms = 0) =>
  Date.UTC(y, m - 1, d, h, min, s, ms);

describe("metric definitions (pure)", () => {
  const window = { start: 0, end: 1, startDay: "1970-01-01", endDay: "1970-02-01" };
  const empty: MetricsRows = {
    payingAtEnd: [],
    churn: { paying_at_start: 0, churned: 0 },
    conversion: { free_active: 0, converted: 0 },
    sessions: [],
    invoicedCents: 0,
  };

  it("reports undefined rates as null and zero money when nobody pays", () => {
    expect(metricsBody("1970-01", window, empty)).toMatchObject({
      mrr_cents: 0,
      arpu_cents: 0,
      paying_customers: 0,
      churn_rate: null,
      conversion_rate: null,
      success_rate: null,
      sessions_total: 0,
      sessions_billable: 0,
      failed_by_reason: {
        turn_failed: 0,
        upstream_error: 0,
        not_connected: 0,
        slow_connect: 0,
        too_short: 0,
      },
    });
  });

  it("counts pro's $29 fee in MRR and nothing for metered pay-as-you-go; rounds ARPU to the cent", () => {
    const body = metricsBody("1970-01", window, {
      ...empty,
      payingAtEnd: [
        { plan: "payg", n: 2 },
        { plan: "pro", n: 1 },
      ],
    });
    expect(body.mrr_cents).toBe(2900);
    expect(body.paying_customers).toBe(3);
    expect(body.arpu_cents).toBe(967); // 2900 / 3 = 966.67
  });

  it("rounds rates to 4 decimal places", () => {
    expect(rate(2, 3)).toBe(0.6667);
    expect(rate(1, 4)).toBe(0.25);
    expect(rate(0, 5)).toBe(0);
    expect(rate(1, 0)).toBeNull();
  });

  it("measures a past month to its end, the current month to now, and refuses future or malformed months", () => {
    const now = utc(2026, 11, 20, 12);
    expect(monthWindow("2026-10", now)).toEqual({
      ok: true,
      month: "2026-10",
      period: { start: utc(2026, 10, 1), end: utc(2026, 11, 1) },
      window: {
        start: utc(2026, 10, 1),
        end: utc(2026, 11, 1),
        startDay: "2026-10-01",
        endDay: "2026-11-01",
      },
    });
    expect(monthWindow(undefined, now)).toMatchObject({ ok: true, month: "2026-11", window: { end: now } });
    expect(monthWindow("2026-12", now)).toEqual({ ok: false, message: "month is in the future" });
    expect(monthWindow("2026-13", now)).toEqual({
      ok: false,
      message: "month must be YYYY-MM, 2000-01 or later",
    });
    expect(monthWindow("26-01", now)).toEqual({
      ok: false,
      message: "month must be YYYY-MM, 2000-01 or later",
    });
  });

  it("refuses years before 2000 rather than reading two-digit years as 19xx", () => {
    const now = utc(2026, 11, 20, 12);
    for (const month of ["0050-06", "0000-01", "0099-12", "0100-01", "1969-12", "1999-12"]) {
      expect(monthWindow(month, now), month).toEqual({
        ok: false,
        message: "month must be YYYY-MM, 2000-01 or later",
      });
    }
    expect(monthWindow("2000-01", now)).toMatchObject({
      ok: true,
      month: "2000-01",
      period: { start: utc(2000, 1, 1), end: utc(2000, 2, 1) },
    });
  });
});

/**
 * March 2025, nine users:
 *   a  pro since Feb                      -> paying at start and end (pro)
 *   b  free, active, pro from Mar 10      -> converted; paying at end (pro)
 *   c  payg since Jan, free from Mar 20   -> churned
 *   d  payg since Jan                     -> paying at start and end (payg)
 *   e  free, active in March              -> free and active, not converted
 *   f  free, active in February only      -> not counted
 *   g  free, payg Mar 5, free Mar 25      -> converted (not paying at end; not churn: not paying at start)
 *   h  free, payg from Apr 2              -> not counted in March
 *   i  pro since Feb, payg from Mar 15    -> paying at start and end (payg): a plan change, not churn
 * Paying at end: pro a, b; payg d, i -> 4; MRR 2 x 2900 = 5800; ARPU 5800 / 4 = 1450.
 * Churn: paying at start a, c, d, i (4), churned c (1) -> 0.25.
 * Conversion: free at start and (active or converted) = b, e, g (3); converted b, g (2) -> 0.6667.
 * Sessions created in March: 10 + 2 + 5 + 3 + 20 + 1 + 4 = 45, billable 35 -> 0.7778.
 * Invoiced: finalized in March and not void/draft: 2900 + 1230 + 100 = 4230.
 */
async function seedMarch2025(db: D1Database) {
  const history = db.prepare(
    "INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at) VALUES (?1, ?2, ?3, ?4, 0)",
  );
  const rollup = db.prepare(
    "INSERT INTO daily_rollups (user_id, day, reason, sessions, audio_ms) VALUES (?1, ?2, ?3, ?4, 0)",
  );
  const invoice = db.prepare(
    `INSERT INTO invoices (stripe_invoice_id, user_id, stripe_customer_id, stripe_subscription_id, status, currency,
       subtotal_cents, total_cents, amount_paid_cents, period_start, period_end, finalized_at, stripe_created, updated_at)
     VALUES (?1, ?2, 'cus', 'sub', ?3, 'usd', ?4, ?4, 0, 0, 0, ?5, 0, 0)`,
  );
  await db.batch([
    history.bind("a", utc(2025, 2, 1), "pro", "sub_a"),
    history.bind("b", utc(2025, 3, 10), "pro", "sub_b"),
    history.bind("c", utc(2025, 1, 5), "payg", "sub_c"),
    history.bind("c", utc(2025, 3, 20), "free", null),
    history.bind("d", utc(2025, 1, 7), "payg", "sub_d"),
    history.bind("g", utc(2025, 3, 5), "payg", "sub_g"),
    history.bind("g", utc(2025, 3, 25), "free", null),
    history.bind("h", utc(2025, 4, 2), "payg", "sub_h"),
    history.bind("i", utc(2025, 2, 3), "pro", "sub_i"),
    history.bind("i", utc(2025, 3, 15), "payg", "sub_i2"),
    rollup.bind("e", "2025-03-03", "success", 10),
    rollup.bind("e", "2025-03-03", "too_short", 2),
    rollup.bind("b", "2025-03-12", "success", 5),
    rollup.bind("b", "2025-03-12", "turn_failed", 3),
    rollup.bind("a", "2025-03-31", "success", 20),
    rollup.bind("a", "2025-03-31", "upstream_error", 1),
    rollup.bind("a", "2025-03-31", "slow_connect", 4),
    rollup.bind("f", "2025-02-28", "success", 7),
    rollup.bind("e", "2025-04-01", "success", 100),
    invoice.bind("in_1", "a", "paid", 2900, utc(2025, 3, 1)),
    invoice.bind("in_2", "d", "open", 1230, utc(2025, 3, 31, 23, 59, 59, 999)),
    invoice.bind("in_3", "d", "void", 500, utc(2025, 3, 10)),
    invoice.bind("in_4", "d", "draft", 700, null),
    invoice.bind("in_5", "a", "paid", 999, utc(2025, 4, 1)),
    invoice.bind("in_6", "c", "uncollectible", 100, utc(2025, 3, 15)),
  ]);
}

const asAdmin = (path: string) =>
  SELF.fetch(`http://api.test${path}`, { headers: { authorization: `Bearer ${DEV_ADMIN_KEY}` } });

describe("GET /admin/metrics", () => {
  beforeEach(async () => {
    await seedKeys(env.DB);
  });

  it("computes every metric of a month exactly", async () => {
    await seedMarch2025(env.DB);
    const res = await asAdmin("/admin/metrics?month=2025-03");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      month: "2025-03",
      as_of: "2025-04-01T00:00:00.000Z",
      currency: "usd",
      mrr_cents: 5800,
      arpu_cents: 1450,
      paying_customers: 4,
      paying_by_plan: { payg: 2, pro: 2 },
      churn_rate: 0.25,
      conversion_rate: 0.6667,
      success_rate: 0.7778,
      sessions_total: 45,
      sessions_billable: 35,
      failed_by_reason: {
        turn_failed: 3,
        upstream_error: 1,
        not_connected: 0,
        slow_connect: 4,
        too_short: 2,
      },
      invoiced_cents: 4230,
    });
  });

  it("sees the month before from its own snapshot", async () => {
    await seedMarch2025(env.DB);
    // February: paying at end a, i (pro), c, d (payg); at start c, d, and neither churned.
    // Free at start and active or converted: a, i (converted in February) and f (active) -> 2 / 3.
    const body = await (await asAdmin("/admin/metrics?month=2025-02")).json();
    expect(body).toMatchObject({
      mrr_cents: 5800,
      paying_customers: 4,
      paying_by_plan: { payg: 2, pro: 2 },
      churn_rate: 0,
      conversion_rate: 0.6667,
      sessions_total: 7,
      sessions_billable: 7,
      success_rate: 1,
      invoiced_cents: 0,
    });
  });

  it("refuses a malformed or future month with the error envelope", async () => {
    const bad = await asAdmin("/admin/metrics?month=2025-3");
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({
      error: {
        code: "invalid_request",
        message: "month must be YYYY-MM, 2000-01 or later",
        details: [{ path: "month", message: "month must be YYYY-MM, 2000-01 or later" }],
      },
    });
    expect((await asAdmin("/admin/metrics?month=2999-01")).status).toBe(400);
  });

  it("refuses the month 0050-06 instead of answering for June 1950", async () => {
    const res = await asAdmin("/admin/metrics?month=0050-06");
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      error: { code: "invalid_request", details: [{ path: "month" }] },
    });
  });
});
