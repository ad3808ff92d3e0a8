/**
 * GET /api/billing/invoices/{id}/sessions over HTTP on the local runtime with the real migrations
 * (and the Stripe emulator for series' stored prices): which sessions an invoice charges, their
 * prices by position in their series, paging, the CSV, errors, and users reading each other's
 * invoices.
 */

import { env, SELF } from "cloudflare:test";
import { listSessions, PRICE_LOOKUP_KEYS } from "@aigate/shared";
import { userToken } from "@aigate/test-support";
import { StripeScenario } from "@aigate/webhooks/test";
import { parse } from "csv-parse/sync";
import { beforeAll, describe, expect, it } from "vitest";
import { priceAtPosition } from "./invoiceSessions";

const scenario = new StripeScenario(env, "whsec_unused");
const DAY = 86_400_000;
const T0 = Date.UTC(2026, 9, 1);

let n = 0;
const newUser = (name: string) => `${name}_${Date.now().toString(36)}_${++n}`;

async function call(user: string, path: string) {
  return SELF.fetch(`http://api.test${path}`, {
    headers: { authorization: `Bearer ${await userToken(user)}` },
  });
}

async function getJson(user: string, path: string) {
  const res = await call(user, path);
  expect(res.status, await res.clone().text()).toBe(200);
  return res.json<InvoiceSessionsPage>();
}

interface InvoiceSessionsPage {
  invoice_id: string;
  sessions: {
    session_id: string;
    project_id: string;
    created_at: string;
    duration_ms: number | null;
    audio_ms: number;
    plan: string;
    price_cents: number;
  }[];
  next_cursor: string | null;
}

async function insertInvoice(user: string, id: string, status = "paid", number: string | null = null) {
  await env.DB.prepare(
    `INSERT INTO invoices (stripe_invoice_id, user_id, stripe_customer_id, status, currency, subtotal_cents,
       total_cents, amount_paid_cents, period_start, period_end, stripe_created, updated_at, number)
     VALUES (?1, ?2, 'cus_x', ?3, 'usd', 0, 0, 0, ?4, ?4, ?4, 0, ?5)`,
  )
    .bind(id, user, status, T0, number)
    .run();
}

/** A paid series frozen by `invoiceId`, Stripe having billed `stripeBilled` (ranks up to `billedSeq`). */
async function insertSeries(s: {
  user: string;
  plan: "payg" | "pro";
  periodStart: number;
  billable: number;
  seqTop?: number;
  stripeBilled: number;
  billedSeq?: number | null;
  adjusted?: number;
  invoiceId: string;
  priceId?: string | null;
}) {
  await env.DB.prepare(
    `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, seq_top, updated_at,
       frozen_at, stripe_billed, billed_seq, adjusted, stripe_invoice_id, stripe_price_id)
     VALUES (?1, ?2, ?3, ?3 + 2678400000, ?4, ?5, 0, 1, ?6, ?7, ?8, ?9, ?10)`,
  )
    .bind(
      s.user,
      s.plan,
      s.periodStart,
      s.billable,
      s.seqTop ?? s.billable,
      s.stripeBilled,
      s.billedSeq === undefined ? s.stripeBilled : s.billedSeq,
      s.adjusted ?? 0,
      s.invoiceId,
      s.priceId ?? null,
    )
    .run();
}

async function insertAdjustment(a: {
  user: string;
  plan: "payg" | "pro";
  periodStart: number;
  sessions: number;
  from: number;
  to: number;
  invoiceId: string;
}) {
  await env.DB.prepare(
    `INSERT INTO usage_adjustments (id, user_id, plan, period_start, stripe_customer_id, sessions, from_seq, to_seq,
       amount_cents, currency, state, stripe_invoice_item_id, stripe_invoice_id, created_at, updated_at)
     VALUES (?1, ?2, ?3, ?4, 'cus_x', ?5, ?6, ?7, 0, 'usd', 'created', 'ii_x', ?8, 0, 0)`,
  )
    .bind(
      `${a.user}|${a.plan}|${a.periodStart}|${a.from}|${a.to}`,
      a.user,
      a.plan,
      a.periodStart,
      a.sessions,
      a.from,
      a.to,
      a.invoiceId,
    )
    .run();
}

interface Session {
  id: string;
  user: string;
  billedAt: number;
  plan: "free" | "payg" | "pro";
  periodStart: number;
  seq?: number | null;
  billable?: boolean;
  project?: string;
  endedAt?: number | null;
  audioMs?: number;
}

/** Judged sessions as the classifier records them (created at their billing time). */
async function insertSessions(rows: Session[]) {
  const stmt = env.DB.prepare(
    `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, created_at, first_event_at,
       last_event_at, ended_at, audio_ms, open, verdict_at, billable, reason, billed_at, plan, period_start, seq)
     VALUES (?1, ?2, ?3, ?4, ?4, ?4, ?4, ?5, ?6, ?7, 0, ?4, ?8, ?9, ?4, ?10, ?11, ?12)`,
  );
  for (let i = 0; i < rows.length; i += 200) {
    const chunk = rows.slice(i, i + 200);
    const listed = listSessions(
      env.DB,
      chunk.map((r) => ({ user_id: r.user, session_id: r.id, billed_at: r.billedAt })),
    );
    await env.DB.batch([
      ...listed,
      ...chunk.map((r) => {
        const billable = r.billable ?? true;
        const ended = r.endedAt === undefined ? r.billedAt + 42_000 : r.endedAt;
        return stmt.bind(
          r.id,
          r.user,
          r.project ?? "proj_1",
          r.billedAt,
          ended ?? r.billedAt + 1000,
          ended,
          r.audioMs ?? 6000,
          billable ? 1 : 0,
          billable ? "success" : "too_short",
          r.plan,
          r.periodStart,
          billable ? (r.seq ?? null) : null,
        );
      }),
    ]);
  }
}

/** All pages of an invoice's sessions at `limit` per page. */
async function allPages(user: string, invoiceId: string, limit: number) {
  const pages: InvoiceSessionsPage[] = [];
  let cursor: string | null = null;
  do {
    const q: string = `limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`;
    const page = await getJson(user, `/api/billing/invoices/${invoiceId}/sessions?${q}`);
    pages.push(page);
    cursor = page.next_cursor;
  } while (cursor && pages.length < 100);
  return pages;
}

async function csvOf(user: string, invoiceId: string) {
  const res = await call(user, `/api/billing/invoices/${invoiceId}/sessions?format=csv`);
  expect(res.status, await res.clone().text()).toBe(200);
  const text = await res.text();
  const [header, ...rows] = parse(text) as string[][];
  return { res, text, header, rows };
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

beforeAll(async () => {
  await scenario.setup();
});

describe("priceAtPosition", () => {
  const pro = {
    kind: "graduated" as const,
    currency: "usd",
    tiers: [
      { up_to: 400, unit_amount: 0, flat_amount: 0 },
      { up_to: null, unit_amount: 7, flat_amount: 0 },
    ],
  };
  it("prices pro's included sessions at 0 and the rest at 7; payg at 10 each", () => {
    expect([399, 400, 401, 405].map((k) => priceAtPosition(pro, k, 1, 405))).toEqual([0, 0, 7, 7]);
    const payg = { kind: "per_unit" as const, unit_amount: 10, currency: "usd" };
    expect(priceAtPosition(payg, 3, 3, 3)).toBe(10);
  });

  it("spreads a volume price's range over its sessions, the remainder first, adding up to the range", () => {
    const volume = {
      kind: "volume" as const,
      currency: "usd",
      tiers: [
        { up_to: 3, unit_amount: 10, flat_amount: 0 },
        { up_to: null, unit_amount: 9, flat_amount: 1 },
      ],
    };
    // 1..5 costs 1 + 9 x 5 = 46: 10, 9, 9, 9, 9
    const prices = [1, 2, 3, 4, 5].map((k) => priceAtPosition(volume, k, 1, 5));
    expect(prices).toEqual([10, 9, 9, 9, 9]);
    // positions 4..5 after 3 (30): 46 - 30 = 16
    expect([4, 5].map((k) => priceAtPosition(volume, k, 4, 5))).toEqual([8, 8]);
    expect(() => priceAtPosition(volume, 6, 1, 5)).toThrow(RangeError);
  });
});

describe("GET /api/billing/invoices/{id}/sessions", () => {
  it("lists exactly the sessions the invoice charges, as the sessions list says, priced at 10 cents on payg", async () => {
    const user = newUser("payg");
    const other = newUser("other");
    const p = T0;
    // Stripe's in_a billed 2 of 3 sessions; an adjustment on in_b the third; a failed session on neither
    await insertInvoice(user, `in_a_${user}`);
    await insertInvoice(user, `in_b_${user}`);
    await insertSeries({
      user,
      plan: "payg",
      periodStart: p,
      billable: 3,
      stripeBilled: 2,
      invoiceId: `in_a_${user}`,
    });
    await insertAdjustment({
      user,
      plan: "payg",
      periodStart: p,
      sessions: 1,
      from: 2,
      to: 3,
      invoiceId: `in_b_${user}`,
    });
    await insertSessions([
      { id: `${user}-1`, user, billedAt: p + 10, plan: "payg", periodStart: p, seq: 1 },
      { id: `${user}-f`, user, billedAt: p + 20, plan: "payg", periodStart: p, billable: false },
      { id: `${user}-3`, user, billedAt: p + 30, plan: "payg", periodStart: p, seq: 3 },
      { id: `${user}-2`, user, billedAt: p + 40, plan: "payg", periodStart: p, seq: 2, endedAt: null },
      { id: `${user}-free`, user, billedAt: p + 50, plan: "free", periodStart: 0 },
      // another user's session in a series of the same plan and window
      { id: `${other}-1`, user: other, billedAt: p + 10, plan: "payg", periodStart: p, seq: 1 },
    ]);
    await insertSeries({
      user: other,
      plan: "payg",
      periodStart: p,
      billable: 1,
      stripeBilled: 1,
      invoiceId: `in_a_${user}`,
    });

    const a = await getJson(user, `/api/billing/invoices/in_a_${user}/sessions`);
    expect(a).toEqual({
      invoice_id: `in_a_${user}`,
      sessions: [
        {
          session_id: `${user}-1`,
          project_id: "proj_1",
          created_at: new Date(p + 10).toISOString(),
          duration_ms: 42_000,
          audio_ms: 6000,
          plan: "payg",
          price_cents: 10,
        },
        {
          session_id: `${user}-2`,
          project_id: "proj_1",
          created_at: new Date(p + 40).toISOString(),
          duration_ms: 1000, // no `ended` event: to its last event
          audio_ms: 6000,
          plan: "payg",
          price_cents: 10,
        },
      ],
      next_cursor: null,
    });
    const b = await getJson(user, `/api/billing/invoices/in_b_${user}/sessions`);
    expect(b.sessions.map((s) => [s.session_id, s.price_cents])).toEqual([[`${user}-3`, 10]]);

    // the same rule as the sessions list's invoice_id
    const listed = (
      await (
        await call(user, "/api/billing/sessions?limit=100")
      ).json<{
        sessions: { session_id: string; invoice_id: string | null }[];
      }>()
    ).sessions;
    const onA = listed.filter((s) => s.invoice_id === `in_a_${user}`).map((s) => s.session_id);
    const onB = listed.filter((s) => s.invoice_id === `in_b_${user}`).map((s) => s.session_id);
    expect(onA.sort()).toEqual(a.sessions.map((s) => s.session_id).sort());
    expect(onB).toEqual(b.sessions.map((s) => s.session_id));
  });

  it("prices pro sessions by position in the series under its stored price, through holes in the ranks", async () => {
    const user = newUser("pro");
    const p = T0 + DAY;
    const [price] = (await scenario.stripe.prices.list({ lookup_keys: [PRICE_LOOKUP_KEYS.proSession] })).data;
    expect(price?.tiers_mode).toBe("graduated");
    // 405 sessions ranked 1..406, rank 200 moved out by a re-attribution: Stripe billed all 405
    const sessions: Session[] = [];
    for (let seq = 1; seq <= 406; seq++) {
      if (seq === 200) continue;
      sessions.push({
        id: `${user}-${String(seq).padStart(3, "0")}`,
        user,
        billedAt: p + seq,
        plan: "pro",
        periodStart: p,
        seq,
      });
    }
    await insertSessions(sessions);
    await insertInvoice(user, `in_pro_${user}`);
    await insertSeries({
      user,
      plan: "pro",
      periodStart: p,
      billable: 405,
      seqTop: 406,
      stripeBilled: 405,
      billedSeq: null,
      invoiceId: `in_pro_${user}`,
      priceId: price?.id ?? null,
    });
    const pages = await allPages(user, `in_pro_${user}`, 100);
    expect(pages.map((pg) => pg.sessions.length)).toEqual([100, 100, 100, 100, 5]);
    const all = pages.flatMap((pg) => pg.sessions);
    expect(all.map((s) => s.session_id)).toEqual(sessions.map((s) => s.id));
    expect(sum(all.map((s) => s.price_cents))).toBe(35);
    expect(all.filter((s) => s.price_cents > 0).map((s) => s.session_id)).toEqual(
      ["402", "403", "404", "405", "406"].map((seq) => `${user}-${seq}`),
    );

    const { header, rows } = await csvOf(user, `in_pro_${user}`);
    expect(header).toEqual([
      "session_id",
      "project_id",
      "created_at",
      "duration_ms",
      "audio_ms",
      "price_cents",
    ]);
    expect(rows).toHaveLength(405);
    expect(sum(rows.map((r) => Number(r[5])))).toBe(35);
  });

  it("uses the series' stored price, not today's catalog", async () => {
    const user = newUser("custom");
    const p = T0 + 2 * DAY;
    const [catalog] = (await scenario.stripe.prices.list({ lookup_keys: [PRICE_LOOKUP_KEYS.paygSession] }))
      .data;
    const custom = await scenario.stripe.prices.create({
      currency: "usd",
      product: typeof catalog?.product === "string" ? catalog.product : (catalog?.product.id ?? ""),
      unit_amount: 12,
      recurring: { interval: "month", usage_type: "metered", meter: catalog?.recurring?.meter ?? "" },
      metadata: { plan: "payg" },
    });
    await insertInvoice(user, `in_c_${user}`);
    await insertSeries({
      user,
      plan: "payg",
      periodStart: p,
      billable: 2,
      stripeBilled: 2,
      invoiceId: `in_c_${user}`,
      priceId: custom.id,
    });
    await insertSessions([
      { id: `${user}-1`, user, billedAt: p + 1, plan: "payg", periodStart: p, seq: 1 },
      { id: `${user}-2`, user, billedAt: p + 2, plan: "payg", periodStart: p, seq: 2 },
    ]);
    const page = await getJson(user, `/api/billing/invoices/in_c_${user}/sessions`);
    expect(page.sessions.map((s) => s.price_cents)).toEqual([12, 12]);
  });

  it("pages oldest first through ties, and the CSV holds the same sessions in the same order", async () => {
    const user = newUser("pages");
    const p = T0 + 3 * DAY;
    await insertInvoice(user, `in_p_${user}`, "open", "ABC-0001");
    await insertSeries({
      user,
      plan: "payg",
      periodStart: p,
      billable: 7,
      stripeBilled: 7,
      invoiceId: `in_p_${user}`,
    });
    // billing times with ties across page boundaries
    await insertSessions(
      [3, 1, 1, 1, 2, 2, 5].map((t, i) => ({
        id: `${user}-${String.fromCharCode(97 + i)}`,
        user,
        billedAt: p + t,
        plan: "payg" as const,
        periodStart: p,
        seq: i + 1,
      })),
    );
    const pages = await allPages(user, `in_p_${user}`, 2);
    expect(pages.map((pg) => pg.sessions.length)).toEqual([2, 2, 2, 1]);
    const ids = pages.flatMap((pg) => pg.sessions.map((s) => s.session_id));
    expect(ids).toEqual(["b", "c", "d", "e", "f", "a", "g"].map((x) => `${user}-${x}`));

    const { res, rows } = await csvOf(user, `in_p_${user}`);
    expect(res.headers.get("content-type")).toMatch(/^text\/csv/);
    expect(res.headers.get("content-disposition")).toBe(
      'attachment; filename="invoice-ABC-0001-sessions.csv"',
    );
    expect(rows.map((r) => r[0])).toEqual(ids);
    expect(rows[0]).toEqual([`${user}-b`, "proj_1", new Date(p + 1).toISOString(), "42000", "6000", "10"]);
  });

  it("escapes CSV fields: commas, quotes and line breaks quoted, formulas made text", async () => {
    const user = newUser("csv");
    const p = T0 + 4 * DAY;
    await insertInvoice(user, `in_e_${user}`);
    await insertSeries({
      user,
      plan: "payg",
      periodStart: p,
      billable: 3,
      stripeBilled: 3,
      invoiceId: `in_e_${user}`,
    });
    await insertSessions([
      {
        id: `${user}-1`,
        user,
        billedAt: p + 1,
        plan: "payg",
        periodStart: p,
        seq: 1,
        project: 'acme, "north"',
      },
      {
        id: `=HYPERLINK("x")${user}`,
        user,
        billedAt: p + 2,
        plan: "payg",
        periodStart: p,
        seq: 2,
        project: "a\nb",
      },
      { id: `${user}-3`, user, billedAt: p + 3, plan: "payg", periodStart: p, seq: 3, project: "@sum" },
    ]);
    const { text, rows } = await csvOf(user, `in_e_${user}`);
    expect(text).toContain('"acme, ""north"""');
    expect(text.split("\r\n")).toHaveLength(5); // header, 3 rows, and the last line's end
    expect(rows.map((r) => [r[0], r[1]])).toEqual([
      [`${user}-1`, 'acme, "north"'],
      [`'=HYPERLINK("x")${user}`, "a\nb"],
      [`${user}-3`, "'@sum"],
    ]);
  });

  it("after a credit, lists the recorded sessions on the series' invoice, none on the credit's, later ones on their adjustment's", async () => {
    const user = newUser("credit");
    const p = T0 + 6 * DAY;
    // Stripe billed 5 sessions where 3 were recorded: a credit of 2 (ranks (3, 3]), then one more
    // session recorded and billed by an adjustment of ranks (3, 4]
    for (const id of ["series", "credit", "late"]) await insertInvoice(user, `in_${id}_${user}`);
    await insertSeries({
      user,
      plan: "payg",
      periodStart: p,
      billable: 4,
      stripeBilled: 5,
      billedSeq: 3,
      adjusted: -1,
      invoiceId: `in_series_${user}`,
    });
    await insertAdjustment({
      user,
      plan: "payg",
      periodStart: p,
      sessions: -2,
      from: 3,
      to: 3,
      invoiceId: `in_credit_${user}`,
    });
    await insertAdjustment({
      user,
      plan: "payg",
      periodStart: p,
      sessions: 1,
      from: 3,
      to: 4,
      invoiceId: `in_late_${user}`,
    });
    await insertSessions(
      [1, 2, 3, 4].map((seq) => ({
        id: `${user}-${seq}`,
        user,
        billedAt: p + seq,
        plan: "payg" as const,
        periodStart: p,
        seq,
      })),
    );
    const ids = async (invoice: string) =>
      (await getJson(user, `/api/billing/invoices/in_${invoice}_${user}/sessions`)).sessions.map((s) => [
        s.session_id,
        s.price_cents,
      ]);
    expect(await ids("series")).toEqual([1, 2, 3].map((seq) => [`${user}-${seq}`, 10]));
    expect(await ids("credit")).toEqual([]);
    expect(await ids("late")).toEqual([[`${user}-4`, 10]]);
    const listed = await (await call(user, "/api/billing/sessions")).json<{
      sessions: { session_id: string; invoice_id: string }[];
    }>();
    expect(listed.sessions.find((s) => s.session_id === `${user}-4`)?.invoice_id).toBe(`in_late_${user}`);
  });

  it("answers 404 invoice_not_found alike for an unknown invoice, another user's and a draft", async () => {
    const alice = newUser("alice");
    const bob = newUser("bob");
    const p = T0 + 5 * DAY;
    await insertInvoice(bob, `in_bob_${bob}`);
    await insertInvoice(alice, `in_draft_${alice}`, "draft");
    await insertSeries({
      user: bob,
      plan: "payg",
      periodStart: p,
      billable: 1,
      stripeBilled: 1,
      invoiceId: `in_bob_${bob}`,
    });
    await insertSessions([
      { id: `${bob}-1`, user: bob, billedAt: p + 1, plan: "payg", periodStart: p, seq: 1 },
    ]);
    expect((await getJson(bob, `/api/billing/invoices/in_bob_${bob}/sessions`)).sessions).toHaveLength(1);

    const bodies = [];
    for (const path of [
      `/api/billing/invoices/in_nope/sessions`,
      `/api/billing/invoices/in_bob_${bob}/sessions`,
      `/api/billing/invoices/in_bob_${bob}/sessions?format=csv`,
      `/api/billing/invoices/in_draft_${alice}/sessions`,
    ]) {
      const res = await call(alice, path);
      expect(res.status, path).toBe(404);
      bodies.push(await res.json());
    }
    expect(bodies).toEqual(
      Array(4).fill({ error: { code: "invoice_not_found", message: "no such invoice" } }),
    );
    // nor does Bob's invoice show in Alice's list
    const list = await (await call(alice, "/api/billing/invoices")).json<{ invoices: { id: string }[] }>();
    expect(list.invoices.map((i) => i.id)).toEqual([]);
    const bobs = await (await call(bob, "/api/billing/invoices")).json<{ invoices: { id: string }[] }>();
    expect(bobs.invoices.map((i) => i.id)).toEqual([`in_bob_${bob}`]);
  });

  it("rejects a bad limit or format with 400 invalid_request, a bad cursor with 400 invalid_cursor, no token with 401", async () => {
    const user = newUser("bad");
    await insertInvoice(user, `in_x_${user}`);
    const base = `/api/billing/invoices/in_x_${user}/sessions`;
    for (const q of [
      "limit=0",
      "limit=101",
      "limit=abc",
      "format=xml",
      "format=csv&limit=5",
      "format=csv&cursor=abc",
    ]) {
      const res = await call(user, `${base}?${q}`);
      expect(res.status, q).toBe(400);
      expect(await res.json(), q).toMatchObject({ error: { code: "invalid_request" } });
    }
    const res = await call(user, `${base}?cursor=%%%`);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: "invalid_cursor" } });
    expect((await SELF.fetch(`http://api.test${base}`)).status).toBe(401);
    expect(await getJson(user, `${base}?limit=100`)).toEqual({
      invoice_id: `in_x_${user}`,
      sessions: [],
      next_cursor: null,
    });
    const empty = await csvOf(user, `in_x_${user}`);
    expect(empty.rows).toEqual([]);
    expect(empty.header).toHaveLength(6);
  });
});
