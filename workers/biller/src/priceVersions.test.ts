/**
 * A catalog edit on the emulator, as an operator makes one: shared/catalog/pricing.json changed
 * (here a copy of it, parsed by the same schema) and the setup run again. The changed price gets a
 * new version holding the lookup key; the subscriber of the old version is still billed at it, a
 * new subscriber gets the new one, and each series records the price it bills.
 *
 * Stripe: `transfer_lookup_key` "If set to true, will atomically remove the lookup key from the
 * existing price, and assign it to this price" (https://docs.stripe.com/api/prices/create);
 * graduated tiers: "pricing can change as the quantity grows", volume: "the maximum quantity
 * within a period determines the per unit price"
 * (https://docs.stripe.com/api/prices/object#price_object-tiers_mode).
 */
import { CATALOG, parseCatalog } from "@aigate/shared/catalog";
import { catalogPrice, DEFAULT_METER_PREFIX, ensureStripeCatalog } from "@aigate/shared/stripeCatalog";
import { afterEach, beforeEach, expect, it } from "vitest";
import {
  consume,
  emulator,
  judge,
  type PaidCustomer,
  setupCatalog,
  stripe,
  subscribe,
  syncStripe,
  usagePeriods,
} from "./test/support";

/** The catalog with payg graduated: $0.10 for the first 2 sessions of a period, then $0.08 each. */
const EDITED = parseCatalog({
  ...CATALOG,
  plans: {
    ...CATALOG.plans,
    payg: {
      ...CATALOG.plans.payg,
      tiers_mode: "graduated",
      tiers: [
        { up_to: 2, unit_amount_cents: 10 },
        { up_to: null, unit_amount_cents: 8 },
      ],
    },
  },
});

beforeEach(async () => {
  await setupCatalog();
});

afterEach(async () => {
  // the catalog in force again (a further version holds the lookup key) for the next test file
  await setupCatalog();
});

async function used(c: PaidCustomer, n: number) {
  const run = await judge(c.userId, n);
  await consume([run.message]);
}

async function invoicePeriod(c: PaidCustomer) {
  const closed = await emulator().closePeriod(c.subscriptionId);
  await syncStripe({ subscriptionId: c.subscriptionId, invoiceId: closed.invoice.id, userId: c.userId });
  return closed.invoice;
}

it("keeps a subscriber on the price version they have when a catalog edit publishes a new one", async () => {
  const before = await ensureStripeCatalog(stripe());
  const oldPrice = catalogPrice(before, "aigate_payg_session");
  const early = await subscribe("payg");

  const after = await ensureStripeCatalog(stripe(), DEFAULT_METER_PREFIX, EDITED);
  const newPrice = catalogPrice(after, "aigate_payg_session");
  expect(newPrice).not.toBe(oldPrice);
  // the edit touched payg only: pro's prices are the same objects
  expect(catalogPrice(after, "aigate_pro_session")).toBe(catalogPrice(before, "aigate_pro_session"));
  expect(catalogPrice(after, "aigate_pro_monthly")).toBe(catalogPrice(before, "aigate_pro_monthly"));
  const published = await stripe().prices.retrieve(newPrice, { expand: ["tiers"] });
  expect(published).toMatchObject({
    lookup_key: "aigate_payg_session",
    billing_scheme: "tiered",
    tiers_mode: "graduated",
    metadata: { plan: "payg" },
    recurring: { usage_type: "metered", meter: before.meters.payg.id },
  });
  expect(published.tiers?.map((t) => [t.up_to, t.unit_amount])).toEqual([
    [2, 10],
    [null, 8],
  ]);
  expect(await stripe().prices.retrieve(oldPrice)).toMatchObject({
    active: true,
    lookup_key: null,
    unit_amount: 10,
  });
  // running the edited setup again changes nothing
  expect((await ensureStripeCatalog(stripe(), DEFAULT_METER_PREFIX, EDITED)).prices).toEqual(after.prices);

  const late = await subscribe("payg");
  const priceOf = async (c: PaidCustomer) =>
    (await stripe().subscriptions.retrieve(c.subscriptionId)).items.data.map((i) => i.price.id);
  expect(await priceOf(early)).toEqual([oldPrice]);
  expect(await priceOf(late)).toEqual([newPrice]);

  await used(early, 5);
  await used(late, 5);
  expect((await usagePeriods(early.userId)).map((s) => s.stripe_price_id)).toEqual([oldPrice]);
  expect((await usagePeriods(late.userId)).map((s) => s.stripe_price_id)).toEqual([newPrice]);

  // 5 sessions: 5 x $0.10 on the old version; 2 x $0.10 + 3 x $0.08 on the new one
  const earlyInvoice = await invoicePeriod(early);
  const lateInvoice = await invoicePeriod(late);
  expect(earlyInvoice.lines.data.map((l) => [l.pricing?.price_details?.price, l.quantity, l.amount])).toEqual(
    [[oldPrice, 5, 50]],
  );
  expect(lateInvoice.lines.data.map((l) => [l.pricing?.price_details?.price, l.quantity, l.amount])).toEqual([
    [newPrice, 5, 44],
  ]);
});
