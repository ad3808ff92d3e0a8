import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { amountFor, type MeteredPrice, rangeAmount, sessionPrice } from "./pricing";

const payg: MeteredPrice = { kind: "per_unit", unit_amount: 10, currency: "usd" };
const pro: MeteredPrice = {
  kind: "graduated",
  currency: "usd",
  tiers: [
    { up_to: 400, unit_amount: 0, flat_amount: 0 },
    { up_to: null, unit_amount: 7, flat_amount: 0 },
  ],
};
const volume: MeteredPrice = {
  kind: "volume",
  currency: "usd",
  tiers: [
    { up_to: 1000, unit_amount: 10, flat_amount: 0 },
    { up_to: null, unit_amount: 8, flat_amount: 0 },
  ],
};

describe("metered price amounts", () => {
  it("prices pay-as-you-go at 10 cents a session and pro's overage at 7 cents past 400", () => {
    expect(amountFor(payg, 0)).toBe(0);
    expect(amountFor(payg, 37)).toBe(370);
    expect(amountFor(pro, 400)).toBe(0);
    expect(amountFor(pro, 401)).toBe(7);
    expect(amountFor(pro, 450)).toBe(350);
  });

  it("prices every unit at the tier of the total with volume tiers", () => {
    expect(amountFor(volume, 1000)).toBe(10_000);
    expect(amountFor(volume, 1001)).toBe(8008);
  });

  it("bills a range of late sessions at the marginal price, and credits a negative range", () => {
    expect(rangeAmount(pro, 398, 403)).toBe(21);
    expect(rangeAmount(payg, 5, 3)).toBe(-20);
  });

  it("splits a period's amount over its sessions exactly, whatever the price", () => {
    fc.assert(
      fc.property(fc.constantFrom(payg, pro, volume), fc.integer({ min: 1, max: 1500 }), (price, total) => {
        let sum = 0;
        for (let rank = 1; rank <= total; rank++) sum += sessionPrice(price, rank, total);
        expect(sum).toBe(amountFor(price, total));
      }),
      { numRuns: 60 },
    );
  });
});
