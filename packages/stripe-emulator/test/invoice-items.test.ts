import { describe, expect, it } from "vitest";
import { createCatalog, subscribe, useEmulator } from "./testkit";

const h = useEmulator();
const MAR_10 = Date.UTC(2026, 2, 10, 9, 30, 0) / 1000;
const APR_10 = Date.UTC(2026, 3, 10, 9, 30, 0) / 1000;
const DAY = 86_400;

describe("invoice items", () => {
  // API reference, create an invoice item: "Creates an item to be added to a draft invoice (up to
  // 250 items per invoice). If no invoice is specified, the item will be on the next invoice
  // created for the customer specified." (https://docs.stripe.com/api/invoiceitems/create)
  it("creates a pending item (negative amounts allowed), lists it as pending, retrieves and deletes it", async () => {
    await h.control.setClock(MAR_10, { frozen: true });
    const customer = await h.stripe.customers.create({ email: "ii@example.com" });
    const credit = await h.stripe.invoiceItems.create({
      customer: customer.id,
      amount: -150,
      currency: "usd",
      description: "Usage adjustment (credit)",
      period: { start: MAR_10 - DAY, end: MAR_10 },
      metadata: { series: "u_1:pro:1" },
    });
    expect(credit).toMatchObject({
      object: "invoiceitem",
      amount: -150,
      currency: "usd",
      customer: customer.id,
      date: MAR_10,
      description: "Usage adjustment (credit)",
      invoice: null,
      parent: null,
      period: { start: MAR_10 - DAY, end: MAR_10 },
      proration: false,
      quantity: 1,
      metadata: { series: "u_1:pro:1" },
      pricing: { type: "price_details" },
    });
    expect(String(credit.pricing?.unit_amount_decimal)).toBe("-150");
    expect(credit.id).toMatch(/^ii_/);
    const other = await h.stripe.invoiceItems.create({ customer: customer.id, amount: 99, currency: "usd" });
    expect(other.period).toEqual({ start: MAR_10, end: MAR_10 });

    const pending = await h.stripe.invoiceItems.list({ customer: customer.id, pending: true });
    expect(pending.data.map((i) => i.id)).toEqual([other.id, credit.id]);
    expect((await h.stripe.invoiceItems.retrieve(credit.id)).amount).toBe(-150);
    expect((await h.control.events("invoiceitem.created")).map((e) => e.data.object.id)).toEqual([
      credit.id,
      other.id,
    ]);

    const deleted = await h.stripe.invoiceItems.del(other.id);
    expect(deleted).toMatchObject({ id: other.id, object: "invoiceitem", deleted: true });
    await expect(h.stripe.invoiceItems.retrieve(other.id)).rejects.toMatchObject({
      statusCode: 404,
      code: "resource_missing",
    });
    expect(await h.control.events("invoiceitem.deleted")).toHaveLength(1);
  });

  it("validates invoice items with Stripe's error codes", async () => {
    const customer = await h.stripe.customers.create({});
    await expect(
      h.stripe.invoiceItems.create({ customer: customer.id, currency: "usd" }),
    ).rejects.toMatchObject({
      code: "parameter_missing",
      param: "amount",
    });
    await expect(
      h.stripe.invoiceItems.create({ customer: "cus_missing", amount: 1, currency: "usd" }),
    ).rejects.toMatchObject({
      code: "resource_missing",
      param: "customer",
    });
    await expect(h.stripe.invoiceItems.create({ customer: customer.id, amount: 1 })).rejects.toMatchObject({
      code: "parameter_missing",
      param: "currency",
    });
    await expect(
      h.stripe.invoiceItems.create({
        customer: customer.id,
        amount: 1,
        currency: "usd",
        subscription: "sub_nope",
      }),
    ).rejects.toMatchObject({ code: "resource_missing", param: "subscription" });
  });

  // "For standalone invoices, the invoice item won't be automatically added unless you pass
  // `pending_invoice_item_behavior: 'include'` when creating the invoice." (API reference,
  // invoiceitems create, `invoice`); `pending_invoice_items_behavior` "Defaults to `exclude` if the
  // parameter is omitted." (invoices create)
  it("pulls pending items into a one-off invoice only with pending_invoice_items_behavior=include", async () => {
    await h.control.setClock(MAR_10, { frozen: true });
    const customer = await h.stripe.customers.create({ email: "oneoff@example.com" });
    const item = await h.stripe.invoiceItems.create({
      customer: customer.id,
      amount: 1234,
      currency: "usd",
      description: "Sessions billed after the period froze",
    });
    const empty = await h.stripe.invoices.create({ customer: customer.id, description: "nothing pending" });
    expect(empty).toMatchObject({
      status: "draft",
      billing_reason: "manual",
      total: 0,
      parent: null,
      auto_advance: false,
      automatically_finalizes_at: null,
      description: "nothing pending",
    });
    expect((await h.stripe.invoiceItems.retrieve(item.id)).invoice).toBeNull();

    const invoice = await h.stripe.invoices.create({
      customer: customer.id,
      pending_invoice_items_behavior: "include",
      metadata: { reason: "adjustment" },
    });
    expect(invoice).toMatchObject({
      status: "draft",
      total: 1234,
      amount_due: 1234,
      metadata: { reason: "adjustment" },
    });
    const line = invoice.lines.data[0];
    // Basil+ line shape: parent.invoice_item_details and pricing (no `price`, no `invoice_item`)
    expect(line).toMatchObject({
      amount: 1234,
      description: "Sessions billed after the period froze",
      parent: {
        type: "invoice_item_details",
        invoice_item_details: { invoice_item: item.id, proration: false, subscription: null },
        subscription_item_details: null,
      },
      pricing: { type: "price_details" },
      subscription: null,
    });
    expect((await h.stripe.invoiceItems.retrieve(item.id)).invoice).toBe(invoice.id);
    expect((await h.stripe.invoiceItems.list({ invoice: invoice.id })).data.map((i) => i.id)).toEqual([
      item.id,
    ]);

    const finalized = await h.stripe.invoices.finalizeInvoice(invoice.id);
    expect(finalized).toMatchObject({ status: "open", amount_remaining: 1234 });
    expect(finalized.number).toMatch(/-0001$/);
    await expect(h.stripe.invoiceItems.del(item.id)).rejects.toMatchObject({ statusCode: 400 });
    await expect(h.stripe.invoices.finalizeInvoice(invoice.id)).rejects.toMatchObject({ statusCode: 400 });
    const paid = await h.stripe.invoices.pay(invoice.id);
    expect(paid).toMatchObject({ status: "paid", amount_paid: 1234 });
  });

  // Customer `balance`: "If negative, the customer has credit to apply to their next invoice."
  // Invoice `ending_balance`: "Ending customer balance after the invoice is finalized."
  it("turns a negative invoice into customer credit that the next invoice uses", async () => {
    const customer = await h.stripe.customers.create({});
    await h.stripe.invoiceItems.create({ customer: customer.id, amount: -500, currency: "usd" });
    const credit = await h.stripe.invoices.create({
      customer: customer.id,
      pending_invoice_items_behavior: "include",
    });
    const creditFinal = await h.stripe.invoices.finalizeInvoice(credit.id);
    expect(creditFinal).toMatchObject({
      status: "paid",
      total: -500,
      amount_due: 0,
      starting_balance: 0,
      ending_balance: -500,
    });
    expect((await h.stripe.customers.retrieve(customer.id)) as { balance: number }).toMatchObject({
      balance: -500,
    });

    await h.stripe.invoiceItems.create({ customer: customer.id, amount: 800, currency: "usd" });
    const next = await h.stripe.invoices.create({
      customer: customer.id,
      pending_invoice_items_behavior: "include",
      auto_advance: false,
    });
    expect(next.starting_balance).toBe(-500);
    const nextFinal = await h.stripe.invoices.finalizeInvoice(next.id);
    expect(nextFinal).toMatchObject({
      total: 800,
      starting_balance: -500,
      amount_due: 300,
      ending_balance: 0,
    });
    expect((await h.stripe.customers.retrieve(customer.id)) as { balance: number }).toMatchObject({
      balance: 0,
    });
  });

  // `subscription`: "When left blank, the invoice item is added to the next upcoming scheduled
  // invoice. When set, scheduled invoices for subscriptions other than the specified subscription
  // will ignore the invoice item." (API reference, invoiceitems create)
  it("adds pending items to the next invoice of their subscription, or of the customer", async () => {
    await h.control.setClock(MAR_10, { frozen: true });
    const catalog = await createCatalog(h.stripe, "sum");
    const { subscription } = await subscribe(h, [{ price: catalog.proMonthly.id, quantity: 1 }]);
    const mine = await h.stripe.invoiceItems.create({
      customer: subscription.customer,
      subscription: subscription.id,
      amount: 250,
      currency: "usd",
    });
    expect(mine.parent).toEqual({
      type: "subscription_details",
      subscription_details: { subscription: subscription.id },
    });
    const anyInvoice = await h.stripe.invoiceItems.create({
      customer: subscription.customer,
      amount: -100,
      currency: "usd",
    });
    const { invoice } = await h.control.closePeriod(subscription.id);
    expect(invoice.period_end).toBe(APR_10);
    expect(invoice.total).toBe(2900 + 250 - 100);
    const fromItems = invoice.lines.data.filter((l) => l.parent?.type === "invoice_item_details");
    expect(
      fromItems.map((l) => [l.parent?.invoice_item_details?.invoice_item, l.amount, l.subscription]),
    ).toEqual([
      [mine.id, 250, subscription.id],
      [anyInvoice.id, -100, null],
    ]);
    expect(
      (await h.stripe.invoiceItems.list({ customer: subscription.customer, pending: true })).data,
    ).toEqual([]);
  });
});
