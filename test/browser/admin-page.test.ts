/**
 * The operator page (`/admin`) in a real headless Chromium against the whole local stack: metrics
 * for the month, and a dead letter parked by the classifier (telemetry naming another user than
 * the session's owner) replayed from the page.
 */

import { DEV_ADMIN_KEY } from "@aigate/test-support";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asUser, eventually, postEvents, sessionEvents, stackUrl } from "../e2e/helpers";
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
import { seedUser } from "./seed";

const run = crypto.randomUUID().slice(0, 8);
let browser: Browser;
const opened: WatchedPage[] = [];

interface DeadLetterList {
  dead_letters: { id: string; summary: string; replayed_at: string | null }[];
}

async function pendingTelemetryDeadLetters(): Promise<DeadLetterList["dead_letters"]> {
  const res = await fetch(stackUrl("/admin/dead-letters?queue=aigate-telemetry&state=pending&limit=100"), {
    headers: { authorization: `Bearer ${DEV_ADMIN_KEY}` },
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as DeadLetterList).dead_letters;
}

async function adminPage(viewport = DESKTOP): Promise<WatchedPage> {
  const watched = await openPage(browser, viewport);
  opened.push(watched);
  await watched.page.goto(stackUrl("/admin"));
  await watched.page.getByLabel("Admin API key").fill(DEV_ADMIN_KEY);
  await watched.page.getByRole("button", { name: "Use key" }).click();
  await watched.page.locator("body[data-loaded=true]").waitFor({ timeout: 20_000 });
  return watched;
}

// Skipped, with one line saying why, on a machine without Chromium (not in CI): see chromium.ts.
describe.skipIf(PLAN.kind === "skip")("operator page", () => {
  beforeAll(async () => {
    browser = await launchChromium();
  }, 60_000);

  afterAll(async () => {
    for (const w of opened) await w.context.close();
    await browser?.close();
  });

  it("refuses a wrong key and shows the month's metrics with the right one", async () => {
    await seedUser(`admin-metrics-${run}`, { successful: 2, turnFailed: 1 });
    const watched = await openPage(browser, PHONE);
    opened.push(watched);
    const { page, problems } = watched;
    await page.goto(stackUrl("/admin"));
    await page.getByLabel("Admin API key").fill("aig_not_a_key");
    await page.getByRole("button", { name: "Use key" }).click();
    await expect.poll(() => page.locator("#notice").textContent()).toBe("unknown or revoked key");
    expect(await page.locator("#content").isVisible()).toBe(false);

    await page.getByLabel("Admin API key").fill(DEV_ADMIN_KEY);
    await page.getByRole("button", { name: "Use key" }).click();
    await page.locator("body[data-loaded=true]").waitFor({ timeout: 20_000 });
    const metric = (label: string) =>
      page
        .locator("#metrics div")
        .filter({ has: page.locator("dt", { hasText: label }) })
        .locator("dd");
    expect(await metric("MRR").textContent()).toMatch(/^\$\d+\.\d\d$/);
    const sessions = (await metric("Sessions").textContent()) ?? "";
    const [billable, total] = (/^(\d+) billable of (\d+)$/.exec(sessions) ?? []).slice(1).map(Number);
    expect(billable).toBeGreaterThanOrEqual(2);
    expect(total).toBeGreaterThanOrEqual(3);
    const turnRow = page.locator("#failed-table tbody tr").filter({ hasText: "turn_failed" });
    expect(Number(await turnRow.locator("td").last().textContent())).toBeGreaterThanOrEqual(1);
    expect(await fitsViewport(page)).toBe(true);
    await screenshot(page, "admin-metrics-phone");
    // The refused key produced one failed request (401) in the console; nothing else.
    expect(problems).toEqual([
      `HTTP 401 ${stackUrl("/admin/metrics")}?month=${new Date().toISOString().slice(0, 7)}`,
    ]);
  });

  it("replays a parked dead letter from the page, once", async () => {
    // Telemetry for a session owned by one user, then telemetry naming another user: parked.
    const sessionId = `admin-dlq-${run}`;
    const owner = `owner-${run}`;
    expect((await postEvents(sessionEvents({ sessionId, userId: owner }))).status).toBe(202);
    // Wait until the session is judged as the owner's, so the intruder's events come second.
    await eventually(
      async () => (await (await asUser(owner, "/api/billing/sessions")).json()) as { sessions: unknown[] },
      (page) => page.sessions.length === 1,
      60_000,
    );
    const intruder = sessionEvents({ sessionId, userId: `intruder-${run}` }).map((e) => ({
      ...e,
      id: `${String(e.id)}-x`,
    }));
    expect((await postEvents(intruder)).status).toBe(202);
    const parked = await eventually(
      pendingTelemetryDeadLetters,
      (rows) => rows.some((r) => r.summary.includes(sessionId)),
      60_000,
    );
    const letter = parked.find((r) => r.summary.includes(sessionId));
    if (!letter) throw new Error("no dead letter");

    const { page, problems } = await adminPage();
    await page.getByLabel("Queue").selectOption("aigate-telemetry");
    await page.getByRole("button", { name: "Show dead letters" }).click();
    const row = page.locator(`#dl-table tbody tr[data-id="${letter.id}"]`);
    await row.waitFor();
    expect(await row.textContent()).toContain("user_mismatch");
    await screenshot(page, "admin-dead-letters");
    await row.getByRole("button", { name: `Replay ${letter.id}` }).click();
    await expect
      .poll(() => page.locator("#notice").textContent())
      .toBe(`Replayed 1 dead letter(s): ${letter.id}.`);
    // The list shows only dead letters not replayed yet: this one is gone from it.
    await expect.poll(() => row.count()).toBe(0);
    const after = await pendingTelemetryDeadLetters();
    expect(after.some((r) => r.id === letter.id)).toBe(false);
    await screenshot(page, "admin-after-replay");
    expect(problems).toEqual([]);
  });
});
