/**
 * The user's billing page (`/`) in a real headless Chromium against the whole local stack.
 * Usage is seeded through the real pipeline (telemetry -> classifier -> biller).
 * Screenshots are saved to test/.artifacts/screenshots/.
 */

import { DEV_SECRETS } from "@aigate/test-support";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { eventually, stackUrl, userToken } from "../e2e/helpers";
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
import { seedUser, usageOf } from "./seed";

const run = crypto.randomUUID().slice(0, 8);
const at85 = `browser-85-${run}`;
const at84 = `browser-84-${run}`;
const turnUser = `browser-turn-${run}`;

let browser: Browser;
const opened: WatchedPage[] = [];

async function billingPage(userId: string, viewport = DESKTOP): Promise<WatchedPage> {
  const watched = await openPage(browser, viewport);
  opened.push(watched);
  await watched.page.goto(`${stackUrl("/")}#token=${await userToken(userId)}`);
  await watched.page.locator("body[data-loaded=true]").waitFor({ timeout: 20_000 });
  return watched;
}

const text = async (page: Page, selector: string) => (await page.locator(selector).textContent()) ?? "";

// Skipped, with one line saying why, on a machine without Chromium (not in CI): see chromium.ts.
describe.skipIf(PLAN.kind === "skip")("billing page", () => {
  beforeAll(async () => {
    browser = await launchChromium();
    await Promise.all([
      seedUser(at85, { successful: 85 }),
      seedUser(at84, { successful: 84 }),
      seedUser(turnUser, { successful: 1, turnFailed: 1 }),
    ]);
  }, 180_000);

  afterAll(async () => {
    for (const w of opened) await w.context.close();
    await browser?.close();
  });

  it("shows the 85 % banner with its upgrade call to action at 85 of 100 sessions", async () => {
    const { page, problems } = await billingPage(at85, PHONE);
    expect(await text(page, "#usage-count")).toBe("85 / 100 sessions this month");
    expect(await text(page, "#plan-name")).toBe("Free");
    const banner = page.getByRole("status").filter({ hasText: "free sessions this month" });
    await expect.poll(() => banner.isVisible()).toBe(true);
    expect(await banner.textContent()).toContain(
      "You have used 85 of your 100 free sessions this month (85 %)",
    );
    expect(await banner.getByRole("button", { name: "Upgrade to Pay-as-you-go" }).isVisible()).toBe(true);
    expect(await banner.getByRole("button", { name: "Upgrade to Pro" }).isVisible()).toBe(true);
    // The token left the URL (kept in sessionStorage), and the page fits a 375 px wide phone.
    expect(page.url()).not.toContain("token=");
    expect(await fitsViewport(page)).toBe(true);
    await screenshot(page, "billing-85-of-100-phone");
    expect(problems).toEqual([]);
  });

  it("shows no banner at 84 of 100 sessions", async () => {
    const { page, problems } = await billingPage(at84);
    expect(await text(page, "#usage-count")).toBe("84 / 100 sessions this month");
    expect(await page.locator("#banner").isVisible()).toBe(false);
    expect(await page.getByRole("status").filter({ hasText: "free sessions this month" }).count()).toBe(0);
    // The plan cards still offer the upgrade.
    expect(await page.getByRole("button", { name: "Upgrade to Pay-as-you-go" }).isVisible()).toBe(true);
    await screenshot(page, "billing-84-of-100-desktop");
    expect(problems).toEqual([]);
  });

  it("lists a TURN-failed session as 'not charged: turn_failed' and charts the day", async () => {
    const { page, problems } = await billingPage(turnUser, PHONE);
    const rows = page.locator("#sessions-table tbody tr");
    await expect.poll(() => rows.count()).toBe(2);
    const failed = rows.filter({ hasText: `${turnUser}-turn-0` });
    expect(await failed.locator("td").last().textContent()).toBe("not charged: turn_failed");
    const ok = rows.filter({ hasText: `${turnUser}-ok-0` });
    expect(await ok.locator("td").last().textContent()).toBe("billable");
    expect(await text(page, "#usage-failed")).toBe("1 session not charged this period");
    // The chart has a text alternative, and the table view has today's numbers.
    const chart = page.getByRole("img", { name: /Sessions per day/ });
    expect(await chart.count()).toBe(1);
    const today = new Date().toISOString().slice(0, 10);
    await page.getByText("Daily usage as a table").click();
    const todayRow = page.locator("#daily-table tbody tr").filter({ hasText: today });
    expect(await todayRow.locator("td").allTextContents()).toEqual([today, "1", "1", "turn_failed: 1"]);
    expect(await fitsViewport(page)).toBe(true);
    await screenshot(page, "billing-turn-failed-phone");
    expect(problems).toEqual([]);
  });

  it("takes the banner's upgrade button, by keyboard, to the emulator's checkout and back on pay-as-you-go", async () => {
    const { page, problems } = await billingPage(at85);
    const cta = page.locator("#banner").getByRole("button", { name: "Upgrade to Pay-as-you-go" });
    // Keyboard only: Tab until the call to action has focus, then Enter.
    for (let i = 0; i < 20 && !(await cta.evaluate((b) => b === document.activeElement)); i += 1) {
      await page.keyboard.press("Tab");
    }
    expect(await cta.evaluate((b) => b === document.activeElement)).toBe(true);
    await page.keyboard.press("Enter");
    const stripeUrl = inject("stripeUrl");
    await page.waitForURL((url) => url.href.startsWith(`${stripeUrl}/checkout/cs_`), { timeout: 20_000 });
    expect(await page.getByRole("heading", { level: 1 }).textContent()).toBe("AI Gate test checkout");
    await screenshot(page, "checkout-in-emulator");

    // The Checkout Session belongs to this user and asks for the pay-as-you-go plan.
    const sessionId = new URL(page.url()).pathname.split("/").at(-1) ?? "";
    const session = (await (
      await fetch(`${stripeUrl}/v1/checkout/sessions/${sessionId}`, {
        headers: { authorization: `Bearer ${DEV_SECRETS.STRIPE_SECRET_KEY}` },
      })
    ).json()) as { mode: string; client_reference_id: string; metadata: Record<string, string> };
    expect(session).toMatchObject({
      mode: "subscription",
      client_reference_id: at85,
      metadata: { plan: "payg" },
    });

    // Paying returns to the billing page, which follows the webhooks to the new plan.
    await page.getByRole("button", { name: "Pay and subscribe" }).click();
    await page.waitForURL((url) => url.href.startsWith(stackUrl("/")), { timeout: 20_000 });
    await eventually(
      () => usageOf(at85),
      (u) => u.plan === "payg",
      30_000,
    );
    await expect.poll(() => text(page, "#plan-name"), { timeout: 20_000 }).toBe("Pay-as-you-go");
    expect(page.url()).not.toContain("checkout=");
    expect(await page.locator("#banner").isVisible()).toBe(false);
    expect(await page.getByRole("button", { name: "Manage billing" }).isVisible()).toBe(true);
    await screenshot(page, "billing-after-upgrade");

    // Manage billing opens the Customer Portal.
    await page.getByRole("button", { name: "Manage billing" }).click();
    await page.waitForURL((url) => url.href.startsWith(`${stripeUrl}/portal/`), { timeout: 20_000 });
    expect(problems).toEqual([]);
  });

  it("asks for a token when the page is opened without one", async () => {
    const watched = await openPage(browser, PHONE);
    opened.push(watched);
    const { page, problems } = watched;
    await page.goto(stackUrl("/"));
    const box = page.getByLabel("User token");
    await box.waitFor();
    await box.fill(await userToken(at84));
    await page.getByRole("button", { name: "Show my billing" }).click();
    await page.locator("body[data-loaded=true]").waitFor();
    expect(await text(page, "#usage-count")).toBe("84 / 100 sessions this month");
    expect(problems).toEqual([]);
  });
});
