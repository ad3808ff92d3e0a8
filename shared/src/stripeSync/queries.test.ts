/**
 * Which finalized invoice covers which usage series, as the biller's minute cron decides it from
 * D1 alone (freezeCoveredSeries), on the real schema.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { freezeCoveredSeries } from "./queries";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 2, 1);
const CHANGE = T0 + 10 * DAY;
const NEXT_END = Date.UTC(2026, 3, 11);

async function invoice(id: string, reason: string, created: number, periodStart: number, periodEnd: number) {
  await env.DB.prepare(
    `INSERT INTO invoices (stripe_invoice_id, user_id, stripe_customer_id, stripe_subscription_id, status, currency,
       subtotal_cents, total_cents, amount_paid_cents, period_start, period_end, finalized_at, stripe_created,
       updated_at, billing_reason)
     VALUES (?1, 'u1', 'cus_1', 'sub_1', 'paid', 'usd', 0, 0, 0, ?2, ?3, ?4, ?4, 0, ?5)`,
  )
    .bind(id, periodStart, periodEnd, created, reason)
    .run();
}

async function series(plan: string, start: number, end: number, billable: number) {
  await env.DB.prepare(
    `INSERT INTO usage_periods (user_id, plan, period_start, period_end, stripe_customer_id, stripe_subscription_id,
       billable_sessions, seq_top, posted_total, updated_at)
     VALUES ('u1', ?1, ?2, ?3, 'cus_1', 'sub_1', ?4, ?4, ?4, 0)`,
  )
    .bind(plan, start, end, billable)
    .run();
}

async function frozen() {
  const { results } = await env.DB.prepare(
    "SELECT plan, frozen_at IS NOT NULL AS frozen, stripe_invoice_id FROM usage_periods ORDER BY period_start",
  ).all();
  return results;
}

describe("freezeCoveredSeries", () => {
  it("does not take an anchor reset's invoice, whose period reaches the new period's end, as the bill of that new period", async () => {
    // payg until the change, then pro with the anchor reset: the change's invoice bills pro's fee for
    // [CHANGE, NEXT_END) in advance and payg's usage before the change, no pro usage
    await invoice("in_change", "subscription_update", CHANGE, CHANGE, NEXT_END);
    await series("payg", T0, CHANGE, 12);
    await series("pro", CHANGE, NEXT_END, 450);

    // the pro period has ended, its renewal is not recorded yet
    await freezeCoveredSeries(env.DB, NEXT_END + 60_000).run();
    expect(await frozen()).toEqual([
      { plan: "payg", frozen: 1, stripe_invoice_id: "in_change" },
      { plan: "pro", frozen: 0, stripe_invoice_id: null },
    ]);

    // the renewal that bills the pro period covers it
    await invoice("in_renewal", "subscription_cycle", NEXT_END, CHANGE, NEXT_END);
    await freezeCoveredSeries(env.DB, NEXT_END + 120_000).run();
    expect(await frozen()).toEqual([
      { plan: "payg", frozen: 1, stripe_invoice_id: "in_change" },
      { plan: "pro", frozen: 1, stripe_invoice_id: "in_renewal" },
    ]);
  });
});
