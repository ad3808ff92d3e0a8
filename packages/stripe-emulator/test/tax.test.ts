/**
 * Stripe Tax on the emulator. Stripe's docs quoted by each test:
 * - Checkout Sessions create, `automatic_tax[enabled]`: "Set to `true` to calculate tax
 *   automatically using the customer's location. Enabling this parameter causes Checkout to
 *   collect any billing address information necessary for tax calculation."
 * - `customer_update`: "Controls what fields on Customer can be updated by the Checkout Session.
 *   Can only be provided when `customer` is provided."; `customer_update[address]`: "Describes
 *   whether Checkout saves the billing address onto `customer.address`."
 * - docs.stripe.com/tax/invoicing: "To calculate these for each line item, Stripe uses ... The
 *   customer's tax settings and location"; "Stripe calculates the tax at the published rate at the
 *   time of invoice finalization".
 * - docs.stripe.com/payments/checkout/taxes: "When you set the tax_behavior parameter to
 *   exclusive, it adds tax to the subtotal."
 * - Invoice `total_taxes` / line `taxes` (API 2025-03-31.basil and later): `{amount, tax_behavior,
 *   tax_rate_details, taxability_reason, taxable_amount, type: "tax_rate_details"}`.
 * The rate itself is the emulator's simplification: a flat percentage per country (README, "Tax").
 */
import type Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { type Catalog, createCatalog, useEmulator } from "./testkit";

const h = useEmulator();
const MAR_10 = Date.UTC(2026, 2, 10, 9, 30, 0) / 1000;

function taxedSession(catalog: Catalog, extra: Partial<Stripe.Checkout.SessionCreateParams> = {}) {
  return h.stripe.checkout.sessions.create({
    mode: "subscription",
    customer_email: "ada@example.com",
    line_items: [{ price: catalog.proMonthly.id, quantity: 1 }, { price: catalog.proSessions.id }],
    success_url: "http://app.test/billing",
    automatic_tax: { enabled: true },
    billing_address_collection: "required",
    tax_id_collection: { enabled: true },
    ...extra,
  });
}

async function sendUsage(customer: string, value: number) {
  await h.stripe.billing.meterEvents.create({
    event_name: "aigate_sessions",
    payload: { stripe_customer_id: customer, value: String(value) },
  });
}

const lineTaxes = (inv: Stripe.Invoice) =>
  inv.lines.data
    .map((l) => [l.amount, l.taxes?.map((t) => t.amount) ?? []])
    .sort((a, b) => Number(a[0]) - Number(b[0]));

describe("Checkout with automatic tax", () => {
  it("echoes automatic_tax, billing_address_collection and tax_id_collection", async () => {
    const catalog = await createCatalog(h.stripe);
    const session = await taxedSession(catalog);
    expect(session).toMatchObject({
      automatic_tax: { enabled: true, liability: { type: "self" }, status: "requires_location_inputs" },
      billing_address_collection: "required",
      tax_id_collection: { enabled: true, required: "never" },
      total_details: { amount_tax: 0 },
    });
    const plain = await taxedSession(catalog, {
      automatic_tax: undefined,
      billing_address_collection: undefined,
      tax_id_collection: undefined,
    });
    expect(plain).toMatchObject({
      automatic_tax: { enabled: false, liability: null, provider: null, status: null },
      billing_address_collection: null,
      tax_id_collection: { enabled: false },
    });
  });

  it("refuses automatic tax for an existing customer without an address unless Checkout may save one", async () => {
    const catalog = await createCatalog(h.stripe);
    const customer = await h.stripe.customers.create({ email: "bo@example.com" });
    const base = { customer: customer.id, customer_email: undefined, tax_id_collection: undefined };
    await expect(taxedSession(catalog, base)).rejects.toMatchObject({
      statusCode: 400,
      code: "customer_tax_location_invalid",
      message: expect.stringContaining("requires a valid address on the Customer"),
    });
    // tax ID collection for an existing customer needs customer_update[name]=auto
    await expect(
      taxedSession(catalog, {
        customer: customer.id,
        customer_email: undefined,
        customer_update: { address: "auto" },
      }),
    ).rejects.toMatchObject({ statusCode: 400, message: expect.stringContaining("customer_update[name]") });
    // customer_update "Can only be provided when `customer` is provided."
    await expect(taxedSession(catalog, { customer_update: { address: "auto" } })).rejects.toMatchObject({
      statusCode: 400,
      param: "customer_update",
    });
    const ok = await taxedSession(catalog, { ...base, customer_update: { address: "auto" } });
    expect(ok.automatic_tax.enabled).toBe(true);
  });

  it("saves the billing address and tax ID, and the first invoice adds tax at the country's rate", async () => {
    const catalog = await createCatalog(h.stripe);
    const customer = await h.stripe.customers.create({ email: "cy@example.com" });
    const session = await taxedSession(catalog, {
      customer: customer.id,
      customer_email: undefined,
      customer_update: { address: "auto", name: "auto" },
    });
    const since = (await h.control.events()).length;
    const done = await h.control.completeCheckout(session.id, {
      address: { country: "de", postal_code: "10115", city: "Berlin" },
      business_name: "Cy GmbH",
      tax_id: { type: "eu_vat", value: "DE123456789" },
    });

    const saved = await h.stripe.customers.retrieve(customer.id);
    expect(saved).toMatchObject({
      name: "Cy GmbH",
      address: { country: "DE", postal_code: "10115", city: "Berlin", line1: null },
    });
    const events = (await h.control.events()).slice(since);
    expect(events[0]).toMatchObject({
      type: "customer.updated",
      data: { previous_attributes: { address: null, name: null } },
    });
    expect(done.subscription.automatic_tax).toEqual({
      disabled_reason: null,
      enabled: true,
      liability: { type: "self" },
    });

    const invoice = await h.stripe.invoices.retrieve(done.invoice.id);
    const rate = invoice.total_taxes?.[0]?.tax_rate_details?.tax_rate;
    expect(rate).toMatch(/^txr_/);
    // $29.00 + 19 % = $5.51 (exclusive: added to the subtotal)
    expect(invoice).toMatchObject({
      status: "paid",
      automatic_tax: { enabled: true, status: "complete", provider: "stripe", disabled_reason: null },
      subtotal: 2900,
      total_excluding_tax: 2900,
      total: 3451,
      amount_paid: 3451,
      total_taxes: [
        {
          amount: 551,
          tax_behavior: "exclusive",
          taxability_reason: "standard_rated",
          taxable_amount: 2900,
          type: "tax_rate_details",
          tax_rate_details: { tax_rate: rate },
        },
      ],
    });
    expect(lineTaxes(invoice)).toEqual([
      [0, [0]],
      [2900, [551]],
    ]);

    const completed = await h.stripe.checkout.sessions.retrieve(session.id);
    expect(completed).toMatchObject({
      amount_subtotal: 2900,
      amount_total: 3451,
      total_details: { amount_tax: 551 },
      automatic_tax: { enabled: true, status: "complete" },
      customer_details: {
        address: { country: "DE", postal_code: "10115" },
        business_name: "Cy GmbH",
        tax_ids: [{ type: "eu_vat", value: "DE123456789" }],
      },
    });
  });

  it("rounds each line's tax to the cent: metered usage, licensed fee and invoice items (a credit too)", async () => {
    await h.control.setClock(MAR_10, { frozen: true });
    const catalog = await createCatalog(h.stripe);
    const done = await h.control.completeCheckout((await taxedSession(catalog)).id, {
      address: { country: "DE" },
    });
    const customer = done.subscription.customer;
    await sendUsage(customer, 450); // pro: 50 beyond the 400 included, $3.50
    await h.stripe.invoiceItems.create({ customer, amount: 250, currency: "usd", description: "adjustment" });
    await h.stripe.invoiceItems.create({ customer, amount: -150, currency: "usd", description: "credit" });
    const { invoice } = await h.control.closePeriod(done.subscription.id);

    // 19 %: 2900 -> 551, 350 -> 66.5 -> 67, 250 -> 47.5 -> 48, -150 -> -28.5 -> -29 (halves away from zero)
    const renewal = await h.stripe.invoices.retrieve(invoice.id);
    expect(lineTaxes(renewal)).toEqual([
      [-150, [-29]],
      [250, [48]],
      [350, [67]],
      [2900, [551]],
    ]);
    // 637 rounded per line; 19 % of the 3350 subtotal would be 636.5
    expect(renewal).toMatchObject({ subtotal: 3350, total: 3350 + 637, amount_paid: 3987 });
    expect(renewal.total_taxes).toMatchObject([{ amount: 637, taxable_amount: 3350 }]);
  });

  it("computes a draft's tax now and fixes it at finalization, whatever the rates do after", async () => {
    const catalog = await createCatalog(h.stripe);
    const done = await h.control.completeCheckout((await taxedSession(catalog)).id, {
      address: { country: "FR" },
    });
    await h.control.setTaxRates({ FR: 5.5 });
    const draft = await h.stripe.invoices.create({
      customer: done.subscription.customer,
      automatic_tax: { enabled: true },
      pending_invoice_items_behavior: "include",
    });
    await h.stripe.invoiceItems.create({
      customer: done.subscription.customer,
      invoice: draft.id,
      amount: 1000,
      currency: "usd",
    });
    expect((await h.stripe.invoices.retrieve(draft.id)).total).toBe(1055);
    const final = await h.stripe.invoices.finalizeInvoice(draft.id);
    expect(final).toMatchObject({ total: 1055, total_taxes: [{ amount: 55 }] });
    await h.control.setTaxRates({ FR: 20 });
    expect((await h.stripe.invoices.retrieve(draft.id)).total).toBe(1055);
  });

  it("does not tax a country without a rate (not_collecting); a session completed without an address gets the US", async () => {
    const catalog = await createCatalog(h.stripe);
    const done = await h.control.completeCheckout((await taxedSession(catalog)).id);
    expect(done.checkout_session.customer_details?.address?.country).toBe("US");
    const invoice = await h.stripe.invoices.retrieve(done.invoice.id);
    expect(invoice).toMatchObject({
      total: 2900,
      automatic_tax: { enabled: true, status: "complete" },
      total_taxes: [{ amount: 0, taxability_reason: "not_collecting", taxable_amount: 0 }],
    });
  });

  it("turns automatic tax off at finalization when the customer has no location", async () => {
    const customer = await h.stripe.customers.create({ email: "no-address@example.com" });
    await h.stripe.invoiceItems.create({ customer: customer.id, amount: 500, currency: "usd" });
    const draft = await h.stripe.invoices.create({
      customer: customer.id,
      automatic_tax: { enabled: true },
      pending_invoice_items_behavior: "include",
    });
    expect(draft.automatic_tax).toMatchObject({ enabled: true, status: "requires_location_inputs" });
    const final = await h.stripe.invoices.finalizeInvoice(draft.id);
    expect(final).toMatchObject({
      total: 500,
      total_taxes: [],
      automatic_tax: { enabled: false, disabled_reason: "finalization_requires_location_inputs" },
    });
  });

  it("leaves invoices without automatic tax as they were", async () => {
    const catalog = await createCatalog(h.stripe);
    const session = await taxedSession(catalog, {
      automatic_tax: undefined,
      billing_address_collection: undefined,
      tax_id_collection: undefined,
    });
    const done = await h.control.completeCheckout(session.id, { address: { country: "DE" } });
    const invoice = await h.stripe.invoices.retrieve(done.invoice.id);
    expect(invoice).toMatchObject({
      total: 2900,
      subtotal: 2900,
      total_taxes: [],
      automatic_tax: { enabled: false, status: null, disabled_reason: null },
    });
    expect(invoice.lines.data.every((l) => l.taxes?.length === 0)).toBe(true);
    expect(done.subscription.automatic_tax.enabled).toBe(false);
  });

  it("lets the hosted page's form enter the billing country", async () => {
    const catalog = await createCatalog(h.stripe);
    const session = await taxedSession(catalog);
    const page = await (await fetch(`${h.emu.url}/checkout/${session.id}`)).text();
    expect(page).toContain('name="country"');
    expect(page).toContain('name="tax_id_value"');
    const res = await fetch(`${h.emu.url}/checkout/${session.id}/pay`, {
      method: "POST",
      body: new URLSearchParams({ country: "nl", postal_code: "1012", name: "Dee" }),
      redirect: "manual",
    });
    expect(res.status).toBe(303);
    const completed = await h.stripe.checkout.sessions.retrieve(session.id);
    expect(completed.customer_details?.address?.country).toBe("NL");
    expect(completed.total_details?.amount_tax).toBe(609); // 21 % of $29.00
  });
});

describe("the tax rate controls", () => {
  it("show the defaults and refuse bad tables", async () => {
    expect(await h.control.taxRates()).toEqual({ rates: { DE: 19, FR: 20, GB: 20, IE: 23, NL: 21 } });
    await expect(h.control.setTaxRates({ de: 19 })).rejects.toMatchObject({ status: 400 });
    await expect(h.control.setTaxRates({ DE: 101 })).rejects.toMatchObject({ status: 400 });
    await expect(h.control.setTaxRates({ DE: 7.12345 })).rejects.toMatchObject({ status: 400 });
    expect(await h.control.setTaxRates({ US: 0, DE: 7.5 })).toEqual({ rates: { DE: 7.5, US: 0 } });
    h.emu.reset();
    expect((await h.control.taxRates()).rates.DE).toBe(19);
  });
});
