/**
 * Changing plans from the billing page, in a real headless Chromium against the whole stack and
 * the Stripe emulator: a pay-as-you-go user with sessions upgrades to pro at once (each button
 * says what it will cost), sees the invoice with the $29 fee and their pay-as-you-go sessions,
 * downloads that invoice's sessions as CSV (12 at $0.10, its metered line to the cent),
 * then schedules a downgrade for the period end, sees it scheduled, and takes it back.
 */
import { readFile } from "node:fs/promises";
import { parse } from "csv-parse/sync";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { asUser, eventually, stackUrl, userToken } from "../e2e/helpers";
import {
  DESKTOP,
  fitsViewport,
  launchChromium,
  openPage,
  PHONE,
  PLAN,
  screenshot,
  type WatchedPage,
} from "./chromium";
import { postSessions, usageOf } from "./seed";

const user = `browser-plan-${crypto.randomUUID().slice(0, 8)}`;
let browser: Browser;
const opened: WatchedPage[] = [];

const text = async (page: Page, selector: string) => (await page.locator(selector).textContent()) ?? "";

async function billingPage(viewport = DESKTOP): Promise<WatchedPage> {
  const watched = await openPage(browser, viewport);
  opened.push(watched);
  await watched.page.goto(`${stackUrl("/")}#token=${await userToken(user)}`);
  await watched.page.locator("body[data-loaded=true]").waitFor({ timeout: 20_000 });
  return watched;
}

/** Subscribes the user to payg through Checkout (the emulator completes it) with 12 sessions posted. */
async function paygWithSessions(): Promise<void> {
  const res = await asUser(user, "/api/billing/checkout", {
    method: "POST",
    body: JSON.stringify({ plan: "payg" }),
  });
  const { id } = (await res.json()) as { id: string };
  await fetch(`${inject("stripeUrl")}/_emulator/checkout/sessions/${id}/complete`, { method: "POST" });
  await eventually(
    () => usageOf(user),
    (u) => u.plan === "payg",
    30_000,
  );
  const start = Date.now() + 1000;
  await postSessions(
    Array.from({ length: 12 }, (_, i) => ({ sessionId: `${user}-s${i}`, userId: user, start })),
  );
  await eventually(
    () => usageOf(user),
    (u) => u.sessions_this_month === 12,
    60_000,
    500,
  );
  // Stripe holds the total before the change (posted within the posting interval)
  const query = `SELECT posted_total FROM usage_periods WHERE user_id = '${user}' AND plan = 'payg'`;
  await eventually(
    async () => {
      const r = await fetch(stackUrl("/__dev/query"), {
        method: "POST",
        body: JSON.stringify({ sql: query }),
      });
      return ((await r.json()) as { results: { posted_total: number }[] }).results;
    },
    (rows) => rows[0]?.posted_total === 12,
    60_000,
  );
}

describe.skipIf(PLAN.kind === "skip")("changing plans on the billing page", () => {
  beforeAll(async () => {
    browser = await launchChromium();
    await paygWithSessions();
  }, 180_000);

  afterAll(async () => {
    for (const w of opened) await w.context.close();
    await browser?.close();
  });

  it("upgrades to pro at once, saying what it costs, and shows the $29 invoice with the payg sessions", async () => {
    const { page, problems } = await billingPage();
    const upgrade = page.getByRole("button", { name: "Upgrade to Pro now" });
    await upgrade.waitFor();
    const detail = await upgrade.locator("xpath=..").locator("p").textContent();
    expect(detail).toContain("$29.00 today");
    expect(detail).toContain("sessions so far ($1.20) are billed on the same invoice");
    await screenshot(page, "plan-change-payg");
    await upgrade.click();
    await expect.poll(() => text(page, "#plan-name"), { timeout: 20_000 }).toBe("Pro");
    expect(await text(page, "#notice")).toBe("You are on Pro.");
    const invoice = page.locator("#invoices-table tbody tr").first();
    await expect.poll(() => invoice.locator("td").nth(3).textContent(), { timeout: 20_000 }).toBe("$30.20");
    const what = (await invoice.locator("td").nth(2).textContent()) ?? "";
    expect(what).toContain("AI Gate Pro");
    expect(what).toContain("12 × AI Gate Pay-as-you-go");
    await screenshot(page, "plan-change-upgraded");

    // its sessions, downloaded as the user does: 12 payg sessions adding up to its metered line
    const link = invoice.getByRole("link", { name: /^Download the sessions of invoice .+ \(CSV\)$/ });
    const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
    expect(download.suggestedFilename()).toMatch(/^invoice-[A-Za-z0-9_-]+-sessions\.csv$/);
    const [header, ...rows] = parse(await readFile(await download.path())) as string[][];
    expect(header).toEqual([
      "session_id",
      "project_id",
      "created_at",
      "duration_ms",
      "audio_ms",
      "price_cents",
    ]);
    expect(rows.map((r) => r[0]).sort()).toEqual(
      Array.from({ length: 12 }, (_, i) => `${user}-s${i}`).sort(),
    );
    expect(rows.map((r) => r[5])).toEqual(Array(12).fill("10"));
    const listed = (await (await asUser(user, "/api/billing/invoices")).json()) as {
      invoices: { lines: { metered: boolean; plan: string; amount_cents: number }[] }[];
    };
    const metered = listed.invoices[0]?.lines.filter((l) => l.metered && l.plan === "payg") ?? [];
    expect(metered.map((l) => l.amount_cents)).toEqual([rows.reduce((sum, r) => sum + Number(r[5]), 0)]);
    expect(problems).toEqual([]);
  });

  it("schedules a downgrade for the period end, shows it, and takes it back", async () => {
    const { page, problems } = await billingPage(PHONE);
    const usage = await usageOf(user);
    expect(usage.plan).toBe("pro");
    await page.getByRole("button", { name: "Switch to Pay-as-you-go at the end of this period" }).click();
    const pending = page.locator("#pending");
    await expect.poll(() => pending.isVisible(), { timeout: 20_000 }).toBe(true);
    expect(await text(page, "#pending-text")).toMatch(/^Your plan changes to Pay-as-you-go on /);
    const api = (await (await asUser(user, "/api/billing/usage")).json()) as {
      plan: string;
      pending_plan: string | null;
      pending_effective_at: string | null;
      period_end: string;
    };
    expect(api).toMatchObject({ plan: "pro", pending_plan: "payg", pending_effective_at: api.period_end });
    expect(await fitsViewport(page)).toBe(true);
    await screenshot(page, "plan-change-downgrade-scheduled-phone");

    await page.getByRole("button", { name: "Keep my current plan" }).click();
    await expect.poll(() => pending.isVisible(), { timeout: 20_000 }).toBe(false);
    expect(
      ((await (await asUser(user, "/api/billing/usage")).json()) as { pending_plan: null }).pending_plan,
    ).toBeNull();
    expect(problems).toEqual([]);
  });
});
