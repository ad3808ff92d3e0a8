import { describe, expect, it } from "vitest";
import raw from "../catalog/pricing.json";
import {
  CATALOG,
  describeTiers,
  includedSessionsOf,
  maxSessionCentsOf,
  PricingCatalog,
  parseCatalog,
  tiersPrice,
} from "./catalog";
import { catalogMeteredPrice, estimateCostCents, PLANS, plansOf } from "./plans";
import { amountFor } from "./pricing";

/** The catalog in force, with payg edited to $0.10 for the first 1,000 sessions, then $0.08. */
function paygTiered(mode: "graduated" | "volume" = "graduated") {
  return parseCatalog({
    ...raw,
    plans: {
      ...raw.plans,
      payg: {
        ...raw.plans.payg,
        tiers_mode: mode,
        tiers: [
          { up_to: 1000, unit_amount_cents: 10 },
          { up_to: null, unit_amount_cents: 8 },
        ],
      },
    },
  });
}

function issues(input: unknown): string[] {
  const r = PricingCatalog.safeParse(input);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
}

describe("the pricing catalog", () => {
  it("derives the plans the product has always sold from shared/catalog/pricing.json", () => {
    expect(CATALOG.plans.payg.tiers).toEqual([{ up_to: null, unit_amount_cents: 10 }]);
    expect(PLANS.payg).toMatchObject({ monthlyFeeCents: 0, includedSessions: 0, perSessionCents: 10 });
    expect(PLANS.pro).toMatchObject({ monthlyFeeCents: 2900, includedSessions: 400, perSessionCents: 7 });
    expect(PLANS.free).toMatchObject({ monthlyQuota: 100, includedSessions: 100, concurrentLimit: 5 });
    expect(PLANS.pro.stripeLookupKeys).toEqual(["aigate_pro_monthly", "aigate_pro_session"]);
    expect(PLANS.payg.stripeLookupKeys).toEqual(["aigate_payg_session"]);
    expect(catalogMeteredPrice("payg")).toEqual({ kind: "per_unit", unit_amount: 10, currency: "usd" });
    expect(catalogMeteredPrice("pro")).toEqual({
      kind: "graduated",
      currency: "usd",
      tiers: [
        { up_to: 400, unit_amount: 0, flat_amount: 0 },
        { up_to: null, unit_amount: 7, flat_amount: 0 },
      ],
    });
    expect(estimateCostCents("pro", 430)).toBe(2900 + 210);
  });

  it("prices a graduated payg tier: the first 1,000 sessions at $0.10, the next at $0.08", () => {
    const c = paygTiered();
    const payg = plansOf(c).payg;
    const price = tiersPrice(payg.tiersMode, payg.tiers);
    expect(amountFor(price, 1000)).toBe(10_000);
    expect(amountFor(price, 1001)).toBe(10_008);
    expect(amountFor(price, 1500)).toBe(10_000 + 500 * 8);
    // no included sessions; spend caps count with the highest tier's price
    expect(payg.includedSessions).toBe(0);
    expect(payg.perSessionCents).toBe(10);
    expect(describeTiers(payg.tiersMode, payg.tiers)).toBe(
      "$0.10 per successful session up to 1,000, then $0.08 each",
    );
  });

  it("prices a volume payg tier: past 1,000, every session of the period at $0.08", () => {
    const payg = plansOf(paygTiered("volume")).payg;
    const price = tiersPrice(payg.tiersMode, payg.tiers);
    expect(amountFor(price, 1000)).toBe(10_000);
    expect(amountFor(price, 1001)).toBe(8008);
    expect(describeTiers(payg.tiersMode, payg.tiers)).toContain("at its total's tier");
  });

  it("counts a free first tier as included only when graduated", () => {
    const tiers = [
      { up_to: 400, unit_amount_cents: 0 },
      { up_to: null, unit_amount_cents: 7 },
    ];
    expect(includedSessionsOf("graduated", tiers)).toBe(400);
    expect(includedSessionsOf("volume", tiers)).toBe(0);
    expect(maxSessionCentsOf(tiers)).toBe(7);
    expect(describeTiers("graduated", tiers)).toBe("400 successful sessions included, then $0.07 each");
  });

  it("refuses tiers Stripe would refuse, with the path of each problem", () => {
    const withPayg = (payg: Record<string, unknown>) => ({
      ...raw,
      plans: { ...raw.plans, payg: { ...raw.plans.payg, ...payg } },
    });
    expect(issues(withPayg({ tiers: [] }))).toEqual([expect.stringMatching(/^plans\.payg\.tiers: /)]);
    expect(issues(withPayg({ tiers: [{ up_to: 10, unit_amount_cents: 1 }] }))).toEqual([
      "plans.payg.tiers.0.up_to: the last tier must have up_to null",
    ]);
    expect(
      issues(
        withPayg({
          tiers: [
            { up_to: 10, unit_amount_cents: 1 },
            { up_to: 10, unit_amount_cents: 1 },
            { up_to: null, unit_amount_cents: 1 },
          ],
        }),
      ),
    ).toEqual(["plans.payg.tiers.1.up_to: tiers' up_to must be strictly ascending"]);
    expect(
      issues(
        withPayg({
          tiers: [
            { up_to: null, unit_amount_cents: 1 },
            { up_to: null, unit_amount_cents: 1 },
          ],
        }),
      ),
    ).toEqual(["plans.payg.tiers.0.up_to: only the last tier may have up_to null"]);
    expect(issues(withPayg({ tiers: [{ up_to: null, unit_amount_cents: -1 }] }))).toHaveLength(1);
    expect(issues(withPayg({ tiers: [{ up_to: null, unit_amount_cents: 2.5 }] }))).toHaveLength(1);
    expect(issues(withPayg({ tiers_mode: "stairstep" }))).toHaveLength(1);
    expect(issues(withPayg({ monthly_fee_cents: 500 }))).toEqual([
      "plans.payg.fee_lookup_key: fee_lookup_key is set exactly when monthly_fee_cents > 0",
    ]);
    expect(issues(withPayg({ session_lookup_key: "aigate_pro_session" }))).toEqual([
      "plans: lookup keys must be unique across the catalog",
    ]);
    expect(issues(withPayg({ session_lookup_key: "Bad Key" }))).toHaveLength(1);
    expect(issues(withPayg({ surprise: 1 }))).toHaveLength(1);
    expect(() => parseCatalog(withPayg({ tiers: [] }))).toThrow(
      /invalid pricing catalog: plans\.payg\.tiers/,
    );
  });
});
