/**
 * Acceptance (issue 7): a parked message replayed after its cause is fixed is billed exactly once.
 *
 * The cause: the Stripe meter was deactivated, so the biller's meter post for a pay-as-you-go
 * user's session is rejected (archived_meter) and the usage message naming the user's series is
 * parked in dead_letters. The
 * operator reactivates the meter and replays the dead letter with `npm run dlq` (the real CLI,
 * through the admin API, onto the real local queue), then replays it again (skipped) and forces a
 * third replay (re-sent): the meter and the invoice count the session once.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { ROOT } from "@aigate/scripts/dev/stack";
import { DEV_ADMIN_KEY, DEV_SECRETS } from "@aigate/test-support";
import Stripe from "stripe";
import { afterAll, describe, expect, inject, it } from "vitest";
import { asUser, eventually, postEvents, sessionEvents, stackUrl, stripeUrl } from "./helpers";

const run = promisify(execFile);

interface Usage {
  plan: string;
  sessions_this_month: number;
  estimated_cost_cents: number;
}
interface DeadLetter {
  id: string;
  queue: string;
  error: string;
  summary: string;
  replayed_at: string | null;
  replay_count: number;
}

function stripeClient(): Stripe {
  const url = new URL(stripeUrl());
  return new Stripe(DEV_SECRETS.STRIPE_SECRET_KEY, {
    host: url.hostname,
    port: Number(url.port),
    protocol: "http",
    httpClient: Stripe.createFetchHttpClient(),
  });
}

async function admin<T>(pathAndQuery: string): Promise<T> {
  const res = await fetch(stackUrl(pathAndQuery), { headers: { authorization: `Bearer ${DEV_ADMIN_KEY}` } });
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as T;
}

async function meterValue(customer: string): Promise<number> {
  const meter = inject("paygMeter");
  const res = await fetch(
    stripeUrl(`/_emulator/meters/${meter}/usage?customer=${encodeURIComponent(customer)}`),
  );
  return ((await res.json()) as { value: number }).value;
}

/** `npm run dlq -- <args>` against the stack. */
async function dlq(...args: string[]): Promise<string> {
  const { stdout } = await run(
    path.join(ROOT, "node_modules/.bin/tsx"),
    [path.join(ROOT, "scripts/dlq.ts"), ...args, "--url", stackUrl(), "--key", DEV_ADMIN_KEY],
    { cwd: ROOT },
  );
  return stdout.trim();
}

const stripe = stripeClient();
let deactivated: string | null = null;

afterAll(async () => {
  // Never leave the shared stack's meter inactive, whatever happened.
  if (deactivated) await stripe.billing.meters.reactivate(deactivated);
});

describe("dead letter replay", () => {
  it("bills a parked verdict exactly once after its cause is fixed, however often it is replayed", async () => {
    const userId = `replay-${crypto.randomUUID()}`;

    // A pay-as-you-go customer.
    const checkout = await asUser(userId, "/api/billing/checkout", {
      method: "POST",
      body: JSON.stringify({ plan: "payg" }),
    });
    expect(checkout.status).toBe(200);
    const { id } = (await checkout.json()) as { id: string };
    const completed = await fetch(stripeUrl(`/_emulator/checkout/sessions/${id}/complete`), {
      method: "POST",
    });
    expect(completed.status).toBe(200);
    const { subscription } = (await completed.json()) as { subscription: { id: string; customer: string } };
    await eventually(
      async () => (await (await asUser(userId, "/api/billing/usage")).json()) as Usage,
      (u) => u.plan === "payg",
    );

    // The cause: someone deactivated the meter in Stripe.
    const meters = await stripe.billing.meters.list({ status: "active", limit: 100 });
    const meter = meters.data.find((m) => m.event_name === inject("paygMeter"));
    if (!meter) throw new Error("meter not found");
    await stripe.billing.meters.deactivate(meter.id);
    deactivated = meter.id;

    // One session that worked, created after the upgrade (billed under the plan in force at its
    // creation): recorded, but its meter post is rejected and the verdict parked.
    const sessionId = `replay-s-${crypto.randomUUID()}`;
    expect((await postEvents(sessionEvents({ sessionId, userId, start: Date.now() + 1000 }))).status).toBe(
      202,
    );
    const parked = await eventually(
      async () =>
        (
          await admin<{ dead_letters: DeadLetter[] }>(
            "/admin/dead-letters?queue=aigate-verdicts&state=pending",
          )
        ).dead_letters,
      (rows) => rows.some((r) => r.summary.includes(`user ${userId} payg`)),
      60_000,
    );
    const letter = parked.find((r) => r.summary.includes(`user ${userId} payg`));
    if (!letter) throw new Error("not parked");
    expect(letter.error).toContain("Stripe rejected the meter post");
    expect(letter.error).toContain("archived_meter");
    expect(await dlq("list", "--queue", "aigate-verdicts", "--state", "pending")).toContain(letter.id);
    expect(await meterValue(subscription.customer)).toBe(0);

    // The fix, then the replay: re-sent once; a repeat re-sends nothing; --force re-sends again.
    await stripe.billing.meters.reactivate(meter.id);
    deactivated = null;
    expect(await dlq("replay", letter.id)).toBe(`replayed 1: ${letter.id}`);
    expect(await dlq("replay", letter.id)).toBe(`replayed 0\nskipped ${letter.id} (already_replayed)`);
    await eventually(
      () => meterValue(subscription.customer),
      (v) => v === 1,
      90_000,
    );
    expect(await dlq("replay", letter.id, "--force")).toBe(`replayed 1: ${letter.id}`);
    const shown = await admin<DeadLetter>(`/admin/dead-letters/${encodeURIComponent(letter.id)}`);
    expect(shown.replay_count).toBe(2);

    // Give the forced copy time to go through the biller (and the minute sweep a few ticks).
    await new Promise((r) => setTimeout(r, 8_000));
    expect(await meterValue(subscription.customer)).toBe(1);
    const usage = (await (await asUser(userId, "/api/billing/usage")).json()) as Usage;
    expect(usage).toMatchObject({ plan: "payg", sessions_this_month: 1, estimated_cost_cents: 10 });
    // Nothing new was parked for this user by the replays.
    const pending = await admin<{ dead_letters: DeadLetter[] }>(
      "/admin/dead-letters?queue=aigate-verdicts&state=pending",
    );
    expect(pending.dead_letters.filter((r) => r.summary.includes(`user ${userId} `))).toEqual([]);

    // Stripe invoices the period: one session at $0.10.
    const closed = await fetch(stripeUrl(`/_emulator/subscriptions/${subscription.id}/close_period`), {
      method: "POST",
    });
    expect(closed.status).toBe(200);
    const { invoice } = (await closed.json()) as { invoice: { total: number } };
    expect(invoice.total).toBe(10);
  });
});
