/**
 * The lifecycle defects money must survive, each reproduced on the whole stack and the emulator:
 * verdicts that come before their subscription's webhook, sessions of a subscription that ended,
 * a new price version published while subscribers stay on the old one, a gateway backdating a
 * session, taking back a scheduled change, and the plan-change contract's refusals.
 */
import { beforeAll, describe, expect, inject, it } from "vitest";
import { eventually, postEvents } from "../e2e/helpers";
import {
  advance,
  asUser,
  changePlan,
  emulator,
  endSessions,
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
  waitUsage,
} from "./harness";

let seq = 0;
const newUser = (name: string) => `defect-${name}-${Date.now()}-${++seq}`;

async function toPeriodEnd(userId: string): Promise<void> {
  const u = await usage(userId);
  await advance(Math.ceil((Date.parse(u.period_end) - (await now())) / 1000) + 1);
}

async function deliver(payloads: { payload: string; signature: string }[]): Promise<void> {
  for (const d of payloads) {
    const res = await fetch(`${inject("stackUrl")}/api/webhooks/stripe`, {
      method: "POST",
      headers: { "content-type": "application/json", "stripe-signature": d.signature },
      body: d.payload,
    });
    expect(res.status).toBe(200);
  }
}

beforeAll(finalizeWithoutGrace);

describe("lifecycle defects", () => {
  it("bills sessions judged before the subscription's webhook under the new plan once it arrives", async () => {
    const user = `defect-race-${Date.now()}`;
    const res = await asUser(user, "/api/billing/checkout", {
      method: "POST",
      body: JSON.stringify({ plan: "payg" }),
    });
    const { id } = (await res.json()) as { id: string };
    const emu = emulator();
    const { url } = await emu.webhookDeliveries();
    await emu.configureWebhooks({ url: null }); // the webhooks are late
    try {
      const done = await emu.completeCheckout(id);
      const sessions = await runSessions(user, 7);
      await waitJudged(sessions);
      expect((await usage(user)).plan).toBe("free"); // judged while the plan looked free
      expect(await sql(`SELECT DISTINCT plan FROM sessions WHERE user_id = '${user}'`)).toEqual([
        { plan: "free" },
      ]);

      await deliver(await emu.drainWebhooks());
      await waitPosted(user, "payg", 7); // moved to the payg series and posted
      const free = await sql<{ billable_sessions: number }>(
        `SELECT billable_sessions FROM usage_periods WHERE user_id = '${user}' AND plan = 'free'`,
      );
      expect(free).toEqual([{ billable_sessions: 0 }]);
      const meter = await emu.meterUsage(inject("paygMeter"), { customer: done.subscription.customer });
      expect(meter.value).toBe(7);
    } finally {
      await emu.configureWebhooks({ url });
    }
  });

  it("bills a session of a subscription that ended, judged after the end, on an invoice of its own", async () => {
    const user = newUser("ended");
    const { customer } = await subscribe(user, "payg");
    await waitJudged(await runSessions(user, 2));
    await waitPosted(user, "payg", 2);
    const [late] = await runSessions(user, 1, { ended: false });
    await changePlan(user, { plan: "free" });
    await toPeriodEnd(user);
    await waitUsage(user, (u) => u.plan === "free");
    await endSessions(user, [late ?? ""]);
    await waitJudged([late ?? ""]);
    // billed under payg (created before the end), in the ended series: never in a computed next period
    expect(await sql(`SELECT plan FROM sessions WHERE session_id = '${late}'`)).toEqual([{ plan: "payg" }]);
    await eventually(
      () => sql<{ state: string }>(`SELECT state FROM usage_adjustments WHERE user_id = '${user}'`),
      (rows) => rows[0]?.state === "created",
      60_000,
    );
    await advance(0);
    const all = await eventually(
      () => invoices(customer),
      (list) => list.some((i) => i.billing_reason === "manual" && i.status === "paid"),
    );
    expect(all.filter((i) => i.billing_reason === "subscription_cycle").map((i) => i.total)).toEqual([20]);
    expect(all.filter((i) => i.billing_reason === "manual").map((i) => i.total)).toEqual([10]);
  });

  it("bills a session judged in a cancellation's grace on the final invoice, the cancellation right after a post", async () => {
    // Stripe (docs.stripe.com/billing/subscriptions/usage-based/configure-grace-period): "All
    // invoices have a default finalization grace period of 1 hour. During the finalization grace
    // period, you can continue to report usage for the previous billing period." The cancellation
    // cuts the window right after its last post: the late session still needs a timestamp inside
    // the window, after that post (docs/billing.md "Posting": posts stay 600 s behind).
    const emu = emulator();
    await emu.setInvoiceSettings({ finalization_grace_seconds: 3600 });
    try {
      const user = newUser("cut");
      const { customer } = await subscribe(user, "payg");
      await advance(3600); // the window is older than the posting lag
      const [late] = await runSessions(user, 1, { ended: false });
      await waitJudged(await runSessions(user, 2));
      await waitPosted(user, "payg", 2);
      const changed = await changePlan(user, { plan: "free", when: "now" });
      expect(changed.status).toBe(200);
      const [series] = await sql<{ period_end: number; posted_at: number; last_meter_ts: number }>(
        `SELECT period_end, posted_at, last_meter_ts FROM usage_periods WHERE user_id = '${user}' AND plan = 'payg'`,
      );
      // the precondition: the window ends within seconds of its last post, in the same minute or the next
      expect((series?.period_end ?? 0) - (series?.posted_at ?? 0)).toBeLessThan(60_000);
      expect((series?.last_meter_ts ?? 0) * 1000).toBeLessThan(series?.period_end ?? 0);

      await endSessions(user, [late ?? ""]);
      await waitJudged([late ?? ""]);
      await waitPosted(user, "payg", 3);
      await advance(3601);
      const final = await eventually(
        async () => (await invoices(customer)).filter((i) => i.billing_reason !== "subscription_create"),
        (list) => list.length === 1 && list[0]?.status === "paid",
      );
      expect(final[0]?.total).toBe(30);
      expect(await sql(`SELECT id FROM usage_adjustments WHERE user_id = '${user}'`)).toEqual([]);
    } finally {
      await emu.setInvoiceSettings({ finalization_grace_seconds: 0 });
    }
  });

  it("keeps subscribers of an old price version on it: its webhooks still apply and it bills the old price", async () => {
    const user = newUser("price-version");
    const { customer } = await subscribe(user, "payg");
    await waitJudged(await runSessions(user, 3));
    await waitPosted(user, "payg", 3);
    // stripe:setup publishes a new version: the lookup key moves to a $0.12 price on the same meter
    const sdk = stripe();
    const old = (await sdk.prices.list({ lookup_keys: ["aigate_payg_session"], active: true })).data[0];
    if (!old?.recurring?.meter) throw new Error("no payg price");
    const v2 = await sdk.prices.create({
      currency: "usd",
      unit_amount: 12,
      product: typeof old.product === "string" ? old.product : old.product.id,
      recurring: { interval: "month", usage_type: "metered", meter: old.recurring.meter },
      lookup_key: "aigate_payg_session",
      transfer_lookup_key: true,
      metadata: { plan: "payg" },
    });
    try {
      const changed = await changePlan(user, { plan: "free" }); // a webhook of an old-price subscriber
      expect(changed.body).toMatchObject({ plan: "payg", pending_plan: "free" });
      await toPeriodEnd(user);
      await waitUsage(user, (u) => u.plan === "free");
      const final = (await invoices(customer)).at(-1);
      expect(final).toMatchObject({ billing_reason: "subscription_cycle", total: 30 });
    } finally {
      // the next examples subscribe at the catalog's price again
      await sdk.prices.update(old.id, { lookup_key: "aigate_payg_session", transfer_lookup_key: true });
      await sdk.prices.update(v2.id, { active: false });
    }
  });

  it("bills a backdated session at the time we first heard of it, not at the time the gateway claims", async () => {
    const user = newUser("backdated");
    await subscribe(user, "payg");
    await advance(600); // the subscription is ten minutes old when the session comes
    const t = await now();
    const claimed = t - 20 * 86_400_000;
    const sessionId = `${user}-old`;
    const data = { user_id: user, project_id: "proj-1" };
    const base = { specversion: "1.0", source: "gw-e2e", subject: sessionId };
    const res = await postEvents([
      {
        ...base,
        id: `${sessionId}-c`,
        type: "aigate.session.created",
        time: new Date(claimed).toISOString(),
        data,
      },
      {
        ...base,
        id: `${sessionId}-k`,
        type: "aigate.session.connected",
        time: new Date(claimed + 300).toISOString(),
        data: { ...data, connect_latency_ms: 300 },
      },
      {
        ...base,
        id: `${sessionId}-e`,
        type: "aigate.session.ended",
        time: new Date(t - 1000).toISOString(),
        data: { ...data, audio_ms: 9000 },
      },
    ]);
    expect(res.status).toBe(202);
    await waitJudged([sessionId]);
    const [row] = await sql<{ billed_at: number; plan: string }>(
      `SELECT billed_at, plan FROM sessions WHERE session_id = '${sessionId}'`,
    );
    expect(row?.plan).toBe("payg"); // on free 20 days ago by the gateway's claim
    expect(row?.billed_at).toBeGreaterThanOrEqual(t - 5 * 60_000 - 1000);
  });

  it("takes back a scheduled downgrade: the pro fee renews at the period end", async () => {
    const user = newUser("resume");
    const { customer } = await subscribe(user, "pro");
    expect((await changePlan(user, { plan: "payg" })).body).toMatchObject({ pending_plan: "payg" });
    const resumed = await changePlan(user, { resume: true });
    expect(resumed).toEqual({ status: 200, body: { plan: "pro", pending_plan: null, effective_at: null } });
    expect((await usage(user)).pending_plan).toBeNull();
    await toPeriodEnd(user);
    const cycle = await eventually(
      async () => (await invoices(customer)).filter((i) => i.billing_reason === "subscription_cycle"),
      (list) => list.length === 1,
    );
    expect(cycle[0]?.total).toBe(2900);
    expect((await usage(user)).plan).toBe("pro");
  });

  it("answers the contract's 4xx for plan changes that cannot be made", async () => {
    const user = newUser("refusals");
    const post = async (body: unknown) => {
      const res = await asUser(user, "/api/billing/plan", { method: "POST", body: JSON.stringify(body) });
      return { status: res.status, code: ((await res.json()) as { error?: { code: string } }).error?.code };
    };
    expect(await post({ plan: "pro" })).toEqual({ status: 409, code: "no_subscription" });
    expect(await post({ plan: "free" })).toEqual({ status: 409, code: "already_on_plan" });
    expect(await post({ resume: true })).toEqual({ status: 409, code: "nothing_to_resume" });
    for (const bad of [
      {},
      { plan: "gold" },
      { plan: "pro", when: "later" },
      { resume: false },
      { plan: "pro", extra: 1 },
    ]) {
      expect(await post(bad)).toEqual({ status: 400, code: "invalid_request" });
    }
    await subscribe(user, "payg");
    expect(await post({ plan: "payg" })).toEqual({ status: 409, code: "already_on_plan" });
    expect(await post({ resume: true })).toEqual({ status: 409, code: "nothing_to_resume" });
  });
});
