/**
 * The spend cap and alerts on the billing page, in a real headless Chromium against the whole
 * stack: a pay-as-you-go user sets a cap and thresholds in the form (a wrong entry is refused
 * with the API's message), the values survive a reload, and once sessions go through the real
 * pipeline the crossed thresholds are listed.
 */
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { asUser, eventually, stackUrl, userToken } from "../e2e/helpers";
import { DESKTOP, launchChromium, openPage, PLAN, screenshot, type WatchedPage } from "./chromium";
import { postSessions, usageOf } from "./seed";

const user = `browser-caps-${crypto.randomUUID().slice(0, 8)}`;
let browser: Browser;
const opened: WatchedPage[] = [];

const text = async (page: Page, selector: string) => (await page.locator(selector).textContent()) ?? "";

async function billingPage(): Promise<WatchedPage> {
  const watched = await openPage(browser, DESKTOP);
  opened.push(watched);
  await watched.page.goto(`${stackUrl("/")}#token=${await userToken(user)}`);
  await watched.page.locator("body[data-loaded=true]").waitFor({ timeout: 20_000 });
  return watched;
}

describe.skipIf(PLAN.kind === "skip")("spend cap and alerts on the billing page", () => {
  beforeAll(async () => {
    browser = await launchChromium();
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
  }, 180_000);

  afterAll(async () => {
    for (const w of opened) await w.context.close();
    await browser?.close();
  });

  it("shows no cap at first, saves a cap and thresholds from the form, and refuses a wrong entry", async () => {
    const { page, problems } = await billingPage();
    expect(await text(page, "#limits-status")).toBe("No spend cap. Usage charges this period: $0.00.");
    expect(await page.getByLabel("Alert at these percentages").inputValue()).toBe("50, 80, 100");

    await page.getByLabel("Monthly cap on usage charges").fill("0.40");
    await page.getByLabel("Alert at these percentages").fill("80, 50");
    await page.getByRole("button", { name: "Save limits" }).click();
    await expect
      .poll(() => text(page, "#notice"))
      .toBe("alert_thresholds: thresholds must be strictly ascending (sorted, no duplicates)");
    const unchanged = (await (await asUser(user, "/api/billing/limits")).json()) as Record<string, unknown>;
    expect(unchanged.monthly_cap_cents).toBeNull();

    await page.getByLabel("Alert at these percentages").fill("50, 100");
    await page.getByRole("button", { name: "Save limits" }).click();
    await expect.poll(() => text(page, "#notice")).toBe("Your limits are saved.");
    expect(await text(page, "#limits-status")).toBe(
      "Usage charges this period: $0.00 of your $0.40 cap (0 of 4 sessions).",
    );
    const saved = (await (await asUser(user, "/api/billing/limits")).json()) as Record<string, unknown>;
    expect(saved).toMatchObject({ monthly_cap_cents: 40, alert_thresholds: [50, 100] });
    // the one refused request is the wrong entry's
    expect(problems).toEqual([`HTTP 400 ${stackUrl("/api/billing/limits")}`]);
  });

  it("lists the thresholds the period's sessions crossed, and keeps the saved values on reload", async () => {
    const start = Date.now() + 1000;
    await postSessions(
      Array.from({ length: 4 }, (_, i) => ({ sessionId: `${user}-s${i}`, userId: user, start })),
    );
    await eventually(
      () => usageOf(user),
      (u) => u.sessions_this_month === 4,
      60_000,
      500,
    );
    const { page, problems } = await billingPage();
    expect(await page.getByLabel("Monthly cap on usage charges").inputValue()).toBe("0.40");
    expect(await page.getByLabel("Alert at these percentages").inputValue()).toBe("50, 100");
    expect(await text(page, "#limits-status")).toBe(
      "Usage charges this period: $0.40 of your $0.40 cap (4 of 4 sessions).",
    );
    const rows = page.locator("#alerts-table tbody tr");
    expect(await rows.count()).toBe(2);
    expect(await rows.nth(0).locator("td").first().textContent()).toBe("50 %");
    expect(await rows.nth(1).locator("td").first().textContent()).toBe("100 %");
    expect(await rows.nth(1).locator("td").nth(3).textContent()).toBe("no endpoint");
    await screenshot(page, "billing-spend-cap");
    expect(problems).toEqual([]);
  });
});
