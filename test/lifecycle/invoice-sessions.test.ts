/**
 * Invoices checkable session by session, on the whole stack and the Stripe emulator: the sessions
 * GET /api/billing/invoices/{id}/sessions?format=csv lists for an invoice add up, to the cent, to
 * the metered lines Stripe put on that invoice (read with the official SDK), and are exactly the
 * sessions the sessions list says that invoice charges. Pay-as-you-go at the period end, pro with
 * overage at the period end, and an upgrade from pay-as-you-go to pro (the upgrade's invoice
 * carries the pay-as-you-go usage).
 */
import { parse } from "csv-parse/sync";
import { beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../e2e/helpers";
import {
  advance,
  asUser,
  changePlan,
  finalizeWithoutGrace,
  invoices,
  now,
  runSessions,
  sql,
  stripe,
  subscribe,
  usage,
  waitJudged,
  waitPosted,
} from "./harness";

let seq = 0;
const newUser = (name: string) => `lifecycle-inv-${name}-${Date.now()}-${++seq}`;
const q = (s: string) => `'${s.replaceAll("'", "''")}'`;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** Moves the shared clock just past the user's current period end. */
async function toPeriodEnd(userId: string): Promise<void> {
  const u = await usage(userId);
  await advance(Math.ceil((Date.parse(u.period_end) - (await now())) / 1000) + 1);
}

/** The amounts of an invoice's lines whose price is metered, as Stripe holds them. */
async function meteredLines(invoiceId: string): Promise<{ amount: number; quantity: number | null }[]> {
  const s = stripe();
  const out = [];
  for await (const line of s.invoices.listLineItems(invoiceId, { limit: 100 })) {
    const priceId = line.pricing?.price_details?.price;
    if (!priceId) continue;
    const price = await s.prices.retrieve(typeof priceId === "string" ? priceId : priceId.id);
    if (price.recurring?.usage_type === "metered") out.push({ amount: line.amount, quantity: line.quantity });
  }
  return out;
}

/** Waits until the webhooks recorded the invoice and froze the series it billed. */
async function waitFrozenBy(userId: string, invoiceId: string): Promise<void> {
  await eventually(
    () =>
      sql<{ n: number }>(
        `SELECT count(*) AS n FROM usage_periods WHERE user_id = ${q(userId)} AND stripe_invoice_id = ${q(invoiceId)}
           AND frozen_at IS NOT NULL`,
      ),
    (rows) => (rows[0]?.n ?? 0) > 0,
    60_000,
  );
}

/** The invoice's sessions as the user downloads them: the CSV's rows (header checked). */
async function csvRows(userId: string, invoiceId: string): Promise<string[][]> {
  const res = await asUser(
    userId,
    `/api/billing/invoices/${encodeURIComponent(invoiceId)}/sessions?format=csv`,
  );
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/csv/);
  expect(res.headers.get("content-disposition")).toMatch(/^attachment; filename="invoice-.+-sessions\.csv"$/);
  const [header, ...rows] = parse(await res.text()) as string[][];
  expect(header).toEqual([
    "session_id",
    "project_id",
    "created_at",
    "duration_ms",
    "audio_ms",
    "price_cents",
  ]);
  return rows;
}

/** The ids of the user's sessions the sessions list says this invoice charges. */
async function listedOn(userId: string, invoiceId: string): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const path: string = `/api/billing/sessions?limit=100${cursor ? `&cursor=${cursor}` : ""}`;
    const page = (await (await asUser(userId, path)).json()) as {
      sessions: { session_id: string; invoice_id: string | null }[];
      next_cursor: string | null;
    };
    ids.push(...page.sessions.filter((s) => s.invoice_id === invoiceId).map((s) => s.session_id));
    cursor = page.next_cursor;
  } while (cursor);
  return ids.sort();
}

/** The invoice's sessions checked against Stripe's metered lines and the sessions list; returns the prices. */
async function checkInvoice(userId: string, invoiceId: string, sessionIds: string[]): Promise<number[]> {
  await waitFrozenBy(userId, invoiceId);
  const rows = await csvRows(userId, invoiceId);
  expect(rows.map((r) => r[0]).sort()).toEqual([...sessionIds].sort());
  expect(await listedOn(userId, invoiceId)).toEqual([...sessionIds].sort());
  const prices = rows.map((r) => Number(r[5]));
  const lines = await meteredLines(invoiceId);
  expect(sum(prices)).toBe(sum(lines.map((l) => l.amount)));
  expect(sum(lines.map((l) => l.quantity ?? 0))).toBe(sessionIds.length);
  // no adjustment rides on these invoices: the metered lines are all they bill for sessions
  expect(
    await sql(
      `SELECT id FROM usage_adjustments WHERE user_id = ${q(userId)} AND stripe_invoice_id = ${q(invoiceId)}`,
    ),
  ).toEqual([]);
  for (const r of rows) {
    expect(r[1]).toBe("proj-1");
    expect(Number.isNaN(Date.parse(r[2] ?? ""))).toBe(false);
    expect(r[4]).toBe("6000");
  }
  return prices;
}

beforeAll(finalizeWithoutGrace);

describe("an invoice's sessions add up to its metered lines", () => {
  it("payg: the period's 23 sessions at $0.10 each, $2.30 on the renewal", async () => {
    const user = newUser("payg");
    const { customer } = await subscribe(user, "payg");
    const ids = await runSessions(user, 23);
    await waitJudged(ids);
    await waitPosted(user, "payg", 23);
    await toPeriodEnd(user);
    const [renewal] = await eventually(
      async () => (await invoices(customer)).filter((i) => i.billing_reason === "subscription_cycle"),
      (list) => list.length === 1 && list[0]?.status !== "draft",
    );
    expect(renewal?.total).toBe(230);
    const prices = await checkInvoice(user, renewal?.id ?? "", ids);
    expect(prices).toEqual(Array(23).fill(10));
  });

  it("pro with overage: 405 sessions, the 5 beyond the 400 included at $0.07 each, $0.35 on the renewal", async () => {
    const user = newUser("pro");
    const { customer } = await subscribe(user, "pro");
    const ids = await runSessions(user, 405);
    await waitJudged(ids);
    await waitPosted(user, "pro", 405);
    await toPeriodEnd(user);
    const [renewal] = await eventually(
      async () => (await invoices(customer)).filter((i) => i.billing_reason === "subscription_cycle"),
      (list) => list.length === 1 && list[0]?.status !== "draft",
    );
    // the next period's $29 fee and the overage
    expect(renewal?.total).toBe(2900 + 35);
    const prices = await checkInvoice(user, renewal?.id ?? "", ids);
    expect(prices.filter((p) => p === 0)).toHaveLength(400);
    expect(prices.filter((p) => p === 7)).toHaveLength(5);
    expect(sum(prices)).toBe(35);
  });

  it("payg -> pro mid-period: the upgrade's invoice carries the 14 payg sessions ($1.40) next to the $29 fee", async () => {
    const user = newUser("upgrade");
    const { customer } = await subscribe(user, "payg");
    const ids = await runSessions(user, 14);
    await waitJudged(ids);
    await waitPosted(user, "payg", 14);
    expect((await changePlan(user, { plan: "pro" })).status).toBe(200);
    const upgrade = (await invoices(customer)).at(-1);
    expect(upgrade).toMatchObject({ billing_reason: "subscription_update", total: 2900 + 140 });
    const prices = await checkInvoice(user, upgrade?.id ?? "", ids);
    expect(prices).toEqual(Array(14).fill(10));

    // and the user's invoice list shows it with its lines, another user's list does not
    const listed = (await (await asUser(user, "/api/billing/invoices")).json()) as {
      invoices: { id: string }[];
    };
    expect(listed.invoices.map((i) => i.id)).toContain(upgrade?.id);
    const stranger = newUser("stranger");
    const theirs = (await (await asUser(stranger, "/api/billing/invoices")).json()) as {
      invoices: unknown[];
    };
    expect(theirs.invoices).toEqual([]);
    const peek = await asUser(stranger, `/api/billing/invoices/${upgrade?.id}/sessions?format=csv`);
    expect(peek.status).toBe(404);
    expect(await peek.json()).toMatchObject({ error: { code: "invoice_not_found" } });
  });
});
