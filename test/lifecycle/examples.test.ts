/**
 * The worked examples of docs/billing.md ("Changing plans"), each producing its invoices on the
 * Stripe emulator through the whole stack: sessions judged and posted by the pipeline, plan
 * changes through POST /api/billing/plan, periods ended by moving the shared clock. The emulator
 * models Stripe's lifecycle from its docs (packages/stripe-emulator/README.md), which
 * docs/billing.md cites: flexible billing mode bills a removed metered price's usage so far
 * unless proration_behavior is none; an anchor reset invoices at once; a period end invoices its
 * usage; cancel_at_period_end's final invoice has the period's usage; DELETE with invoice_now
 * bills the usage not invoiced yet.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../e2e/helpers";
import {
  advance,
  changePlan,
  endSessions,
  finalizeWithoutGrace,
  invoices,
  now,
  runSessions,
  sql,
  subscribe,
  usage,
  waitJudged,
  waitPosted,
  waitUsage,
} from "./harness";

let seq = 0;
const newUser = (name: string) => `lifecycle-${name}-${Date.now()}-${++seq}`;

/** Moves the shared clock just past the user's current period end. */
async function toPeriodEnd(userId: string): Promise<void> {
  const u = await usage(userId);
  await advance(Math.ceil((Date.parse(u.period_end) - (await now())) / 1000) + 1);
}

beforeAll(finalizeWithoutGrace);

describe("docs/billing.md worked examples", () => {
  it("1. payg -> pro mid-period: one $41.00 invoice (the $29 fee and 120 payg sessions), then $32.50", async () => {
    const user = newUser("upgrade");
    const { customer } = await subscribe(user, "payg");
    await waitJudged(await runSessions(user, 120));
    await waitPosted(user, "payg", 120);

    const changed = await changePlan(user, { plan: "pro" });
    expect(changed).toEqual({ status: 200, body: { plan: "pro", pending_plan: null, effective_at: null } });
    const upgrade = (await invoices(customer)).at(-1);
    expect(upgrade).toMatchObject({ billing_reason: "subscription_update", total: 4100 });
    expect(upgrade?.lines.map((l) => l.amount).sort((a, b) => a - b)).toEqual([1200, 2900]);

    await waitJudged(await runSessions(user, 450));
    await waitPosted(user, "pro", 450);
    await toPeriodEnd(user);
    const renewal = await eventually(
      async () => (await invoices(customer)).filter((i) => i.billing_reason === "subscription_cycle"),
      (list) => list.length === 1 && list[0]?.status !== "draft",
    );
    expect(renewal[0]?.total).toBe(3250);
  });

  it("2. pro -> payg at the period end: $0.00 at the end (380 <= 400 included), then $2.00 for 20 payg sessions", async () => {
    const user = newUser("downgrade");
    const { customer } = await subscribe(user, "pro");
    await waitJudged(await runSessions(user, 380));
    await waitPosted(user, "pro", 380);

    const changed = await changePlan(user, { plan: "payg" });
    const before = await usage(user);
    expect(changed).toEqual({
      status: 200,
      body: { plan: "pro", pending_plan: "payg", effective_at: before.period_end },
    });
    expect(before).toMatchObject({
      plan: "pro",
      pending_plan: "payg",
      pending_effective_at: before.period_end,
    });

    await toPeriodEnd(user);
    await waitUsage(user, (u) => u.plan === "payg" && u.pending_plan === null);
    const atEnd = (await invoices(customer)).filter((i) => i.billing_reason === "subscription_cycle");
    expect(atEnd.map((i) => i.total)).toEqual([0]);

    await waitJudged(await runSessions(user, 20));
    await waitPosted(user, "payg", 20);
    await toPeriodEnd(user);
    const cycles = await eventually(
      async () => (await invoices(customer)).filter((i) => i.billing_reason === "subscription_cycle"),
      (list) => list.length === 2,
    );
    expect(cycles.map((i) => i.total)).toEqual([0, 200]);
  });

  it("3. pro -> payg now: no refund; the 30 sessions beyond the included 400 are invoiced at once ($2.10)", async () => {
    const user = newUser("downgrade-now");
    const { customer } = await subscribe(user, "pro");
    await waitJudged(await runSessions(user, 430));
    await waitPosted(user, "pro", 430);

    const changed = await changePlan(user, { plan: "payg", when: "now" });
    expect(changed).toEqual({ status: 200, body: { plan: "payg", pending_plan: null, effective_at: null } });
    await eventually(
      () => sql<{ state: string }>(`SELECT state FROM usage_adjustments WHERE user_id = '${user}'`),
      (rows) => rows.length === 1 && rows[0]?.state === "created",
      60_000,
    );
    await advance(0); // Stripe finalizes the adjustment's invoice (no grace here)
    const all = await invoices(customer);
    expect(all.flatMap((i) => i.lines).filter((l) => l.amount < 0)).toEqual([]); // no refund
    const adjustment = all.find((i) => i.billing_reason === "manual");
    expect(adjustment).toMatchObject({ total: 210, status: "paid" });
  });

  it("4. cancel at the period end: the final invoice bills the period's 37 sessions ($3.70); later sessions are free", async () => {
    const user = newUser("cancel");
    const { customer } = await subscribe(user, "payg");
    await waitJudged(await runSessions(user, 37));
    await waitPosted(user, "payg", 37);

    const changed = await changePlan(user, { plan: "free" });
    expect(changed.body).toMatchObject({ plan: "payg", pending_plan: "free" });
    await toPeriodEnd(user);
    await waitUsage(user, (u) => u.plan === "free");
    const final = (await invoices(customer)).at(-1);
    expect(final).toMatchObject({ billing_reason: "subscription_cycle", total: 370 });

    const [after] = await runSessions(user, 1);
    await waitJudged([after ?? ""]);
    const rows = await sql<{ plan: string }>(`SELECT plan FROM sessions WHERE session_id = '${after}'`);
    expect(rows).toEqual([{ plan: "free" }]);
  });

  it("5. cancel now: a final invoice of the usage so far, 10 sessions beyond the 400 included ($0.70)", async () => {
    const user = newUser("cancel-now");
    const { customer } = await subscribe(user, "pro");
    await waitJudged(await runSessions(user, 410));
    await waitPosted(user, "pro", 410);

    const changed = await changePlan(user, { plan: "free", when: "now" });
    expect(changed).toEqual({ status: 200, body: { plan: "free", pending_plan: null, effective_at: null } });
    await advance(0);
    const final = await eventually(
      async () => (await invoices(customer)).at(-1),
      (i) => i?.status === "paid" && i.billing_reason !== "subscription_create",
    );
    expect(final?.total).toBe(70);
  });

  it("6. a session judged after its period's invoice: $0.10 as an adjustment on the next invoice", async () => {
    const user = newUser("late");
    const { customer } = await subscribe(user, "payg");
    const [late] = await runSessions(user, 1, { ended: false });
    await toPeriodEnd(user);
    const first = await eventually(
      async () => (await invoices(customer)).filter((i) => i.billing_reason === "subscription_cycle"),
      (list) => list.length === 1 && list[0]?.status !== "draft",
    );
    expect(first[0]?.total).toBe(0);

    await endSessions(user, [late ?? ""]);
    await waitJudged([late ?? ""]);
    await eventually(
      () => sql<{ state: string }>(`SELECT state FROM usage_adjustments WHERE user_id = '${user}'`),
      (rows) => rows.length === 1 && rows[0]?.state === "created",
      60_000,
    );
    await toPeriodEnd(user);
    const cycles = await eventually(
      async () => (await invoices(customer)).filter((i) => i.billing_reason === "subscription_cycle"),
      (list) => list.length === 2 && list[1]?.status !== "draft",
    );
    expect(cycles.map((i) => i.total)).toEqual([0, 10]);
  });
});
