/**
 * Debian's Chromium driven by playwright-core (no browser download): finding the browser (and
 * what to do without one), launch options, screenshots under test/.artifacts/screenshots/, and a
 * page that records console errors and failed requests (a CSP violation or a script error shows
 * up there).
 */
import { accessSync, constants, mkdirSync, statSync } from "node:fs";
import path from "node:path";
import { ROOT } from "@aigate/scripts/dev/stack";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";

type Env = Record<string, string | undefined>;

/** Names Chromium is installed under (Debian: `chromium`; Ubuntu and others: `chromium-browser`). */
const NAMES = ["chromium", "chromium-browser"];

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * The Chromium executable to drive: `CHROMIUM_PATH` when set (and only that one), otherwise
 * `chromium` or `chromium-browser` on PATH; null when there is none.
 */
export function findChromium(env: Env): string | null {
  const chosen = env.CHROMIUM_PATH?.trim();
  if (chosen) return isExecutable(chosen) ? chosen : null;
  for (const dir of (env.PATH ?? "").split(path.delimiter)) {
    if (dir === "") continue;
    for (const name of NAMES) {
      const file = path.join(dir, name);
      if (isExecutable(file)) return file;
    }
  }
  return null;
}

/**
 * What the browser suite does on this machine: run with the browser found; without one, skip
 * (saying why and how to enable it), except under `CI=true`, where a missing browser fails.
 */
export type BrowserPlan =
  | { kind: "run"; executable: string }
  | { kind: "skip"; message: string }
  | { kind: "fail"; message: string };

/** CI=true (or any CI value other than empty, 0 or false). */
function isCi(env: Env): boolean {
  const ci = env.CI?.trim().toLowerCase();
  return ci !== undefined && ci !== "" && ci !== "0" && ci !== "false";
}

export function browserPlan(env: Env): BrowserPlan {
  const executable = findChromium(env);
  if (executable) return { kind: "run", executable };
  const looked = env.CHROMIUM_PATH?.trim()
    ? `CHROMIUM_PATH=${env.CHROMIUM_PATH} is not an executable`
    : `no ${NAMES.join(" or ")} on PATH`;
  if (isCi(env)) {
    return {
      kind: "fail",
      message:
        `browser tests: no Chromium (${looked}) and CI=true, where they must run. ` +
        "Install it (`apt-get install chromium`; .ci/run does) or set CHROMIUM_PATH.",
    };
  }
  return {
    kind: "skip",
    message:
      `BROWSER TESTS SKIPPED: no Chromium (${looked}). To run them: \`sudo apt-get install chromium\`, ` +
      "or set CHROMIUM_PATH to a Chromium or Chrome executable. (With CI=true this is a failure.)",
  };
}

export const PLAN = browserPlan(process.env);

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
export const SCREENSHOTS = path.join(ROOT, "test/.artifacts/screenshots");

export const PHONE = { width: 375, height: 812 };
export const DESKTOP = { width: 1280, height: 900 };

export function launchChromium(): Promise<Browser> {
  if (PLAN.kind !== "run") throw new Error(PLAN.message);
  return chromium.launch({ executablePath: PLAN.executable, args: CHROMIUM_ARGS, headless: true });
}

export interface WatchedPage {
  context: BrowserContext;
  page: Page;
  /** Console errors (CSP violations included), uncaught exceptions and failed requests seen so far. */
  problems: string[];
}

export async function openPage(browser: Browser, viewport = DESKTOP): Promise<WatchedPage> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("console", (m) => {
    // Failed requests are reported below with their URL.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      problems.push(`console: ${m.text()}`);
    }
  });
  page.on("response", (r) => {
    // Browsers ask every origin for /favicon.ico; the Stripe emulator's pages do not declare one.
    const url = new URL(r.url());
    if (r.status() >= 400 && url.pathname !== "/favicon.ico") problems.push(`HTTP ${r.status()} ${r.url()}`);
  });
  page.on("requestfailed", (r) =>
    problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ""}`),
  );
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  return { context, page, problems };
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const file = path.join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** True when nothing is wider than the viewport (readable without sideways scrolling). */
export function fitsViewport(page: Page): Promise<boolean> {
  return page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
}
