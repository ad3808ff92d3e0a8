import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import type Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Catalog, createCatalog, useEmulator } from "./testkit";

const h = useEmulator();
const JAN_31 = Date.UTC(2026, 0, 31, 10, 0, 0) / 1000;
const FEB_28 = Date.UTC(2026, 1, 28, 10, 0, 0) / 1000;

/** A tiny webhook receiver, like the product's /api/webhooks/stripe. */
const received: { headers: IncomingHttpHeaders; body: string }[] = [];
const receiver = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    received.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
    res.writeHead(200).end("{}");
  });
});
let receiverUrl = "";
beforeAll(async () => {
  await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
});
afterAll(() => new Promise<void>((resolve) => receiver.close(() => resolve())));

function proSession(catalog: Catalog, extra: Partial<Stripe.Checkout.SessionCreateParams> = {}) {
  return h.stripe.checkout.sessions.create({
    mode: "subscription",
    customer_email: "ada@example.com",
    client_reference_id: "u_1",
    line_items: [{ price: catalog.proMonthly.id, quantity: 1 }, { price: catalog.proSessions.id }],
    success_url: "http://app.test/billing?checkout={CHECKOUT_SESSION_ID}",
    cancel_url: "http://app.test/billing",
    metadata: { user_id: "u_1", plan: "pro" },
    subscription_data: { metadata: { user_id: "u_1", plan: "pro" } },
    ...extra,
  });
}

describe("checkout", () => {
  it("creates an open session with a hosted test page", async () => {
    const catalog = await createCatalog(h.stripe);
    const session = await proSession(catalog);
    expect(session.id).toMatch(/^cs_test_\w{58}$/);
    expect(session).toMatchObject({
      object: "checkout.session",
      mode: "subscription",
      status: "open",
      payment_status: "unpaid",
      url: `${h.emu.url}/checkout/${session.id}`,
      customer: null,
      customer_email: "ada@example.com",
      client_reference_id: "u_1",
      amount_total: 2900,
      currency: "usd",
      metadata: { user_id: "u_1", plan: "pro" },
    });
    expect(session.line_items).toBeUndefined();
    const expanded = await h.stripe.checkout.sessions.retrieve(session.id, { expand: ["line_items"] });
    expect(expanded.line_items?.data.map((l) => [l.price?.id, l.quantity])).toEqual([
      [catalog.proMonthly.id, 1],
      [catalog.proSessions.id, null],
    ]);
    const lines = await h.stripe.checkout.sessions.listLineItems(session.id);
    expect(lines.data).toHaveLength(2);

    const page = await fetch(session.url ?? "");
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain("<title>AI Gate test checkout</title>");
    expect(html).toContain('<button type="submit">Pay and subscribe</button>');
    expect(html).toContain("AI Gate Pro");
  });

  it("validates sessions", async () => {
    const catalog = await createCatalog(h.stripe);
    const customer = await h.stripe.customers.create({});
    await expect(proSession(catalog, { customer: customer.id })).rejects.toMatchObject({ param: "customer" });
    await expect(
      proSession(catalog, { line_items: [{ price: catalog.payg.id, quantity: 1 }] }),
    ).rejects.toMatchObject({ param: "line_items[0][quantity]" });
    await expect(
      proSession(catalog, { line_items: [{ price: catalog.proMonthly.id }] }),
    ).rejects.toMatchObject({
      code: "parameter_missing",
      param: "line_items[0][quantity]",
    });
    await expect(
      proSession(catalog, { line_items: [{ price: "price_nope", quantity: 1 }] }),
    ).rejects.toMatchObject({
      code: "resource_missing",
    });
  });

  it("completes into a subscription, a paid first invoice and signed webhooks", async () => {
    await h.control.setClock(JAN_31, { frozen: true });
    await h.control.configureWebhooks({ url: receiverUrl, secret: "whsec_test_secret" });
    received.length = 0;
    try {
      const catalog = await createCatalog(h.stripe);
      const session = await proSession(catalog);
      const done = await h.control.completeCheckout(session.id);

      const sub = done.subscription;
      expect(sub).toMatchObject({
        object: "subscription",
        status: "active",
        customer: done.checkout_session.customer,
        metadata: { user_id: "u_1", plan: "pro" },
        start_date: JAN_31,
        billing_cycle_anchor: JAN_31,
        cancel_at_period_end: false,
        latest_invoice: done.invoice.id,
      });
      // a calendar month, clamped to the end of February, on every item
      for (const item of sub.items.data) {
        expect(item).toMatchObject({
          current_period_start: JAN_31,
          current_period_end: FEB_28,
          subscription: sub.id,
        });
      }
      expect(sub.items.data.map((i) => [i.price.id, i.quantity])).toEqual([
        [catalog.proMonthly.id, 1],
        [catalog.proSessions.id, undefined],
      ]);
      expect(done.checkout_session).toMatchObject({
        status: "complete",
        payment_status: "paid",
        subscription: sub.id,
        invoice: done.invoice.id,
        url: null,
      });
      const invoice = done.invoice;
      expect(invoice).toMatchObject({
        status: "paid",
        billing_reason: "subscription_create",
        total: 2900,
        amount_due: 2900,
        amount_paid: 2900,
        amount_remaining: 0,
        currency: "usd",
        customer: sub.customer,
        parent: { type: "subscription_details", subscription_details: { subscription: sub.id } },
        status_transitions: { finalized_at: JAN_31, paid_at: JAN_31 },
      });
      expect(invoice.number).toMatch(/^[A-Z0-9]{8}-0001$/);
      expect(
        invoice.lines.data.map((l) => [
          l.amount,
          l.quantity,
          l.pricing.price_details?.price,
          l.period.start,
          l.period.end,
        ]),
      ).toEqual([
        [2900, 1, catalog.proMonthly.id, JAN_31, FEB_28],
        [0, 0, catalog.proSessions.id, JAN_31, FEB_28],
      ]);
      expect(invoice.lines.data[0]?.parent).toMatchObject({
        type: "subscription_item_details",
        subscription_item_details: { subscription: sub.id, subscription_item: sub.items.data[0]?.id },
      });

      const customer = await h.stripe.customers.retrieve(sub.customer);
      expect(customer).toMatchObject({ email: "ada@example.com" });

      // signed webhooks, in order, each verifiable with the SDK
      await h.emu.webhooks.idle();
      const types = [
        "customer.created",
        "checkout.session.completed",
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
      ];
      const events: Stripe.Event[] = [];
      for (const delivery of received) {
        expect(delivery.headers["content-type"]).toMatch(/^application\/json/);
        const signature = String(delivery.headers["stripe-signature"]);
        expect(signature).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
        events.push(
          await h.stripe.webhooks.constructEventAsync(delivery.body, signature, "whsec_test_secret"),
        );
        await expect(
          h.stripe.webhooks.constructEventAsync(delivery.body, signature, "whsec_wrong"),
        ).rejects.toThrow();
      }
      expect(events.map((e) => e.type)).toEqual(types);
      expect(done.events).toEqual(events.map((e) => e.id));
      const completed = events[1];
      expect(completed).toMatchObject({
        object: "event",
        api_version: "2026-10-28.endive",
        livemode: false,
        pending_webhooks: 1,
        request: { id: null, idempotency_key: null },
      });
      if (completed?.type !== "checkout.session.completed") throw new Error("unexpected event");
      expect(completed.data.object).toMatchObject({
        id: session.id,
        subscription: sub.id,
        client_reference_id: "u_1",
      });
      expect(completed.data.object.line_items).toBeUndefined();
      const created = events[3];
      if (created?.type !== "invoice.created") throw new Error("unexpected event");
      expect(created.data.object.status).toBe("draft");

      // Stripe's own event API has the same events
      const paid = await h.stripe.events.list({ type: "invoice.paid" });
      expect(paid.data.map((e) => e.id)).toEqual([events[5]?.id]);
      expect((await h.stripe.events.retrieve(events[0]?.id ?? "")).type).toBe("customer.created");
      const deliveries = await h.control.webhookDeliveries();
      expect(deliveries.deliveries.every((d) => d.status === "delivered" && d.http_status === 200)).toBe(
        true,
      );
      expect(await h.control.drainWebhooks()).toEqual([]);

      // completing twice is refused and creates nothing
      await expect(h.control.completeCheckout(session.id)).rejects.toMatchObject({ status: 409 });
      expect((await h.stripe.subscriptions.list({ status: "all" })).data).toHaveLength(1);
    } finally {
      await h.control.configureWebhooks({ url: null, secret: "whsec_dev" });
    }
  });

  it("completes from the hosted page and redirects to success_url", async () => {
    const catalog = await createCatalog(h.stripe);
    const customer = await h.stripe.customers.create({ email: "known@example.com" });
    const session = await proSession(catalog, { customer: customer.id, customer_email: undefined });
    const res = await fetch(`${h.emu.url}/checkout/${session.id}/pay`, {
      method: "POST",
      redirect: "manual",
    });
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe(`http://app.test/billing?checkout=${session.id}`);
    const after = await h.stripe.checkout.sessions.retrieve(session.id, { expand: ["subscription"] });
    expect(after.status).toBe("complete");
    expect(after.customer).toBe(customer.id);
    expect(after.subscription).toMatchObject({
      object: "subscription",
      customer: customer.id,
      status: "active",
    });
    // a second submit (double click) just redirects again
    const again = await fetch(`${h.emu.url}/checkout/${session.id}/pay`, {
      method: "POST",
      redirect: "manual",
    });
    expect(again.status).toBe(303);
    expect((await h.stripe.subscriptions.list({ customer: customer.id })).data).toHaveLength(1);
  });

  it("lets tests drain signed events when no webhook URL is configured", async () => {
    const catalog = await createCatalog(h.stripe);
    const session = await proSession(catalog);
    await h.control.completeCheckout(session.id);
    const drained = await h.control.drainWebhooks();
    expect(drained.map((d) => d.type)).toContain("checkout.session.completed");
    for (const d of drained) {
      const event = await h.stripe.webhooks.constructEventAsync(d.payload, d.signature, "whsec_dev");
      expect(event.id).toBe(d.event_id);
    }
    expect(await h.control.drainWebhooks()).toEqual([]);
    const all = await h.control.events("invoice.paid");
    expect(all).toHaveLength(1);
  });

  it("retries failed deliveries, records them, and leaves them to drain", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const deadUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/hooks`;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await h.control.configureWebhooks({ url: deadUrl });
    try {
      await h.stripe.customers.create({ email: "x@example.com" });
      await h.emu.webhooks.idle();
      const { deliveries } = await h.control.webhookDeliveries();
      expect(deliveries).toMatchObject([
        { type: "customer.created", status: "failed", attempts: 3, http_status: null },
      ]);
      const drained = await h.control.drainWebhooks();
      expect(drained.map((d) => d.type)).toEqual(["customer.created"]);
      expect((await h.control.webhookDeliveries()).deliveries[0]?.status).toBe("drained");
    } finally {
      await h.control.configureWebhooks({ url: null });
    }
  }, 10_000);

  it("creates billing portal sessions with a page linking back", async () => {
    const customer = await h.stripe.customers.create({ email: "p@example.com" });
    const portal = await h.stripe.billingPortal.sessions.create({
      customer: customer.id,
      return_url: "http://app.test/billing",
    });
    expect(portal).toMatchObject({
      object: "billing_portal.session",
      customer: customer.id,
      return_url: "http://app.test/billing",
      url: `${h.emu.url}/portal/${portal.id}`,
    });
    expect(portal.id).toMatch(/^bps_/);
    const html = await (await fetch(portal.url)).text();
    expect(html).toContain('<a href="http://app.test/billing">Return to AI Gate</a>');
    await expect(h.stripe.billingPortal.sessions.create({ customer: "cus_nope" })).rejects.toMatchObject({
      code: "resource_missing",
    });
  });
});
