/**
 * Stripe Tax through the whole stack: a customer in a taxed country subscribes to pro through
 * Checkout (which the api creates with `automatic_tax[enabled]=true`, a required billing address
 * saved onto the customer and tax ID collection), and the first invoice carries the $29 fee plus
 * tax, which GET /api/billing/invoices shows. Stripe computes tax "for each line item" from "the
 * customer's tax settings and location" (docs.stripe.com/tax/invoicing); the emulator applies its
 * configured flat rate for the customer's country (packages/stripe-emulator/README.md, "Tax").
 */
import { describe, expect, it } from "vitest";
import { eventually } from "../e2e/helpers";
import { asUser, emulator, stripe, usage } from "./harness";

const user = `lifecycle-tax-${Date.now()}`;

interface InvoiceBody {
  id: string;
  subtotal_cents: number;
  tax_cents: number | null;
  total_cents: number;
  amount_paid_cents: number;
}

describe("Stripe Tax", () => {
  it("bills a German pro subscriber $29 plus tax at the configured rate, and the invoices API shows the tax", async () => {
    const rate = (await emulator().taxRates()).rates.DE;
    expect(rate).toBeGreaterThan(0);
    const tax = Math.round((2900 * (rate ?? 0)) / 100);

    const res = await asUser(user, "/api/billing/checkout", {
      method: "POST",
      body: JSON.stringify({ plan: "pro" }),
    });
    expect(res.status).toBe(200);
    const { id } = (await res.json()) as { id: string };
    const session = await stripe().checkout.sessions.retrieve(id);
    expect(session).toMatchObject({
      automatic_tax: { enabled: true },
      billing_address_collection: "required",
      tax_id_collection: { enabled: true },
    });

    const done = await emulator().completeCheckout(id, {
      address: { country: "DE", postal_code: "10115", city: "Berlin" },
    });
    const customer = await stripe().customers.retrieve(done.subscription.customer);
    expect(customer).toMatchObject({ address: { country: "DE", postal_code: "10115" } });

    const invoice = await stripe().invoices.retrieve(done.invoice.id);
    expect(invoice).toMatchObject({
      billing_reason: "subscription_create",
      status: "paid",
      subtotal: 2900,
      total: 2900 + tax,
      amount_paid: 2900 + tax,
      automatic_tax: { enabled: true, status: "complete" },
      total_taxes: [{ amount: tax, taxable_amount: 2900, tax_behavior: "exclusive" }],
    });

    const body = await eventually(
      async () => (await (await asUser(user, "/api/billing/invoices")).json()) as { invoices: InvoiceBody[] },
      (b) => b.invoices.some((i) => i.id === invoice.id && i.amount_paid_cents > 0),
    );
    expect(body.invoices).toEqual([
      expect.objectContaining({
        id: invoice.id,
        subtotal_cents: 2900,
        tax_cents: tax,
        total_cents: 2900 + tax,
        amount_paid_cents: 2900 + tax,
      }),
    ]);

    const u = await eventually(
      () => usage(user),
      (x) => x.plan === "pro",
    );
    // the estimate is the plan's price before tax, and says so
    expect(u).toMatchObject({ estimated_cost_cents: 2900, estimated_cost_includes_tax: false });
  });
});
