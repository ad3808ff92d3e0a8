/**
 * The lifecycle money model and its invoice check, on hand-made timelines: the windows and prices
 * docs/billing.md's policy gives, and every planted invoice error reported.
 */
import { describe, expect, it } from "vitest";
import { NEXT_VERSION } from "./lifecycle";
import {
  checkLifecycle,
  expectWindows,
  type InvoiceView,
  type ItemView,
  type LcSession,
  type LifecycleFacts,
  type PriceInfo,
} from "./lifecycleCheck";
import { buildModel, CATALOG, meteredAmount, plusMonths, type TimelineEvent } from "./model";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 11, 1, 10, 0, 0);
const GRACE = 3_600_000;
const VERSIONS = [CATALOG, NEXT_VERSION];

describe("the money model", () => {
  it("prices per unit and by graduated tiers", () => {
    expect(meteredAmount(CATALOG.payg.metered, 120)).toBe(1200);
    expect(meteredAmount(CATALOG.pro.metered, 400)).toBe(0);
    expect(meteredAmount(CATALOG.pro.metered, 430)).toBe(210);
    expect(meteredAmount(NEXT_VERSION.pro.metered, 23)).toBe(24);
    expect(meteredAmount(NEXT_VERSION.pro.metered, 23) - meteredAmount(NEXT_VERSION.pro.metered, 18)).toBe(
      24,
    );
  });

  it("keeps Stripe's monthly cycle on the anchor day, clamped to the month's end", () => {
    const jan31 = Date.UTC(2027, 0, 31, 12);
    expect(new Date(plusMonths(jan31, 1)).toISOString()).toBe("2027-02-28T12:00:00.000Z");
    expect(new Date(plusMonths(jan31, 2)).toISOString()).toBe("2027-03-31T12:00:00.000Z");
  });

  it("ends windows at changes now, applies scheduled changes at the period end, keeps price versions", () => {
    const t1 = T0 + 10 * DAY;
    const timeline: TimelineEvent[] = [
      { kind: "subscribe", at: T0, phase: 1, user: "a", plan: "payg" },
      { kind: "subscribe", at: T0, phase: 1, user: "b", plan: "pro" },
      { kind: "publish", at: T0 + DAY, phase: 2 },
      { kind: "change", at: t1, phase: 3, user: "a", to: "pro", when: "now" },
      { kind: "change", at: t1, phase: 3, user: "b", to: "payg", when: "period_end" },
    ];
    const m = buildModel(["a", "b"], timeline, T0 + 40 * DAY, VERSIONS);
    expect(
      m.windows.get("a")?.map((w) => [w.plan, w.version, w.start, w.end, w.closing?.kind ?? "open"]),
    ).toEqual([
      ["payg", 0, T0, t1, "now_billed"],
      ["pro", 1, t1, plusMonths(t1, 1), "open"],
    ]);
    const end = plusMonths(T0, 1);
    expect(
      m.windows.get("b")?.map((w) => [w.plan, w.version, w.start, w.end, w.closing?.kind ?? "open"]),
    ).toEqual([
      ["pro", 0, T0, end, "period_end"],
      ["payg", 1, end, plusMonths(T0, 2), "open"],
    ]);
  });

  it("takes back a scheduled cancellation on resume, ends at the period end otherwise", () => {
    const timeline: TimelineEvent[] = [
      { kind: "subscribe", at: T0, phase: 1, user: "a", plan: "payg" },
      { kind: "change", at: T0 + DAY, phase: 2, user: "a", to: "free", when: "period_end" },
      { kind: "resume", at: T0 + 2 * DAY, phase: 3, user: "a" },
      { kind: "change", at: T0 + 40 * DAY, phase: 4, user: "a", to: "free", when: "period_end" },
    ];
    const m = buildModel(["a"], timeline, T0 + 70 * DAY, VERSIONS);
    expect(m.windows.get("a")?.map((w) => w.end)).toEqual([plusMonths(T0, 1), plusMonths(T0, 2)]);
    expect(m.final.get("a")?.plan).toBe("free");
  });
});

/** One payg customer: 5 sessions before a renewal (2 judged during its grace, 1 after), then an upgrade. */
function scenario(): LifecycleFacts {
  const end = plusMonths(T0, 1);
  const up = end + 5 * DAY;
  const timeline: TimelineEvent[] = [
    { kind: "subscribe", at: T0, phase: 1, user: "u", plan: "payg" },
    { kind: "change", at: up, phase: 20, user: "u", to: "pro", when: "now" },
  ];
  const model = buildModel(["u"], timeline, up + DAY, VERSIONS);
  const moves = [
    { phase: 5, from: end - 3 * 60_000, to: end + 60_000 },
    { phase: 10, from: end + 60_000, to: end + GRACE + 120_000 },
  ];
  const s = (id: string, billedAt: number, phase: number, billable = true): LcSession => ({
    id,
    user: "u",
    billedAt,
    billable,
    phase,
  });
  const sessions = [
    s("a", T0 + DAY, 2),
    s("b", T0 + DAY, 2),
    s("x", T0 + DAY, 2, false),
    s("c", end - 180_000, 6), // in the grace period: on the renewal
    s("d", end - 180_000, 7),
    s("e", end - 180_000, 11), // after the renewal was final: an adjustment
    s("f", end + DAY, 12), // the next window: on the upgrade's invoice
  ];
  const { windows, problems } = expectWindows(model, sessions, moves, GRACE);
  expect(problems).toEqual([]);
  const prices = new Map<string, PriceInfo>([
    ["price_payg", { plan: "payg", version: 0, kind: "metered" }],
    ["price_pro_fee", { plan: "pro", version: 0, kind: "fee" }],
    ["price_pro", { plan: "pro", version: 0, kind: "metered" }],
  ]);
  const line = (
    id: string,
    amount: number,
    quantity: number,
    price: string | null,
    periodStart: number,
    item: string | null = null,
  ) => ({
    id,
    amount,
    quantity,
    price,
    periodStart,
    invoiceItem: item,
    description: id,
  });
  const invoices: InvoiceView[] = [
    {
      id: "in_first",
      customer: "cus_u",
      status: "paid",
      billingReason: "subscription_create",
      total: 0,
      lines: [line("l0", 0, 0, "price_payg", T0)],
    },
    {
      id: "in_renewal",
      customer: "cus_u",
      status: "paid",
      billingReason: "subscription_cycle",
      total: 40,
      lines: [line("l1", 40, 4, "price_payg", T0)],
    },
    {
      id: "in_upgrade",
      customer: "cus_u",
      status: "paid",
      billingReason: "subscription_update",
      total: 2920,
      lines: [
        line("l2", 10, 1, "price_payg", end),
        line("l3", 2900, 1, "price_pro_fee", up),
        line("l4", 10, 1, null, T0, "ii_adj"),
      ],
    },
  ];
  const items: ItemView[] = [
    {
      id: "ii_adj",
      customer: "cus_u",
      amount: 10,
      invoice: "in_upgrade",
      adjustment: { user: "u", plan: "payg", periodStart: T0 },
    },
  ];
  return { model, windows, invoices, items, prices, customers: new Map([["cus_u", "u"]]) };
}

describe("the lifecycle invoice check", () => {
  it("counts what each window's invoice bills from the steps the verdicts came in", () => {
    const f = scenario();
    expect([...f.windows.values()].map((w) => [w.window.plan, w.sessions, w.onInvoice])).toEqual([
      ["payg", 5, 4],
      ["payg", 1, 1],
      ["pro", 0, null],
    ]);
  });

  it("puts on a cancel now's final invoice the verdicts until it is final, like a renewal's", () => {
    const cancel = T0 + 10 * DAY;
    const model = buildModel(
      ["u"],
      [
        { kind: "subscribe", at: T0, phase: 1, user: "u", plan: "payg" },
        { kind: "change", at: cancel, phase: 5, user: "u", to: "free", when: "now" },
      ],
      cancel + 2 * GRACE,
      VERSIONS,
    );
    const moves = [{ phase: 8, from: cancel + 60_000, to: cancel + GRACE + 120_000 }];
    const s = (id: string, phase: number): LcSession => ({
      id,
      user: "u",
      billedAt: T0 + DAY,
      billable: true,
      phase,
    });
    const { windows } = expectWindows(model, [s("a", 2), s("b", 6), s("c", 9)], moves, GRACE);
    expect([...windows.values()].map((w) => [w.sessions, w.onInvoice])).toEqual([[3, 2]]);
  });

  it("finds nothing wrong in exact invoices", () => {
    expect(checkLifecycle(scenario())).toEqual([]);
  });

  it("reports a metered line one session off", () => {
    const f = scenario();
    const inv = f.invoices[1];
    const l = inv?.lines[0];
    if (!inv || !l) throw new Error("fixture");
    l.quantity = 5;
    l.amount = 50;
    inv.total = 50;
    expect(checkLifecycle(f)).toEqual([
      expect.stringMatching(/payg window .* bill 5 sessions for 50c, expected 4 for 40c/),
    ]);
  });

  it("reports a missing or wrong adjustment, a missing fee and a line the policy does not make", () => {
    const f = scenario();
    const inv = f.invoices[2];
    if (!inv) throw new Error("fixture");
    inv.lines = inv.lines.filter((l) => l.id !== "l3");
    inv.lines.push({
      id: "l5",
      amount: -500,
      quantity: 1,
      price: null,
      periodStart: T0,
      invoiceItem: null,
      description: "credit",
    });
    inv.total = inv.lines.reduce((n, l) => n + l.amount, 0);
    const item = f.items[0];
    if (item) item.amount = 11;
    const found = checkLifecycle(f);
    expect(found).toContainEqual(expect.stringContaining("l4 (l4, 10c): its item says 11c"));
    expect(found).toContainEqual(
      expect.stringContaining("line l5 (credit, -500c): a line the policy does not make"),
    );
    expect(found).toContainEqual(
      expect.stringMatching(/pro window .* fee lines \[\] bill 0c, expected 1 of 2900c/),
    );
  });

  it("reports usage billed at a newer price version than the window's, and a draft left over", () => {
    const f = scenario();
    f.prices.set("price_payg_v1", { plan: "payg", version: 1, kind: "metered" });
    const l = f.invoices[1]?.lines[0];
    if (!l) throw new Error("fixture");
    l.price = "price_payg_v1";
    f.invoices.push({
      id: "in_draft",
      customer: "cus_u",
      status: "draft",
      billingReason: "manual",
      total: 0,
      lines: [],
    });
    const found = checkLifecycle(f);
    expect(found).toContainEqual(
      expect.stringContaining("billed at price version 1, the window is on version 0"),
    );
    expect(found).toContainEqual(expect.stringContaining("invoice in_draft (manual): still a draft"));
  });

  it("reports an adjustment that never reached an invoice nor stayed pending", () => {
    const f = scenario();
    const inv = f.invoices[2];
    if (!inv) throw new Error("fixture");
    inv.lines = inv.lines.filter((l) => l.id !== "l4");
    inv.total -= 10;
    expect(checkLifecycle(f)).toEqual([
      expect.stringContaining(
        "adjustment item ii_adj of cus_u: on invoice in_upgrade, which does not list it",
      ),
      expect.stringMatching(
        /payg window .*: adjustments bill 0c, expected 10c \(1 sessions after its invoice\)/,
      ),
    ]);
  });
});
