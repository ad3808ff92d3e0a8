/**
 * Monthly metrics: the pure definitions, and GET /admin/metrics over a hand-built month whose
 * every number is worked out in the comments (definitions: docs/operations.md).
 */
import { createExecutionContext, env, SELF } from "cloudflare:test";
import { shardsOf } from "@aigate/shared";
import { DEV_ADMIN_KEY, seedKeys } from "@aigate/test-support";
import { shardedEnv } from "@aigate/test-support/shards";
import { beforeEach, describe, expect, it } from "vitest";
import type { MetricsRows } from "./adminQueries";
import worker from "./index";
import { metricsBody, monthWindow, perCustomer, rate } from "./metrics";

const utc = (y: number, m: number, d: number, h = 0, min = 0, s = 0, ms = 0) =>
  Date.UTC(y, m - 1, d, h, min, s, ms);

describe("metric definitions (pure)", () => {
  const window = { start: 0, end: 1, startDay: "1970-01-01", endDay: "1970-02-01" };
  const empty: MetricsRows = {
    subscriptionsAtEnd: [],
    customersAtEnd: [],
    churn: { paying_at_start: 0, churned: 0 },
    conversion: { free_active: 0, converted: 0 },
    sessions: [],
    invoicedCents: 0,
    arpuCustomers: 0,
  };

  it("reports undefined rates as null and zero money when nobody pays", () => {
    expect(metricsBody("1970-01", window, empty)).toMatchObject({
      mrr_cents: 0,
      arpu_cents: 0,
      arpu_customers: 0,
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

  it("sums pro's $29 fee per paying subscription into MRR and nothing for metered pay-as-you-go", () => {
    const body = metricsBody("1970-01", window, {
      ...empty,
      // One customer holds two pro subscriptions: both fees count, the customer once.
      subscriptionsAtEnd: [
        { plan: "payg", n: 2 },
        { plan: "pro", n: 3 },
      ],
      customersAtEnd: [
        { plan: "payg", n: 2 },
        { plan: "pro", n: 2 },
      ],
    });
    expect(body.mrr_cents).toBe(8700);
    expect(body.paying_customers).toBe(4);
    expect(body.paying_by_plan).toEqual({ payg: 2, pro: 2 });
  });

  it("takes ARPU from invoiced revenue, not from MRR, rounded to the cent", () => {
    const body = metricsBody("1970-01", window, {
      ...empty,
      subscriptionsAtEnd: [{ plan: "pro", n: 1 }],
      customersAtEnd: [{ plan: "pro", n: 1 }],
      invoicedCents: 2900 + 1234,
      arpuCustomers: 3,
    });
    expect(body.mrr_cents).toBe(2900);
    expect(body.invoiced_cents).toBe(4134);
    expect(body.arpu_customers).toBe(3);
    expect(body.arpu_cents).toBe(1378); // 4134 / 3 = 1378
    expect(perCustomer(2900, 3)).toBe(967); // 966.67
    expect(perCustomer(5, 2)).toBe(3); // 2.5, halves up
    expect(perCustomer(100, 0)).toBe(0);
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

interface SubscriptionSeed {
  id: string;
  user: string;
  plan: "payg" | "pro";
  status: string;
  started: number;
  /** When Stripe ended it (canceled subscriptions). */
  ended?: number;
  /** When its payment started failing (past_due and unpaid subscriptions). */
  pastDueSince?: number;
  /** Its plan at its start when it changed since (default: `plan`). */
  startPlan?: "payg" | "pro";
  /** Plan changes within the subscription after its start: [effective from, plan]. */
  changes?: [number, "payg" | "pro"][];
}

/**
 * The rows the webhooks worker writes for a subscription as Stripe reports it: the subscriptions
 * row, and plan_history rows for its plan from its start (Stripe grants the plan while trialing,
 * past_due or unpaid too), each later plan change, and free from its end.
 */
function subscriptionRows(db: D1Database, s: SubscriptionSeed): D1PreparedStatement[] {
  const history = db.prepare(
    "INSERT INTO plan_history (user_id, effective_from, plan, stripe_subscription_id, recorded_at) VALUES (?1, ?2, ?3, ?4, 0)",
  );
  return [
    db
      .prepare(
        `INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, plan, status,
           past_due_since, started_at, ended_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)`,
      )
      .bind(
        s.id,
        s.user,
        `cus_${s.user}`,
        s.plan,
        s.status,
        s.pastDueSince ?? null,
        s.started,
        s.ended ?? null,
      ),
    history.bind(s.user, s.started, s.startPlan ?? s.plan, s.id),
    ...(s.changes ?? []).map(([from, plan]) => history.bind(s.user, from, plan, s.id)),
    ...(s.ended === undefined ? [] : [history.bind(s.user, s.ended, "free", null)]),
  ];
}

function invoiceRow(
  db: D1Database,
  id: string,
  user: string,
  status: string,
  totalCents: number,
  finalizedAt: number | null,
): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO invoices (stripe_invoice_id, user_id, stripe_customer_id, stripe_subscription_id, status, currency,
         subtotal_cents, total_cents, amount_paid_cents, period_start, period_end, finalized_at, stripe_created, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5, 'usd', ?6, ?6, ?7, 0, 0, ?8, 0, 0)`,
    )
    .bind(
      id,
      user,
      `cus_${user}`,
      `sub_${user}`,
      status,
      totalCents,
      status === "paid" ? totalCents : 0,
      finalizedAt,
    );
}

/**
 * March 2025 (the worked example of docs/operations.md), fourteen users:
 *   a  pro since Feb 1                                  paying at start and end (pro)
 *   b  free, active, pro from Mar 10                    converted; paying at end (pro)
 *   c  payg since Jan 5, canceled Mar 20                churned (canceled mid-month)
 *   d  payg since Jan 7                                 paying at start and end (payg)
 *   e  free, active in March                            free and active, not converted
 *   f  free, active in February only                    not counted in March
 *   g  payg Mar 5, canceled Mar 25                      converted; not churn (not paying at start)
 *   h  payg from Apr 2                                  not counted in March
 *   i  pro since Feb 3, same subscription payg Mar 15   paying at start (pro) and end (payg): not churn
 *   j  pro trialing since Mar 12                        not paying: out of MRR, not converted
 *   k  pro since Jan 10, payment failing Mar 8, unpaid  churned; out of MRR
 *   l  pro since Feb 20, past_due since Mar 28          still paying (past_due): in MRR
 *   m  payg since Jan 4, canceled Mar 10, pro Mar 12    resubscribed: paying at end (pro), not churn
 *   n  payg Jan 3, canceled Feb 27                      billed in March for February's usage
 * Paying at end: a, b, l, m (pro), d, i (payg) -> 6; MRR 4 x 2900 = 11600 (payg has no fee).
 * Churn: paying at start a, c, d, i, k, l, m (7); no longer paying at end c, k (2) -> 0.2857.
 * Conversion: not paying at start and (active or converted) b, e, g (3); converted b, g -> 0.6667.
 * Sessions created in March: 10 + 2 + 5 + 3 + 20 + 1 + 4 = 45, billable 35 -> 0.7778.
 * Invoiced (finalized in March, not draft or void): a 2900 + d 1230 + c 100 + k 2900 + l 3110
 *   + j 0 + n 450 = 10690. ARPU customers: paying at some time in March a, b, c, d, g, i, k, l, m,
 *   or billed in it n -> 10; ARPU 10690 / 10 = 1069.
 */
/** A seeded row and the user it belongs to. */
type Seeded = [user: string, statement: D1PreparedStatement];

async function seedMarch2025(dbOf: (user: string) => D1Database) {
  const rollup = (user: string, day: string, reason: string, sessions: number): Seeded => [
    user,
    dbOf(user)
      .prepare(
        "INSERT INTO daily_rollups (user_id, day, reason, sessions, audio_ms) VALUES (?1, ?2, ?3, ?4, 0)",
      )
      .bind(user, day, reason, sessions),
  ];
  const subs: SubscriptionSeed[] = [
    { id: "sub_a", user: "a", plan: "pro", status: "active", started: utc(2025, 2, 1) },
    { id: "sub_b", user: "b", plan: "pro", status: "active", started: utc(2025, 3, 10) },
    {
      id: "sub_c",
      user: "c",
      plan: "payg",
      status: "canceled",
      started: utc(2025, 1, 5),
      ended: utc(2025, 3, 20),
    },
    { id: "sub_d", user: "d", plan: "payg", status: "active", started: utc(2025, 1, 7) },
    {
      id: "sub_g",
      user: "g",
      plan: "payg",
      status: "canceled",
      started: utc(2025, 3, 5),
      ended: utc(2025, 3, 25),
    },
    { id: "sub_h", user: "h", plan: "payg", status: "active", started: utc(2025, 4, 2) },
    {
      id: "sub_i",
      user: "i",
      plan: "payg",
      status: "active",
      started: utc(2025, 2, 3),
      startPlan: "pro",
      changes: [[utc(2025, 3, 15), "payg"]],
    },
    { id: "sub_j", user: "j", plan: "pro", status: "trialing", started: utc(2025, 3, 12) },
    {
      id: "sub_k",
      user: "k",
      plan: "pro",
      status: "unpaid",
      started: utc(2025, 1, 10),
      pastDueSince: utc(2025, 3, 8),
    },
    {
      id: "sub_l",
      user: "l",
      plan: "pro",
      status: "past_due",
      started: utc(2025, 2, 20),
      pastDueSince: utc(2025, 3, 28),
    },
    {
      id: "sub_m1",
      user: "m",
      plan: "payg",
      status: "canceled",
      started: utc(2025, 1, 4),
      ended: utc(2025, 3, 10),
    },
    { id: "sub_m2", user: "m", plan: "pro", status: "active", started: utc(2025, 3, 12) },
    {
      id: "sub_n",
      user: "n",
      plan: "payg",
      status: "canceled",
      started: utc(2025, 1, 3),
      ended: utc(2025, 2, 27),
    },
  ];
  const statements: Seeded[] = [
    ...subs.flatMap((s) => subscriptionRows(dbOf(s.user), s).map((st): Seeded => [s.user, st])),
    rollup("e", "2025-03-03", "success", 10),
    rollup("e", "2025-03-03", "too_short", 2),
    rollup("b", "2025-03-12", "success", 5),
    rollup("b", "2025-03-12", "turn_failed", 3),
    rollup("a", "2025-03-31", "success", 20),
    rollup("a", "2025-03-31", "upstream_error", 1),
    rollup("a", "2025-03-31", "slow_connect", 4),
    rollup("f", "2025-02-28", "success", 7),
    rollup("e", "2025-04-01", "success", 100),
    ["a", invoiceRow(dbOf("a"), "in_a", "a", "paid", 2900, utc(2025, 3, 1))],
    ["d", invoiceRow(dbOf("d"), "in_d", "d", "open", 1230, utc(2025, 3, 31, 23, 59, 59, 999))],
    ["d", invoiceRow(dbOf("d"), "in_d_void", "d", "void", 500, utc(2025, 3, 10))],
    ["d", invoiceRow(dbOf("d"), "in_d_draft", "d", "draft", 700, null)],
    ["a", invoiceRow(dbOf("a"), "in_a_april", "a", "paid", 999, utc(2025, 4, 1))],
    ["c", invoiceRow(dbOf("c"), "in_c", "c", "uncollectible", 100, utc(2025, 3, 15))],
    ["k", invoiceRow(dbOf("k"), "in_k", "k", "open", 2900, utc(2025, 3, 8))],
    ["l", invoiceRow(dbOf("l"), "in_l", "l", "open", 3110, utc(2025, 3, 28))],
    ["j", invoiceRow(dbOf("j"), "in_j", "j", "paid", 0, utc(2025, 3, 12))],
    ["n", invoiceRow(dbOf("n"), "in_n", "n", "paid", 450, utc(2025, 3, 2))],
  ];
  // each user's rows on the user's shard (one database when unsharded)
  const byDb = new Map<D1Database, D1PreparedStatement[]>();
  for (const [user, statement] of statements) {
    const db = dbOf(user);
    byDb.set(db, [...(byDb.get(db) ?? []), statement]);
  }
  for (const [db, batch] of byDb) await db.batch(batch);
}

const MARCH_2025 = {
  month: "2025-03",
  as_of: "2025-04-01T00:00:00.000Z",
  currency: "usd",
  mrr_cents: 11600,
  arpu_cents: 1069,
  arpu_customers: 10,
  paying_customers: 6,
  paying_by_plan: { payg: 2, pro: 4 },
  churn_rate: 0.2857,
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
  invoiced_cents: 10690,
};

const asAdmin = (path: string) =>
  SELF.fetch(`http://api.test${path}`, { headers: { authorization: `Bearer ${DEV_ADMIN_KEY}` } });

describe("GET /admin/metrics", () => {
  beforeEach(async () => {
    await seedKeys(env.DB);
  });

  it("computes every metric of a month exactly", async () => {
    await seedMarch2025(() => env.DB);
    const res = await asAdmin("/admin/metrics?month=2025-03");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(MARCH_2025);
  });

  it("adds up the figures of every shard and computes each rate from the summed counts", async () => {
    const e = await shardedEnv({ ...env });
    const shards = shardsOf(e);
    // the month's fourteen users spread over the four shards; no shard's own rates are the month's
    // (e.g. churn: 0 of 3 on shard 0, none on 1, 2 of 2 on 2, 0 of 2 on 3)
    const users = [..."abcdefghijklmn"];
    expect(new Set(users.map((u) => shards.indexOf(u)))).toEqual(new Set([0, 1, 2, 3]));
    await seedMarch2025((user) => shards.of(user));
    for (const db of shards.all) {
      const held = await db.prepare("SELECT count(*) AS n FROM subscriptions").first<{ n: number }>();
      expect(held?.n).toBeGreaterThan(0);
    }
    const res = await worker.fetch(
      new Request("http://api.test/admin/metrics?month=2025-03", {
        headers: { authorization: `Bearer ${DEV_ADMIN_KEY}` },
      }),
      e,
      createExecutionContext(),
    );
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(MARCH_2025);
  });

  it("sees the month before from its own snapshot", async () => {
    await seedMarch2025(() => env.DB);
    // February: paying at end a, i, k (unpaid only from Mar 8), l (pro); c, d, m (payg) -> 7,
    // MRR 4 x 2900. Paying at start c, d, k, m, n; n ended Feb 27 -> churn 1 / 5.
    // Not paying at start and active or converted: a, i, l (converted in February), f (active) -> 3 / 4.
    // Nothing finalized in February; paying at some time in it: a, c, d, i, k, l, m, n -> 8.
    const body = await (await asAdmin("/admin/metrics?month=2025-02")).json();
    expect(body).toMatchObject({
      mrr_cents: 11600,
      paying_customers: 7,
      paying_by_plan: { payg: 3, pro: 4 },
      churn_rate: 0.2,
      conversion_rate: 0.75,
      sessions_total: 7,
      sessions_billable: 7,
      success_rate: 1,
      invoiced_cents: 0,
      arpu_cents: 0,
      arpu_customers: 8,
    });
  });

  it("leaves a trialing subscription out of MRR, paying customers and conversions", async () => {
    await env.DB.batch([
      ...subscriptionRows(env.DB, {
        id: "sub_t",
        user: "t",
        plan: "pro",
        status: "trialing",
        started: utc(2025, 3, 2),
      }),
      ...subscriptionRows(env.DB, {
        id: "sub_p",
        user: "p",
        plan: "pro",
        status: "active",
        started: utc(2025, 3, 3),
      }),
    ]);
    expect(await (await asAdmin("/admin/metrics?month=2025-03")).json()).toMatchObject({
      mrr_cents: 2900,
      paying_customers: 1,
      paying_by_plan: { payg: 0, pro: 1 },
      conversion_rate: 1,
    });
  });

  it("counts an unpaid subscription as churned and out of MRR, a past_due one as still paying", async () => {
    await env.DB.batch([
      ...subscriptionRows(env.DB, {
        id: "sub_u",
        user: "u",
        plan: "pro",
        status: "unpaid",
        started: utc(2025, 1, 10),
        pastDueSince: utc(2025, 3, 10),
      }),
      ...subscriptionRows(env.DB, {
        id: "sub_p",
        user: "p",
        plan: "pro",
        status: "past_due",
        started: utc(2025, 1, 12),
        pastDueSince: utc(2025, 3, 12),
      }),
    ]);
    const march = await (await asAdmin("/admin/metrics?month=2025-03")).json();
    expect(march).toMatchObject({ mrr_cents: 2900, paying_customers: 1, churn_rate: 0.5 });
    // u was still paying through February: it churns once, in the month its payment failed.
    const february = await (await asAdmin("/admin/metrics?month=2025-02")).json();
    expect(february).toMatchObject({ mrr_cents: 5800, paying_customers: 2, churn_rate: 0 });
  });

  it("counts a subscription canceled mid-month as churned, a plan switch or a resubscription as not", async () => {
    await env.DB.batch([
      ...subscriptionRows(env.DB, {
        id: "sub_c",
        user: "c",
        plan: "pro",
        status: "canceled",
        started: utc(2025, 1, 5),
        ended: utc(2025, 3, 16),
      }),
      ...subscriptionRows(env.DB, {
        id: "sub_s",
        user: "s",
        plan: "pro",
        startPlan: "payg",
        status: "active",
        started: utc(2025, 1, 6),
        changes: [[utc(2025, 3, 9), "pro"]],
      }),
      ...subscriptionRows(env.DB, {
        id: "sub_r1",
        user: "r",
        plan: "pro",
        status: "canceled",
        started: utc(2025, 1, 7),
        ended: utc(2025, 3, 4),
      }),
      ...subscriptionRows(env.DB, {
        id: "sub_r2",
        user: "r",
        plan: "payg",
        status: "active",
        started: utc(2025, 3, 6),
      }),
      // c's last invoice, at its cancellation: still March's revenue, and c one of March's customers.
      invoiceRow(env.DB, "in_c", "c", "paid", 1520, utc(2025, 3, 16)),
    ]);
    expect(await (await asAdmin("/admin/metrics?month=2025-03")).json()).toMatchObject({
      churn_rate: 0.3333,
      mrr_cents: 2900,
      paying_customers: 2,
      paying_by_plan: { payg: 1, pro: 1 },
      invoiced_cents: 1520,
      arpu_customers: 3,
      arpu_cents: 507, // 1520 / 3 = 506.67
    });
    // At the end of February: c and r on pro, s on payg.
    expect(await (await asAdmin("/admin/metrics?month=2025-02")).json()).toMatchObject({
      mrr_cents: 5800,
      paying_by_plan: { payg: 1, pro: 2 },
    });
  });

  it("averages the revenue invoiced in the month, fees and metered usage, over the customers paying or billed in it", async () => {
    await env.DB.batch([
      ...subscriptionRows(env.DB, {
        id: "sub_x",
        user: "x",
        plan: "payg",
        status: "active",
        started: utc(2025, 1, 5),
      }),
      ...subscriptionRows(env.DB, {
        id: "sub_y",
        user: "y",
        plan: "pro",
        status: "active",
        started: utc(2025, 1, 6),
      }),
      ...subscriptionRows(env.DB, {
        id: "sub_z",
        user: "z",
        plan: "payg",
        status: "active",
        started: utc(2025, 3, 20),
      }),
      // February's metered usage of x (payg: 3710 = 371 sessions x 10), open (unpaid) still counts.
      invoiceRow(env.DB, "in_x", "x", "open", 3710, utc(2025, 3, 5)),
      // y's pro fee and overage (2900 + 50 x 7).
      invoiceRow(env.DB, "in_y", "y", "paid", 3250, utc(2025, 3, 6)),
      invoiceRow(env.DB, "in_y_void", "y", "void", 9999, utc(2025, 3, 7)),
    ]);
    // MRR alone would say (0 + 2900 + 0) / 3 = 967; invoiced revenue says (3710 + 3250) / 3 = 2320.
    expect(await (await asAdmin("/admin/metrics?month=2025-03")).json()).toMatchObject({
      mrr_cents: 2900,
      invoiced_cents: 6960,
      arpu_customers: 3,
      arpu_cents: 2320,
    });
  });

  it("churns a customer once, in the month their subscription stopped paying, at the month's edge too", async () => {
    await env.DB.batch([
      // Ends at the very first instant of April: still paying at the end of March.
      ...subscriptionRows(env.DB, {
        id: "sub_e",
        user: "e",
        plan: "pro",
        status: "canceled",
        started: utc(2025, 1, 5),
        ended: utc(2025, 4, 1),
      }),
      // Payment failing from the first instant of March: still paying at the end of February.
      ...subscriptionRows(env.DB, {
        id: "sub_u",
        user: "u",
        plan: "pro",
        status: "unpaid",
        started: utc(2025, 1, 6),
        pastDueSince: utc(2025, 3, 1),
      }),
    ]);
    const churn = async (month: string) =>
      ((await (await asAdmin(`/admin/metrics?month=${month}`)).json()) as { churn_rate: number | null })
        .churn_rate;
    expect(await churn("2025-02")).toBe(0);
    expect(await churn("2025-03")).toBe(0.5); // u
    expect(await churn("2025-04")).toBe(1); // e
    expect(await churn("2025-05")).toBeNull();
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
