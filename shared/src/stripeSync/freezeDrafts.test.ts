/**
 * A series whose usage a draft invoice will still bill is not frozen by a later, already final
 * invoice (found by the lifecycle chaos run): the renewal closing a period is a draft for Stripe's
 * finalization grace; a plan change right after the period end makes an anchor reset's invoice,
 * final at once. Freezing the ended period's series from that invoice read 0 billed sessions, so
 * the adjustments billed all of them, and the renewal then billed them again.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { freezeBilledSeries, freezeCoveredSeries, freezeEndedSeries, markDraftsSettled } from "./queries";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 11, 1, 4);
/** The period end: its renewal is a draft from here until the grace is over. */
const END = Date.UTC(2027, 0, 1, 4);
/** A change now, 90 s later: its invoice is final at once. */
const CHANGE = END + 90_000;

async function invoice(
  id: string,
  status: string,
  reason: string,
  created: number,
  start: number,
  end: number,
) {
  await env.DB.prepare(
    `INSERT INTO invoices (stripe_invoice_id, user_id, stripe_customer_id, stripe_subscription_id, status, currency,
       subtotal_cents, total_cents, amount_paid_cents, period_start, period_end, finalized_at, stripe_created,
       updated_at, billing_reason)
     VALUES (?1, 'u1', 'cus_1', 'sub_1', ?2, 'usd', 0, 0, 0, ?3, ?4, ?5, ?6, 0, ?7)`,
  )
    .bind(id, status, start, end, status === "draft" ? null : created, created, reason)
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
    "SELECT plan, period_start, frozen_at IS NOT NULL AS frozen FROM usage_periods ORDER BY period_start",
  ).all();
  return results.map((r) => [r.plan, r.period_start === T0 ? "period" : "after", r.frozen]);
}

describe("a draft invoice still to bill a series keeps it open", () => {
  it("freezeBilledSeries: the change's invoice freezes the series that ended at the change, not the period its renewal drafts", async () => {
    await series("payg", T0, END, 9);
    await series("payg", END, CHANGE, 0);
    // the webhook (or the api after the change) applies the change's final invoice; Stripe lists the
    // renewal as a draft created at the period end
    await freezeBilledSeries(
      env.DB,
      "sub_1",
      { id: "in_change", coversUntilMs: CHANGE },
      CHANGE + 1000,
      END,
    ).run();
    expect(await frozen()).toEqual([
      ["payg", "period", 0],
      ["payg", "after", 1],
    ]);
    // the renewal is final: it covers the period
    await freezeBilledSeries(
      env.DB,
      "sub_1",
      { id: "in_renewal", coversUntilMs: END },
      END + 3_700_000,
      null,
    ).run();
    expect(await frozen()).toEqual([
      ["payg", "period", 1],
      ["payg", "after", 1],
    ]);
  });

  it("freezeCoveredSeries: the same from D1 alone (the biller's minute cron)", async () => {
    await series("payg", T0, END, 9);
    await series("payg", END, CHANGE, 0);
    await invoice("in_renewal", "draft", "subscription_cycle", END, T0, END);
    await invoice("in_change", "paid", "subscription_update", CHANGE, CHANGE, CHANGE + 31 * DAY);
    await freezeCoveredSeries(env.DB, CHANGE + 60_000).run();
    expect(await frozen()).toEqual([
      ["payg", "period", 0],
      ["payg", "after", 1],
    ]);
    await env.DB.prepare(
      "UPDATE invoices SET status = 'paid', finalized_at = ?1 WHERE stripe_invoice_id = 'in_renewal'",
    )
      .bind(END + GRACE)
      .run();
    await freezeCoveredSeries(env.DB, END + GRACE + 60_000).run();
    expect(await frozen()).toEqual([
      ["payg", "period", 1],
      ["payg", "after", 1],
    ]);
  });

  it("freezeCoveredSeries: an ended subscription's series waits until Stripe said no draft is left (found by chaos:seeds)", async () => {
    // cancelled at the period end: Stripe ends the subscription and opens its final invoice as a
    // draft; the deletion's webhook is applied before the draft's invoice.created, so D1 knows
    // the end and no draft yet
    await series("payg", T0, END, 11);
    await env.DB.prepare(
      `INSERT INTO subscriptions (stripe_subscription_id, user_id, stripe_customer_id, plan, status,
         current_period_start, current_period_end, started_at, updated_at, ended_at)
       VALUES ('sub_1', 'u1', 'cus_1', 'payg', 'canceled', ?1, ?2, ?1, 0, ?2)`,
    )
      .bind(T0, END)
      .run();
    await freezeCoveredSeries(env.DB, END + 60_000).run();
    expect(await frozen()).toEqual([["payg", "period", 0]]);
    // the final invoice is finalized: its sync freezes the series from its lines and, Stripe having
    // no draft left, settles the subscription
    await invoice("in_final", "open", "subscription_cycle", END, T0, END);
    await env.DB.batch([
      freezeBilledSeries(env.DB, "sub_1", { id: "in_final", coversUntilMs: END }, END + GRACE, null),
      freezeEndedSeries(env.DB, "sub_1", END, END + GRACE),
      markDraftsSettled(env.DB, "sub_1", END + GRACE),
    ]);
    expect(await frozen()).toEqual([["payg", "period", 1]]);
    // a late session of the ended subscription's last window: a series no webhook freezes, which
    // the cron now may
    await series("pro", T0 + DAY, END, 2);
    await freezeCoveredSeries(env.DB, END + GRACE + 60_000).run();
    expect(await frozen()).toEqual([
      ["payg", "period", 1],
      ["pro", "after", 1],
    ]);
  });
});

const GRACE = 3_600_000;
