/**
 * The walking skeleton: one thin path through the whole stack on the local runtime.
 * A checkout completed in the Stripe emulator sends signed webhooks that put the user on
 * pay-as-you-go; one session's telemetry is judged by the classifier and posted by the biller
 * to the emulator's meter.
 */
import { describe, expect, inject, it } from "vitest";
import { asUser, eventually, postEvents, sessionEvents, stripeUrl } from "./helpers";

interface Usage {
  plan: string;
  sessions_this_month: number;
  estimated_cost_cents: number;
}

describe("walking skeleton", () => {
  it("bills one successful session of a pay-as-you-go user on the Stripe meter", async () => {
    const userId = `skeleton-${crypto.randomUUID()}`;

    // 1. The user upgrades: Checkout, completed in the emulator, which signs and sends webhooks.
    const checkout = await asUser(userId, "/api/billing/checkout", {
      method: "POST",
      body: JSON.stringify({ plan: "payg" }),
    });
    expect(checkout.status).toBe(200);
    const session = (await checkout.json()) as { id: string; url: string };
    const completed = await fetch(stripeUrl(`/_emulator/checkout/sessions/${session.id}/complete`), {
      method: "POST",
    });
    expect(completed.status).toBe(200);
    const { subscription } = (await completed.json()) as { subscription: { customer: string } };

    // 2. The webhook changed the plan in D1.
    await eventually(
      async () => (await (await asUser(userId, "/api/billing/usage")).json()) as Usage,
      (u) => u.plan === "payg",
    );

    // 3. A gateway reports one session that worked, created after the upgrade (a session is
    //    billed under the plan in force when it was created).
    const accepted = await postEvents(
      sessionEvents({ sessionId: `s-${crypto.randomUUID()}`, userId, start: Date.now() + 1000 }),
    );
    expect(accepted.status).toBe(202);
    expect(await accepted.json()).toEqual({ accepted: 4 });

    // 4. Judged, billed, and posted: the meter total for the customer shows it.
    const meter = inject("paygMeter");
    const usage = await eventually(
      async () => {
        const res = await fetch(
          stripeUrl(`/_emulator/meters/${meter}/usage?customer=${encodeURIComponent(subscription.customer)}`),
        );
        return (await res.json()) as { value: number };
      },
      (u) => u.value >= 1,
    );
    expect(usage.value).toBe(1);
    const final = (await (await asUser(userId, "/api/billing/usage")).json()) as Usage;
    expect(final).toMatchObject({ plan: "payg", sessions_this_month: 1, estimated_cost_cents: 10 });
  });
});
